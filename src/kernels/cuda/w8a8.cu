// W8A8-INT8: per-token int8 activations x per-channel int8 weights, int32 accumulation with
// mma.sync m16n8k32 (exact), dequantization fused into the epilogue.
//
// Block tile 128 x 128 x 64 bytes, 8 warps (2 along M x 4 along N, warp tile 64 x 32), a
// 4-stage cp.async pipeline. Shared-memory rows are 64 bytes (four 16-byte chunks); chunk c of
// row r is stored at c ^ ((r >> 1) & 3) so the eight rows an ldmatrix phase reads hit distinct
// banks.
#include <algorithm>
#include <cstring>

#include "cuda_common.h"
#include "mma.cuh"
#include "qforge/dtype.h"

namespace qforge::cuda {
namespace {

using namespace detail;

constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 4, kThreads = 256;
constexpr int kStageBytes = (kBM + kBN) * kBK;
constexpr int kSmemBytes = kStages * kStageBytes;

__device__ __forceinline__ int swz(int row, int chunk) { return row * kBK + ((chunk ^ ((row >> 1) & 3)) << 4); }

template <bool kInt32Out>
__global__ void __launch_bounds__(kThreads) w8a8_gemm_kernel(const int8_t* __restrict__ xq, const int8_t* __restrict__ wq,
                                                             const float* __restrict__ xs, const float* __restrict__ ws,
                                                             void* __restrict__ out, int M, int N, int K) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int wm = warp >> 2, wn = warp & 3;
  const int KT = K / kBK;

  auto load_stage = [&](int slot, int kt) {
    uint8_t* sa = smem + slot * kStageBytes;
    uint8_t* sb = sa + kBM * kBK;
    const int k0 = kt * kBK;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int id = threadIdx.x + i * kThreads;  // 512 chunks of 16 bytes per operand
      const int row = id >> 2, ch = id & 3;
      const int am = m0 + row, bn = n0 + row;
      const int8_t* ga = xq + static_cast<size_t>(min(am, M - 1)) * K + k0 + ch * 16;
      const int8_t* gb = wq + static_cast<size_t>(min(bn, N - 1)) * K + k0 + ch * 16;
      cp_async_16(sa + swz(row, ch), ga, am < M ? 16 : 0);
      cp_async_16(sb + swz(row, ch), gb, bn < N ? 16 : 0);
    }
  };

  int acc[4][4][4];
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int b = 0; b < 4; ++b)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][b][c] = 0;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < KT) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < KT; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    const int pf = kt + kStages - 1;
    if (pf < KT) load_stage(pf % kStages, pf);
    cp_async_commit();
    const uint8_t* sa = smem + (kt % kStages) * kStageBytes;
    const uint8_t* sb = sa + kBM * kBK;
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      uint32_t af[4][4], bf[2][4];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        const int row = wm * 64 + mi * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(af[mi], sa + swz(row, ks * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) {
        const int row = wn * 32 + nj * 16 + (lane & 7) + (lane >> 4) * 8;
        ldmatrix_x4(bf[nj], sb + swz(row, ks * 2 + ((lane >> 3) & 1)));
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
          mma_16832_s8(acc[mi][ni], af[mi], bf[ni >> 1][(ni & 1) * 2], bf[ni >> 1][(ni & 1) * 2 + 1]);
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = m0 + wm * 64 + mi * 16 + g + half * 8;
      if (m >= M) continue;
      const float sx = kInt32Out ? 0.f : xs[m];
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int n = n0 + wn * 32 + ni * 8 + 2 * t;
        if (n >= N) continue;  // N is even, so n + 1 < N as well
        const int c0 = acc[mi][ni][half * 2], c1 = acc[mi][ni][half * 2 + 1];
        if constexpr (kInt32Out) {
          *reinterpret_cast<int2*>(static_cast<int*>(out) + static_cast<size_t>(m) * N + n) = make_int2(c0, c1);
        } else {
          const __nv_bfloat162 v(__float2bfloat16_rn(static_cast<float>(c0) * sx * ws[n]),
                                 __float2bfloat16_rn(static_cast<float>(c1) * sx * ws[n + 1]));
          *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(out) + static_cast<size_t>(m) * N + n) = v;
        }
      }
    }
  }
}

