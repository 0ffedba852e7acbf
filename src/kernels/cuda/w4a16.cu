// W4A16: int4 weights (group 128, f16 scales, optional zero-point) x fp16/bf16 activations.
//
// Repacked layout (w4a16_repack). The weight is cut into tiles of 16 rows x 64 columns, stored
// tile after tile: tile (rt, kt) at uint4 offset (rt * K/64 + kt) * 32, one 16-byte uint4 per
// lane of a warp, so a warp reads 512 contiguous bytes per tile. Lane l = 4 g + t holds word j
// (j = 0..3) of the tile: the 8 nibbles of rows g and g + 8 at columns c = 16 t + 4 j + {0,1,2,3}:
//   nibble 0: (g, c+0)  nibble 4: (g, c+1)      -> mask 0x000F000F gives half2 (a0, a1)
//   nibble 1: (g+8, c+0) nibble 5: (g+8, c+1)   -> after >> 4:  (a2, a3)
//   nibble 2: (g, c+2)  nibble 6: (g, c+3)      -> after >> 8:  (a4, a5)
//   nibble 3: (g+8, c+2) nibble 7: (g+8, c+3)   -> after >> 12: (a6, a7)
// i.e. exactly the A fragment of mma.m16n8k16 once the 16 k-slots of sub-tile j are mapped to
// the columns c + {0,1} (slots 2t, 2t+1) and c + {2,3} (slots 2t+8, 2t+9). The dot product is
// invariant under that permutation as long as the activations (B fragment) use the same one:
// lane (g, t) then reads 16 consecutive activations of token g per tile (two 16-byte loads).
// Scales: [N/16][K/128][8] pairs (row g, row g+8) in the activation type; zeros likewise, stored
// as bias + z (bias 1024 for f16, 128 for bf16, see Half2) so one subtraction removes both.
#include <algorithm>
#include <cstring>

#include "cuda_common.h"
#include "mma.cuh"
#include "qforge/dtype.h"
#include "w4a16_internal.h"
#include "w4a16_tile.cuh"

