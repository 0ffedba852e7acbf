// Round an f32 magnitude to a narrow sign-magnitude float (FP8 variants, E2M1): internal helper
// shared by float_convert.cpp and the float quantization formats. Integer-only, so the result
// does not depend on the floating-point environment.
#pragma once

#include <bit>
#include <cstdint>

namespace qforge::detail {

// For the f32 bit pattern `a` of a finite non-negative value (sign bit clear, a <= 0x7F800000),
// returns the magnitude code (exponent field << mbits | mantissa) of its round-to-nearest-even in
// a format with `mbits` mantissa bits, exponent bias `bias` and subnormals, ignoring the format's
// upper limit: a result larger than the largest finite code means overflow (+Inf input always
// gives such a result). Requires 1 <= mbits <= 10 and bias <= 127.
inline uint32_t round_to_minifloat(uint32_t a, int mbits, int bias) {
  const uint32_t e = a >> 23;  // f32 exponent field
  const uint32_t min_normal_field = static_cast<uint32_t>(128 - bias);  // f32 field of 2^(1 - bias)
  if (e >= min_normal_field) {
    // Normal result: RNE on the f32 pattern at bit (23 - mbits); a carry into the exponent is
    // the correct next binade. Then rebias the exponent.
    const int shift = 23 - mbits;
    const uint32_t rounded = (a + ((1u << (shift - 1)) - 1) + ((a >> shift) & 1)) >> shift;
    return rounded - (static_cast<uint32_t>(127 - bias) << mbits);
  }
  // Subnormal result: count units of 2^(1 - bias - mbits). The f32 value is m * 2^(E - 150) with
  // E = max(e, 1) and the implicit bit only for normal f32 inputs.
  const uint32_t m = (a & 0x7FFFFF) | (e != 0 ? 0x800000u : 0u);
  const uint32_t ee = e != 0 ? e : 1;
  const uint32_t s = static_cast<uint32_t>(150 + 1 - bias - mbits) - ee;  // >= 1 here
  if (s >= 25) return 0;  // m < 2^24 <= 2^(s-1): below half a unit
  const uint32_t q = m >> s;
  const uint32_t rem = m & ((1u << s) - 1);
  const uint32_t half = 1u << (s - 1);
  return q + ((rem > half || (rem == half && (q & 1))) ? 1u : 0u);  // q == 2^mbits: smallest normal
}

}  // namespace qforge::detail