// One block per token: absmax, then q = rint(x / scale) with scale = absmax / 127.
__global__ void __launch_bounds__(256) quantize_rows_int8_kernel(const __nv_bfloat16* __restrict__ x, int K,
                                                                 int8_t* __restrict__ q, float* __restrict__ scale) {
  const __nv_bfloat16* row = x + static_cast<size_t>(blockIdx.x) * K;
  float amax = 0.f;
  for (int i = threadIdx.x * 8; i < K; i += blockDim.x * 8) {
    const uint4 v = *reinterpret_cast<const uint4*>(row + i);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(h[j]);
      amax = fmaxf(amax, fmaxf(fabsf(f.x), fabsf(f.y)));
    }
  }
  __shared__ float red[32];
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = amax;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? red[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x == 0) red[0] = v;
  }
  __syncthreads();
  const float s = red[0] / 127.f;
  if (threadIdx.x == 0) scale[blockIdx.x] = s;
  const float inv = s > 0.f ? 1.f / s : 0.f;
  int8_t* qrow = q + static_cast<size_t>(blockIdx.x) * K;
  for (int i = threadIdx.x * 8; i < K; i += blockDim.x * 8) {
    const uint4 v = *reinterpret_cast<const uint4*>(row + i);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
    uint32_t packed[2] = {0, 0};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(h[j]);
      const int a = max(-127, min(127, __float2int_rn(f.x * inv)));
      const int b = max(-127, min(127, __float2int_rn(f.y * inv)));
      packed[j >> 1] |= (static_cast<uint32_t>(a & 0xff) | (static_cast<uint32_t>(b & 0xff) << 8)) << ((j & 1) * 16);
    }
    *reinterpret_cast<uint2*>(qrow + i) = make_uint2(packed[0], packed[1]);
  }
}

// y[m, n] = bf16(acc[m, n] * x_scale[m] * w_scale[n]), 4 per thread (N % 4 == 0): the epilogue
// of the cuBLAS path, one pass over the int32 accumulators.
__global__ void dequant_acc_kernel(const int* __restrict__ acc, const float* __restrict__ xs, const float* __restrict__ ws,
                                   __nv_bfloat16* __restrict__ y, int64_t M, int64_t N) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (i >= M * N) return;
  const int64_t m = i / N, n = i % N;
  const int4 a = *reinterpret_cast<const int4*>(acc + i);
  const float sx = xs[m];
  const float4 sw = *reinterpret_cast<const float4*>(ws + n);
  __nv_bfloat162 out[2] = {__floats2bfloat162_rn(static_cast<float>(a.x) * sx * sw.x, static_cast<float>(a.y) * sx * sw.y),
                           __floats2bfloat162_rn(static_cast<float>(a.z) * sx * sw.z, static_cast<float>(a.w) * sx * sw.w)};
  *reinterpret_cast<uint2*>(y + i) = *reinterpret_cast<const uint2*>(out);
}

Status check(const W8A8Weights& w, int64_t m, const char* fn) {
  if (w.n <= 0 || w.k <= 0 || w.k % kBK || w.n % 2)
    return invalid_argument(std::string(fn) + ": weight [" + std::to_string(w.n) + ", " + std::to_string(w.k) +
                            "] needs K % 64 == 0 and even N");
  if (m <= 0 || m > (int64_t{1} << 24) || w.n > (int64_t{1} << 24) || w.k > (int64_t{1} << 24))
    return invalid_argument(std::string(fn) + ": M = " + std::to_string(m) + " out of range");
  if (w.q.size() < static_cast<size_t>(w.n * w.k) || w.scales.size() < static_cast<size_t>(w.n) * 4)
    return invalid_argument(std::string(fn) + ": device planes smaller than the weight shape needs");
  return Status::ok();
}