namespace qforge::cuda {
namespace {

using namespace detail;

constexpr int kWarps = 8;        // warps per block, each on its own 16*RT rows
constexpr int kThreads = kWarps * 32;
constexpr int kU = 4;            // k-tiles (of 64 columns) per pipeline step

W4A16Tuning g_tuning;
// Automatic path: the decode kernels (w4a16_gemv*.cu) up to this M. Measured on H100
// (docs/BENCHMARKS.md): the tensor-core GEMV beats this file's mma kernel at M = 2..8 on all four
// issue shapes (28672x8192: 52.4-56.0 vs 59.6-60.2 us) and ties it at M = 16.
constexpr int64_t kGemvAutoMaxM = 8;

// LS (late scale, decode path): the A fragments hold the exact integers q - z and each tile's
// mma result is scaled in f32 (one FFMA per output instead of one HMUL2 per weight pair).
template <typename T, int MT, int RT, bool ZP, bool LS = false>
__global__ void __launch_bounds__(kThreads, MT * RT <= 2 ? 2 : 1) w4a16_fused_kernel(const uint4* __restrict__ wq,
                                                               const uint32_t* __restrict__ sc,
                                                               const uint32_t* __restrict__ zp,
                                                               const T* __restrict__ x, T* __restrict__ y,
                                                               float* __restrict__ partial,
                                                               unsigned* __restrict__ counters, int M, int N, int K,
                                                               int splits, int chunks) {
  using T2 = typename Half2<T>::type;
  constexpr int kTok = 8 * MT;
  constexpr int kRow = kU * 64 + 8;  // padded smem row (halves): conflict-free 16-byte reads
  __shared__ __align__(16) T xs[MT <= 2 ? 8 : kTok * kRow];
  __shared__ unsigned s_last;

  const int KT = K / 64, G = K / 128, NT = N / 16;
  int bid = blockIdx.x;
  const int chunk = bid % chunks;
  bid /= chunks;
  const int split = bid % splits;
  const int rowblock = bid / splits;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int rt0 = (rowblock * kWarps + warp) * RT;
  const int m0 = chunk * kTok;
  const int nck = (KT + kU - 1) / kU;
  const int c_beg = static_cast<int>(static_cast<int64_t>(split) * nck / splits);
  const int c_end = static_cast<int>(static_cast<int64_t>(split + 1) * nck / splits);
  const bool warp_active = rt0 < NT;

  float acc[RT][MT][4];
#pragma unroll
  for (int r = 0; r < RT; ++r)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[r][mt][i] = 0.f;

  W4A16Step<kU, RT> cur;
  const uint32_t zsym = w4a16_sym_zero<T>();
  auto load_step = [&](int c, W4A16Step<kU, RT>& st) {
    w4a16_load_step<ZP>(wq, sc, zp, rt0, c * kU, KT, NT, KT, G, lane, zsym, st);
  };

  // Decode-sized M: the activations go straight from global memory (L1/L2 hits: every warp of
  // the block reads the same columns) into B-fragment registers while the next step's weights
  // are in flight, so the loop has no barrier and no shared-memory round trip. (A variant that
  // streamed the weights through a per-warp cp.async ring, 4 steps deep, measured slower on
  // H100: 70.5 vs 66.6 us for 28672x8192 at M=1.)
  constexpr bool kDirect = MT <= 2;
  if constexpr (kDirect) {
    auto load_b = [&](int c, uint4 (&b)[kU][MT][2]) {
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int kt = c * kU + u;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const int tok = m0 + mt * 8 + g;
          if (kt < KT && tok < M) {
            const uint4* p = reinterpret_cast<const uint4*>(x + static_cast<size_t>(tok) * K + kt * 64 + 16 * t);
            b[u][mt][0] = __ldg(p);
            b[u][mt][1] = __ldg(p + 1);
          } else {
            b[u][mt][0] = make_uint4(0, 0, 0, 0);
            b[u][mt][1] = make_uint4(0, 0, 0, 0);
          }
        }
      }
    };
    if (warp_active && c_beg < c_end) {
      load_step(c_beg, cur);
      for (int c = c_beg; c < c_end; ++c) {
        W4A16Step<kU, RT> nxt;
        if (c + 1 < c_end) load_step(c + 1, nxt);
        // Activations of this step: L1 hits after the first warp (not worth prefetch registers).
        uint4 b_cur[kU][MT][2];
        load_b(c, b_cur);
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          if (c * kU + u >= KT) break;
#pragma unroll
          for (int r = 0; r < RT; ++r) {
            uint32_t af[4][4];
            const T2 s2 = as_h2<T2>(cur.s[u][r]), z2 = as_h2<T2>(cur.z[u][r]);
            const T2 sg = T2(s2.x, s2.x), sh = T2(s2.y, s2.y);
            const T2 zg = T2(z2.x, z2.x), zh = T2(z2.y, z2.y);
            const uint32_t w4[4] = {cur.a[u][r].x, cur.a[u][r].y, cur.a[u][r].z, cur.a[u][r].w};
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
              T2 p[4];
              w4a16_decode_word<T, !LS>(w4[jj], zg, zh, sg, sh, p);
#pragma unroll
              for (int i = 0; i < 4; ++i) af[jj][i] = as_u32(p[i]);
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
              const uint32_t bw[8] = {b_cur[u][mt][0].x, b_cur[u][mt][0].y, b_cur[u][mt][0].z, b_cur[u][mt][0].w,
                                      b_cur[u][mt][1].x, b_cur[u][mt][1].y, b_cur[u][mt][1].z, b_cur[u][mt][1].w};
              if constexpr (LS) {
                float tmp[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) mma_16816<T>(tmp, af[jj], bw[2 * jj], bw[2 * jj + 1]);
                const float fg = static_cast<float>(s2.x), fh = static_cast<float>(s2.y);
                acc[r][mt][0] = fmaf(fg, tmp[0], acc[r][mt][0]);
                acc[r][mt][1] = fmaf(fg, tmp[1], acc[r][mt][1]);
                acc[r][mt][2] = fmaf(fh, tmp[2], acc[r][mt][2]);
                acc[r][mt][3] = fmaf(fh, tmp[3], acc[r][mt][3]);
              } else {
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) mma_16816<T>(acc[r][mt], af[jj], bw[2 * jj], bw[2 * jj + 1]);
              }
            }
          }
        }
        cur = nxt;
      }
    }
  } else {
    if (warp_active && c_beg < c_end) load_step(c_beg, cur);

    for (int c = c_beg; c < c_end; ++c) {
      __syncthreads();
      // Stage this step's activations: kTok tokens x kU*64 columns.
      for (int i = threadIdx.x; i < kTok * kU * 8; i += kThreads) {
        const int row = i / (kU * 8), col = (i % (kU * 8)) * 8;
        const int tok = m0 + row, kk = c * kU * 64 + col;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (tok < M && kk < K) v = __ldg(reinterpret_cast<const uint4*>(x + static_cast<size_t>(tok) * K + kk));
        *reinterpret_cast<uint4*>(xs + row * kRow + col) = v;
      }
      __syncthreads();
      if (!warp_active) continue;

      W4A16Step<kU, RT> nxt;
      if (c + 1 < c_end) load_step(c + 1, nxt);

  #pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (c * kU + u >= KT) break;
        uint32_t af[RT][4][4];
  #pragma unroll
        for (int r = 0; r < RT; ++r) {
          const T2 s2 = as_h2<T2>(cur.s[u][r]), z2 = as_h2<T2>(cur.z[u][r]);
          const T2 sg = T2(s2.x, s2.x), sh = T2(s2.y, s2.y);
          const T2 zg = T2(z2.x, z2.x), zh = T2(z2.y, z2.y);
          const uint32_t w4[4] = {cur.a[u][r].x, cur.a[u][r].y, cur.a[u][r].z, cur.a[u][r].w};
  #pragma unroll
          for (int j = 0; j < 4; ++j) {
            T2 p[4];
            w4a16_decode_word<T, true>(w4[j], zg, zh, sg, sh, p);
  #pragma unroll
            for (int i = 0; i < 4; ++i) af[r][j][i] = as_u32(p[i]);
          }
        }
  #pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const T* xr = xs + (mt * 8 + g) * kRow + u * 64 + 16 * t;
          const uint4 b0 = *reinterpret_cast<const uint4*>(xr);
          const uint4 b1 = *reinterpret_cast<const uint4*>(xr + 8);
          const uint32_t bw[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
  #pragma unroll
          for (int r = 0; r < RT; ++r)
  #pragma unroll
            for (int j = 0; j < 4; ++j) mma_16816<T>(acc[r][mt], af[r][j], bw[2 * j], bw[2 * j + 1]);
        }
      }
      cur = nxt;
    }

  }

  // Epilogue: C fragments straight to y, or (split-K) into the zeroed f32 partials, the last block
  // of this output tile converting them.
  if (warp_active) {
#pragma unroll
    for (int r = 0; r < RT; ++r) {
      if (rt0 + r >= NT) continue;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
        w4a16_store_c<T>(acc[r][mt], y, partial, splits == 1, M, N, (rt0 + r) * 16 + g, m0 + mt * 8 + 2 * t);
    }
  }
  if (splits == 1) return;
  constexpr int kRows = kWarps * RT * 16;
  w4a16_finish_split<T>(partial, y, counters + static_cast<size_t>(rowblock) * chunks + chunk, s_last, splits,
                        rowblock * kRows, kRows, m0, kTok, M, N);
}

