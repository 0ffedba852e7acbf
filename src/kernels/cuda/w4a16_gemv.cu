// W4A16 decode kernel (M <= 8): a GEMV over the same repacked layout as the mma kernel
// (w4a16.cu), on the CUDA cores. Why: at decode sizes the mma kernel is latency-bound (few
// loads in flight, many registers per thread); here each warp streams a contiguous run of its
// row tile's 512-byte tiles with kGemvU independent 16-byte loads per lane in flight plus the next
// step's loads issued before the current step's math, and a block's 8 warps share row tiles by
// splitting K (reduced through shared memory), so that enough warps stream to fill the memory
// system at every N.
//
// Math per lane and tile (lane l = 4 g + t holds rows g, g + 8 at 16 columns, see w4a16.cu):
// the nibbles become exact (q - z) in half2 (magic-number OR + one subtraction), for f16 are
// scaled by the group scale in half2 (the weights rounded once to f16, as in the dequant path),
// are multiplied with the activations in a half2 FMA chain of 8 steps (16 products), and each
// tile's chain is added into f32 accumulators (for bf16 times the group scale, see below).
#include <algorithm>
#include <string>
#include <type_traits>

#include "cuda_common.h"
#include "mma.cuh"
#include "w4a16_internal.h"
#include "w4a16_tile.cuh"

namespace qforge::cuda {
namespace {

using namespace detail;

constexpr int kGemvWarps = 8;
// Largest M the automatic choice may give this kernel; the tensor-core kernel (w4a16_gemv_tc.cu)
// takes the larger ones (at M = 2 this kernel is compute-bound: 64.1 vs 52.4 us on 28672x8192).
constexpr int64_t kGemvCudaCoreMaxM = 1;
constexpr int kGemvThreads = kGemvWarps * 32;
// Tiles per pipeline step: 4 x 16 B in flight per lane and row tile (overridable for measurements).
#ifndef QFORGE_GEMV_STEP
#define QFORGE_GEMV_STEP 4
#endif
constexpr int kGemvU = QFORGE_GEMV_STEP;
// Steps of L2 prefetch ahead of the register loads (0 = none; cp.async.bulk.prefetch is sm_90).
#ifndef QFORGE_GEMV_PREFETCH
#define QFORGE_GEMV_PREFETCH 0
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
constexpr int kGemvPrefetch = 0;
#else
constexpr int kGemvPrefetch = QFORGE_GEMV_PREFETCH;
#endif
// Resident blocks per SM the M = 1 kernel is compiled for (register cap; overridable for
// measurements: 3 = at most 85 registers).
#ifndef QFORGE_GEMV_M1_MIN_BLOCKS
#define QFORGE_GEMV_M1_MIN_BLOCKS 3
#endif

__device__ __forceinline__ float2 to_float2(__half2 v) { return __half22float2(v); }
__device__ __forceinline__ float2 to_float2(__nv_bfloat162 v) { return __bfloat1622float2(v); }

// Block: kGemvWarps warps = (kGemvWarps / splits) row units of RT row tiles x `splits` K ranges.
// bf16 (late scale): the chain multiplies the exact integers (q - z) with the activations and the
// group scale is applied to each tile's f32 sum, 4 HMUL2 per 8 weights fewer (bf16 has f32's
// range: no overflow). f16 keeps the scale on the weights: with unscaled integers a chain of 16
// products of |q - z| <= 15 overflows f16 once activations exceed ~270.
template <typename T, int MT, int RT, bool ZP>
__global__ void __launch_bounds__(kGemvThreads, MT == 1 ? QFORGE_GEMV_M1_MIN_BLOCKS : 1) w4a16_gemv_kernel(const uint4* __restrict__ wq,
                                                                  const uint32_t* __restrict__ sc,
                                                                  const uint32_t* __restrict__ zp,
                                                                  const T* __restrict__ x, T* __restrict__ y, int M,
                                                                  int N, int K, int splits) {
  using T2 = typename Half2<T>::type;
  constexpr bool kLateScale = std::is_same_v<T, __nv_bfloat16>;
  __shared__ float red[kGemvWarps][RT * 16][MT];
  const int KT = K / 64, G = K / 128, NT = N / 16;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int units = kGemvWarps / splits;
  const int unit = warp % units, split = warp / units;
  const int rt0 = (blockIdx.x * units + unit) * RT;
  const int kt_beg = static_cast<int>(static_cast<int64_t>(split) * KT / splits);
  const int kt_end = static_cast<int>(static_cast<int64_t>(split + 1) * KT / splits);

  float acc[RT][MT][2];
#pragma unroll
  for (int r = 0; r < RT; ++r)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) acc[r][mt][0] = acc[r][mt][1] = 0.f;

