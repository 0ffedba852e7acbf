// CUDA backend correctness: every kernel against a reference computed from the format table's
// dequantized weights. Skips (with a message) when no CUDA device is present.
//
// Reference GEMMs run in FP32 on the GPU (cuBLAS, pedantic math: no TF32) on the format table's
// dequantized weights and the same (upcast) activations. Tolerances:
//  - fp16 outputs: relative Frobenius error <= 1e-3 (the issue's bound: weights rounded once to
//    fp16, 2^-11 relative, plus the fp16 output rounding; f32 accumulation).
//  - bf16 outputs: <= 8e-3 = 4 * 2^-9 (bf16 output rounding alone is up to 2^-9 per element,
//    and the bf16 weight scales add one more rounding of the same size).
//  - W8A8: int32 accumulators exact (against cuBLAS int8 GEMM and CPU int64 dot products); the
//    bf16 epilogue within one bf16 rounding (2^-8 relative per element) of x_scale * w_scale * acc.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cuda_bench_util.h"
#include "qforge/backend.h"
#include "qforge/cuda.h"
#include "qforge/dtype.h"

using namespace qforge;
using qforge::cuda_bench::quantize_rows_parallel;
using qforge::cuda_bench::random_normal;

namespace {

#define REQUIRE_GPU()                                                        \
  do {                                                                       \
    if (!cuda::available()) GTEST_SKIP() << "no CUDA device: GPU test skipped"; \
  } while (0)

template <class T>
T ok(Expected<T> e) {
  EXPECT_TRUE(e.has_value()) << e.status().to_string();
  if (!e.has_value()) std::abort();
  return std::move(e).value();
}
#define ASSERT_OK(expr)                                   \
  do {                                                    \
    const ::qforge::Status s_ = (expr);                   \
    ASSERT_TRUE(s_.is_ok()) << #expr << ": " << s_.to_string(); \
  } while (0)

std::vector<float> dequantize_parallel(const QuantizedTensor& q) {
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols));
  if (q.scheme.granularity == Granularity::tensor || q.rows < 64) {
    EXPECT_TRUE(dequantize(q, out.data()).is_ok());
    return out;
  }
  const int threads = 16;
  const int64_t per = (q.rows + threads - 1) / threads;
  const size_t row_codes = q.codes.size() / static_cast<size_t>(q.rows);
  const size_t row_scales = q.scales.size() / static_cast<size_t>(q.rows);
  const size_t row_zeros = q.zeros.size() / static_cast<size_t>(q.rows);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const int64_t r0 = t * per, r1 = std::min(q.rows, r0 + per);
      if (r0 >= r1) return;
      QuantizedTensor part;
      part.scheme = q.scheme;
      part.rows = r1 - r0;
      part.cols = q.cols;
      auto slice = [&](const std::vector<uint8_t>& v, size_t row) {
        return std::vector<uint8_t>(v.begin() + static_cast<std::ptrdiff_t>(r0 * row), v.begin() + static_cast<std::ptrdiff_t>(r1 * row));
      };
      part.codes = slice(q.codes, row_codes);
      part.scales = slice(q.scales, row_scales);
      part.zeros = slice(q.zeros, row_zeros);
      if (!dequantize(part, out.data() + r0 * q.cols).is_ok()) std::abort();
    });
  }
  for (auto& th : pool) th.join();
  return out;
}

struct Gpu {
  std::unique_ptr<cuda::Context> ctx;
  cublasHandle_t blas = nullptr;
  Gpu() {
    ctx = ok(cuda::Context::create(0));
    cublasCreate(&blas);
    cublasSetMathMode(blas, CUBLAS_PEDANTIC_MATH);
  }
  ~Gpu() { cublasDestroy(blas); }
  // Y[m, n] = X[m, k] W[n, k]^T in FP32 on the device.
  std::vector<float> ref_gemm(const cuda::DeviceBuffer& w32, const std::vector<float>& x, int64_t m, int64_t n, int64_t k) {
    auto xd = ok(cuda::DeviceBuffer::upload(x.data(), x.size() * 4));
    auto yd = ok(cuda::DeviceBuffer::allocate(static_cast<size_t>(m * n) * 4));
    const float one = 1.f, zero = 0.f;
    EXPECT_EQ(cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &one,
                          static_cast<const float*>(w32.data()), static_cast<int>(k), static_cast<const float*>(xd.data()),
                          static_cast<int>(k), &zero, static_cast<float*>(yd.data()), static_cast<int>(n)),
              CUBLAS_STATUS_SUCCESS);
    std::vector<float> y(static_cast<size_t>(m * n));
    EXPECT_TRUE(yd.download(y.data(), y.size() * 4).is_ok());
    return y;
  }
};

