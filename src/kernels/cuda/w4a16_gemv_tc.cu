// W4A16 decode kernel on the tensor cores (M <= 16; the automatic path's choice for M = 2..8, and
// for M = 1 on larger weights, see w4a16_gemv.cu):
// the streaming structure of the CUDA-core GEMV (w4a16_gemv.cu) with the math of the mma kernel
// (w4a16.cu), over the same repacked weights.
//
// Why a third kernel: at M = 2..16 the CUDA-core GEMV is compute-bound (16 HFMA2 per token and
// tile) and the mma kernel is latency-bound (its activation fragments for a whole pipeline step
// take 64 registers at M = 16, so few warps fit). Here each lane's 16-byte load of a tile is the
// A fragments of four m16n8k16 mma as is (see the layout in w4a16.cu), and the activations come
// from shared memory: a block's 8 warps stream 8 row tiles over the same K chunk, so the block
// stages that chunk's activations once (cp.async, overlapped with the first weight loads) and each
// warp reads its B fragments with two conflict-free 16-byte loads per tile and 8 tokens.
// K is split across blocks (chunks) until the grid has enough streaming blocks; the chunks' f32
// partial sums meet in the context's split-K workspace and the last block of a row block writes
// the output and re-zeroes it (as the mma kernel does).
#include <algorithm>
#include <type_traits>

#include "cuda_common.h"
#include "mma.cuh"
#include "w4a16_internal.h"
#include "w4a16_tile.cuh"

