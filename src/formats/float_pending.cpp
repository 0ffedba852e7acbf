// TEMPORARY (h-intfmt): placeholders for the float formats and the f16 conversions, which land
// with branch h-floatfmt (src/formats/{nf4,fp4,fp8,float_cast}.cpp, src/core/float_convert.cpp).
// They exist only so that the table links before then; this file is deleted when that branch is
// merged. The quantizers report "not yet implemented"; nothing here is a real implementation
// except the f16 conversions, which the integer formats need for their scales.
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "formats/format_impl.h"

namespace qforge {

// IEEE binary16 <-> binary32, round to nearest even, subnormals, Inf/NaN preserved.
float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  float magnitude;
  if (exp == 0) {
    magnitude = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    magnitude = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    magnitude = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  }
  return std::bit_cast<float>(std::bit_cast<uint32_t>(magnitude) | sign);
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  const float a = std::fabs(f);
  if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7E00);
  if (a >= 65520.0f) return static_cast<uint16_t>(sign | 0x7C00);  // rounds to Inf
  if (a < 0.00006103515625f) {  // subnormal range: multiples of 2^-24, RNE by nearbyint
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24))));
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  // 11 significant bits: scale the mantissa to [1024, 2048) and round to nearest even.
  uint32_t sig = static_cast<uint32_t>(std::nearbyint(std::ldexp(m, 11)));
  int exp = e - 1 + 15;
  if (sig == 2048) sig = 1024, ++exp;
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7C00);
  return static_cast<uint16_t>(sign | (exp << 10) | (sig - 1024));
}

}  // namespace qforge

namespace qforge::formats {

const float kNf4Codebook[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                                -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                                0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
                                0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                                0.7229568362236023f, 1.0f};
const float kFp4E2M1Values[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

namespace {
Status pending(const Scheme& scheme) {
  return unsupported("scheme " + scheme.name() + ": not yet implemented (float formats land with h-floatfmt)");
}
void fill_nan(const QuantizedTensor& q, float* out) {
  const size_t n = static_cast<size_t>(q.rows) * static_cast<size_t>(q.cols);
  for (size_t i = 0; i < n; ++i) out[i] = std::numeric_limits<float>::quiet_NaN();
}
double no_bound(const Scheme&) { return std::numeric_limits<double>::infinity(); }
}  // namespace

#define QFORGE_PENDING_FORMAT(prefix)                                                                   \
  Status prefix##_quantize_ref(const Scheme& s, const float*, int64_t, int64_t, const QuantizeOptions&, \
                               QuantizedTensor*) {                                                      \
    return pending(s);                                                                                  \
  }                                                                                                     \
  void prefix##_dequantize_ref(const QuantizedTensor& q, float* out) { fill_nan(q, out); }             \
  double prefix##_error_bound(const Scheme& s) { return no_bound(s); }

QFORGE_PENDING_FORMAT(nf4)
QFORGE_PENDING_FORMAT(fp4)
QFORGE_PENDING_FORMAT(mxfp4)
QFORGE_PENDING_FORMAT(nvfp4)
QFORGE_PENDING_FORMAT(fp8)
QFORGE_PENDING_FORMAT(float_cast)

#undef QFORGE_PENDING_FORMAT

}  // namespace qforge::formats
