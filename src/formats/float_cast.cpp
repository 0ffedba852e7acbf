// Plain casts to f16 ("f16") or bf16 ("bf16"): no scale, codes hold the 2-byte values
// (little-endian, row-major, row stride 2 * cols). Conversion is dtype.h's RNE with subnormals.
//
// A finite weight that would overflow to Inf (|x| >= 65520 for f16, beyond bf16's
// 3.3895e38) is an error naming its index rather than a silent Inf in the model. clip_ratio and
// importance weights have no scale to act on and are ignored (after validation).
//
// Error bound (fraction of the tensor absmax A): RNE to a p-bit significand costs at most
// 2^-p |x| <= 2^-p A for normal results: f16 (p = 11) 2^-11, bf16 (p = 8) 2^-8. Results in the
// subnormal range have absolute error <= 2^-25 (f16) / 2^-134 (bf16), within the bound whenever
// A >= 2^-14 (f16) / 2^-126 (bf16).
#include <cmath>
#include <cstring>
#include <string>

#include "formats/float_quant_common.h"
#include "formats/format_impl.h"

namespace qforge::formats {
namespace {

bool is_bf16(const Scheme& s) { return s.format == FormatId::bf16; }

}  // namespace

Status float_cast_quantize_ref(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                               const QuantizeOptions& options, QuantizedTensor* out) {
  QFORGE_RETURN_IF_ERROR(floatq::check_shape(scheme, rows, cols, 0));
  floatq::Importance imp(QuantizeOptions{}, rows, cols);
  QFORGE_RETURN_IF_ERROR(floatq::check_options(options, rows, cols, &imp));
  const bool bf = is_bf16(scheme);
  const int64_t n = rows * cols;
  out->scheme = scheme;
  out->rows = rows;
  out->cols = cols;
  out->codes.assign(static_cast<size_t>(n) * 2, 0);
  out->scales.clear();
  out->zeros.clear();
  out->extra.clear();
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = bf ? f32_to_bf16(w[i]) : f32_to_f16(w[i]);
    const uint16_t inf = bf ? 0x7F80 : 0x7C00;
    if ((h & 0x7FFF) == inf && std::isfinite(w[i]))
      return invalid_argument(scheme.name() + ": weight " + std::to_string(w[i]) + " at index " + std::to_string(i) +
                              " overflows " + (bf ? "bf16" : "f16 (max 65504); use bf16"));
    std::memcpy(out->codes.data() + 2 * i, &h, 2);
  }
  return Status::ok();
}

void float_cast_dequantize_ref(const QuantizedTensor& q, float* out) {
  const bool bf = is_bf16(q.scheme);
  const int64_t n = q.rows * q.cols;
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, q.codes.data() + 2 * i, 2);
    out[i] = bf ? bf16_to_f32(h) : f16_to_f32(h);
  }
}

double float_cast_error_bound(const Scheme& scheme) {
  return is_bf16(scheme) ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
}

}  // namespace qforge::formats