namespace qforge::cuda {
namespace {

using namespace detail;

constexpr int kTcWarps = 8;  // warps per block, each on its own RT row tiles of 16 rows
constexpr int kTcThreads = kTcWarps * 32;
// Resident blocks per SM the 8-token kernel is compiled for (3: at most 85 registers; measured
// 52.2 vs 55.5 us with 2 on 28672x8192, M = 1, one row tile per warp). The 16-token kernel takes 2
// (with 3 it spills).
#ifndef QFORGE_GEMV_TC_MIN_BLOCKS
#define QFORGE_GEMV_TC_MIN_BLOCKS 3
#endif
// Shared-memory row pitch of the staged activations, in elements: the chunk plus 8 (16 bytes), so
// the 8 lanes of a quarter-warp (rows g, g + 1 at 4 column offsets 32 bytes apart) hit 8 distinct
// 16-byte bank groups.
__host__ __device__ constexpr int tc_pitch(int chunk_tiles) { return chunk_tiles * 64 + 8; }

// One 16 x 64 weight tile (this lane's 16 bytes, group scale and zero words) times NB n8 token
// tiles (B fragments bw) into the C fragments acc. bf16 applies the group scale to the tile's f32
// mma result (the weights enter the mma as the exact integers q - z); f16 scales the weights
// first, since a product chain over unscaled integers can overflow f16 (see w4a16_gemv.cu).
template <typename T, int NB>
__device__ __forceinline__ void mma_tile(const uint4& wv, uint32_t sw, uint32_t zw, const uint32_t (&bw)[NB][8],
                                         float (&acc)[NB][4]) {
  using T2 = typename Half2<T>::type;
  constexpr bool kLateScale = std::is_same_v<T, __nv_bfloat16>;
  const T2 s2 = as_h2<T2>(sw), z2 = as_h2<T2>(zw);
  const T2 sg = T2(s2.x, s2.x), sh = T2(s2.y, s2.y);
  const T2 zg = T2(z2.x, z2.x), zh = T2(z2.y, z2.y);
  const uint32_t w4[4] = {wv.x, wv.y, wv.z, wv.w};
  uint32_t af[4][4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    T2 p[4];
    w4a16_decode_word<T, !kLateScale>(w4[j], zg, zh, sg, sh, p);
#pragma unroll
    for (int i = 0; i < 4; ++i) af[j][i] = as_u32(p[i]);
  }
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    if constexpr (kLateScale) {
      float tmp[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int j = 0; j < 4; ++j) mma_16816<T>(tmp, af[j], bw[nb][2 * j], bw[nb][2 * j + 1]);
      const float fg = static_cast<float>(s2.x), fh = static_cast<float>(s2.y);
      acc[nb][0] = fmaf(fg, tmp[0], acc[nb][0]);
      acc[nb][1] = fmaf(fg, tmp[1], acc[nb][1]);
      acc[nb][2] = fmaf(fh, tmp[2], acc[nb][2]);
      acc[nb][3] = fmaf(fh, tmp[3], acc[nb][3]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) mma_16816<T>(acc[nb], af[j], bw[nb][2 * j], bw[nb][2 * j + 1]);
    }
  }
}

// NB: n8 token tiles (8 or 16 tokens); RT: row tiles per warp (each B fragment serves RT tiles);
// U: tiles per pipeline step.
template <typename T, int NB, int RT, int U, bool ZP>
__global__ void __launch_bounds__(kTcThreads, NB == 1 ? QFORGE_GEMV_TC_MIN_BLOCKS : 2)
    w4a16_gemv_tc_kernel(const uint4* __restrict__ wq, const uint32_t* __restrict__ sc, const uint32_t* __restrict__ zp,
                         const T* __restrict__ x, T* __restrict__ y, float* __restrict__ partial,
                         unsigned* __restrict__ counters, int M, int N, int K, int chunks, int chunk_tiles) {
  using T2 = typename Half2<T>::type;
  constexpr int kTcU = U;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  T* xs = reinterpret_cast<T*>(tc_smem);
  __shared__ unsigned s_last;

  const int KT = K / 64, G = K / 128, NT = N / 16;
  const int chunk = blockIdx.x % chunks, rowblock = blockIdx.x / chunks;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int rt0 = (rowblock * kTcWarps + warp) * RT;
  const int kt_beg = chunk * chunk_tiles, kt_end = min(KT, kt_beg + chunk_tiles);
  const int pitch = tc_pitch(chunk_tiles);

  const uint32_t zsym = w4a16_sym_zero<T>();
  auto load_step = [&](int kt0, W4A16Step<kTcU, RT>& st) {
    w4a16_load_step<ZP>(wq, sc, zp, rt0, kt0, kt_end, NT, KT, G, lane, zsym, st);
  };

  W4A16Step<kTcU, RT> cur;
  load_step(kt_beg, cur);

  // Stage this chunk's activations: NB * 8 tokens x (kt_end - kt_beg) * 64 columns, zeros for
  // tokens past M.
  {
    const int vecs = (kt_end - kt_beg) * 8;  // 16-byte vectors per token row
    for (int i = threadIdx.x; i < NB * 8 * vecs; i += kTcThreads) {
      const int tok = i / vecs, v = i % vecs;
      const T* src = x + static_cast<size_t>(min(tok, M - 1)) * K + static_cast<size_t>(kt_beg) * 64 + v * 8;
      cp_async_16(xs + tok * pitch + v * 8, src, tok < M ? 16 : 0);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
  }

  float acc[RT][NB][4];
#pragma unroll
  for (int r = 0; r < RT; ++r)
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) acc[r][nb][0] = acc[r][nb][1] = acc[r][nb][2] = acc[r][nb][3] = 0.f;

  for (int kt0 = kt_beg; kt0 < kt_end; kt0 += kTcU) {
    W4A16Step<kTcU, RT> nxt;
    if (kt0 + kTcU < kt_end) load_step(kt0 + kTcU, nxt);
#pragma unroll
    for (int u = 0; u < kTcU; ++u) {
      const int kt = kt0 + u;
      if (kt >= kt_end) break;
      uint32_t bw[NB][8];
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        // B fragments: token 8 nb + g, columns 16 t .. 16 t + 15 of this tile.
        const T* xr = xs + (nb * 8 + g) * pitch + (kt - kt_beg) * 64 + 16 * t;
        const uint4 b0 = *reinterpret_cast<const uint4*>(xr);
        const uint4 b1 = *reinterpret_cast<const uint4*>(xr + 8);
        bw[nb][0] = b0.x; bw[nb][1] = b0.y; bw[nb][2] = b0.z; bw[nb][3] = b0.w;
        bw[nb][4] = b1.x; bw[nb][5] = b1.y; bw[nb][6] = b1.z; bw[nb][7] = b1.w;
      }
#pragma unroll
      for (int r = 0; r < RT; ++r) mma_tile<T, NB>(cur.a[u][r], cur.s[u][r], cur.z[u][r], bw, acc[r]);
    }
    cur = nxt;
  }

  // C fragments straight to y (one chunk) or into the f32 partials, the last chunk's block
  // converting its row block.
#pragma unroll
  for (int r = 0; r < RT; ++r) {
    if (rt0 + r >= NT) break;
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) w4a16_store_c<T>(acc[r][nb], y, partial, chunks == 1, M, N, (rt0 + r) * 16 + g, nb * 8 + 2 * t);
  }
  if (chunks == 1) return;
  constexpr int kRows = kTcWarps * RT * 16;
  w4a16_finish_split<T>(partial, y, counters + rowblock, s_last, chunks, rowblock * kRows, kRows, 0, M, M, N);
}