// Inverse of the repacking: one thread per (tile, lane), 32 values out.
template <typename T, bool ZP>
__global__ void w4a16_dequant_kernel(const uint4* __restrict__ wq, const uint32_t* __restrict__ sc,
                                     const uint32_t* __restrict__ zp, T* __restrict__ out, int N, int K) {
  using T2 = typename Half2<T>::type;
  const int KT = K / 64, G = K / 128;
  const size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t total = static_cast<size_t>(N / 16) * KT * 32;
  if (idx >= total) return;
  const int lane = static_cast<int>(idx % 32), g = lane >> 2, t = lane & 3;
  const size_t tile = idx / 32;
  const int kt = static_cast<int>(tile % KT), rt = static_cast<int>(tile / KT);
  const uint4 w = wq[idx];
  const size_t si = (static_cast<size_t>(rt) * G + kt / 2) * 8 + g;
  const T2 s2 = as_h2<T2>(sc[si]);
  const T2 z2 = as_h2<T2>(ZP ? zp[si] : w4a16_sym_zero<T>());
  const T2 sg = T2(s2.x, s2.x), sh = T2(s2.y, s2.y), zg = T2(z2.x, z2.x), zh = T2(z2.y, z2.y);
  const uint32_t w4[4] = {w.x, w.y, w.z, w.w};
  __align__(16) T row_g[16];
  __align__(16) T row_h[16];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    T2 p[4];  // (g, c..c+1), (g+8, c..c+1), (g, c+2..c+3), (g+8, c+2..c+3); c = 16 t + 4 j
    w4a16_decode_word<T, true>(w4[j], zg, zh, sg, sh, p);
    row_g[4 * j + 0] = p[0].x;
    row_g[4 * j + 1] = p[0].y;
    row_g[4 * j + 2] = p[2].x;
    row_g[4 * j + 3] = p[2].y;
    row_h[4 * j + 0] = p[1].x;
    row_h[4 * j + 1] = p[1].y;
    row_h[4 * j + 2] = p[3].x;
    row_h[4 * j + 3] = p[3].y;
  }
  const size_t col = static_cast<size_t>(kt) * 64 + 16 * t;
  uint4* dg = reinterpret_cast<uint4*>(out + (static_cast<size_t>(rt) * 16 + g) * K + col);
  uint4* dh = reinterpret_cast<uint4*>(out + (static_cast<size_t>(rt) * 16 + g + 8) * K + col);
  dg[0] = reinterpret_cast<const uint4*>(row_g)[0];
  dg[1] = reinterpret_cast<const uint4*>(row_g)[1];
  dh[0] = reinterpret_cast<const uint4*>(row_h)[0];
  dh[1] = reinterpret_cast<const uint4*>(row_h)[1];
}

