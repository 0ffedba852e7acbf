// CPU side of the GPTQ benchmark (no CUDA): times qforge::gptq_quantize of a rows x cols layer on
// this machine's cores, for comparison with bench_gptq (GPU). The Hessian is Σ x xᵀ of
// `--tokens` calibration-like rows (gptq_bench_problem.h) summed with OpenBLAS DSYRK; GPTQ's time
// does not depend on how many tokens made the Hessian, only on its size.
// Usage: bench_gptq_cpu [--rows 11008] [--cols 4096] [--tokens 8192] [--scheme int4-g128-sym] [--act-order]
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "gptq_bench_problem.h"
#include "qforge/parallel.h"
#include "qforge/ptq.h"

using namespace qforge;

int main(int argc, char** argv) {
  int64_t rows = 11008, cols = 4096, tokens = 8192;
  std::string scheme_name = "int4-g128-sym";
  bool act_order = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--rows") rows = std::atoll(next());
    else if (a == "--cols") cols = std::atoll(next());
    else if (a == "--tokens") tokens = std::atoll(next());
    else if (a == "--scheme") scheme_name = next();
    else if (a == "--act-order") act_order = true;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  auto scheme = Scheme::parse(scheme_name);
  if (!scheme) {
    std::fprintf(stderr, "%s\n", scheme.status().to_string().c_str());
    return 2;
  }
  using clock = std::chrono::steady_clock;
  const std::vector<float> x = gptq_bench::make_inputs(tokens, cols, 3, 1234);
  std::vector<double> xd(x.begin(), x.end());
  std::vector<double> s(static_cast<size_t>(cols * cols), 0.0);
  auto t0 = clock::now();
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(cols), static_cast<int>(tokens), 1.0, xd.data(),
              static_cast<int>(cols), 0.0, s.data(), static_cast<int>(cols));
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < i; ++j) s[static_cast<size_t>(i * cols + j)] = s[static_cast<size_t>(j * cols + i)];
  const double t_hess = std::chrono::duration<double>(clock::now() - t0).count();
  const std::vector<float> w = gptq_bench::make_weights(rows, cols, 42);
  GptqOptions opt;
  opt.act_order = act_order;
  t0 = clock::now();
  auto r = gptq_quantize(*scheme, w.data(), rows, cols, s.data(), tokens, opt);
  const double t = std::chrono::duration<double>(clock::now() - t0).count();
  if (!r) {
    std::fprintf(stderr, "%s\n", r.status().to_string().c_str());
    return 1;
  }
  std::printf("cpu gptq %s %lldx%lld%s threads=%d: %.3f s (Hessian of %lld tokens by DSYRK: %.3f s, not counted), proxy loss %.6g\n",
              scheme_name.c_str(), static_cast<long long>(rows), static_cast<long long>(cols), act_order ? " act-order" : "",
              max_threads(), t, static_cast<long long>(tokens), t_hess, r->proxy_loss);
  return 0;
}
