// Exact scalar conversions between f32 and the narrow float types (f16, bf16, the OCP FP8
// variants, E8M0), and the bulk tensor conversions built on them.
//
// All encoders are integer bit manipulation (they sit on the model-loading and quantization
// paths); the FP8 ones share detail::round_to_minifloat (core/minifloat.h). FP8 decoding uses
// 256-entry tables built from the field definitions.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/minifloat.h"
#include "qforge/dtype.h"

namespace qforge {
namespace {

uint32_t f32_bits(float f) { return std::bit_cast<uint32_t>(f); }
float bits_f32(uint32_t u) { return std::bit_cast<float>(u); }

// Rounds a non-negative double to the nearest integer, ties to even. Exact for |x| < 2^52.
double round_half_even(double x) {
  double fl = std::floor(x);
  double diff = x - fl;
  if (diff > 0.5) return fl + 1.0;
  if (diff < 0.5) return fl;
  return std::fmod(fl, 2.0) == 0.0 ? fl : fl + 1.0;
}

// Describes a sign/exponent/mantissa minifloat with no Inf reserved-exponent rules beyond what
// the flags say.
struct MiniFloat {
  int mbits;          // trailing mantissa bits
  int bias;
  uint8_t max_code;   // encoding of the largest finite value (E4M3FN 448, E5M2 57344)
  uint8_t nan_code;   // encoding of +NaN (quiet)
  bool has_inf;
  uint8_t inf_code;   // encoding of +Inf when has_inf
};

constexpr MiniFloat kE4M3FN{3, 7, 0x7E, 0x7F, false, 0};
constexpr MiniFloat kE5M2{2, 15, 0x7B, 0x7E, true, 0x7C};

// Encodes f as a sign-magnitude 8-bit minifloat, RNE, with subnormals.
uint8_t encode_minifloat(float f, const MiniFloat& fmt, Fp8Overflow mode) {
  const uint32_t x = f32_bits(f);
  const uint8_t sign = (x >> 31) ? 0x80 : 0x00;
  const uint32_t a = x & 0x7FFFFFFF;
  if (a > 0x7F800000) return sign | fmt.nan_code;
  const uint32_t code = detail::round_to_minifloat(a, fmt.mbits, fmt.bias);
  if (code > fmt.max_code) {  // rounded past the largest finite value (or Inf input)
    if (mode == Fp8Overflow::saturate) return sign | fmt.max_code;
    return sign | (fmt.has_inf ? fmt.inf_code : fmt.nan_code);
  }
  return sign | static_cast<uint8_t>(code);
}

double decode_minifloat(uint8_t v, const MiniFloat& fmt) {
  const bool neg = (v & 0x80) != 0;
  const uint8_t mag = v & 0x7F;
  if (mag == fmt.nan_code || (fmt.has_inf && mag > fmt.inf_code)) return std::numeric_limits<double>::quiet_NaN();
  if (fmt.has_inf && mag == fmt.inf_code) return neg ? -INFINITY : INFINITY;
  if (!fmt.has_inf && mag > fmt.max_code) return std::numeric_limits<double>::quiet_NaN();
  const int exp_field = mag >> fmt.mbits;
  const int mant = mag & ((1 << fmt.mbits) - 1);
  double x = exp_field == 0 ? std::ldexp(static_cast<double>(mant), 1 - fmt.bias - fmt.mbits)
                            : std::ldexp(static_cast<double>(mant + (1 << fmt.mbits)), exp_field - fmt.bias - fmt.mbits);
  return neg ? -x : x;
}

std::array<float, 256> make_table(const MiniFloat& fmt) {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = static_cast<float>(decode_minifloat(static_cast<uint8_t>(i), fmt));
  return t;
}

const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> t = make_table(kE4M3FN);
  return t;
}
const std::array<float, 256>& e5m2_table() {
  static const std::array<float, 256> t = make_table(kE5M2);
  return t;
}

// Integer conversion: RNE, saturate to [lo, hi]; NaN is an error.
template <class T>
Status float_to_int(const float* in, T* out, size_t n, DType dst) {
  constexpr double lo = static_cast<double>(std::numeric_limits<T>::min());
  constexpr double hi = static_cast<double>(std::numeric_limits<T>::max());
  for (size_t i = 0; i < n; ++i) {
    const float f = in[i];
    if (std::isnan(f))
      return invalid_argument("convert to " + std::string(dtype_name(dst)) + ": element " + std::to_string(i) + " is NaN");
    const double a = static_cast<double>(f);
    const double r = a < 0 ? -round_half_even(-a) : round_half_even(a);  // exact: |a| < 2^52 or already integral
    // hi for 64-bit types is 2^63 (rounded up from 2^63 - 1) in double: compare with >=.
    if (r >= hi) out[i] = std::numeric_limits<T>::max();
    else if (r <= lo) out[i] = std::numeric_limits<T>::min();
    else out[i] = static_cast<T>(r);
  }
  return Status::ok();
}

template <class T>
void int_to_float(const T* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]);
}

}  // namespace

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FF;
  if (exp == 0x1F) return bits_f32(sign | 0x7F800000 | (mant << 13));  // Inf / NaN (payload kept)
  if (exp != 0) return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
  // Zero or subnormal: mant * 2^-24, exact in f32.
  const float mag = static_cast<float>(mant) * 0x1p-24f;
  return sign ? -mag : mag;
}