uint16_t to_act_bits(float v, ActType act) { return act == ActType::bf16 ? f32_to_bf16(v) : f32_to_f16(v); }

template <typename T, int MT, int RT, bool LS = false>
Status launch_fused(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m) {
  const int64_t n = w.n, k = w.k;
  const int64_t kt = k / 64, nck = ceil_div(kt, kU);
  const int64_t rowblocks = ceil_div(n, int64_t{kWarps} * RT * 16);
  const int64_t chunks = ceil_div(m, 8 * MT);
  const int64_t base = rowblocks * chunks;
  // Split K so that the grid fills whole waves of resident blocks: a partial last wave idles
  // part of the memory system (224 row blocks on 264 slots would waste 15%).
  static int per_sm = 0;
  if (per_sm == 0) {
    QFORGE_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, w4a16_fused_kernel<T, MT, RT, false, LS>, kThreads, 0));
    per_sm = std::max(per_sm, 1);
  }
  const int64_t resident = static_cast<int64_t>(per_sm) * c.sm_count;
  int64_t splits = 1;
  double best = -1;
  for (int64_t s = 1; s <= std::min<int64_t>(nck, 16); ++s) {
    const int64_t b = base * s;
    const double eff = static_cast<double>(b) / static_cast<double>(ceil_div(b, resident) * resident);
    // Each split costs a pipeline fill and a round of atomics: penalty 0.1 per split (measured
    // on H100: 28672x8192, M=1 went from 66.6 us with 0.01 to 60.5 us; 4096x4096 unchanged).
    const double score = eff - 0.1 * static_cast<double>(s);
    if (score > best) {
      best = score;
      splits = s;
    }
    if (b >= 8 * resident) break;
  }
  if (g_tuning.splits > 0) splits = std::min<int64_t>(g_tuning.splits, nck);
  const int64_t blocks = base * splits;
  if (blocks > 0x7fffffff) return invalid_argument("w4a16_gemm: M = " + std::to_string(m) + " too large for one launch");
  float* partial = nullptr;
  unsigned* counters = nullptr;
  if (splits > 1)
    QFORGE_RETURN_IF_ERROR(c.splitk_workspace(static_cast<size_t>(m * n), static_cast<size_t>(base), &partial, &counters));
  const auto* wq = static_cast<const uint4*>(w.packed.data());
  const auto* sc = static_cast<const uint32_t*>(w.scales.data());
  const auto* zp = static_cast<const uint32_t*>(w.zeros.data());
  if (w.zero_point)
    w4a16_fused_kernel<T, MT, RT, true, LS><<<static_cast<unsigned>(blocks), kThreads, 0, c.stream>>>(
        wq, sc, zp, static_cast<const T*>(x), static_cast<T*>(y), partial, counters, static_cast<int>(m),
        static_cast<int>(n), static_cast<int>(k), static_cast<int>(splits), static_cast<int>(chunks));
  else
    w4a16_fused_kernel<T, MT, RT, false, LS><<<static_cast<unsigned>(blocks), kThreads, 0, c.stream>>>(
        wq, sc, zp, static_cast<const T*>(x), static_cast<T*>(y), partial, counters, static_cast<int>(m),
        static_cast<int>(n), static_cast<int>(k), static_cast<int>(splits), static_cast<int>(chunks));
  QFORGE_CUDA_LAUNCHED("w4a16_fused_kernel");
  return Status::ok();
}