Gpu& gpu() {
  static Gpu g;
  return g;
}

float act_to_f32(uint16_t v, cuda::ActType t) { return t == cuda::ActType::bf16 ? bf16_to_f32(v) : f16_to_f32(v); }
uint16_t f32_to_act(float v, cuda::ActType t) { return t == cuda::ActType::bf16 ? f32_to_bf16(v) : f32_to_f16(v); }

// Relative Frobenius error; every output must have been written (poisoned with NaN before).
double rel_error(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (static_cast<double>(got[i]) - ref[i]) * (static_cast<double>(got[i]) - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

void check_w4a16(int64_t n, int64_t k, const char* scheme, cuda::ActType act, const std::vector<int64_t>& ms) {
  SCOPED_TRACE(std::string(scheme) + " " + cuda::act_type_name(act) + " N=" + std::to_string(n) + " K=" + std::to_string(k));
  Gpu& g = gpu();
  std::vector<float> w = random_normal(static_cast<size_t>(n * k), static_cast<uint64_t>(n * 31 + k), 0.05f);
  QuantizedTensor q = quantize_rows_parallel(ok(Scheme::parse(scheme)), w.data(), n, k);
  const std::vector<float> wd = dequantize_parallel(q);
  auto w32 = ok(cuda::DeviceBuffer::upload(wd.data(), wd.size() * 4));
  cuda::W4A16Weights dw = ok(cuda::w4a16_upload(ok(cuda::w4a16_repack(q, act))));
  const double tol = act == cuda::ActType::f16 ? 1e-3 : 8e-3;

  // The unpacked weights must equal the table's values rounded to the activation type
  // (f16: exact, the product (q - z) * s is exact in f32 and rounds once; bf16: the scale is
  // rounded to bf16 first, so allow 2 bf16 units).
  {
    auto dd = ok(cuda::DeviceBuffer::allocate(static_cast<size_t>(n * k) * 2));
    ASSERT_OK(cuda::w4a16_dequantize(*g.ctx, dw, dd.data()));
    std::vector<uint16_t> h(static_cast<size_t>(n * k));
    ASSERT_OK(dd.download(h.data(), h.size() * 2));
    size_t bad = 0;
    for (size_t i = 0; i < h.size(); ++i) {
      const float got = act_to_f32(h[i], act), want = wd[i];
      const float allowed = act == cuda::ActType::f16 ? std::fabs(want) * 0x1p-11f : std::fabs(want) * 0x1p-7f;
      if (!(std::fabs(got - want) <= allowed)) {
        if (bad++ < 3) ADD_FAILURE() << "dequantized weight " << i << ": got " << got << ", table " << want << ", allowed " << allowed;
      }
    }
    ASSERT_EQ(bad, 0u);
  }
  for (int64_t m : ms) {
    std::vector<float> x = random_normal(static_cast<size_t>(m * k), static_cast<uint64_t>(m + 17));
    std::vector<uint16_t> xh(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      xh[i] = f32_to_act(x[i], act);
      x[i] = act_to_f32(xh[i], act);
    }
    const std::vector<float> ref = g.ref_gemm(w32, x, m, n, k);
    auto xd = ok(cuda::DeviceBuffer::upload(xh.data(), xh.size() * 2));
    auto yd = ok(cuda::DeviceBuffer::allocate(static_cast<size_t>(m * n) * 2));
    for (cuda::W4A16Path path : {cuda::W4A16Path::fused, cuda::W4A16Path::dequant_gemm, cuda::W4A16Path::gemv}) {
      if (path == cuda::W4A16Path::fused && m > 1024) continue;
      if (path == cuda::W4A16Path::gemv && m > 16) continue;
      ASSERT_OK(yd.fill_bytes(0xFF));  // NaN in f16 and bf16
      ASSERT_OK(cuda::w4a16_gemm(*g.ctx, dw, xd.data(), yd.data(), m, path));
      ASSERT_OK(g.ctx->synchronize());
      std::vector<uint16_t> yh(static_cast<size_t>(m * n));
      ASSERT_OK(yd.download(yh.data(), yh.size() * 2));
      std::vector<float> y(yh.size());
      for (size_t i = 0; i < y.size(); ++i) y[i] = act_to_f32(yh[i], act);
      const double err = rel_error(y, ref);
      const char* name = path == cuda::W4A16Path::fused ? " fused" : path == cuda::W4A16Path::gemv ? " gemv" : " dequant+gemm";
      EXPECT_LE(err, tol) << "M=" << m << name << ": relative error " << err
                          << ", allowed " << tol;
    }
  }
}

}  // namespace

TEST(CudaBackend, RegisteredWithTheBackendRegistry) {
  cuda::register_backend();
  const BackendInfo info = find_backend("cuda");
  EXPECT_EQ(info.name, "cuda");
  EXPECT_EQ(info.available, cuda::available()) << info.detail;
  if (!info.available) GTEST_SKIP() << "no CUDA device: " << info.detail;
  EXPECT_FALSE(info.device.empty());
}

TEST(CudaW4A16, RejectsShapesItCannotTile) {
  std::vector<float> w = random_normal(20 * 256, 1);
  QuantizedTensor q = ok(quantize(ok(Scheme::parse("int4-g128-sym")), w.data(), 20, 256));
  auto r = cuda::w4a16_repack(q, cuda::ActType::f16);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("rows % 16"), std::string::npos) << r.status().to_string();
  QuantizedTensor q64 = ok(quantize(ok(Scheme::parse("int4-g64-sym")), w.data(), 16, 256));
  EXPECT_FALSE(cuda::w4a16_repack(q64, cuda::ActType::f16).has_value());
  QuantizedTensor q8 = ok(quantize(ok(Scheme::parse("int8-ch-sym")), w.data(), 20, 256));
  EXPECT_FALSE(cuda::w8a8_upload(ok(quantize(ok(Scheme::parse("int8-ch-sym")), w.data(), 16, 200))).has_value());
  EXPECT_FALSE(cuda::w8a8_upload(q).has_value());  // wrong scheme
}

