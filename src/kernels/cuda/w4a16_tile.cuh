// Device pieces shared by the W4A16 kernels (w4a16.cu, w4a16_gemv.cu, w4a16_gemv_tc.cu): loading
// tiles of the repacked planes, decoding a code word, and the split-K epilogue. The layout is in
// docs/kernels.md ("CUDA backend: W4A16 weights and kernels").
#pragma once

#include "mma.cuh"

namespace qforge::cuda::detail {

// The zero pair of a symmetric weight: bias + 8 in both halves (see Half2).
template <typename T>
__device__ __forceinline__ uint32_t w4a16_sym_zero() {
  using T2 = typename Half2<T>::type;
  const T v = from_float<T>(Half2<T>::kBias + 8.f);
  return as_u32(T2(v, v));
}

// One pipeline step of a lane's weight tiles: U consecutive 64-column tiles of RT row tiles (16
// code bytes, the scale pair and the zero pair each). Held in registers; `cur = nxt` advances.
template <int U, int RT>
struct W4A16Step {
  uint4 a[U][RT];
  uint32_t s[U][RT], z[U][RT];
};

// Loads tiles kt0 .. kt0 + U - 1 of row tiles rt0 .. rt0 + RT - 1 into st. Tiles at or past kt_end
// and rows past NT read as zero codes with scale 0 (they add nothing), so callers need no tail loop.
template <bool ZP, int U, int RT>
__device__ __forceinline__ void w4a16_load_step(const uint4* __restrict__ wq, const uint32_t* __restrict__ sc,
                                                const uint32_t* __restrict__ zp, int rt0, int kt0, int kt_end, int NT,
                                                int KT, int G, int lane, uint32_t zsym, W4A16Step<U, RT>& st) {
  const int g = lane >> 2;
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int kt = kt0 + u;
#pragma unroll
    for (int r = 0; r < RT; ++r) {
      const int rt = rt0 + r;
      if (kt < kt_end && rt < NT) {
        st.a[u][r] = ld_stream(wq + (static_cast<size_t>(rt) * KT + kt) * 32 + lane);
        const size_t si = (static_cast<size_t>(rt) * G + kt / 2) * 8 + g;
        st.s[u][r] = __ldg(sc + si);
        st.z[u][r] = ZP ? __ldg(zp + si) : zsym;
      } else {
        st.a[u][r] = make_uint4(0, 0, 0, 0);
        st.s[u][r] = 0;
        st.z[u][r] = zsym;
      }
    }
  }
}

// The four value pairs of code word w: (g, c..c+1), (g+8, c..c+1), (g, c+2..c+3), (g+8, c+2..c+3)
// as q - z (the nibble OR-ed into the bias's mantissa, minus bias + z: exact), times the group
// scale when SCALE (rounded once to the activation type, as the dequantize path does). zg/sg hold
// row g's pair in both halves, zh/sh row g + 8's.
template <typename T, bool SCALE>
__device__ __forceinline__ void w4a16_decode_word(uint32_t w, typename Half2<T>::type zg, typename Half2<T>::type zh,
                                                  typename Half2<T>::type sg, typename Half2<T>::type sh,
                                                  typename Half2<T>::type (&p)[4]) {
  using T2 = typename Half2<T>::type;
  constexpr uint32_t m = Half2<T>::kMagic;
  p[0] = __hsub2(as_h2<T2>((w & 0x000F000Fu) | m), zg);
  p[1] = __hsub2(as_h2<T2>(((w >> 4) & 0x000F000Fu) | m), zh);
  p[2] = __hsub2(as_h2<T2>(((w >> 8) & 0x000F000Fu) | m), zg);
  p[3] = __hsub2(as_h2<T2>(((w >> 12) & 0x000F000Fu) | m), zh);
  if constexpr (SCALE) {
    p[0] = __hmul2(p[0], sg);
    p[1] = __hmul2(p[1], sh);
    p[2] = __hmul2(p[2], sg);
    p[3] = __hmul2(p[3], sh);
  }
}

// One mma C fragment (c0, c1 = row n, tokens tok, tok + 1; c2, c3 = row n + 8, same tokens): to y
// directly, or added into the f32 split-K partials.
template <typename T>
__device__ __forceinline__ void w4a16_store_c(const float (&c)[4], T* __restrict__ y, float* __restrict__ partial,
                                              bool direct, int M, int N, int n, int tok) {
  const size_t r0 = static_cast<size_t>(tok) * N + n, r1 = r0 + N;
  if (direct) {
    if (tok < M) {
      y[r0] = from_float<T>(c[0]);
      y[r0 + 8] = from_float<T>(c[2]);
    }
    if (tok + 1 < M) {
      y[r1] = from_float<T>(c[1]);
      y[r1 + 8] = from_float<T>(c[3]);
    }
  } else {
    if (tok < M) {
      atomicAdd(partial + r0, c[0]);
      atomicAdd(partial + r0 + 8, c[2]);
    }
    if (tok + 1 < M) {
      atomicAdd(partial + r1, c[1]);
      atomicAdd(partial + r1 + 8, c[3]);
    }
  }
}

// After a block added its partials: the last of the `splits` blocks of one output tile (rows
// n0 .. n0 + rows - 1, tokens m0 .. m0 + toks - 1, counted in *counter) converts the tile to y and
// re-zeroes partials and counter for the next call. Every thread of the block calls it.
template <typename T>
__device__ __forceinline__ void w4a16_finish_split(float* __restrict__ partial, T* __restrict__ y, unsigned* counter,
                                                   unsigned& s_last, int splits, int n0, int rows, int m0, int toks,
                                                   int M, int N) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s_last = (atomicAdd(counter, 1u) == static_cast<unsigned>(splits - 1)) ? 1u : 0u;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  for (int i = threadIdx.x; i < rows * toks; i += blockDim.x) {
    const int n = n0 + i % rows, tok = m0 + i / rows;
    if (n >= N || tok >= M) continue;
    float* p = partial + static_cast<size_t>(tok) * N + n;
    y[static_cast<size_t>(tok) * N + n] = from_float<T>(__ldcg(p));
    __stcg(p, 0.f);
  }
  if (threadIdx.x == 0) *counter = 0u;
}

}  // namespace qforge::cuda::detail