// Tile shape per M: tokens per block 8*MT (one n8 mma column block each); rows per warp 16*RT
// (more rows per staged activation tile once M makes the activation traffic count).
template <typename T>
Status dispatch_fused(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m) {
  // Automatic scale placement: after the mma for M <= 8 (as fast, measured 60.2 vs 60.4 us on
  // 28672x8192, and the weights enter the mma exactly instead of rounded to the activation type),
  // before it for M <= 16 (the extra f32 fragment spills there: 97.7 vs 68.5 us).
  const bool late8 = g_tuning.late_scale != 1, late16 = g_tuning.late_scale == 2;
  if (m <= 8) return late8 ? launch_fused<T, 1, 1, true>(c, w, x, y, m) : launch_fused<T, 1, 1>(c, w, x, y, m);
  if (m <= 16) return late16 ? launch_fused<T, 2, 1, true>(c, w, x, y, m) : launch_fused<T, 2, 1>(c, w, x, y, m);
  if (m <= 32) return launch_fused<T, 4, 1>(c, w, x, y, m);
  return launch_fused<T, 8, 2>(c, w, x, y, m);
}

template <typename T>
Status launch_dequant(Context::Impl& c, const W4A16Weights& w, void* out) {
  const size_t total = static_cast<size_t>(w.n / 16) * static_cast<size_t>(w.k / 64) * 32;
  const unsigned blocks = static_cast<unsigned>((total + 255) / 256);
  const auto* wq = static_cast<const uint4*>(w.packed.data());
  const auto* sc = static_cast<const uint32_t*>(w.scales.data());
  const auto* zp = static_cast<const uint32_t*>(w.zeros.data());
  if (w.zero_point)
    w4a16_dequant_kernel<T, true><<<blocks, 256, 0, c.stream>>>(wq, sc, zp, static_cast<T*>(out), static_cast<int>(w.n), static_cast<int>(w.k));
  else
    w4a16_dequant_kernel<T, false><<<blocks, 256, 0, c.stream>>>(wq, sc, zp, static_cast<T*>(out), static_cast<int>(w.n), static_cast<int>(w.k));
  QFORGE_CUDA_LAUNCHED("w4a16_dequant_kernel");
  return Status::ok();
}

Status check_weights(const W4A16Weights& w) {
  if (w.n <= 0 || w.k <= 0 || w.n % 16 || w.k % 128)
    return invalid_argument("w4a16: weight shape [" + std::to_string(w.n) + ", " + std::to_string(w.k) +
                            "] needs N % 16 == 0 and K % 128 == 0");
  if (w.n > (int64_t{1} << 24) || w.k > (int64_t{1} << 24))
    return invalid_argument("w4a16: weight shape [" + std::to_string(w.n) + ", " + std::to_string(w.k) + "] too large");
  if (w.packed.size() < static_cast<size_t>(w.n * w.k / 2) || w.scales.size() < static_cast<size_t>(w.n * w.k / 128 * 2) ||
      (w.zero_point && w.zeros.size() < static_cast<size_t>(w.n * w.k / 128 * 2)))
    return invalid_argument("w4a16: device planes smaller than the weight shape needs");
  return Status::ok();
}

}  // namespace