  const uint32_t zsym = w4a16_sym_zero<T>();
  W4A16Step<kGemvU, RT> cur;
  auto load_step = [&](int kt0, W4A16Step<kGemvU, RT>& st) {
    w4a16_load_step<ZP>(wq, sc, zp, rt0, kt0, kt_end, NT, KT, G, lane, zsym, st);
  };

  // L2 prefetch of the step kGemvPrefetch steps ahead (one bulk prefetch per row tile, issued by
  // lane 0): more bytes in flight without registers.
  auto prefetch_step = [&](int kt0) {
    if (kGemvPrefetch == 0 || lane != 0 || kt0 >= kt_end) return;
    const int tiles = min(kGemvU, kt_end - kt0);
#pragma unroll
    for (int r = 0; r < RT; ++r) {
      const int rt = rt0 + r;
      if (rt < NT) {
        const uint4* p = wq + (static_cast<size_t>(rt) * KT + kt0) * 32;
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(tiles * 512) : "memory");
      }
    }
  };
  for (int d = 1; d <= kGemvPrefetch; ++d) prefetch_step(kt_beg + d * kGemvU);
  if (kt_beg < kt_end) load_step(kt_beg, cur);
  for (int kt0 = kt_beg; kt0 < kt_end; kt0 += kGemvU) {
    prefetch_step(kt0 + (kGemvPrefetch + 1) * kGemvU);
    W4A16Step<kGemvU, RT> nxt;
    if (kt0 + kGemvU < kt_end) load_step(kt0 + kGemvU, nxt);
#pragma unroll
    for (int u = 0; u < kGemvU; ++u) {
      const int kt = kt0 + u;
      if (kt >= kt_end) break;
      // This tile's activations: 16 consecutive values per token (L1/L2 hits: every row unit of
      // the grid reads the same columns).
      uint32_t xw[MT][8];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint4 b0 = make_uint4(0, 0, 0, 0), b1 = b0;
        if (mt < M) {
          const uint4* p = reinterpret_cast<const uint4*>(x + static_cast<size_t>(mt) * K + kt * 64 + 16 * t);
          b0 = __ldg(p);
          b1 = __ldg(p + 1);
        }
        xw[mt][0] = b0.x; xw[mt][1] = b0.y; xw[mt][2] = b0.z; xw[mt][3] = b0.w;
        xw[mt][4] = b1.x; xw[mt][5] = b1.y; xw[mt][6] = b1.z; xw[mt][7] = b1.w;
      }
#pragma unroll
      for (int r = 0; r < RT; ++r) {
        const T2 s2 = as_h2<T2>(cur.s[u][r]), z2 = as_h2<T2>(cur.z[u][r]);
        const T2 sg = T2(s2.x, s2.x), sh = T2(s2.y, s2.y);
        const T2 zg = T2(z2.x, z2.x), zh = T2(z2.y, z2.y);
        const uint32_t w4[4] = {cur.a[u][r].x, cur.a[u][r].y, cur.a[u][r].z, cur.a[u][r].w};
        T2 hg[MT], hh[MT];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) hg[mt] = hh[mt] = as_h2<T2>(0u);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          // (g, c..c+1), (g+8, c..c+1), (g, c+2..c+3), (g+8, c+2..c+3); c = 16 t + 4 j.
          T2 p[4];
          w4a16_decode_word<T, !kLateScale>(w4[j], zg, zh, sg, sh, p);
          const T2 a01 = p[0], a23 = p[1], a45 = p[2], a67 = p[3];
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            const T2 x01 = as_h2<T2>(xw[mt][2 * j]), x23 = as_h2<T2>(xw[mt][2 * j + 1]);
            hg[mt] = __hfma2(a01, x01, hg[mt]);
            hg[mt] = __hfma2(a45, x23, hg[mt]);
            hh[mt] = __hfma2(a23, x01, hh[mt]);
            hh[mt] = __hfma2(a67, x23, hh[mt]);
          }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const float2 fg = to_float2(hg[mt]), fh = to_float2(hh[mt]);
          if constexpr (kLateScale) {
            acc[r][mt][0] = fmaf(static_cast<float>(s2.x), fg.x + fg.y, acc[r][mt][0]);
            acc[r][mt][1] = fmaf(static_cast<float>(s2.y), fh.x + fh.y, acc[r][mt][1]);
          } else {
            acc[r][mt][0] += fg.x + fg.y;
            acc[r][mt][1] += fh.x + fh.y;
          }
        }
      }
    }
    cur = nxt;
  }

  // Reduce the 4 lanes of a row (t), then the block's K splits through shared memory.
