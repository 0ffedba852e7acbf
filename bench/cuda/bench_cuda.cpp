// qforge CUDA GEMM benchmark: one table of W4A16 / W8A8 / FP8 against cuBLAS on the shapes of
// a 7B-70B decoder layer. Usage: bench_cuda [--quick] [--reps N] [--w4a16-variants] [--w4a16-gemv] [--shape NxK]
//
// Method (docs/BENCHMARKS.md, "CUDA"): each time is the median of >= 100 launches, each timed
// with its own pair of CUDA events after 10 warm-up launches; weights and activations rotate
// over enough copies that every launch reads more than twice the L2 size of fresh data.
// TB/s counts the bytes a launch must move at least (weights + scales + activations + output).
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda_bench_util.h"
#include "qforge/cuda.h"
#include "qforge/dtype.h"

using namespace qforge;
using namespace qforge::cuda_bench;

namespace {

#define BENCH_BLAS(expr)                                                                   \
  do {                                                                                     \
    cublasStatus_t s_ = (expr);                                                            \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                     \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cublasGetStatusName(s_)); \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)

template <class T>
T must(Expected<T> e, const char* what) {
  if (!e.has_value()) {
    std::fprintf(stderr, "%s: %s\n", what, e.status().to_string().c_str());
    std::exit(2);
  }
  return std::move(e).value();
}
void must(const Status& s, const char* what) {
  if (!s.is_ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.to_string().c_str());
    std::exit(2);
  }
}

int g_reps = 100;
size_t g_l2 = 50u << 20;

// Median time in microseconds of fn(i) over g_reps launches (i = launch index, for rotation).
double time_us(cudaStream_t s, const std::function<void(int)>& fn) {
  for (int i = 0; i < 10; ++i) fn(i);
  BENCH_CUDA(cudaStreamSynchronize(s));
  BENCH_CUDA(cudaGetLastError());
  std::vector<cudaEvent_t> ev(2 * static_cast<size_t>(g_reps));
  for (auto& e : ev) BENCH_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < g_reps; ++i) {
    BENCH_CUDA(cudaEventRecord(ev[2 * i], s));
    fn(i);
    BENCH_CUDA(cudaEventRecord(ev[2 * i + 1], s));
  }
  BENCH_CUDA(cudaStreamSynchronize(s));
  BENCH_CUDA(cudaGetLastError());
  std::vector<float> t(static_cast<size_t>(g_reps));
  for (int i = 0; i < g_reps; ++i) BENCH_CUDA(cudaEventElapsedTime(&t[i], ev[2 * i], ev[2 * i + 1]));
  for (auto& e : ev) cudaEventDestroy(e);
  std::nth_element(t.begin(), t.begin() + g_reps / 2, t.end());
  return 1000.0 * t[g_reps / 2];
}

// Copies of a buffer so that consecutive launches touch different memory.
int copies_for(size_t bytes) { return static_cast<int>(std::clamp<size_t>((2 * g_l2 + bytes - 1) / std::max<size_t>(bytes, 1), 1, 16)); }