Expected<W4A16Host> w4a16_repack(const QuantizedTensor& q, ActType act) {
  const Scheme& s = q.scheme;
  const bool asym = s.format == FormatId::int_asym;
  if ((s.format != FormatId::int_sym && !asym) || s.bits != 4 || s.granularity != Granularity::group || s.group_size != 128)
    return invalid_argument("w4a16_repack: scheme " + s.name() + " is not int4-g128-sym or int4-g128-asym");
  const int64_t n = q.rows, k = q.cols;
  if (n <= 0 || k <= 0 || n % 16 || k % 128)
    return invalid_argument("w4a16_repack: weight [" + std::to_string(n) + ", " + std::to_string(k) +
                            "] needs rows % 16 == 0 and cols % 128 == 0 (pad the layer)");
  if (n > (int64_t{1} << 24) || k > (int64_t{1} << 24))
    return invalid_argument("w4a16_repack: weight [" + std::to_string(n) + ", " + std::to_string(k) + "] too large");
  const size_t row_bytes = static_cast<size_t>(k / 2);
  const int64_t groups = k / 128;
  if (q.codes.size() != row_bytes * static_cast<size_t>(n) || q.scales.size() != static_cast<size_t>(n * groups) * 2 ||
      (asym && q.zeros.size() != static_cast<size_t>(n * groups)))
    return invalid_argument("w4a16_repack: plane sizes do not match scheme " + s.name() + " on [" + std::to_string(n) +
                            ", " + std::to_string(k) + "]");
  W4A16Host h;
  h.n = n;
  h.k = k;
  h.zero_point = asym;
  h.act = act;
  h.packed.assign(static_cast<size_t>(n * k / 2), 0);
  auto nib = [&](int64_t row, int64_t col) -> uint32_t {
    const uint8_t b = q.codes[static_cast<size_t>(row) * row_bytes + static_cast<size_t>(col / 2)];
    return (col & 1) ? (b >> 4) : (b & 15);
  };
  const int64_t kt_count = k / 64;
  for (int64_t rt = 0; rt < n / 16; ++rt) {
    for (int64_t kt = 0; kt < kt_count; ++kt) {
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        const int64_t rg = rt * 16 + g, rh = rg + 8;
        uint32_t words[4];
        for (int j = 0; j < 4; ++j) {
          const int64_t c = kt * 64 + 16 * t + 4 * j;
          const uint32_t v[8] = {nib(rg, c), nib(rh, c), nib(rg, c + 2), nib(rh, c + 2),
                                 nib(rg, c + 1), nib(rh, c + 1), nib(rg, c + 3), nib(rh, c + 3)};
          uint32_t wd = 0;
          for (int p = 0; p < 8; ++p) wd |= v[p] << (4 * p);
          words[j] = wd;
        }
        std::memcpy(h.packed.data() + static_cast<size_t>(((rt * kt_count + kt) * 32 + lane) * 16), words, 16);
      }
    }
  }
  const float bias = act == ActType::bf16 ? 128.f : 1024.f;
  h.scales.resize(static_cast<size_t>(n * groups) * 2);
  if (asym) h.zeros.resize(static_cast<size_t>(n * groups) * 2);
  for (int64_t rt = 0; rt < n / 16; ++rt) {
    for (int64_t grp = 0; grp < groups; ++grp) {
      for (int g = 0; g < 16; ++g) {
        const int64_t row = rt * 16 + g;
        const size_t src = static_cast<size_t>(row * groups + grp);
        const size_t dst = static_cast<size_t>(((rt * groups + grp) * 8 + (g & 7)) * 2 + (g >> 3));
        uint16_t f16;
        std::memcpy(&f16, q.scales.data() + src * 2, 2);
        const uint16_t sb = act == ActType::bf16 ? f32_to_bf16(f16_to_f32(f16)) : f16;
        std::memcpy(h.scales.data() + dst * 2, &sb, 2);
        if (asym) {
          const uint16_t zb = to_act_bits(bias + static_cast<float>(q.zeros[src]), act);
          std::memcpy(h.zeros.data() + dst * 2, &zb, 2);
        }
      }
    }
  }
  return h;
}