uint16_t f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  x &= 0x7FFFFFFF;
  if (x > 0x7F800000) return sign | 0x7E00 | static_cast<uint16_t>((x >> 13) & 0x3FF);  // quiet NaN
  // 65520 = midpoint of 65504 (odd mantissa) and 2^16: ties to even go to Inf.
  if (x >= 0x477FF000) return sign | 0x7C00;
  const uint32_t e = x >> 23;
  if (e < 113) {  // below 2^-14: f16 subnormal (quantum 2^-24) or zero
    if (e < 102) return sign;  // < 2^-25: rounds to zero (2^-25 itself is a tie -> even 0)
    const uint32_t m = (x & 0x7FFFFF) | 0x800000;  // value = m * 2^(e - 150)
    const uint32_t s = 126 - e;                    // to units of 2^-24: 14..24
    uint32_t q = m >> s;
    const uint32_t rem = m & ((1u << s) - 1);
    const uint32_t half = 1u << (s - 1);
    if (rem > half || (rem == half && (q & 1))) ++q;
    return sign | static_cast<uint16_t>(q);  // q == 0x400 is the smallest normal: still correct
  }
  uint32_t q = ((e - 112) << 10) | ((x >> 13) & 0x3FF);
  const uint32_t rem = x & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) ++q;  // carry into the exponent is correct
  return sign | static_cast<uint16_t>(q);
}

float bf16_to_f32(uint16_t b) { return bits_f32(static_cast<uint32_t>(b) << 16); }

uint16_t f32_to_bf16(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7FFFFFFF) > 0x7F800000) return static_cast<uint16_t>((x >> 16) | 0x0040);  // quiet NaN
  // RNE on the low 16 bits; overflow carries into Inf, subnormals need no special case.
  const uint32_t rounded = x + 0x7FFF + ((x >> 16) & 1);
  return static_cast<uint16_t>(rounded >> 16);
}

float f8_e4m3fn_to_f32(uint8_t v) { return e4m3_table()[v]; }
uint8_t f32_to_f8_e4m3fn(float f, Fp8Overflow mode) { return encode_minifloat(f, kE4M3FN, mode); }
float f8_e5m2_to_f32(uint8_t v) { return e5m2_table()[v]; }
uint8_t f32_to_f8_e5m2(float f, Fp8Overflow mode) { return encode_minifloat(f, kE5M2, mode); }

float f8_e8m0_to_f32(uint8_t v) {
  if (v == 0xFF) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, static_cast<int>(v) - 127);  // 2^-127 is an f32 subnormal: exact
}

uint8_t f32_to_f8_e8m0(float f) {
  if (std::isnan(f) || f == INFINITY) return 0xFF;
  if (!(f > 0.0f)) return 0x00;
  int ex = 0;
  const float fr = std::frexp(f, &ex);  // f = (2 fr) * 2^(ex - 1), 2 fr in [1, 2)
  int k = ex - 1 + (2.0f * fr >= 1.5f ? 1 : 0);  // nearest power of two; 1.5 * 2^k ties up
  k = std::clamp(k, -127, 127);
  return static_cast<uint8_t>(k + 127);
}

