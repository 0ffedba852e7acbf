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
//   template <int T> static void run(const uint8_t* group, int64_t cols, const uint8_t* act,
//                                    size_t act_stride, float (*out)[8]);
// writing out[t][i] for the 8 rows of the group (padding rows included) and t < T. Tiles start at
// a multiple of 8 rows (KernelMatrix cuts row chunks in multiples of 8).
namespace qforge::kernels {

template <class K, int T>
inline void x8_tokens(const uint8_t* group, int64_t cols, const uint8_t* act, size_t as, float* y, int64_t ldy,
                      int rows) {
  float out[T][8];
  K::template run<T>(group, cols, act, as, out);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < rows; ++i) y[t * ldy + i] = out[t][i];
}

template <class K>
void tile_driver_x8(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t as, int64_t nt, float* y,
                    int64_t ldy) {
  constexpr int kMax = K::kMaxT;
  static_assert(kMax >= 1 && kMax <= 4);
  for (int64_t r = r0; r < r1; r += 8) {
    const uint8_t* group = w.data + static_cast<size_t>(r / 8) * w.group_stride;
    const int rows = static_cast<int>(r1 - r < 8 ? r1 - r : 8);
    int64_t t = 0;
    for (; t + kMax <= nt; t += kMax) x8_tokens<K, kMax>(group, w.cols, act + t * as, as, y + t * ldy + r, ldy, rows);
    switch (nt - t) {
      case 3: x8_tokens<K, (kMax > 3 ? 3 : 1)>(group, w.cols, act + t * as, as, y + t * ldy + r, ldy, rows); break;
      case 2: x8_tokens<K, (kMax > 2 ? 2 : 1)>(group, w.cols, act + t * as, as, y + t * ldy + r, ldy, rows); break;
      case 1: x8_tokens<K, 1>(group, w.cols, act + t * as, as, y + t * ldy + r, ldy, rows); break;
      default: break;
    }
  }
}

}  // namespace qforge::kernels