#pragma unroll
  for (int r = 0; r < RT; ++r)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        float v = acc[r][mt][i];
        v += __shfl_xor_sync(0xffffffffu, v, 1);
        v += __shfl_xor_sync(0xffffffffu, v, 2);
        acc[r][mt][i] = v;
      }
  if (t == 0) {
#pragma unroll
    for (int r = 0; r < RT; ++r)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        red[warp][r * 16 + g][mt] = acc[r][mt][0];
        red[warp][r * 16 + g + 8][mt] = acc[r][mt][1];
      }
  }
  __syncthreads();
  constexpr int kUnitRows = RT * 16;
  const int rows = units * kUnitRows;
  const int n0 = blockIdx.x * rows;
  for (int i = threadIdx.x; i < rows * MT; i += kGemvThreads) {
    const int mt = i / rows, row = i % rows;
    const int u = row / kUnitRows, ur = row % kUnitRows;
    const int n = n0 + row;
    if (mt >= M || n >= N) continue;
    float v = 0.f;
    for (int s = 0; s < splits; ++s) v += red[s * units + u][ur][mt];
    y[static_cast<size_t>(mt) * N + n] = from_float<T>(v);
  }
}

template <typename T, int MT, int RT>
Status launch_gemv(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m, int forced_splits) {
  const int64_t nt = w.n / 16, kt = w.k / 64;
  const int64_t units = ceil_div(nt, RT);
  // Split K inside the block until the grid has about 48 streaming warps per SM, keeping at
  // least two pipeline steps per warp.
  int splits = 1;
  while (splits < kGemvWarps && units * splits < int64_t{48} * c.sm_count && kt / (2 * splits) >= 2 * kGemvU) splits *= 2;
  if (forced_splits > 0) {
    splits = 1;
    while (splits * 2 <= std::min(forced_splits, kGemvWarps)) splits *= 2;
  }
  const int64_t blocks = ceil_div(units, kGemvWarps / splits);
  const auto* wq = static_cast<const uint4*>(w.packed.data());
  const auto* sc = static_cast<const uint32_t*>(w.scales.data());
  const auto* zp = static_cast<const uint32_t*>(w.zeros.data());
  if (w.zero_point)
    w4a16_gemv_kernel<T, MT, RT, true><<<static_cast<unsigned>(blocks), kGemvThreads, 0, c.stream>>>(
        wq, sc, zp, static_cast<const T*>(x), static_cast<T*>(y), static_cast<int>(m), static_cast<int>(w.n),
        static_cast<int>(w.k), splits);
  else
    w4a16_gemv_kernel<T, MT, RT, false><<<static_cast<unsigned>(blocks), kGemvThreads, 0, c.stream>>>(
        wq, sc, zp, static_cast<const T*>(x), static_cast<T*>(y), static_cast<int>(m), static_cast<int>(w.n),
        static_cast<int>(w.k), splits);
  QFORGE_CUDA_LAUNCHED("w4a16_gemv_kernel");
  return Status::ok();
}

template <typename T>
Status dispatch_gemv(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m, int forced_splits) {
  if (m <= 1) return launch_gemv<T, 1, 1>(c, w, x, y, m, forced_splits);
  if (m <= 2) return launch_gemv<T, 2, 1>(c, w, x, y, m, forced_splits);
  if (m <= 4) return launch_gemv<T, 4, 1>(c, w, x, y, m, forced_splits);
  if (m <= 8) return launch_gemv<T, 8, 1>(c, w, x, y, m, forced_splits);
  return invalid_argument("w4a16_gemm: the CUDA-core gemv takes M <= 8, got " + std::to_string(m));
}

}  // namespace

Status w4a16_gemv(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m, int forced_splits,
                  int tensor_cores, int rows_per_warp) {
  if (m <= 0 || m > kW4A16GemvMaxM)
    return invalid_argument("w4a16_gemm: the gemv path takes 1 <= M <= " + std::to_string(kW4A16GemvMaxM) + ", got " +
                            std::to_string(m));
  // Automatic: the tensor-core kernel from M = 2, and at M = 1 once W has a 128-row block per two
  // SMs (measured on H100, M = 1, CUDA-core vs tensor-core kernel: 28672x8192 52.6 vs 51.7 us,
  // 11008x4096 18.4 vs 16.8, 4096x11008 17.1 vs 16.5, 4096x4096 10.1 vs 10.9).
  const bool tc = tensor_cores == 2 ||
                  (tensor_cores == 0 && (m > kGemvCudaCoreMaxM || 2 * (w.n / 128) >= c.sm_count));
  if (tc) return w4a16_gemv_tc(c, w, x, y, m, forced_splits, rows_per_warp);
  return w.act == ActType::bf16 ? dispatch_gemv<__nv_bfloat16>(c, w, x, y, m, forced_splits)
                                : dispatch_gemv<__half>(c, w, x, y, m, forced_splits);
}

}  // namespace qforge::cuda
