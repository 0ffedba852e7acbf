// Binary and ternary weights, one scale per row (output channel).
//
//   binary:  w ~ sign(w) * alpha, alpha = mean |w| of the row (the L2-optimal scale for fixed
//            signs; XNOR-Net / BinaryConnect). Code bit 1 = +alpha, 0 = -alpha; w = 0 gets +.
//   ternary: w ~ t * alpha, t in {-1, 0, +1} (TWN, Li & Liu 2016): delta = 0.7 * mean |w| of the
//            row, t = sign(w) where |w| > delta else 0, alpha = mean |w| over |w| > delta (0 when
//            no element passes). 2-bit codes store t + 1: 0 = -1, 1 = 0, 2 = +1 (3 is never written;
//            it decodes as 0).
//   scales:  one f16 per row (alpha, rounded to nearest).
//
// With importance weights v_i the scale is the weighted least-squares optimum for the fixed signs,
// alpha = sum v_i |w_i| / sum v_i (over the selected elements for ternary); the ternary threshold
// stays TWN's unweighted rule.
//
// Error bound as a fraction of the row's absmax A (the table's error_bound):
//   binary:  |w - sign(w) alpha'| = ||w| - alpha'| <= max(A - alpha', alpha') with
//            0 <= alpha <= A and alpha' = f16(alpha) <= alpha (1 + 2^-11), so <= A (1 + 2^-11).
//            (Tight: a row with one nonzero element has alpha = A / n, error A (1 - 1/n).)
//   ternary: zeroed elements: |w| <= delta = 0.7 mean|w| <= 0.7 A. Kept elements:
//            |w|, alpha in (delta, A], so ||w| - alpha'| < A (1 + 2^-11). Hence <= A (1 + 2^-11).
//   Both plus f32 evaluation error (< 2^-20 A). These bounds are what the formats guarantee per
//   element; their useful accuracy is in the mean squared error, which the tests compare against a
//   direct computation.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "formats/format_impl.h"
#include "formats/quant_common.h"

namespace qforge::formats {
namespace {

constexpr double kFloatSlack = 1.0 / (1 << 20);
constexpr double kTernaryThreshold = 0.7;  // TWN's delta = 0.7 * E|w|

void store_f16(std::vector<uint8_t>* plane, int64_t index, uint16_t bits) {
  (*plane)[static_cast<size_t>(2 * index)] = static_cast<uint8_t>(bits & 0xFF);
  (*plane)[static_cast<size_t>(2 * index + 1)] = static_cast<uint8_t>(bits >> 8);
}
float load_f16(const std::vector<uint8_t>& plane, int64_t index) {
  return f16_to_f32(static_cast<uint16_t>(plane[static_cast<size_t>(2 * index)] |
                                          (plane[static_cast<size_t>(2 * index + 1)] << 8)));
}

// Shared driver: `row_fn(x, importance_or_null, cols, codes) -> alpha` fills one row's codes.
template <class RowFn>
Status quantize_rows(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                     const QuantizeOptions& options, QuantizedTensor* out, RowFn row_fn) {
  if (options.clip_ratio != 1.0f)
    return invalid_argument("scheme " + scheme.name() + ": clip_ratio does not apply (the scale is mean |w|)");
  const ImportanceView importance(options, rows, cols);
  const PlaneSizes sizes = scheme_plane_sizes(scheme, rows, cols);
  out->codes.assign(sizes.codes, 0);
  out->scales.assign(sizes.scales, 0);
  out->zeros.clear();
  out->extra.clear();
  const size_t row_bytes = sizes.codes / static_cast<size_t>(rows);
  int64_t first_bad = std::numeric_limits<int64_t>::max();
#pragma omp parallel if (rows > 16)
  {
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
    std::vector<float> weights;
#pragma omp for schedule(static) reduction(min : first_bad)
    for (int64_t r = 0; r < rows; ++r) {
      const float* v = nullptr;
      if (importance.present()) {
        importance.gather(r * cols, cols, &weights);
        v = weights.data();
      }
      const double alpha = row_fn(w + r * cols, v, cols, codes.data());
      const uint16_t bits = f32_to_f16(static_cast<float>(alpha));
      if (!std::isfinite(f16_to_f32(bits))) first_bad = std::min(first_bad, r);
      store_f16(&out->scales, r, bits);
      pack_bits(codes.data(), cols, scheme.bits, out->codes.data() + static_cast<size_t>(r) * row_bytes);
    }
  }
  if (first_bad != std::numeric_limits<int64_t>::max())
    return invalid_argument("scheme " + scheme.name() + ": the scale of row " + std::to_string(first_bad) +
                            " exceeds the f16 range (65504)");
  return Status::ok();
}

// Weighted mean of |x| (the least-squares scale for fixed signs); the plain mean without weights or
// when the weights sum to 0.
double mean_abs(const float* x, const float* v, int64_t n) {
  double num = 0, den = 0, plain = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = std::fabs(static_cast<double>(x[i]));
    plain += a;
    if (v) num += v[i] * a, den += v[i];
  }
  if (v && den > 0) return num / den;
  return n > 0 ? plain / static_cast<double>(n) : 0.0;
}

double binary_row(const float* x, const float* v, int64_t n, uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i) codes[i] = x[i] >= 0 ? 1 : 0;
  return mean_abs(x, v, n);
}

