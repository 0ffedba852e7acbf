// GPU GPTQ (qforge::cuda::gptq_quantize) against the CPU GPTQ (qforge::gptq_quantize) on the same
// weights and the same Hessian, and the GPU Hessian accumulation against a host double sum.
// Skips (with a message) when no CUDA device is present.
//
// Equality: both run the same algorithm in double precision; they differ only in the summation
// order of the BLAS/LAPACK calls (cuBLAS/cuSOLVER vs OpenBLAS/LAPACK), about 1e-16 relative. A
// code can differ only where a weight lies within that rounding of the midpoint of two grid
// values, so the expected count of differing codes on these sizes is zero; a row whose code
// differs once continues from slightly different weights, so a differing row may differ in more
// codes (to the adjacent grid value). The test allows at most one diverging row in 1000 and checks
// that every difference is to a neighbouring code; it prints the counts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda_bench_util.h"
#include "gptq_bench_problem.h"
#include "qforge/cuda.h"
#include "qforge/dtype.h"
#include "qforge/ptq.h"

using namespace qforge;
using qforge::gptq_bench::make_inputs;

namespace {

#define REQUIRE_GPU()                                                            \
  do {                                                                           \
    if (!cuda::available()) GTEST_SKIP() << "no CUDA device: GPU test skipped"; \
  } while (0)

template <class T>
T ok(Expected<T> e) {
  EXPECT_TRUE(e.has_value()) << e.status().to_string();
  if (!e.has_value()) std::abort();
  return std::move(e).value();
}

cuda::Context& context() {
  static std::unique_ptr<cuda::Context> c = ok(cuda::Context::create(0));
  return *c;
}

std::vector<double> host_sum_xxt(const std::vector<float>& x, int64_t tokens, int64_t cols) {
  std::vector<double> s(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + t * cols;
    for (int64_t i = 0; i < cols; ++i) {
      const double xi = xt[i];
      if (xi == 0.0) continue;
      double* si = s.data() + i * cols;
      for (int64_t j = 0; j < cols; ++j) si[j] += xi * static_cast<double>(xt[j]);
    }
  }
  return s;
}

struct Diff {
  int64_t codes = 0, rows = 0, far = 0, scales = 0, zeros = 0;
};

Diff compare(const QuantizedTensor& a, const QuantizedTensor& b) {
  Diff d;
  std::vector<uint8_t> ca(static_cast<size_t>(a.cols)), cb(static_cast<size_t>(a.cols));
  for (int64_t r = 0; r < a.rows; ++r) {
    unpack_bits(a.codes.data() + r * a.packed_row_bytes(), a.cols, a.scheme.bits, ca.data());
    unpack_bits(b.codes.data() + r * b.packed_row_bytes(), b.cols, b.scheme.bits, cb.data());
    int64_t here = 0;
    for (int64_t j = 0; j < a.cols; ++j) {
      const int diff = std::abs(static_cast<int>(ca[static_cast<size_t>(j)]) - static_cast<int>(cb[static_cast<size_t>(j)]));
      if (diff) ++here;
      if (diff > 1) ++d.far;
    }
    d.codes += here;
    d.rows += here > 0;
  }
  for (size_t i = 0; i < a.scales.size(); ++i) d.scales += a.scales[i] != b.scales[i];
  for (size_t i = 0; i < a.zeros.size(); ++i) d.zeros += a.zeros[i] != b.zeros[i];
  return d;
}

void check_same_as_cpu(const char* scheme_name, int64_t rows, int64_t cols, int64_t tokens, bool act_order, int dead,
                       int64_t block = 128) {
  REQUIRE_GPU();
  SCOPED_TRACE(std::string(scheme_name) + " " + std::to_string(rows) + "x" + std::to_string(cols) + (act_order ? " act-order" : "") +
               " block " + std::to_string(block));
  const Scheme scheme = ok(Scheme::parse(scheme_name));
  const std::vector<float> x = make_inputs(tokens, cols, dead, static_cast<uint64_t>(rows * 7 + cols));
  const std::vector<float> w = cuda_bench::random_normal(static_cast<size_t>(rows * cols), static_cast<uint64_t>(rows + cols), 0.02f);
  // The Hessian sum through the GPU path (checked against the host sum in its own test).
  cuda::Context& ctx = context();
  cuda::DeviceHessian h = ok(cuda::hessian_create(cols));
  auto xd = ok(cuda::DeviceBuffer::upload(x.data(), x.size() * 4));
  ASSERT_TRUE(cuda::hessian_accumulate(ctx, h, xd.data(), tokens, cuda::InputType::f32).is_ok());
  std::vector<double> s(static_cast<size_t>(cols * cols));
  ASSERT_TRUE(cuda::hessian_download(ctx, h, s.data()).is_ok());

  GptqOptions opt;
  opt.act_order = act_order;
  opt.block_size = block;
  const GptqResult cpu = ok(gptq_quantize(scheme, w.data(), rows, cols, s.data(), tokens, opt));
  const GptqResult gpu = ok(cuda::gptq_quantize(ctx, scheme, w.data(), rows, cols, h, opt));
  ASSERT_EQ(gpu.q.codes.size(), cpu.q.codes.size());
  ASSERT_EQ(gpu.q.scales.size(), cpu.q.scales.size());
  ASSERT_EQ(gpu.q.zeros.size(), cpu.q.zeros.size());
  EXPECT_EQ(gpu.damp_used, cpu.damp_used);
  const Diff d = compare(cpu.q, gpu.q);
  std::printf("[gptq-equality] %s %lldx%lld%s block %lld: %lld of %lld codes differ (%lld rows, %lld not to a neighbour), "
              "%lld scales, %lld zeros differ; proxy loss cpu %.9g gpu %.9g\n",
              scheme_name, static_cast<long long>(rows), static_cast<long long>(cols), act_order ? " act-order" : "",
              static_cast<long long>(block), static_cast<long long>(d.codes), static_cast<long long>(rows * cols),
              static_cast<long long>(d.rows), static_cast<long long>(d.far), static_cast<long long>(d.scales),
              static_cast<long long>(d.zeros), cpu.proxy_loss, gpu.proxy_loss);
  const int64_t allowed_rows = std::max<int64_t>(1, rows / 1000);
  EXPECT_LE(d.rows, allowed_rows) << "rows with a differing code: " << d.rows << ", allowed " << allowed_rows;
  EXPECT_EQ(d.far, 0) << "differing codes must be neighbours";
  // A row's scales change only after it diverged, and then only in later groups.
  EXPECT_LE(d.scales, d.rows * scheme_plane_sizes(scheme, 1, cols).scales) << "scale bytes differ in rows that did not diverge";
  EXPECT_NEAR(gpu.proxy_loss, cpu.proxy_loss, 1e-6 * cpu.proxy_loss + 1e-12);
}

}  // namespace