TEST(CudaW4A16, SmallShapesAllPaths) {
  REQUIRE_GPU();
  // N not a multiple of the 128-row block, K not a multiple of the 256-column pipeline step.
  check_w4a16(48, 384, "int4-g128-sym", cuda::ActType::f16, {1, 2, 7, 9, 17, 33, 65, 130});
  check_w4a16(144, 640, "int4-g128-asym", cuda::ActType::bf16, {1, 5, 16, 40, 64, 300});
}

TEST(CudaW4A16, IssueShapesF16) {
  REQUIRE_GPU();
  check_w4a16(4096, 4096, "int4-g128-sym", cuda::ActType::f16, {1, 4, 16, 64, 256});
  check_w4a16(11008, 4096, "int4-g128-asym", cuda::ActType::f16, {1, 16, 64, 1024});
  check_w4a16(4096, 11008, "int4-g128-asym", cuda::ActType::f16, {1, 4, 33, 256});
  check_w4a16(28672, 8192, "int4-g128-asym", cuda::ActType::f16, {1, 16, 64, 4096});
}

TEST(CudaW4A16, IssueShapesBF16) {
  REQUIRE_GPU();
  check_w4a16(4096, 11008, "int4-g128-sym", cuda::ActType::bf16, {1, 16, 64, 1024});
  check_w4a16(28672, 8192, "int4-g128-sym", cuda::ActType::bf16, {1, 4, 256});
}

// Both placements of the group scale in the decode kernel (M <= 16), whichever is the default.
TEST(CudaW4A16, BothScalePlacementsAtDecodeSizes) {
  REQUIRE_GPU();
  for (int late : {1, 2}) {
    SCOPED_TRACE(late == 2 ? "scale after the mma" : "scale before the mma");
    cuda::w4a16_set_tuning({0, late});
    check_w4a16(48, 384, "int4-g128-sym", cuda::ActType::f16, {1, 2, 7, 9, 16});
    check_w4a16(144, 640, "int4-g128-asym", cuda::ActType::bf16, {1, 5, 16});
    check_w4a16(4096, 11008, "int4-g128-asym", cuda::ActType::f16, {1, 4, 16});
    check_w4a16(11008, 4096, "int4-g128-sym", cuda::ActType::bf16, {1, 16});
  }
  cuda::w4a16_set_tuning({});
}

