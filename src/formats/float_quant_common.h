// Helpers shared by the float-family reference quantizers (nf4.cpp, fp4.cpp, fp8.cpp,
// float_cast.cpp). Not part of the API.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/minifloat.h"
#include "formats/quant_common.h"
#include "qforge/format.h"

namespace qforge::formats::floatq {

static_assert(std::endian::native == std::endian::little, "planes are stored little-endian");

// Candidate clip ratios of the importance-weighted scale search: clip_ratio * (1 - k / 100),
// k = 0..50, i.e. 51 steps over [0.5, 1] * clip_ratio. k = 0 (the plain absmax scale) comes first
// and is replaced only by a strictly better candidate, so the weighted error never exceeds that of
// the plain scale and ties resolve deterministically.
inline constexpr int kSearchSteps = 51;
inline float search_ratio(float clip_ratio, int k) {
  return clip_ratio * static_cast<float>(1.0 - 0.01 * k);
}

// Importance weights come as formats::ImportanceView (quant_common.h): per element or per column.
using Importance = ImportanceView;

// Checks the options shared by every float quantizer (quantize() checks them too; the reference
// functions stay safe when called directly) and resolves the importance layout.
inline Status check_options(const QuantizeOptions& o, int64_t rows, int64_t cols, Importance* imp) {
  if (!(o.clip_ratio > 0.0f && o.clip_ratio <= 1.0f))
    return invalid_argument("clip_ratio " + std::to_string(o.clip_ratio) + " is not in (0, 1]");
  *imp = ImportanceView(QuantizeOptions{}, rows, cols);
  if (o.importance == nullptr) return Status::ok();
  const auto n = static_cast<size_t>(rows * cols);
  if (o.importance_size != n && o.importance_size != static_cast<size_t>(cols))
    return invalid_argument("importance has " + std::to_string(o.importance_size) + " values; expected " +
                            std::to_string(n) + " (per element) or " + std::to_string(cols) + " (per column)");
  *imp = ImportanceView(o, rows, cols);
  return Status::ok();
}

inline Status check_shape(const Scheme& s, int64_t rows, int64_t cols, int64_t group) {
  if (rows <= 0 || cols <= 0) return invalid_argument(s.name() + ": empty shape");
  if (group > 0 && cols % group != 0)
    return invalid_argument(s.name() + ": " + std::to_string(cols) + " columns are not a multiple of the block of " +
                            std::to_string(group));
  return Status::ok();
}

inline float absmax(const float* x, int64_t n) {
  float a = 0.0f;
  for (int64_t i = 0; i < n; ++i) a = std::max(a, std::fabs(x[i]));
  return a;
}

// Little-endian f32 values in byte planes.
inline void put_f32(std::vector<uint8_t>& plane, size_t index, float v) {
  std::memcpy(plane.data() + index * 4, &v, 4);
}
inline float get_f32(const std::vector<uint8_t>& plane, size_t index) {
  float v;
  std::memcpy(&v, plane.data() + index * 4, 4);
  return v;
}

// 4-bit codes: two per byte, element 2k in the low nibble (qforge's little-endian bit stream);
// each row starts on a byte boundary.
inline size_t nibble_row_bytes(int64_t cols) { return static_cast<size_t>((cols + 1) / 2); }
inline void put_nibble(uint8_t* row, int64_t i, uint8_t code) {
  uint8_t& b = row[i / 2];
  if (i % 2 == 0) b = static_cast<uint8_t>((b & 0xF0) | (code & 0x0F));
  else b = static_cast<uint8_t>((b & 0x0F) | ((code & 0x0F) << 4));
}
inline uint8_t get_nibble(const uint8_t* row, int64_t i) {
  const uint8_t b = row[i / 2];
  return i % 2 == 0 ? (b & 0x0F) : (b >> 4);
}

// FP4 E2M1 (OCP): bit 3 sign, bits 2..1 exponent (bias 1), bit 0 mantissa.
// Magnitudes of codes 0..7: 0, 0.5, 1, 1.5, 2, 3, 4, 6.
inline constexpr float kE2M1Magnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
// Round to nearest E2M1, ties to the even code (RNE, as the OCP conversion), |y| > 6 saturates to
// 6 (OCP satfinite). The sign is kept, so negative values rounding to zero give -0 (code 8).
// y must not be NaN.
inline uint8_t e2m1_encode(float y) {
  const uint32_t x = std::bit_cast<uint32_t>(y);
  const uint32_t code = detail::round_to_minifloat(x & 0x7FFFFFFF, /*mbits=*/1, /*bias=*/1);
  return static_cast<uint8_t>(((x >> 31) << 3) | (code > 7 ? 7 : code));
}
inline float e2m1_decode(uint8_t code) {
  const float m = kE2M1Magnitude[code & 0x7];
  return (code & 0x8) ? -m : m;
}

}  // namespace qforge::formats::floatq