template <bool kInt32Out>
Status launch(Context::Impl& c, const W8A8Weights& w, const void* xq, const void* xs, void* out, int64_t m) {
  static bool configured = false;
  if (!configured) {
    QFORGE_CUDA_TRY(cudaFuncSetAttribute(w8a8_gemm_kernel<kInt32Out>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
    configured = true;
  }
  const dim3 grid(static_cast<unsigned>(ceil_div(w.n, kBN)), static_cast<unsigned>(ceil_div(m, kBM)));
  if (grid.y > 65535) return invalid_argument("w8a8: M = " + std::to_string(m) + " too large for one launch");
  w8a8_gemm_kernel<kInt32Out><<<grid, kThreads, kSmemBytes, c.stream>>>(
      static_cast<const int8_t*>(xq), static_cast<const int8_t*>(w.q.data()), static_cast<const float*>(xs),
      static_cast<const float*>(w.scales.data()), out, static_cast<int>(m), static_cast<int>(w.n), static_cast<int>(w.k));
  QFORGE_CUDA_LAUNCHED("w8a8_gemm_kernel");
  return Status::ok();
}

}  // namespace

Expected<W8A8Weights> w8a8_upload(const QuantizedTensor& q) {
  const Scheme& s = q.scheme;
  if (s.format != FormatId::int_sym || s.bits != 8 || s.granularity != Granularity::channel)
    return invalid_argument("w8a8_upload: scheme " + s.name() + " is not int8-ch-sym");
  const int64_t n = q.rows, k = q.cols;
  if (n <= 0 || k <= 0 || k % kBK || n % 2)
    return invalid_argument("w8a8_upload: weight [" + std::to_string(n) + ", " + std::to_string(k) +
                            "] needs cols % 64 == 0 and even rows");
  if (q.codes.size() != static_cast<size_t>(n * k) || q.scales.size() != static_cast<size_t>(n) * 2)
    return invalid_argument("w8a8_upload: plane sizes do not match int8-ch-sym on [" + std::to_string(n) + ", " +
                            std::to_string(k) + "]");
  // Codes are offset by 128 (the code of zero); the kernel wants two's-complement int8.
  std::vector<int8_t> codes(q.codes.size());
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<int8_t>(static_cast<int>(q.codes[i]) - 128);
  std::vector<float> scales(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    uint16_t h;
    std::memcpy(&h, q.scales.data() + r * 2, 2);
    scales[static_cast<size_t>(r)] = f16_to_f32(h);
  }
  W8A8Weights w;
  w.n = n;
  w.k = k;
  QFORGE_ASSIGN_OR_RETURN(w.q, DeviceBuffer::upload(codes.data(), codes.size()));
  QFORGE_ASSIGN_OR_RETURN(w.scales, DeviceBuffer::upload(scales.data(), scales.size() * sizeof(float)));
  return Expected<W8A8Weights>(std::move(w));
}

Status quantize_rows_int8(Context& ctx, const void* x_bf16, int64_t m, int64_t k, void* x_q, void* x_scale) {
  if (m <= 0 || k <= 0 || k % 8 || m > 0x7fffffff || k > (int64_t{1} << 30))
    return invalid_argument("quantize_rows_int8: shape [" + std::to_string(m) + ", " + std::to_string(k) + "] needs K % 8 == 0");
  if (!x_bf16 || !x_q || !x_scale) return invalid_argument("quantize_rows_int8: null pointer");
  quantize_rows_int8_kernel<<<static_cast<unsigned>(m), 256, 0, ctx.impl().stream>>>(
      static_cast<const __nv_bfloat16*>(x_bf16), static_cast<int>(k), static_cast<int8_t*>(x_q), static_cast<float*>(x_scale));
  QFORGE_CUDA_LAUNCHED("quantize_rows_int8_kernel");
  return Status::ok();
}

Status w8a8_gemm_quantized(Context& ctx, const W8A8Weights& w, const void* x_q, const void* x_scale, void* y_bf16, int64_t m) {
  QFORGE_RETURN_IF_ERROR(check(w, m, "w8a8_gemm"));
  if (!x_q || !x_scale || !y_bf16) return invalid_argument("w8a8_gemm: null pointer");
  return launch<false>(ctx.impl(), w, x_q, x_scale, y_bf16, m);
}

Status w8a8_gemm_int32(Context& ctx, const W8A8Weights& w, const void* x_q, void* y_i32, int64_t m) {
  QFORGE_RETURN_IF_ERROR(check(w, m, "w8a8_gemm_int32"));
  if (!x_q || !y_i32) return invalid_argument("w8a8_gemm_int32: null pointer");
  return launch<true>(ctx.impl(), w, x_q, nullptr, y_i32, m);
}

Status w8a8_gemm(Context& ctx, const W8A8Weights& w, const void* x_bf16, void* y_bf16, int64_t m, W8A8Path path) {
  QFORGE_RETURN_IF_ERROR(check(w, m, "w8a8_gemm"));
  Context::Impl& c = ctx.impl();
  const size_t qbytes = (static_cast<size_t>(m * w.k) + 255) / 256 * 256;
  const size_t sbytes = (static_cast<size_t>(m) * sizeof(float) + 255) / 256 * 256;
  const bool cublas_ok = w.n % 4 == 0 && w.k % 4 == 0;
  if (path == W8A8Path::automatic) path = cublas_ok ? W8A8Path::cublas : W8A8Path::fused;
  if (path == W8A8Path::cublas && !cublas_ok)
    return invalid_argument("w8a8_gemm: the cuBLAS path needs N and K multiples of 4");
  const size_t abytes = path == W8A8Path::cublas ? static_cast<size_t>(m * w.n) * 4 : 0;
  QFORGE_RETURN_IF_ERROR(c.ensure_scratch(qbytes + sbytes + abytes));
  void* xq = c.scratch;
  auto* xs = reinterpret_cast<float*>(static_cast<char*>(c.scratch) + qbytes);
  QFORGE_RETURN_IF_ERROR(quantize_rows_int8(ctx, x_bf16, m, w.k, xq, xs));
  if (path == W8A8Path::fused) return launch<false>(c, w, xq, xs, y_bf16, m);
  // cuBLAS's int8 tensor-core GEMM (Hopper kernels) to int32, then the dequantizing epilogue.
  int* acc = reinterpret_cast<int*>(static_cast<char*>(c.scratch) + qbytes + sbytes);
  const int32_t one = 1, zero = 0;
  QFORGE_CUBLAS_TRY(cublasGemmEx(c.blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.n), static_cast<int>(m),
                                 static_cast<int>(w.k), &one, w.q.data(), CUDA_R_8I, static_cast<int>(w.k), xq, CUDA_R_8I,
                                 static_cast<int>(w.k), &zero, acc, CUDA_R_32I, static_cast<int>(w.n), CUBLAS_COMPUTE_32I,
                                 CUBLAS_GEMM_DEFAULT));
  const int64_t total = m * w.n / 4;
  dequant_acc_kernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, c.stream>>>(
      acc, xs, static_cast<const float*>(w.scales.data()), static_cast<__nv_bfloat16*>(y_bf16), m, w.n);
  QFORGE_CUDA_LAUNCHED("dequant_acc_kernel");
  return Status::ok();
}

}  // namespace qforge::cuda
