// GPU GPTQ benchmark: Hessian accumulation (Σ x xᵀ in f64 from bf16 layer inputs) and
// qforge::cuda::gptq_quantize of a rows x cols layer, wall-clock (host grids, transfers of the
// weights and codes included). The CPU side is bench_gptq_cpu, run on the CPU machine.
// Usage: bench_gptq [--rows 11008] [--cols 4096] [--tokens 524288] [--distinct 32768] [--reps 3] [--compare-cpu]
// --compare-cpu also runs the CPU GPTQ (this machine's cores) on the same weights and Hessian and
// counts the codes that differ from the GPU's.
// --tokens are accumulated as passes over --distinct generated rows (the sum's cost depends only
// on the token count).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_bench_util.h"
#include "gptq_bench_problem.h"
#include "qforge/cuda.h"
#include "qforge/dtype.h"
#include "qforge/ptq.h"

using namespace qforge;

template <class T>
T must(Expected<T> e, const char* what) {
  if (!e.has_value()) {
    std::fprintf(stderr, "%s: %s\n", what, e.status().to_string().c_str());
    std::exit(1);
  }
  return std::move(e).value();
}
void must(const Status& s, const char* what) {
  if (!s.is_ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.to_string().c_str());
    std::exit(1);
  }
}

int main(int argc, char** argv) {
  int64_t rows = 11008, cols = 4096, tokens = 524288, distinct = 32768;
  int reps = 3;
  bool compare_cpu = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--rows") rows = std::atoll(next());
    else if (a == "--cols") cols = std::atoll(next());
    else if (a == "--tokens") tokens = std::atoll(next());
    else if (a == "--distinct") distinct = std::atoll(next());
    else if (a == "--reps") reps = std::atoi(next());
    else if (a == "--compare-cpu") compare_cpu = true;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  distinct = std::min(distinct, tokens);
  using clock = std::chrono::steady_clock;
  std::printf("device: %s\n", must(cuda::device_description(), "device").c_str());
  auto ctx = must(cuda::Context::create(0), "context");
  const std::vector<float> x = gptq_bench::make_inputs(distinct, cols, 3, 1234);
  std::vector<uint16_t> xb(x.size());
  for (size_t i = 0; i < x.size(); ++i) xb[i] = f32_to_bf16(x[i]);
  auto xd = must(cuda::DeviceBuffer::upload(xb.data(), xb.size() * 2), "upload x");
  cuda::DeviceHessian h;
  std::vector<double> t_h;
  for (int rep = 0; rep < 2; ++rep) {
    h = must(cuda::hessian_create(cols), "hessian_create");
    must(ctx->synchronize(), "sync");
    const auto t0 = clock::now();
    for (int64_t done = 0; done < tokens; done += distinct)
      must(cuda::hessian_accumulate(*ctx, h, xd.data(), std::min(distinct, tokens - done), cuda::InputType::bf16), "accumulate");
    must(cuda::hessian_finalize(*ctx, h), "finalize");
    must(ctx->synchronize(), "sync");
    t_h.push_back(std::chrono::duration<double>(clock::now() - t0).count());
  }
  const double th = *std::min_element(t_h.begin(), t_h.end());
  std::printf("hessian: %lld tokens x %lld (bf16 in, f64 sum): %.3f s (%.1f TFLOP/s f64 counting the triangle)\n",
              static_cast<long long>(tokens), static_cast<long long>(cols), th,
              static_cast<double>(tokens) * static_cast<double>(cols) * static_cast<double>(cols + 1) / th * 1e-12);
  const std::vector<float> w = gptq_bench::make_weights(rows, cols, 42);
  struct Variant {
    const char* scheme;
    bool act_order;
  };
  std::printf("| scheme | act-order | GPU GPTQ median of %d (s) | min (s) | proxy loss |\n|---|---|---|---|---|\n", reps);
  for (const Variant& v : {Variant{"int4-g128-sym", false}, Variant{"int4-g128-asym", true}}) {
    GptqOptions opt;
    opt.act_order = v.act_order;
    const Scheme scheme = must(Scheme::parse(v.scheme), "scheme");
    std::vector<double> times;
    double loss = 0;
    for (int rep = 0; rep <= reps; ++rep) {  // rep 0 warms up
      const auto t0 = clock::now();
      GptqResult r = must(cuda::gptq_quantize(*ctx, scheme, w.data(), rows, cols, h, opt), "gptq");
      const double t = std::chrono::duration<double>(clock::now() - t0).count();
      if (rep > 0) times.push_back(t);
      loss = r.proxy_loss;
    }
    std::sort(times.begin(), times.end());
    std::printf("| %s | %s | %.4f | %.4f | %.6g |\n", v.scheme, v.act_order ? "yes" : "no", times[times.size() / 2], times[0], loss);
    if (compare_cpu) {
      GptqResult g = must(cuda::gptq_quantize(*ctx, scheme, w.data(), rows, cols, h, opt), "gptq");
      std::vector<double> s(static_cast<size_t>(cols * cols));
      must(cuda::hessian_download(*ctx, h, s.data()), "download");
      const auto t0 = clock::now();
      GptqResult c = must(gptq_quantize(scheme, w.data(), rows, cols, s.data(), h.tokens, opt), "cpu gptq");
      const double tc = std::chrono::duration<double>(clock::now() - t0).count();
      int64_t diff = 0, diff_rows = 0, scales = 0;
      std::vector<uint8_t> a(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        unpack_bits(g.q.codes.data() + r * g.q.packed_row_bytes(), cols, scheme.bits, a.data());
        unpack_bits(c.q.codes.data() + r * c.q.packed_row_bytes(), cols, scheme.bits, b.data());
        int64_t here = 0;
        for (int64_t j = 0; j < cols; ++j) here += a[static_cast<size_t>(j)] != b[static_cast<size_t>(j)];
        diff += here;
        diff_rows += here > 0;
      }
      for (size_t i = 0; i < g.q.scales.size(); ++i) scales += g.q.scales[i] != c.q.scales[i];
      std::printf("  vs CPU GPTQ on this machine's cores (%.2f s): %lld of %lld codes differ (%lld rows), %lld scale bytes differ, "
                  "zeros %s; proxy loss %.9g vs %.9g\n",
                  tc, static_cast<long long>(diff), static_cast<long long>(rows * cols), static_cast<long long>(diff_rows),
                  static_cast<long long>(scales), g.q.zeros == c.q.zeros ? "equal" : "differ", g.proxy_loss, c.proxy_loss);
    }
  }
  return 0;
}