// The decode kernels (gemv path): the CUDA-core GEMV (M <= 8) and the tensor-core one (M <= 16),
// each forced: sym and zero-point, f16 and bf16, odd row-tile counts (N / 16 odd), K not a
// multiple of the 4-tile pipeline step, every K split (in-block for the CUDA-core kernel, K
// chunks across blocks for the tensor-core one, including uneven chunks).
TEST(CudaW4A16, GemvDecodeSizes) {
  REQUIRE_GPU();
  // (math, row tiles per warp): CUDA cores; tensor cores with one and with two row tiles per warp.
  for (const auto& [tc, rpw] : {std::pair{1, 0}, std::pair{2, 1}, std::pair{2, 2}}) {
    SCOPED_TRACE(tc == 2 ? "tensor cores, row tiles per warp " + std::to_string(rpw) : std::string("CUDA cores"));
    cuda::w4a16_set_tuning({0, 0, 0, 0, tc, rpw});
    check_w4a16(272, 384, "int4-g128-sym", cuda::ActType::f16, {1, 2, 3, 4, 8});
    check_w4a16(272, 384, "int4-g128-asym", cuda::ActType::f16, {1, 2, 3, 4, 8});
    check_w4a16(400, 640, "int4-g128-asym", cuda::ActType::bf16, {1, 2, 3, 4, 5});
    check_w4a16(400, 640, "int4-g128-sym", cuda::ActType::bf16, {1, 4, 8});
    for (int splits : {1, 2, 3, 4, 8}) {
      SCOPED_TRACE("gemv splits " + std::to_string(splits));
      cuda::w4a16_set_tuning({0, 0, 0, splits, tc, rpw});
      check_w4a16(1040, 2304, "int4-g128-asym", cuda::ActType::f16, {1, 3, 4});
      check_w4a16(208, 1152, "int4-g128-sym", cuda::ActType::bf16, {1, 2, 4});
      if (tc == 2) {
        check_w4a16(1040, 2304, "int4-g128-asym", cuda::ActType::bf16, {8, 11, 16});
        check_w4a16(208, 1152, "int4-g128-sym", cuda::ActType::f16, {9, 16});
      }
    }
  }
  cuda::w4a16_set_tuning({});
  check_w4a16(272, 384, "int4-g128-sym", cuda::ActType::f16, {9, 12, 15, 16});
  check_w4a16(400, 640, "int4-g128-asym", cuda::ActType::bf16, {9, 13, 16});
  cuda::w4a16_set_tuning({});
  // Out of its range it refuses instead of computing garbage.
  Gpu& g = gpu();
  std::vector<float> w = random_normal(16 * 128, 3);
  QuantizedTensor q = ok(quantize(ok(Scheme::parse("int4-g128-sym")), w.data(), 16, 128));
  cuda::W4A16Weights dw = ok(cuda::w4a16_upload(ok(cuda::w4a16_repack(q, cuda::ActType::f16))));
  auto xd = ok(cuda::DeviceBuffer::allocate(17 * 128 * 2));
  auto yd = ok(cuda::DeviceBuffer::allocate(17 * 16 * 2));
  EXPECT_FALSE(cuda::w4a16_gemm(*g.ctx, dw, xd.data(), yd.data(), 17, cuda::W4A16Path::gemv).is_ok());
  cuda::w4a16_set_tuning({0, 0, 0, 0, 1});  // CUDA-core math holds at most 8 tokens
  EXPECT_FALSE(cuda::w4a16_gemm(*g.ctx, dw, xd.data(), yd.data(), 9, cuda::W4A16Path::gemv).is_ok());
  cuda::w4a16_set_tuning({});
}