struct Rot {
  std::vector<cuda::DeviceBuffer> bufs;
  void* at(int i) const { return bufs[static_cast<size_t>(i) % bufs.size()].data(); }
};
Rot rotate(const void* host, size_t bytes, int copies) {
  Rot r;
  for (int i = 0; i < copies; ++i) r.bufs.push_back(must(cuda::DeviceBuffer::upload(host, bytes), "upload"));
  return r;
}
Rot rotate_empty(size_t bytes, int copies) {
  Rot r;
  for (int i = 0; i < copies; ++i) r.bufs.push_back(must(cuda::DeviceBuffer::allocate(bytes), "allocate"));
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, variants = false, gemv_variants = false;
  std::string only_shape;  // "NxK": the variant tables measure only this shape
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--w4a16-variants")) variants = true;
    else if (!std::strcmp(argv[i], "--w4a16-gemv")) gemv_variants = true;
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) g_reps = std::max(100, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--shape") && i + 1 < argc) only_shape = argv[++i];
    else {
      std::fprintf(stderr, "bench_cuda: unknown option '%s'\n", argv[i]);
      return 2;
    }
  }
  if (!cuda::available()) {
    std::printf("bench_cuda: no CUDA device, nothing to measure\n");
    return 0;
  }
  auto ctx = must(cuda::Context::create(0), "context");
  cudaStream_t s = static_cast<cudaStream_t>(ctx->stream());
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  g_l2 = static_cast<size_t>(prop.l2CacheSize);
  std::printf("device: %s\n", must(cuda::device_description(), "device").c_str());
  cublasHandle_t blas;
  BENCH_BLAS(cublasCreate(&blas));
  BENCH_BLAS(cublasSetStream(blas, s));
  void* blas_ws = nullptr;
  BENCH_CUDA(cudaMalloc(&blas_ws, 64u << 20));
  BENCH_BLAS(cublasSetWorkspace(blas, blas_ws, 64u << 20));

  // Ceiling 1: device-to-device copy, bytes read + written.
  {
    const size_t bytes = size_t{1} << 30;
    auto a = must(cuda::DeviceBuffer::allocate(bytes), "alloc"), b = must(cuda::DeviceBuffer::allocate(bytes), "alloc");
    BENCH_CUDA(cudaMemset(a.data(), 1, bytes));
    const double us = time_us(s, [&](int) { BENCH_CUDA(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, s)); });
    std::printf("ceiling: D2D copy %.0f MiB: %.1f us, %.2f TB/s (read + write)\n", bytes / 1048576.0, us, 2.0 * bytes / us / 1e6);
  }
  // Ceiling 2: cuBLAS BF16 GEMM 8192^3 on random data.
  {
    const int n = 8192;
    std::vector<float> h = random_normal(static_cast<size_t>(n) * n, 7);
    std::vector<uint16_t> hb(h.size());
    for (size_t i = 0; i < h.size(); ++i) hb[i] = f32_to_bf16(h[i]);
    auto a = must(cuda::DeviceBuffer::upload(hb.data(), hb.size() * 2), "up"), b = must(cuda::DeviceBuffer::upload(hb.data(), hb.size() * 2), "up");
    auto c = must(cuda::DeviceBuffer::allocate(hb.size() * 2), "alloc");
    const float one = 1.f, zero = 0.f;
    const double us = time_us(s, [&](int) {
      BENCH_BLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a.data(), CUDA_R_16BF, n, b.data(), CUDA_R_16BF, n,
                              &zero, c.data(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    });
    std::printf("ceiling: cuBLAS BF16 GEMM 8192^3: %.1f us, %.0f TFLOP/s\n", us, 2.0 * n * n * n / us / 1e6);
  }

  struct Shape { int64_t n, k; };
  if (gemv_variants) {
    // Decode kernels side by side: the mma kernel (fused) and the CUDA-core GEMV with each forced
    // in-block K split (s0 = automatic); % = (codes + scales + zeros) bytes / time against the
    // 3.01 TB/s copy ceiling of H100.
    std::printf("\nW4A16 decode kernels (int4-g128-asym, bf16), us (%% of 3.01 TB/s)\n");
    for (const Shape sh : {Shape{28672, 8192}, Shape{11008, 4096}, Shape{4096, 11008}, Shape{4096, 4096}}) {
      const int64_t n = sh.n, k = sh.k;
      if (!only_shape.empty() && only_shape != std::to_string(n) + "x" + std::to_string(k)) continue;
      std::vector<float> w = random_normal(static_cast<size_t>(n * k), 11 + static_cast<uint64_t>(n + k), 0.02f);
      std::vector<uint16_t> wb(w.size());
      for (size_t i = 0; i < w.size(); ++i) wb[i] = f32_to_bf16(w[i]);
      Rot w_bf16 = rotate(wb.data(), wb.size() * 2, copies_for(wb.size() * 2));
      QuantizedTensor q4 = quantize_rows_parallel(must(Scheme::parse("int4-g128-asym"), "scheme"), w.data(), n, k);
      cuda::W4A16Host h4 = must(cuda::w4a16_repack(q4, cuda::ActType::bf16), "repack");
      const size_t w4_bytes = h4.packed.size() + h4.scales.size() + h4.zeros.size();
      std::vector<cuda::W4A16Weights> w4;
      for (int i = 0; i < copies_for(w4_bytes); ++i) w4.push_back(must(cuda::w4a16_upload(h4), "w4a16 upload"));
      for (int64_t m : {1, 2, 4, 8, 16}) {
        std::vector<float> x = random_normal(static_cast<size_t>(m * k), 5 + static_cast<uint64_t>(m));
        std::vector<uint16_t> xb(x.size());
        for (size_t i = 0; i < x.size(); ++i) xb[i] = f32_to_bf16(x[i]);
        Rot xr = rotate(xb.data(), xb.size() * 2, copies_for(xb.size() * 2));
        Rot yr = rotate_empty(static_cast<size_t>(m * n) * 2, 4);
        const float one = 1.f, zero = 0.f;
        const double t_bf16 = time_us(s, [&](int i) {
          BENCH_BLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &one,
                                  w_bf16.at(i), CUDA_R_16BF, static_cast<int>(k), xr.at(i), CUDA_R_16BF, static_cast<int>(k), &zero,
                                  yr.at(i), CUDA_R_16BF, static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        });
        auto pct = [&](double t) { return 100.0 * static_cast<double>(w4_bytes) / t / 1e6 / 3.01; };
        auto run = [&](cuda::W4A16Path p) {
          return time_us(s, [&](int i) {
            must(cuda::w4a16_gemm(*ctx, w4[static_cast<size_t>(i) % w4.size()], xr.at(i), yr.at(i), m, p), "w4a16");
          });
        };
        const double t_fused = run(cuda::W4A16Path::fused);
        std::printf("%lldx%lld M=%lld bf16 %.1f | fused %.1f (%.0f%%) |", (long long)n, (long long)k, (long long)m, t_bf16, t_fused,
                    pct(t_fused));
        double best = t_fused;
        // cc = CUDA-core math (M <= 8, s = forced in-block K split), tcR = mma.sync with R row
        // tiles per warp (s = forced K chunks; 0 = automatic).
        for (int tc : {1, 2})
          for (int rpw : {1, 2}) {
            if ((tc == 1 && (m > 8 || rpw == 2)) || (m > 8 && rpw == 2)) continue;
            for (int splits : {0, 2, 4, 8, 16}) {
              if (tc == 1 && splits != 0) continue;
              cuda::w4a16_set_tuning({0, 0, 0, splits, tc, tc == 2 && m <= 8 ? rpw : 0});
              const double t = run(cuda::W4A16Path::gemv);
              best = std::min(best, t);
              if (tc == 1) std::printf(" cc/s%d %.1f (%.0f%%)", splits, t, pct(t));
              else std::printf(" tc%d/s%d %.1f (%.0f%%)", rpw, splits, t, pct(t));
            }
          }
        cuda::w4a16_set_tuning({});
        std::printf(" | best x bf16 %.2f\n", t_bf16 / best);
        std::fflush(stdout);
      }
    }
    return 0;
  }
  if (variants) {
    // Fused W4A16 kernel on the decode shapes with each forced split-K count (s0 = automatic);
    // % = (codes + scales + zeros) bytes / time against the 3.01 TB/s copy ceiling of H100.
    std::printf("\nW4A16 fused variants (int4-g128-asym, bf16), us; x bf16 = cuBLAS BF16 / best\n");
    for (const Shape sh : {Shape{28672, 8192}, Shape{11008, 4096}, Shape{4096, 4096}}) {
      const int64_t n = sh.n, k = sh.k;
      if (!only_shape.empty() && only_shape != std::to_string(n) + "x" + std::to_string(k)) continue;
      std::vector<float> w = random_normal(static_cast<size_t>(n * k), 11 + static_cast<uint64_t>(n + k), 0.02f);
      std::vector<uint16_t> wb(w.size());
      for (size_t i = 0; i < w.size(); ++i) wb[i] = f32_to_bf16(w[i]);
      Rot w_bf16 = rotate(wb.data(), wb.size() * 2, copies_for(wb.size() * 2));
      QuantizedTensor q4 = quantize_rows_parallel(must(Scheme::parse("int4-g128-asym"), "scheme"), w.data(), n, k);
      cuda::W4A16Host h4 = must(cuda::w4a16_repack(q4, cuda::ActType::bf16), "repack");
      const size_t w4_bytes = h4.packed.size() + h4.scales.size() + h4.zeros.size();
      std::vector<cuda::W4A16Weights> w4;
      for (int i = 0; i < copies_for(w4_bytes); ++i) w4.push_back(must(cuda::w4a16_upload(h4), "w4a16 upload"));
      for (int64_t m : {1, 4, 16}) {
        std::vector<float> x = random_normal(static_cast<size_t>(m * k), 5 + static_cast<uint64_t>(m));
        std::vector<uint16_t> xb(x.size());
        for (size_t i = 0; i < x.size(); ++i) xb[i] = f32_to_bf16(x[i]);
        Rot xr = rotate(xb.data(), xb.size() * 2, copies_for(xb.size() * 2));
        Rot yr = rotate_empty(static_cast<size_t>(m * n) * 2, 4);
        const float one = 1.f, zero = 0.f;
        const double t_bf16 = time_us(s, [&](int i) {
          BENCH_BLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &one,
                                  w_bf16.at(i), CUDA_R_16BF, static_cast<int>(k), xr.at(i), CUDA_R_16BF, static_cast<int>(k), &zero,
                                  yr.at(i), CUDA_R_16BF, static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        });
        std::printf("%lldx%lld M=%lld bf16 %.1f |", (long long)n, (long long)k, (long long)m, t_bf16);
        double best = 1e30;
        for (int late : {1, 2})
          for (int splits : {0, 2, 4}) {
            cuda::w4a16_set_tuning({splits, late});
            const double t = time_us(s, [&](int i) {
              must(cuda::w4a16_gemm(*ctx, w4[static_cast<size_t>(i) % w4.size()], xr.at(i), yr.at(i), m, cuda::W4A16Path::fused), "w4a16");
            });
            best = std::min(best, t);
            std::printf(" %s/s%d %.1f (%.0f%%)", late == 2 ? "late" : "pre", splits, t, 100.0 * static_cast<double>(w4_bytes) / t / 1e6 / 3.01);
          }
        cuda::w4a16_set_tuning({});
        std::printf(" | best x bf16 %.2f\n", t_bf16 / best);
      }
    }
    return 0;
  }
  std::vector<Shape> shapes = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {28672, 8192}};
  std::vector<int64_t> ms = {1, 4, 16, 64, 256, 1024, 4096};
  if (quick) {
    shapes = {{4096, 4096}, {28672, 8192}};
    ms = {1, 16, 4096};
  }
  std::printf("\n%-12s %5s | %9s | %9s %6s %6s %6s | %9s %9s %9s | %9s %6s %9s %9s | %9s %6s\n", "N x K", "M", "bf16 us",
              "w4a16 us", "TB/s", "TF/s", "x bf16", "gemv us", "fused us", "deq+gemm", "w8a8 us", "x bf16", "w8 fused", "cublas i8",
              "fp8 us", "x bf16");
  for (const Shape& sh : shapes) {
    const int64_t n = sh.n, k = sh.k;
    std::vector<float> w = random_normal(static_cast<size_t>(n * k), 11 + static_cast<uint64_t>(n + k), 0.02f);
    // BF16 weights (baseline), int4-g128 (asym, as GPTQ/AWQ checkpoints), int8 per channel, FP8 per channel.
    std::vector<uint16_t> wb(w.size());
    for (size_t i = 0; i < w.size(); ++i) wb[i] = f32_to_bf16(w[i]);
    const size_t wb_bytes = wb.size() * 2;
    Rot w_bf16 = rotate(wb.data(), wb_bytes, copies_for(wb_bytes));
    std::vector<uint16_t>().swap(wb);
    QuantizedTensor q4 = quantize_rows_parallel(must(Scheme::parse("int4-g128-asym"), "scheme"), w.data(), n, k);
    cuda::W4A16Host h4 = must(cuda::w4a16_repack(q4, cuda::ActType::bf16), "repack");
    const size_t w4_bytes = h4.packed.size() + h4.scales.size() + h4.zeros.size();
    std::vector<cuda::W4A16Weights> w4;
    for (int i = 0; i < copies_for(w4_bytes); ++i) w4.push_back(must(cuda::w4a16_upload(h4), "w4a16 upload"));
    QuantizedTensor q8 = quantize_rows_parallel(must(Scheme::parse("int8-ch-sym"), "scheme"), w.data(), n, k);
    std::vector<cuda::W8A8Weights> w8;
    for (int i = 0; i < copies_for(static_cast<size_t>(n * k)); ++i) w8.push_back(must(cuda::w8a8_upload(q8), "w8a8 upload"));
    QuantizedTensor qf = quantize_rows_parallel(must(Scheme::parse("fp8-e4m3-ch"), "scheme"), w.data(), n, k);
    std::vector<cuda::Fp8Weights> wf;
    for (int i = 0; i < copies_for(static_cast<size_t>(n * k)); ++i) wf.push_back(must(cuda::fp8_upload(qf), "fp8 upload"));
    std::vector<float>().swap(w);

    for (int64_t m : ms) {
      std::vector<float> x = random_normal(static_cast<size_t>(m * k), 5 + static_cast<uint64_t>(m));
      std::vector<uint16_t> xb(x.size());
      for (size_t i = 0; i < x.size(); ++i) xb[i] = f32_to_bf16(x[i]);
      const size_t x_bytes = xb.size() * 2, y_bytes = static_cast<size_t>(m * n) * 2;
      Rot xr = rotate(xb.data(), x_bytes, copies_for(x_bytes));
      Rot yr = rotate_empty(y_bytes, std::min(4, copies_for(y_bytes)));
      const float one = 1.f, zero = 0.f;
      const double t_bf16 = time_us(s, [&](int i) {
        BENCH_BLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &one,
                                w_bf16.at(i), CUDA_R_16BF, static_cast<int>(k), xr.at(i), CUDA_R_16BF, static_cast<int>(k), &zero,
                                yr.at(i), CUDA_R_16BF, static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      });
      auto w4run = [&](cuda::W4A16Path p) {
        return time_us(s, [&](int i) {
          must(cuda::w4a16_gemm(*ctx, w4[static_cast<size_t>(i) % w4.size()], xr.at(i), yr.at(i), m, p), "w4a16");
        });
      };
      const double t_fused = m <= 1024 ? w4run(cuda::W4A16Path::fused) : NAN;
      const double t_gemv = m <= 16 ? w4run(cuda::W4A16Path::gemv) : NAN;
      const double t_deq = m >= 16 ? w4run(cuda::W4A16Path::dequant_gemm) : NAN;
      const double t_w4 = w4run(cuda::W4A16Path::automatic);
      auto w8run = [&](cuda::W8A8Path p) {
        return time_us(s, [&](int i) { must(cuda::w8a8_gemm(*ctx, w8[static_cast<size_t>(i) % w8.size()], xr.at(i), yr.at(i), m, p), "w8a8"); });
      };
      const double t_w8 = w8run(cuda::W8A8Path::automatic);
      const double t_w8f = w8run(cuda::W8A8Path::fused);
      // Peer: cuBLAS int8 x int8 -> int32 (what torch._int_mm calls), on pre-quantized inputs.
      double t_i8 = NAN;
      {
        std::vector<int8_t> xq(static_cast<size_t>(m * k));
        for (size_t i = 0; i < xq.size(); ++i) xq[i] = static_cast<int8_t>(std::lround(std::clamp(x[i] * 40.f, -127.f, 127.f)));
        Rot xqr = rotate(xq.data(), xq.size(), copies_for(xq.size()));
        Rot y32 = rotate_empty(static_cast<size_t>(m * n) * 4, 2);
        const int32_t ione = 1, izero = 0;
        cublasStatus_t st = cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &ione,
                                         w8[0].q.data(), CUDA_R_8I, static_cast<int>(k), xqr.at(0), CUDA_R_8I, static_cast<int>(k), &izero,
                                         y32.at(0), CUDA_R_32I, static_cast<int>(n), CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT);
        if (st == CUBLAS_STATUS_SUCCESS) {
          t_i8 = time_us(s, [&](int i) {
            BENCH_BLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &ione,
                                    w8[static_cast<size_t>(i) % w8.size()].q.data(), CUDA_R_8I, static_cast<int>(k), xqr.at(i), CUDA_R_8I,
                                    static_cast<int>(k), &izero, y32.at(i), CUDA_R_32I, static_cast<int>(n), CUBLAS_COMPUTE_32I,
                                    CUBLAS_GEMM_DEFAULT));
          });
        }
      }
      double t_fp8 = NAN;
      {
        Status st = cuda::fp8_gemm(*ctx, wf[0], xr.at(0), yr.at(0), m);
        if (st.is_ok())
          t_fp8 = time_us(s, [&](int i) { must(cuda::fp8_gemm(*ctx, wf[static_cast<size_t>(i) % wf.size()], xr.at(i), yr.at(i), m), "fp8"); });
        else
          std::fprintf(stderr, "fp8 %lldx%lld M=%lld: %s\n", (long long)n, (long long)k, (long long)m, st.to_string().c_str());
      }
      const double flop = 2.0 * static_cast<double>(m) * n * k;
      const double bytes4 = static_cast<double>(w4_bytes) + x_bytes + y_bytes;
      char shape[32];
      std::snprintf(shape, sizeof shape, "%lldx%lld", (long long)n, (long long)k);
      std::printf("%-12s %5lld | %9.1f | %9.1f %6.2f %6.1f %6.2f | %9.1f %9.1f %9.1f | %9.1f %6.2f %9.1f %9.1f | %9.1f %6.2f\n", shape,
                  (long long)m, t_bf16, t_w4, bytes4 / t_w4 / 1e6, flop / t_w4 / 1e6, t_bf16 / t_w4, t_gemv, t_fused, t_deq, t_w8, t_bf16 / t_w8,
                  t_w8f, t_i8, t_fp8, t_bf16 / t_fp8);
      std::fflush(stdout);
    }
  }
  std::printf("\nw4a16: int4-g128-asym weights, bf16 activations; automatic path = gemv (mma.sync; CUDA cores at M = 1 when N < 64 x SMs) up to M = 8,\nfused (mma) for M <= 128, else deq+gemm.\n"
              "w8a8: per-token activation quantization included; automatic path = cuBLAS int8 GEMM + dequant pass, w8 fused = own\n"
              "mma.sync kernel with the dequantization in its epilogue; cublas i8: the int8 GEMM to int32 alone (torch._int_mm's kernel).\n"
              "fp8: per-channel E4M3 weights, per-token E4M3 activations (quantization included), cuBLASLt FP8 GEMM + scaling pass.\n");
  cudaFree(blas_ws);
  cublasDestroy(blas);
  return 0;
}
