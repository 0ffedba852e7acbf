// Element types and exact scalar conversions (round-to-nearest-even, subnormals, each FP8
// variant's saturation and NaN rules). Bulk conversions to/from f32 for tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "qforge/status.h"

namespace qforge {

// Append-only: values are persisted in qforge manifests. Retired ids stay as comments.
enum class DType : uint8_t {
  f32 = 0,
  f16 = 1,
  bf16 = 2,
  f8_e4m3fn = 3,  // OCP E4M3 "fn": no Inf, NaN = S.1111.111, max 448
  f8_e5m2 = 4,    // IEEE-like: Inf and NaN, max 57344
  f8_e8m0 = 5,    // unsigned power-of-two scale of MX formats: 2^(e-127), 0xFF = NaN
  i8 = 6,
  u8 = 7,
  i16 = 8,
  i32 = 9,
  i64 = 10,
  boolean = 11,
  f64 = 12,
};

size_t dtype_size(DType t);              // bytes per element
const char* dtype_name(DType t);         // "f32", "bf16", "f8_e4m3fn", ...
std::optional<DType> dtype_from_name(std::string_view name);  // inverse of dtype_name
const char* dtype_safetensors_name(DType t);                   // "F32", "BF16", "F8_E4M3", ...
std::optional<DType> dtype_from_safetensors_name(std::string_view name);
bool dtype_is_float(DType t);

// How f32 -> FP8 treats values beyond the largest finite value. Following the OCP OFP8 spec
// (v1.0, "saturating" conversions, as NVIDIA's cvt .satfinite does): in `saturate` mode every
// magnitude that rounds above max finite, *including ±Inf*, becomes ±max finite (E4M3FN 448,
// E5M2 57344). In `to_nan_or_inf` mode such values become NaN (E4M3FN, which has no Inf) or ±Inf
// (E5M2). NaN input stays NaN in both modes. Rounding is RNE first, then the overflow rule, so
// E4M3FN values up to 464 (the tie between 448 and the missing 480) round to 448 in both modes.
enum class Fp8Overflow { saturate, to_nan_or_inf };

// Scalar conversions. All are exact for the narrow->f32 direction. Narrowing conversions round
// to nearest, ties to even, produce subnormals where the target has them, keep the sign of zero,
// and map NaN to a quiet NaN of the same sign.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // RNE; overflow (>= 65520) -> Inf; NaN stays NaN (quiet)
float bf16_to_f32(uint16_t b);
uint16_t f32_to_bf16(float f);  // RNE; overflow -> Inf; NaN stays NaN (quiet)
float f8_e4m3fn_to_f32(uint8_t v);  // S.1111.111 -> NaN
uint8_t f32_to_f8_e4m3fn(float f, Fp8Overflow mode = Fp8Overflow::saturate);  // NaN -> S.1111.111
float f8_e5m2_to_f32(uint8_t v);  // S.11111.00 -> ±Inf, S.11111.xx (xx != 0) -> NaN
uint8_t f32_to_f8_e5m2(float f, Fp8Overflow mode = Fp8Overflow::saturate);  // NaN -> S.11111.10
float f8_e8m0_to_f32(uint8_t v);  // 2^(v-127); 0xFF -> NaN
// E8M0 has no sign, zero, Inf or mantissa. Positive finite f rounds to the nearest power of two
// by linear distance: with f = m * 2^k, m in [1, 2), the result is 2^k for m < 1.5 and 2^(k+1)
// for m >= 1.5 (the tie 1.5 * 2^k rounds up: this is RNE with the implicit leading bit as the
// LSB, the same as PyTorch's float8_e8m0fnu cast). The result is clamped to [2^-127, 2^127]
// (so finite inputs never become NaN). f <= 0 (incl. -0, -Inf) -> 0x00; NaN and +Inf -> 0xFF.
uint8_t f32_to_f8_e8m0(float f);

// Bulk conversion of n contiguous elements of type `src` to f32. Integer types convert by value.
Status convert_to_f32(DType src, const void* in, float* out, size_t n);
// Bulk conversion of n f32 values to `dst` (float types: the scalar rules above; integer types:
// round to nearest, saturate to the type's range, NaN -> error).
Status convert_from_f32(DType dst, const float* in, void* out, size_t n);

}  // namespace qforge
