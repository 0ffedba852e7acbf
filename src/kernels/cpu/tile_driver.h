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