TEST(CudaGptq, HessianMatchesHostDoubleSum) {
  REQUIRE_GPU();
  const int64_t tokens = 700, cols = 192;  // 700: not a multiple of any chunk
  const std::vector<float> x = make_inputs(tokens, cols, 2, 5);
  const std::vector<double> ref = host_sum_xxt(x, tokens, cols);
  cuda::Context& ctx = context();
  for (cuda::InputType type : {cuda::InputType::f32, cuda::InputType::bf16, cuda::InputType::f16}) {
    // Inputs rounded to the type first, so the reference sees the same values.
    std::vector<float> xr = x;
    std::vector<uint16_t> x16(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      if (type == cuda::InputType::bf16) {
        x16[i] = f32_to_bf16(x[i]);
        xr[i] = bf16_to_f32(x16[i]);
      } else if (type == cuda::InputType::f16) {
        x16[i] = f32_to_f16(x[i]);
        xr[i] = f16_to_f32(x16[i]);
      }
    }
    const std::vector<double> want = type == cuda::InputType::f32 ? ref : host_sum_xxt(xr, tokens, cols);
    cuda::DeviceHessian h = ok(cuda::hessian_create(cols));
    cuda::DeviceBuffer xd = type == cuda::InputType::f32 ? ok(cuda::DeviceBuffer::upload(x.data(), x.size() * 4))
                                                         : ok(cuda::DeviceBuffer::upload(x16.data(), x16.size() * 2));
    const size_t elem = type == cuda::InputType::f32 ? 4 : 2;
    // Two calls (300 + 400 tokens) accumulate like one.
    ASSERT_TRUE(cuda::hessian_accumulate(ctx, h, xd.data(), 300, type).is_ok());
    ASSERT_TRUE(cuda::hessian_accumulate(ctx, h, static_cast<const uint8_t*>(xd.data()) + 300 * cols * elem, 400, type).is_ok());
    EXPECT_EQ(h.tokens, tokens);
    std::vector<double> got(static_cast<size_t>(cols * cols));
    ASSERT_TRUE(cuda::hessian_download(ctx, h, got.data()).is_ok());
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      num += (got[i] - want[i]) * (got[i] - want[i]);
      den += want[i] * want[i];
    }
    // Products of f32 values are exact in f64; only the sums round (<= tokens * 2^-53 relative).
    const double rel = std::sqrt(num / den), allowed = static_cast<double>(tokens) * 0x1p-53;
    EXPECT_LE(rel, allowed) << "input type " << static_cast<int>(type) << ": relative error " << rel << ", allowed " << allowed;
  }
}