template <typename T, int NB, int RT, int U>
Status launch_tc(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m, int forced_splits) {
  const int64_t n = w.n, k = w.k, kt = k / 64;
  constexpr int kTcU = U;
  const int64_t rowblocks = ceil_div(n / 16, int64_t{kTcWarps} * RT);
  // Once per instantiation: resident blocks per SM, and the staging limit (200 KiB, or less where
  // the device's opt-in shared memory per block is smaller, e.g. 163 KiB on sm_80), which both
  // kernels (with and without zero-points) are allowed to use.
  static int per_sm = 0;
  static int64_t max_smem = 0;
  if (per_sm == 0) {
    int optin = 0;
    QFORGE_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c.device));
    max_smem = std::min<int64_t>(200 * 1024, optin);
    for (auto kernel : {w4a16_gemv_tc_kernel<T, NB, RT, U, true>, w4a16_gemv_tc_kernel<T, NB, RT, U, false>})
      QFORGE_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(max_smem)));
    QFORGE_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, w4a16_gemv_tc_kernel<T, NB, RT, U, true>, kTcThreads, 0));
    per_sm = std::max(per_sm, 1);
  }
  const int64_t wave = static_cast<int64_t>(per_sm) * c.sm_count;
  // K chunks: the smallest power of two giving about two blocks per SM, and, once that exceeds one
  // wave of resident blocks, at least two whole waves (a grid of 1.1 waves idles most SMs while its
  // last blocks run). Measured on H100, M = 1..8, every chunk count 2..16: this picks the fastest
  // or within 3% of it on all four issue shapes (docs/BENCHMARKS.md). At least two pipeline steps
  // per chunk; the staged activations must fit in shared memory.
  const int64_t max_chunks = std::max<int64_t>(1, kt / (2 * kTcU));
  int64_t chunks = 1;
  while (chunks * 2 <= max_chunks) {
    const int64_t b = rowblocks * chunks;
    if (10 * b >= 19 * int64_t{c.sm_count} && (b <= wave || b >= 2 * wave)) break;
    chunks *= 2;
  }
  if (forced_splits > 0) chunks = std::min<int64_t>(forced_splits, kt);
  int64_t chunk_tiles = ceil_div(kt, chunks);
  while (static_cast<int64_t>(NB) * 8 * tc_pitch(static_cast<int>(chunk_tiles)) * 2 > max_smem) chunk_tiles = ceil_div(chunk_tiles, 2);
  chunks = ceil_div(kt, chunk_tiles);
  const size_t smem = static_cast<size_t>(NB) * 8 * static_cast<size_t>(tc_pitch(static_cast<int>(chunk_tiles))) * sizeof(T);
  const int64_t blocks = rowblocks * chunks;
  if (blocks > 0x7fffffff) return invalid_argument("w4a16_gemm: weight too large for one gemv launch");
  float* partial = nullptr;
  unsigned* counters = nullptr;
  if (chunks > 1)
    QFORGE_RETURN_IF_ERROR(c.splitk_workspace(static_cast<size_t>(m * n), static_cast<size_t>(rowblocks), &partial, &counters));
  const auto* wq = static_cast<const uint4*>(w.packed.data());
  const auto* sc = static_cast<const uint32_t*>(w.scales.data());
  const auto* zp = static_cast<const uint32_t*>(w.zeros.data());
  auto run = [&](auto kernel) -> Status {
    kernel<<<static_cast<unsigned>(blocks), kTcThreads, smem, c.stream>>>(
        wq, sc, zp, static_cast<const T*>(x), static_cast<T*>(y), partial, counters, static_cast<int>(m), static_cast<int>(n),
        static_cast<int>(k), static_cast<int>(chunks), static_cast<int>(chunk_tiles));
    QFORGE_CUDA_LAUNCHED("w4a16_gemv_tc_kernel");
    return Status::ok();
  };
  return w.zero_point ? run(w4a16_gemv_tc_kernel<T, NB, RT, U, true>) : run(w4a16_gemv_tc_kernel<T, NB, RT, U, false>);
}

template <typename T>
Status dispatch_tc(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m, int forced_splits,
                   int rows_per_warp) {
  if (m > 8) return launch_tc<T, 2, 1, 4>(c, w, x, y, m, forced_splits);
  // Two row tiles per warp (the staged activations read once for both, two tiles per step) once
  // the weight has a 128-row block per SM; with fewer rows one tile per warp and four per step
  // keeps more blocks. Measured on H100, M = 1 / 4 / 8: 28672x8192 51.7 / 52.3 / 55.0 us against
  // 52.3 / 53.3 / 55.6; 4096x4096 10.9 / 12.0 / 13.2 against 10.7 / 11.4 / 12.1.
  const bool two = rows_per_warp == 2 || (rows_per_warp == 0 && w.n / 128 >= c.sm_count);
  return two ? launch_tc<T, 1, 2, 2>(c, w, x, y, m, forced_splits) : launch_tc<T, 1, 1, 4>(c, w, x, y, m, forced_splits);
}

}  // namespace

Status w4a16_gemv_tc(Context::Impl& c, const W4A16Weights& w, const void* x, void* y, int64_t m, int forced_splits,
                     int rows_per_warp) {
  return w.act == ActType::bf16 ? dispatch_tc<__nv_bfloat16>(c, w, x, y, m, forced_splits, rows_per_warp)
                                : dispatch_tc<__half>(c, w, x, y, m, forced_splits, rows_per_warp);
}

}  // namespace qforge::cuda
