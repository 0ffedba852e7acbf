// Scaled FP8 weights: E4M3FN ("fp8-e4m3-tensor", "fp8-e4m3-ch") or E5M2 ("fp8-e5m2-tensor",
// "fp8-e5m2-ch") codes with one f32 scale per tensor or per output channel (row), the layout of
// FP8 checkpoints from TensorRT Model Optimizer / vLLM / compressed-tensors ("weight_scale").
//
// scale = absmax / max_finite (448 for E4M3FN, 57344 for E5M2), f32; code = f32_to_f8(x / scale)
// with RNE and saturation (dtype.h); value = f8_to_f32(code) * scale. A zero absmax stores
// scale 0 and codes 0.
//
// Storage (docs/formats.md): codes one byte per element, row-major (row stride = cols);
// scales f32, 1 value (tensor) or [rows] (channel); no zeros, no extra.
//
// Error bound (as a fraction of the tensor/row absmax A, no clipping or importance):
//   s = fl(A / M), so |x| / s <= M (1 + 2^-23) and the largest magnitude rounds to at most M: no
//   element is clamped by more than an ulp. RNE costs half a spacing; the spacing is largest in
//   the top binade [2^emax, M]: E4M3: [256, 448] with spacing 32, error <= 16 s = A/28;
//   E5M2: [32768, 57344] with spacing 8192, error <= 4096 s = A/14. Lower binades and the
//   subnormals have smaller absolute spacing. f32 evaluation adds < 2^-20 of A.
//
// Importance weights: the scale is searched over clip_ratio * [0.5, 1] (51 steps) to minimise
// sum w (x - dequant)^2 over its tensor/row; the plain absmax scale is the first candidate.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "formats/float_quant_common.h"
#include "formats/format_impl.h"

namespace qforge::formats {
namespace {

using namespace floatq;

constexpr double kFloatSlack = 1.0 / (1 << 20);

struct Fp8Kind {
  float max_finite;
  uint8_t (*encode)(float, Fp8Overflow);
  float (*decode)(uint8_t);
};

Fp8Kind kind_of(const Scheme& s) {
  if (s.format == FormatId::fp8_e5m2) return {57344.0f, f32_to_f8_e5m2, f8_e5m2_to_f32};
  return {448.0f, f32_to_f8_e4m3fn, f8_e4m3fn_to_f32};
}

void encode_range(const Fp8Kind& k, const float* x, int64_t n, float scale, uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i) codes[i] = scale > 0 ? k.encode(x[i] / scale, Fp8Overflow::saturate) : 0;
}

double weighted_error(const Fp8Kind& k, const float* x, int64_t n, int64_t begin, const Importance& imp,
                      float scale) {
  double e = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float deq = k.decode(k.encode(x[i] / scale, Fp8Overflow::saturate)) * scale;
    const double d = static_cast<double>(x[i]) - deq;
    e += static_cast<double>(imp.at(begin + i)) * d * d;
  }
  return e;
}

}  // namespace

Status fp8_quantize_ref(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                        const QuantizeOptions& options, QuantizedTensor* out) {
  if (scheme.granularity == Granularity::group)
    return invalid_argument(scheme.name() + ": FP8 scales are per tensor or per channel, not per group");
  QFORGE_RETURN_IF_ERROR(check_shape(scheme, rows, cols, 0));
  Importance imp(QuantizeOptions{}, rows, cols);
  QFORGE_RETURN_IF_ERROR(check_options(options, rows, cols, &imp));
  const Fp8Kind k = kind_of(scheme);
  const bool per_tensor = scheme.granularity == Granularity::tensor;
  const int64_t ranges = per_tensor ? 1 : rows;
  const int64_t len = per_tensor ? rows * cols : cols;
  out->scheme = scheme;
  out->rows = rows;
  out->cols = cols;
  out->codes.assign(static_cast<size_t>(rows * cols), 0);
  out->scales.assign(static_cast<size_t>(ranges) * 4, 0);
  out->zeros.clear();
  out->extra.clear();
  for (int64_t r = 0; r < ranges; ++r) {
    const int64_t begin = r * len;
    const float* x = w + begin;
    const float a = absmax(x, len);
    float scale = options.clip_ratio * a / k.max_finite;
    if (imp.present() && a > 0) {
      double best = weighted_error(k, x, len, begin, imp, scale);
      for (int s = 1; s < kSearchSteps; ++s) {
        const float cand = search_ratio(options.clip_ratio, s) * a / k.max_finite;
        const double e = weighted_error(k, x, len, begin, imp, cand);
        if (e < best) best = e, scale = cand;
      }
    }
    put_f32(out->scales, static_cast<size_t>(r), scale);
    encode_range(k, x, len, scale, out->codes.data() + begin);
  }
  return Status::ok();
}

void fp8_dequantize_ref(const QuantizedTensor& q, float* out) {
  const Fp8Kind k = kind_of(q.scheme);
  const bool per_tensor = q.scheme.granularity == Granularity::tensor;
  for (int64_t r = 0; r < q.rows; ++r) {
    const float scale = get_f32(q.scales, per_tensor ? 0 : static_cast<size_t>(r));
    for (int64_t c = 0; c < q.cols; ++c) {
      const size_t i = static_cast<size_t>(r * q.cols + c);
      out[i] = k.decode(q.codes[i]) * scale;
    }
  }
}

double fp8_error_bound(const Scheme& scheme) {
  // Half the top-binade spacing over max_finite: E4M3 16/448 = 1/28, E5M2 4096/57344 = 1/14.
  return (scheme.format == FormatId::fp8_e5m2 ? 1.0 / 14.0 : 1.0 / 28.0) + kFloatSlack;
}

}  // namespace qforge::formats