TEST(CudaGptq, SameAsCpuInt4Group128Sym) { check_same_as_cpu("int4-g128-sym", 256, 1024, 2048, false, 0); }
TEST(CudaGptq, SameAsCpuInt4Group128AsymActOrderDeadInputs) { check_same_as_cpu("int4-g128-asym", 256, 1024, 2048, true, 5); }
// Groups narrower than the block (group parameters taken mid-block) and a block width that is no
// multiple of 32 or of the group.
TEST(CudaGptq, SameAsCpuInt3Group32AsymBlock48) { check_same_as_cpu("int3-g32-asym", 160, 512, 1024, false, 3, 48); }
// Groups wider than the block, and 256 codes (two probes per group of 128).
TEST(CudaGptq, SameAsCpuInt8Group128SymBlock64) { check_same_as_cpu("int8-g128-sym", 128, 768, 1024, false, 0, 64); }
TEST(CudaGptq, SameAsCpuInt4PerChannelActOrder) { check_same_as_cpu("int4-ch-asym", 200, 640, 1024, true, 2, 64); }

TEST(CudaGptq, RejectsBadOptionsAndShapes) {
  REQUIRE_GPU();
  const Scheme scheme = ok(Scheme::parse("int4-g128-sym"));
  const int64_t rows = 16, cols = 256;
  std::vector<float> w(static_cast<size_t>(rows * cols), 0.1f);
  std::vector<double> s(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t i = 0; i < cols; ++i) s[static_cast<size_t>(i * cols + i)] = 1.0;
  GptqOptions opt;
  opt.block_size = 256;
  auto r = cuda::gptq_quantize(context(), scheme, w.data(), rows, cols, s.data(), 10, opt);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("block size"), std::string::npos) << r.status().to_string();
  opt.block_size = 128;
  r = cuda::gptq_quantize(context(), scheme, w.data(), rows, cols, s.data(), 0, opt);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("tokens"), std::string::npos) << r.status().to_string();
  w[7] = NAN;
  r = cuda::gptq_quantize(context(), scheme, w.data(), rows, cols, s.data(), 10, opt);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("non-finite"), std::string::npos) << r.status().to_string();
  w[7] = 0.1f;
  // CPU-only features are refused, never silently approximated.
  opt.mse_clip = true;
  r = cuda::gptq_quantize(context(), scheme, w.data(), rows, cols, s.data(), 10, opt);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("mse_clip"), std::string::npos) << r.status().to_string();
  opt.mse_clip = false;
  r = cuda::gptq_quantize(context(), ok(Scheme::parse("q4_k")), w.data(), rows, cols, s.data(), 10, opt);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), ErrorCode::unsupported) << r.status().to_string();
  cuda::DeviceHessian h = ok(cuda::hessian_create(128));
  h.tokens = 10;
  r = cuda::gptq_quantize(context(), scheme, w.data(), rows, cols, h, opt);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("columns"), std::string::npos) << r.status().to_string();
  // A zero Hessian (every input dead) is the identity after the dead-input rule: it works.
  std::vector<double> zero(static_cast<size_t>(cols * cols), 0.0);
  auto z = cuda::gptq_quantize(context(), scheme, w.data(), rows, cols, zero.data(), 10, opt);
  ASSERT_TRUE(z.has_value()) << z.status().to_string();
}