Expected<W4A16Weights> w4a16_upload(const W4A16Host& h) {
  W4A16Weights w;
  w.n = h.n;
  w.k = h.k;
  w.zero_point = h.zero_point;
  w.act = h.act;
  QFORGE_ASSIGN_OR_RETURN(w.packed, DeviceBuffer::upload(h.packed.data(), h.packed.size()));
  QFORGE_ASSIGN_OR_RETURN(w.scales, DeviceBuffer::upload(h.scales.data(), h.scales.size()));
  if (h.zero_point) {
    QFORGE_ASSIGN_OR_RETURN(w.zeros, DeviceBuffer::upload(h.zeros.data(), h.zeros.size()));
  }
  QFORGE_RETURN_IF_ERROR(check_weights(w));
  return Expected<W4A16Weights>(std::move(w));
}

Status w4a16_dequantize(Context& ctx, const W4A16Weights& w, void* out) {
  QFORGE_RETURN_IF_ERROR(check_weights(w));
  if (!out) return invalid_argument("w4a16_dequantize: null output");
  return w.act == ActType::bf16 ? launch_dequant<__nv_bfloat16>(ctx.impl(), w, out)
                                : launch_dequant<__half>(ctx.impl(), w, out);
}

void w4a16_set_tuning(const W4A16Tuning& t) { g_tuning = t; }

Status w4a16_gemm(Context& ctx, const W4A16Weights& w, const void* x, void* y, int64_t m, W4A16Path path) {
  QFORGE_RETURN_IF_ERROR(check_weights(w));
  if (m <= 0 || m > (int64_t{1} << 24)) return invalid_argument("w4a16_gemm: M = " + std::to_string(m) + " out of range");
  if (!x || !y) return invalid_argument("w4a16_gemm: null activation or output pointer");
  if ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(y)) & 15)
    return invalid_argument("w4a16_gemm: activations and outputs must be 16-byte aligned");
  Context::Impl& c = ctx.impl();
  // Above 128 tokens the GEMM is compute-bound: one unpack plus cuBLAS beats re-streaming int4.
  if (path == W4A16Path::automatic) {
    const int64_t gemv_max = g_tuning.gemv_max_m == 0 ? kGemvAutoMaxM : std::min<int64_t>(g_tuning.gemv_max_m, kW4A16GemvMaxM);
    path = m <= gemv_max ? W4A16Path::gemv : m <= 128 ? W4A16Path::fused : W4A16Path::dequant_gemm;
  }
  if (path == W4A16Path::gemv)
    return w4a16_gemv(c, w, x, y, m, g_tuning.gemv_splits, g_tuning.gemv_tensor_cores, g_tuning.gemv_rows_per_warp);
  if (path == W4A16Path::fused)
    return w.act == ActType::bf16 ? dispatch_fused<__nv_bfloat16>(c, w, x, y, m) : dispatch_fused<__half>(c, w, x, y, m);
  QFORGE_RETURN_IF_ERROR(c.ensure_scratch(static_cast<size_t>(w.n * w.k) * 2));
  QFORGE_RETURN_IF_ERROR(w4a16_dequantize(ctx, w, c.scratch));
  const float alpha = 1.f, beta = 0.f;
  const cudaDataType_t dt = w.act == ActType::bf16 ? CUDA_R_16BF : CUDA_R_16F;
  QFORGE_CUBLAS_TRY(cublasGemmEx(c.blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.n), static_cast<int>(m),
                                 static_cast<int>(w.k), &alpha, c.scratch, dt, static_cast<int>(w.k), x, dt,
                                 static_cast<int>(w.k), &beta, y, dt, static_cast<int>(w.n), CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
  return Status::ok();
}

}  // namespace qforge::cuda
