// Shared by the ISA units: cuts a tile into micro-kernels of R rows x T tokens. Each micro-kernel
// keeps one accumulator chain per (row, token) whose operation order does not depend on R or T,
// so an output is bit-identical whichever micro-kernel (or thread split) computed it.
//
// A kernel K provides kGemvRows / kGemmRows and
//   template <int R, int T> static void run(const WeightView&, int64_t row, const uint8_t* act,
//                                           size_t act_stride, float* y, int64_t ldy);
// writing y[t * ldy + i] for i < R, t < T (y already offset to `row`). Scalar accumulations use
// std::fma explicitly: with -ffp-contract=fast the compiler could otherwise fuse a * b + c in some
// instantiations and not others, breaking the bit-identity.
#pragma once

#include "kernels/kernel_registry.h"

namespace qforge::kernels {

template <class K, int T>
inline void tile_rows(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t as, float* y,
                      int64_t ldy) {
  constexpr int R = T == 1 ? K::kGemvRows : K::kGemmRows;
  int64_t r = r0;
  for (; r + R <= r1; r += R) K::template run<R, T>(w, r, act, as, y + r, ldy);
  for (; r < r1; ++r) K::template run<1, T>(w, r, act, as, y + r, ldy);
}

template <class K>
void tile_driver(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t as, int64_t nt, float* y,
                 int64_t ldy) {
  int64_t t = 0;
  for (; t + 4 <= nt; t += 4) tile_rows<K, 4>(w, r0, r1, act + t * as, as, y + t * ldy, ldy);
  switch (nt - t) {
    case 3: tile_rows<K, 3>(w, r0, r1, act + t * as, as, y + t * ldy, ldy); break;
    case 2: tile_rows<K, 2>(w, r0, r1, act + t * as, as, y + t * ldy, ldy); break;
    case 1: tile_rows<K, 1>(w, r0, r1, act + t * as, as, y + t * ldy, ldy); break;
    default: break;
  }
}

}  // namespace qforge::kernels

// ---- x8 layouts (interleave_x8.h) ----------------------------------------------------------------
// A kernel K provides kMaxT and
//   template <int T, int G> static void run(const uint8_t* group, size_t gstride, int64_t cols,
//                                           const uint8_t* act, size_t act_stride, float (*out)[8]);
// writing out[g * T + t][i] for the 8 rows of each of the G groups at group + g * gstride (padding
// rows included) and t < T. Tiles start at a multiple of 8 rows (KernelMatrix cuts row chunks in
// multiples of 8).
namespace qforge::kernels {

template <class K, int T, int G>
inline void x8_tokens(const WeightView& w, int64_t r, int64_t row_step, int64_t r1, const uint8_t* act, size_t as,
                      float* y, int64_t ldy) {
  float out[G * T][8];
  const size_t gstride = static_cast<size_t>(row_step / 8) * w.group_stride;
  K::template run<T, G>(w.data + static_cast<size_t>(r / 8) * w.group_stride, gstride, w.cols, act, as, out);
  for (int g = 0; g < G; ++g) {
    const int64_t base = r + g * row_step;
    const int rows = static_cast<int>(r1 - base < 8 ? r1 - base : 8);
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < rows; ++i) y[t * ldy + base + i] = out[g * T + t][i];
  }
}

// The groups at rows r and r + row_step (G = 2), or at r (G = 1), for every token.
template <class K, int G>
void x8_groups(const WeightView& w, int64_t r, int64_t row_step, int64_t r1, const uint8_t* act, size_t as, int64_t nt,
               float* y, int64_t ldy) {
  constexpr int kMax = K::kMaxT;
  static_assert(kMax >= 1 && kMax <= 4);
  int64_t t = 0;
  for (; t + kMax <= nt; t += kMax) x8_tokens<K, kMax, G>(w, r, row_step, r1, act + t * as, as, y + t * ldy, ldy);
  switch (nt - t) {  // < kMax
    case 3: x8_tokens<K, (kMax > 3 ? 3 : 1), G>(w, r, row_step, r1, act + t * as, as, y + t * ldy, ldy); break;
    case 2: x8_tokens<K, (kMax > 2 ? 2 : 1), G>(w, r, row_step, r1, act + t * as, as, y + t * ldy, ldy); break;
    case 1: x8_tokens<K, 1, G>(w, r, row_step, r1, act + t * as, as, y + t * ldy, ldy); break;
    default: break;
  }
}

// Decode (T <= 2 activation rows) reads the tile's groups as two streams, its first and second
// half in step: each stream stays sequential across group boundaries, which the prefetchers
// follow better than pairs of neighbouring groups (streams restarting at every pair; measured in
// bench_kernels, 11008 x 4096 most).
template <class K>
void tile_driver_x8(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t as, int64_t nt, float* y,
                    int64_t ldy) {
  int64_t r = r0;
  if (nt <= 2) {
    const int64_t half = (r1 - r0) / 16;  // full groups per stream; a remainder runs alone below
    for (int64_t i = 0; i < half; ++i) x8_groups<K, 2>(w, r0 + 8 * i, 8 * half, r1, act, as, nt, y, ldy);
    r = r0 + 16 * half;
  }
  for (; r < r1; r += 8) x8_groups<K, 1>(w, r, 8, r1, act, as, nt, y, ldy);
}

}  // namespace qforge::kernels