namespace {
void check_w8a8(int64_t n, int64_t k, const std::vector<int64_t>& ms) {
  SCOPED_TRACE("w8a8 N=" + std::to_string(n) + " K=" + std::to_string(k));
  Gpu& g = gpu();
  std::vector<float> w = random_normal(static_cast<size_t>(n * k), static_cast<uint64_t>(n * 7 + k), 0.05f);
  QuantizedTensor q = quantize_rows_parallel(ok(Scheme::parse("int8-ch-sym")), w.data(), n, k);
  cuda::W8A8Weights dw = ok(cuda::w8a8_upload(q));
  std::vector<int8_t> wq(q.codes.size());
  for (size_t i = 0; i < wq.size(); ++i) wq[i] = static_cast<int8_t>(static_cast<int>(q.codes[i]) - 128);
  std::vector<float> ws(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    uint16_t h;
    std::memcpy(&h, q.scales.data() + r * 2, 2);
    ws[static_cast<size_t>(r)] = f16_to_f32(h);
  }
  for (int64_t m : ms) {
    std::vector<float> x = random_normal(static_cast<size_t>(m * k), static_cast<uint64_t>(m + 3));
    std::vector<uint16_t> xb(x.size());
    for (size_t i = 0; i < x.size(); ++i) xb[i] = f32_to_bf16(x[i]);
    auto xd = ok(cuda::DeviceBuffer::upload(xb.data(), xb.size() * 2));
    auto xq = ok(cuda::DeviceBuffer::allocate(static_cast<size_t>(m * k)));
    auto xs = ok(cuda::DeviceBuffer::allocate(static_cast<size_t>(m) * 4));
    ASSERT_OK(cuda::quantize_rows_int8(*g.ctx, xd.data(), m, k, xq.data(), xs.data()));
    std::vector<int8_t> hq(static_cast<size_t>(m * k));
    std::vector<float> hs(static_cast<size_t>(m));
    ASSERT_OK(g.ctx->synchronize());
    ASSERT_OK(xq.download(hq.data(), hq.size()));
    ASSERT_OK(xs.download(hs.data(), hs.size() * 4));
    // Activation quantization: scale = absmax / 127, codes = round(x / scale) (within one code
    // of the division, the kernel multiplies by the reciprocal).
    for (int64_t r = 0; r < m; ++r) {
      float amax = 0;
      for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(bf16_to_f32(xb[static_cast<size_t>(r * k + c)])));
      ASSERT_EQ(hs[static_cast<size_t>(r)], amax / 127.f) << "row " << r;
      for (int64_t c = 0; c < k; ++c) {
        const float want = std::nearbyint(bf16_to_f32(xb[static_cast<size_t>(r * k + c)]) / hs[static_cast<size_t>(r)]);
        ASSERT_LE(std::fabs(hq[static_cast<size_t>(r * k + c)] - want), 1.f) << "row " << r << " col " << c;
      }
    }
    // int32 accumulators: exact against cuBLAS int8 GEMM on every element and CPU int64 sums on a sample.
    auto y32 = ok(cuda::DeviceBuffer::allocate(static_cast<size_t>(m * n) * 4));
    auto r32 = ok(cuda::DeviceBuffer::allocate(static_cast<size_t>(m * n) * 4));
    ASSERT_OK(y32.fill_bytes(0x7F));
    ASSERT_OK(cuda::w8a8_gemm_int32(*g.ctx, dw, xq.data(), y32.data(), m));
    ASSERT_OK(g.ctx->synchronize());
    std::vector<int32_t> acc(static_cast<size_t>(m * n));
    ASSERT_OK(y32.download(acc.data(), acc.size() * 4));
    const int32_t one = 1, zero = 0;
    if (m % 4 == 0 && k % 4 == 0 &&
        cublasGemmEx(g.blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &one, dw.q.data(),
                     CUDA_R_8I, static_cast<int>(k), xq.data(), CUDA_R_8I, static_cast<int>(k), &zero, r32.data(), CUDA_R_32I,
                     static_cast<int>(n), CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS) {
      cudaDeviceSynchronize();
      std::vector<int32_t> ref(acc.size());
      ASSERT_OK(r32.download(ref.data(), ref.size() * 4));
      size_t mismatches = 0;
      for (size_t i = 0; i < ref.size(); ++i) mismatches += acc[i] != ref[i];
      ASSERT_EQ(mismatches, 0u) << "int32 accumulators differ from cuBLAS at M=" << m;
    }
    std::mt19937 rng(static_cast<unsigned>(m));
    for (int s = 0; s < 512; ++s) {
      const int64_t r = static_cast<int64_t>(rng() % static_cast<unsigned>(m)), c = static_cast<int64_t>(rng() % static_cast<unsigned>(n));
      int64_t sum = 0;
      for (int64_t i = 0; i < k; ++i) sum += int64_t{hq[static_cast<size_t>(r * k + i)]} * wq[static_cast<size_t>(c * k + i)];
      ASSERT_EQ(acc[static_cast<size_t>(r * n + c)], sum) << "M=" << m << " row " << r << " col " << c;
    }
    // Dequantizing epilogue, on both paths (cuBLAS needs N % 4 == 0).
    for (cuda::W8A8Path path : {cuda::W8A8Path::fused, cuda::W8A8Path::cublas}) {
    if (path == cuda::W8A8Path::cublas && n % 4) continue;
    SCOPED_TRACE(path == cuda::W8A8Path::fused ? "fused epilogue" : "cuBLAS + dequant pass");
    auto yb = ok(cuda::DeviceBuffer::allocate(static_cast<size_t>(m * n) * 2));
    ASSERT_OK(yb.fill_bytes(0xFF));
    ASSERT_OK(cuda::w8a8_gemm(*g.ctx, dw, xd.data(), yb.data(), m, path));
    ASSERT_OK(g.ctx->synchronize());
    std::vector<uint16_t> y(static_cast<size_t>(m * n));
    ASSERT_OK(yb.download(y.data(), y.size() * 2));
    size_t bad = 0;
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) {
        const size_t i = static_cast<size_t>(r * n + c);
        const float want = static_cast<float>(acc[i]) * hs[static_cast<size_t>(r)] * ws[static_cast<size_t>(c)];
        const float got = bf16_to_f32(y[i]);
        if (!(std::fabs(got - want) <= std::fabs(want) * 0x1p-8f + 1e-30f) && bad++ < 3)
          ADD_FAILURE() << "M=" << m << " (" << r << ", " << c << "): got " << got << ", want " << want;
      }
    ASSERT_EQ(bad, 0u);
    }
  }
}
}  // namespace