double ternary_row(const float* x, const float* v, int64_t n, uint8_t* codes) {
  const double delta = kTernaryThreshold * mean_abs(x, nullptr, n);
  // Branch-free: the signs of random weights defeat a branch predictor.
  double kept_sum = 0, weighted_sum = 0, weight_sum = 0;
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = x[i];
    const int above = a > delta, below = a < -delta;
    codes[i] = static_cast<uint8_t>(1 + above - below);
    const double keep = above | below;
    const double mag = std::fabs(a) * keep;
    kept_sum += mag;
    kept += above | below;
    if (v) weighted_sum += v[i] * mag, weight_sum += v[i] * keep;
  }
  if (v && weight_sum > 0) return weighted_sum / weight_sum;
  return kept > 0 ? kept_sum / static_cast<double>(kept) : 0.0;
}

// decode(code) * alpha for each code of a row.
template <class Decode>
void dequantize_rows(const QuantizedTensor& q, float* out, Decode decode) {
  const size_t row_bytes = q.packed_row_bytes();
#pragma omp parallel if (q.rows > 16)
  {
    std::vector<uint8_t> codes(static_cast<size_t>(q.cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < q.rows; ++r) {
      unpack_bits(q.codes.data() + static_cast<size_t>(r) * row_bytes, q.cols, q.scheme.bits, codes.data());
      const float alpha = load_f16(q.scales, r);
      float* y = out + r * q.cols;
      for (int64_t c = 0; c < q.cols; ++c) y[c] = decode(codes[static_cast<size_t>(c)]) * alpha;
    }
  }
}

}  // namespace

Status binary_quantize_ref(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                           const QuantizeOptions& options, QuantizedTensor* out) {
  return quantize_rows(scheme, w, rows, cols, options, out, binary_row);
}
void binary_dequantize_ref(const QuantizedTensor& q, float* out) {
  static constexpr float kSign[2] = {-1.0f, 1.0f};
  dequantize_rows(q, out, [](uint8_t code) { return kSign[code & 1]; });
}

Status ternary_quantize_ref(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                            const QuantizeOptions& options, QuantizedTensor* out) {
  return quantize_rows(scheme, w, rows, cols, options, out, ternary_row);
}
void ternary_dequantize_ref(const QuantizedTensor& q, float* out) {
  static constexpr float kTernary[4] = {-1.0f, 0.0f, 1.0f, 0.0f};  // code t + 1; 3 is never written
  dequantize_rows(q, out, [](uint8_t code) { return kTernary[code & 3]; });
}

double binary_error_bound(const Scheme&) { return 1.0 + 1.0 / 2048 + kFloatSlack; }
double ternary_error_bound(const Scheme&) { return 1.0 + 1.0 / 2048 + kFloatSlack; }

}  // namespace qforge::formats