Status convert_to_f32(DType src, const void* in, float* out, size_t n) {
  if (n == 0) return Status::ok();
  if (in == nullptr || out == nullptr) return invalid_argument("convert_to_f32: null buffer");
  switch (src) {
    case DType::f32: std::memmove(out, in, n * sizeof(float)); break;
    case DType::f16: {
      const auto* p = static_cast<const uint16_t*>(in);
      for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(p[i]);
      break;
    }
    case DType::bf16: {
      const auto* p = static_cast<const uint16_t*>(in);
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(p[i]);
      break;
    }
    case DType::f8_e4m3fn: {
      const auto* p = static_cast<const uint8_t*>(in);
      const auto& t = e4m3_table();
      for (size_t i = 0; i < n; ++i) out[i] = t[p[i]];
      break;
    }
    case DType::f8_e5m2: {
      const auto* p = static_cast<const uint8_t*>(in);
      const auto& t = e5m2_table();
      for (size_t i = 0; i < n; ++i) out[i] = t[p[i]];
      break;
    }
    case DType::f8_e8m0: {
      const auto* p = static_cast<const uint8_t*>(in);
      for (size_t i = 0; i < n; ++i) out[i] = f8_e8m0_to_f32(p[i]);
      break;
    }
    case DType::i8: int_to_float(static_cast<const int8_t*>(in), out, n); break;
    case DType::u8: int_to_float(static_cast<const uint8_t*>(in), out, n); break;
    case DType::i16: int_to_float(static_cast<const int16_t*>(in), out, n); break;
    case DType::i32: int_to_float(static_cast<const int32_t*>(in), out, n); break;
    case DType::i64: int_to_float(static_cast<const int64_t*>(in), out, n); break;
    case DType::boolean: {
      const auto* p = static_cast<const uint8_t*>(in);
      for (size_t i = 0; i < n; ++i) out[i] = p[i] != 0 ? 1.0f : 0.0f;
      break;
    }
    case DType::f64: {
      const auto* p = static_cast<const double*>(in);
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);  // RNE, overflow -> Inf
      break;
    }
    default: return invalid_argument("convert_to_f32: unknown dtype " + std::to_string(static_cast<int>(src)));
  }
  return Status::ok();
}

Status convert_from_f32(DType dst, const float* in, void* out, size_t n) {
  if (n == 0) return Status::ok();
  if (in == nullptr || out == nullptr) return invalid_argument("convert_from_f32: null buffer");
  switch (dst) {
    case DType::f32: std::memmove(out, in, n * sizeof(float)); break;
    case DType::f16: {
      auto* p = static_cast<uint16_t*>(out);
      for (size_t i = 0; i < n; ++i) p[i] = f32_to_f16(in[i]);
      break;
    }
    case DType::bf16: {
      auto* p = static_cast<uint16_t*>(out);
      for (size_t i = 0; i < n; ++i) p[i] = f32_to_bf16(in[i]);
      break;
    }
    case DType::f8_e4m3fn: {
      auto* p = static_cast<uint8_t*>(out);
      for (size_t i = 0; i < n; ++i) p[i] = f32_to_f8_e4m3fn(in[i]);
      break;
    }
    case DType::f8_e5m2: {
      auto* p = static_cast<uint8_t*>(out);
      for (size_t i = 0; i < n; ++i) p[i] = f32_to_f8_e5m2(in[i]);
      break;
    }
    case DType::f8_e8m0: {
      auto* p = static_cast<uint8_t*>(out);
      for (size_t i = 0; i < n; ++i) p[i] = f32_to_f8_e8m0(in[i]);
      break;
    }
    case DType::i8: return float_to_int(in, static_cast<int8_t*>(out), n, dst);
    case DType::u8: return float_to_int(in, static_cast<uint8_t*>(out), n, dst);
    case DType::i16: return float_to_int(in, static_cast<int16_t*>(out), n, dst);
    case DType::i32: return float_to_int(in, static_cast<int32_t*>(out), n, dst);
    case DType::i64: return float_to_int(in, static_cast<int64_t*>(out), n, dst);
    case DType::boolean: {
      auto* p = static_cast<uint8_t*>(out);
      for (size_t i = 0; i < n; ++i) {
        if (std::isnan(in[i])) return invalid_argument("convert to bool: element " + std::to_string(i) + " is NaN");
        p[i] = in[i] != 0.0f ? 1 : 0;
      }
      break;
    }
    case DType::f64: {
      auto* p = static_cast<double*>(out);
      for (size_t i = 0; i < n; ++i) p[i] = static_cast<double>(in[i]);
      break;
    }
    default: return invalid_argument("convert_from_f32: unknown dtype " + std::to_string(static_cast<int>(dst)));
  }
  return Status::ok();
}

}  // namespace qforge