TEST(CudaW8A8, SmallAndOddShapes) {
  REQUIRE_GPU();
  check_w8a8(130, 192, {1, 3, 64, 129});
  check_w8a8(132, 192, {1, 3, 64, 129});  // N % 4 == 0: the cuBLAS path too
}

TEST(CudaW8A8, IssueShapes) {
  REQUIRE_GPU();
  check_w8a8(4096, 4096, {1, 16, 256});
  check_w8a8(28672, 8192, {4, 64});
  check_w8a8(4096, 11008, {1024});
}

namespace {
void check_fp8(int64_t n, int64_t k, const char* scheme, const std::vector<int64_t>& ms) {
  SCOPED_TRACE(std::string(scheme) + " N=" + std::to_string(n) + " K=" + std::to_string(k));
  Gpu& g = gpu();
  std::vector<float> w = random_normal(static_cast<size_t>(n * k), static_cast<uint64_t>(n * 5 + k), 0.05f);
  QuantizedTensor q = quantize_rows_parallel(ok(Scheme::parse(scheme)), w.data(), n, k);
  const bool per_row = q.scheme.granularity == Granularity::channel;
  const std::vector<float> wd = dequantize_parallel(q);
  auto w32 = ok(cuda::DeviceBuffer::upload(wd.data(), wd.size() * 4));
  cuda::Fp8Weights dw = ok(cuda::fp8_upload(q));
  for (int64_t m : ms) {
    std::vector<float> x = random_normal(static_cast<size_t>(m * k), static_cast<uint64_t>(m + 9));
    std::vector<uint16_t> xb(x.size());
    for (size_t i = 0; i < x.size(); ++i) xb[i] = f32_to_bf16(x[i]);
    // The activations as the kernel quantizes them: E4M3(x / s) * s, s = absmax / 448.
    std::vector<float> xr(x.size());
    float tensor_amax = 0;
    for (uint16_t v : xb) tensor_amax = std::max(tensor_amax, std::fabs(bf16_to_f32(v)));
    for (int64_t r = 0; r < m; ++r) {
      float amax = tensor_amax;
      if (per_row) {
        amax = 0;
        for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(bf16_to_f32(xb[static_cast<size_t>(r * k + c)])));
      }
      const float s = amax / 448.f, inv = s > 0 ? 1.f / s : 0.f;
      for (int64_t c = 0; c < k; ++c) {
        const size_t i = static_cast<size_t>(r * k + c);
        xr[i] = f8_e4m3fn_to_f32(f32_to_f8_e4m3fn(bf16_to_f32(xb[i]) * inv)) * s;
      }
    }
    const std::vector<float> ref = g.ref_gemm(w32, xr, m, n, k);
    auto xd = ok(cuda::DeviceBuffer::upload(xb.data(), xb.size() * 2));
    auto yd = ok(cuda::DeviceBuffer::allocate(static_cast<size_t>(m * n) * 2));
    ASSERT_OK(yd.fill_bytes(0xFF));
    const Status st = cuda::fp8_gemm(*g.ctx, dw, xd.data(), yd.data(), m);
    if (!st.is_ok() && st.code() == ErrorCode::unsupported) GTEST_SKIP() << st.to_string();
    ASSERT_OK(st);
    ASSERT_OK(g.ctx->synchronize());
    std::vector<uint16_t> yh(static_cast<size_t>(m * n));
    ASSERT_OK(yd.download(yh.data(), yh.size() * 2));
    std::vector<float> y(yh.size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = bf16_to_f32(yh[i]);
    const double err = rel_error(y, ref), tol = 8e-3;
    EXPECT_LE(err, tol) << "M=" << m << ": relative error " << err << ", allowed " << tol;
  }
}
}  // namespace

TEST(CudaFp8, PerRowAndPerTensor) {
  REQUIRE_GPU();
  check_fp8(256, 512, "fp8-e4m3-ch", {1, 16, 100});
  check_fp8(256, 512, "fp8-e4m3-tensor", {1, 16, 100});
  check_fp8(28672, 8192, "fp8-e4m3-ch", {16, 4096});
}

TEST(CudaDequant, MatchesFormatTable) {
  REQUIRE_GPU();
  Gpu& g = gpu();
  const int64_t rows = 64, cols = 512;
  std::vector<float> w = random_normal(static_cast<size_t>(rows * cols), 99, 0.1f);
  int tested = 0;
  for (const char* name : {"int4-g128-sym", "int4-g128-asym", "int8-ch-sym", "int3-g64-asym", "int8-tensor-sym", "int2-g32-sym",
                           "q4_0", "q8_0", "q4_k", "q6_k", "nf4"}) {
    auto scheme = Scheme::parse(name);
    ASSERT_TRUE(scheme.has_value()) << name << ": " << scheme.status().to_string();
    QuantizedTensor q = ok(quantize(*scheme, w.data(), rows, cols));
    auto dq = ok(cuda::upload(q));
    auto out = ok(cuda::DeviceBuffer::allocate(static_cast<size_t>(rows * cols) * 2));
    if (!cuda::can_dequantize(*scheme)) {
      const Status st = cuda::dequantize(*g.ctx, dq, out.data(), cuda::ActType::f16);
      EXPECT_EQ(st.code(), ErrorCode::unsupported) << name;
      continue;
    }
    std::vector<float> ref(static_cast<size_t>(rows * cols));
    ASSERT_OK(dequantize(q, ref.data()));
    for (cuda::ActType t : {cuda::ActType::f16, cuda::ActType::bf16}) {
      ASSERT_OK(out.fill_bytes(0xFF));
      ASSERT_OK(cuda::dequantize(*g.ctx, dq, out.data(), t));
      ASSERT_OK(g.ctx->synchronize());
      std::vector<uint16_t> h(ref.size());
      ASSERT_OK(out.download(h.data(), h.size() * 2));
      for (size_t i = 0; i < h.size(); ++i) {
        const float want = act_to_f32(f32_to_act(ref[i], t), t);
        const float got = act_to_f32(h[i], t);
        const float ulp = std::fabs(want) * (t == cuda::ActType::f16 ? 0x1p-10f : 0x1p-7f) + 1e-7f;
        ASSERT_LE(std::fabs(got - want), ulp) << name << " " << cuda::act_type_name(t) << " element " << i << ": got " << got
                                              << ", table " << ref[i];
      }
    }
    ++tested;
  }
  EXPECT_EQ(tested, 10);
}
