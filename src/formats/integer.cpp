// Integer formats: int_sym (signed codes, scale = absmax / qmax) and int_asym (unsigned codes with
// an integer zero-point, scale = (max - min) / (2^b - 1)), per tensor, per channel or per group.
//
// Storage (docs/formats.md has the field-by-field layout):
//   codes  b-bit codes, little-endian bit stream, each row starting on a byte boundary.
//          int_sym stores q + 2^(b-1) (offset binary, q in [-qmax, qmax], qmax = 2^(b-1) - 1), so
//          the codes are those of a GPTQ checkpoint with the implicit zero-point 2^(b-1).
//          int_asym stores q in [0, 2^b - 1].
//   scales one f16 per group (per-tensor: one f16 in total), the step between adjacent codes.
//   zeros  int_asym only: one u8 zero-point z per group; value = (q - z) * scale.
//
// Scales are f16 at every granularity (as GPTQ/AWQ checkpoints store them), rounded *up* to the
// next f16 so the grid always covers the group's range; codes are computed against that stored
// scale. A per-tensor f16 scale is as exact, relatively, as a per-group one (2^-10), so f32 would
// buy nothing but a second layout.
//
// Error bound (the table's error_bound), without clipping or importance weights:
//   sym:  s = A / qmax (A = group absmax), s' = f16_round_up(s) in [s, s (1 + 2^-10)] while s' is
//         a normal f16 (s >= 2^-14). Every |x| <= A = qmax s <= qmax s', so x / s' never leaves
//         [-qmax, qmax], nothing clamps, and |x - q s'| <= s'/2 <= A (1 + 2^-10) / (2 qmax).
//   asym: the range [m, M] is widened to hold 0 (m = min(min, 0), M = max(max, 0), R = M - m) so
//         that 0 is exact (it maps to code z). L = 2^b - 1, s' = f16_round_up(R / L) >= R / L,
//         z = round(-m / s') in [0, L]. The integer zero-point shifts the grid
//         [-z s', (L - z) s'] by up to s'/2 against [m, M]:
//         below: -z s' <= m + s'/2, so an x >= m that clamps to code 0 is within s'/2;
//         above: (L - z) s' >= L s' + m - s'/2 >= M - s'/2 (because L s' >= R), so an x <= M
//         that clamps to code L is also within s'/2. Inside the grid rounding costs <= s'/2.
//         Hence |x - (q - z) s'| <= s'/2 <= R (1 + 2^-10) / (2 L). (Rounding the scale to
//         nearest instead could leave L s' < R and add L (s - s') at the top end: up to 12% more
//         for 8 bits, which is why the scale is rounded up.)
//   Both: float evaluation (x * (1/s'), the product q * s', R / L in f32) adds < 2^-20 of A (R).
//   Below the f16 normal range (group absmax < qmax 2^-14) the scale's absolute rounding
//   (<= 2^-24) dominates instead; weights that small are not representable usefully in f16 anyway.
//
// With importance weights the scale (and zero-point) are searched per group to minimise
// sum_i w_i (x_i - dequant_i)^2; the candidates always include the plain absmax/min-max scale, so
// the weighted error never exceeds that of round-to-nearest.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "formats/format_impl.h"
#include "formats/quant_common.h"

namespace qforge::formats {
namespace {

constexpr double kFloatSlack = 1.0 / (1 << 20);  // f32 evaluation error, as a fraction of A or R

// Parameters of one group.
struct IntParams {
  uint16_t scale_bits = 0;  // stored f16
  float scale = 0;          // its value
  int zero = 0;             // asym: zero-point code; sym: unused
};

// The value <-> code mapping of one integer scheme.
struct IntCodec {
  bool asym = false;
  int qmax = 0;    // sym: 2^(b-1) - 1; asym: L = 2^b - 1
  int offset = 0;  // sym: code of 0 (2^(b-1)); asym: 0 (the zero-point is per group)

  IntCodec(const Scheme& scheme, bool asymmetric) : asym(asymmetric) {
    if (asym) {
      qmax = (1 << scheme.bits) - 1;
    } else {
      qmax = (1 << (scheme.bits - 1)) - 1;
      offset = 1 << (scheme.bits - 1);
    }
  }
  static float inverse(float scale) { return scale > 0 ? 1.0f / scale : 0.0f; }
  // Code of x for a group with scale inverse `inv` and zero-point `zero`.
  int encode(float x, float inv, int zero) const {
    if (asym) return round_clamped(x * inv, -zero, qmax - zero) + zero;
    return round_clamped(x * inv, -qmax, qmax) + offset;
  }
  float decode(int code, float scale, int zero) const {
    return static_cast<float>(code - (asym ? zero : offset)) * scale;
  }
};

IntParams params_from_scale_bits(uint16_t bits) {
  IntParams p;
  p.scale_bits = bits;
  p.scale = f16_to_f32(bits);
  return p;
}

// Round-to-nearest parameters: sym from the absmax A, asym from the zero-including range [m, M].
IntParams sym_params(float absmax, const IntCodec& c) {
  if (!(absmax > 0)) return IntParams{};
  return params_from_scale_bits(f16_round_up(absmax / static_cast<float>(c.qmax)));
}

IntParams asym_params(float lo, float hi, const IntCodec& c) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  const float range = hi - lo;
  if (!(range > 0)) return IntParams{};
  IntParams p = params_from_scale_bits(f16_round_up(range / static_cast<float>(c.qmax)));
  if (std::isfinite(p.scale)) p.zero = round_clamped(-lo * IntCodec::inverse(p.scale), 0, c.qmax);
  return p;
}

// sum_i w_i (x_i - dequant(quant(x_i)))^2; also the sums a least-squares scale refit needs.
struct Fit {
  double err = 0, wxq = 0, wqq = 0;
};
Fit evaluate(const float* x, const float* w, int64_t n, const IntParams& p, const IntCodec& c) {
  Fit f;
  const float inv = IntCodec::inverse(p.scale);
  const int off = c.asym ? p.zero : c.offset;
  for (int64_t i = 0; i < n; ++i) {
    const int q = c.encode(x[i], inv, p.zero) - off;
    const double d = static_cast<double>(x[i]) - static_cast<double>(static_cast<float>(q) * p.scale);
    f.err += w[i] * d * d;
    f.wxq += static_cast<double>(w[i]) * x[i] * q;
    f.wqq += static_cast<double>(w[i]) * q * q;
  }
  return f;
}

// Least-squares scale for the codes of `p` (codes fixed): argmin_s sum w (x - s q)^2, rounded to
// nearest f16. Returns false when no usable scale comes out.
bool refit_scale(const Fit& f, IntParams* p) {
  if (!(f.wqq > 0) || !(f.wxq > 0)) return false;
  const float s = static_cast<float>(f.wxq / f.wqq);
  const uint16_t bits = f32_to_f16(s);
  const float v = f16_to_f32(bits);
  if (!(v > 0) || !std::isfinite(v)) return false;
  const int zero = p->zero;
  *p = params_from_scale_bits(bits);
  p->zero = zero;
  return true;
}

// Shrink factors tried by the importance search. sym: 1, 0.98, ..., 0.52 (GPTQ's MSE grid and
// llama.cpp's make_qx_quants search the same kind of range). asym: min and max shrink
// independently, a coarse 6 x 6 grid (1, 0.92, ..., 0.60 for each end) and then the 8 neighbours
// of its best point at half the step: 44 candidates instead of a dense grid's ~100.
constexpr int kSymSteps = 25;
constexpr float kSymStep = 0.02f;
constexpr int kAsymCoarseSteps = 6;
constexpr float kAsymCoarseStep = 0.08f;

IntParams search_sym(const float* x, const float* w, int64_t n, float absmax, const IntCodec& c) {
  IntParams best = sym_params(absmax, c);
  if (best.scale == 0) return best;
  double best_err = evaluate(x, w, n, best, c).err;
  for (int k = 0; k < kSymSteps; ++k) {
    IntParams cand = sym_params(absmax * (1.0f - kSymStep * static_cast<float>(k)), c);
    if (!(cand.scale > 0) || !std::isfinite(cand.scale)) continue;
    const Fit fit = evaluate(x, w, n, cand, c);
    if (fit.err < best_err) best_err = fit.err, best = cand;
    if (refit_scale(fit, &cand)) {
      const double err = evaluate(x, w, n, cand, c).err;
      if (err < best_err) best_err = err, best = cand;
    }
  }
  return best;
}

IntParams search_asym(const float* x, const float* w, int64_t n, float lo, float hi, const IntCodec& c) {
  IntParams best = asym_params(lo, hi, c);
  if (best.scale == 0) return best;
  double best_err = evaluate(x, w, n, best, c).err;
  float best_lo = 1.0f, best_hi = 1.0f;  // shrink factors of the best candidate
  auto try_shrink = [&](float shrink_lo, float shrink_hi) {
    const IntParams cand = asym_params(lo * shrink_lo, hi * shrink_hi, c);
    if (!(cand.scale > 0) || !std::isfinite(cand.scale)) return;
    const double err = evaluate(x, w, n, cand, c).err;
    if (err < best_err) best_err = err, best = cand, best_lo = shrink_lo, best_hi = shrink_hi;
  };
  for (int i = 0; i < kAsymCoarseSteps; ++i)
    for (int j = 0; j < kAsymCoarseSteps; ++j)
      if (i + j > 0) try_shrink(1.0f - kAsymCoarseStep * static_cast<float>(i), 1.0f - kAsymCoarseStep * static_cast<float>(j));
  const float center_lo = best_lo, center_hi = best_hi, fine = kAsymCoarseStep / 2;
  for (int i = -1; i <= 1; ++i)
    for (int j = -1; j <= 1; ++j) {
      const float shrink_lo = center_lo + fine * static_cast<float>(i), shrink_hi = center_hi + fine * static_cast<float>(j);
      if ((i != 0 || j != 0) && shrink_lo <= 1.0f && shrink_hi <= 1.0f) try_shrink(shrink_lo, shrink_hi);
    }
  // Refit the winner's scale with its zero-point and codes fixed.
  IntParams refit = best;
  if (refit_scale(evaluate(x, w, n, best, c), &refit)) {
    const double err = evaluate(x, w, n, refit, c).err;
    if (err < best_err) best = refit;
  }
  return best;
}

Status int_quantize(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                    const QuantizeOptions& options, QuantizedTensor* out, bool asym) {
  const IntCodec codec(scheme, asym);
  const GroupLayout groups(scheme, rows, cols);
  const ImportanceView importance(options, rows, cols);
  const float clip = options.clip_ratio;

  std::vector<IntParams> params(static_cast<size_t>(groups.count));
  int64_t first_bad = std::numeric_limits<int64_t>::max();
#pragma omp parallel for schedule(dynamic, 64) reduction(min : first_bad) if (groups.count > 64)
  for (int64_t g = 0; g < groups.count; ++g) {
    const int64_t begin = groups.per_row == 0 ? 0 : (g / groups.per_row) * cols + (g % groups.per_row) * groups.length;
    const float* x = w + begin;
    const int64_t n = groups.length;
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < n; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
    lo *= clip;
    hi *= clip;
    const float absmax = std::max(-lo, hi);
    IntParams p;
    if (importance.present()) {
      std::vector<float> wt;
      importance.gather(begin, n, &wt);
      p = asym ? search_asym(x, wt.data(), n, lo, hi, codec) : search_sym(x, wt.data(), n, absmax, codec);
    } else {
      p = asym ? asym_params(lo, hi, codec) : sym_params(absmax, codec);
    }
    if (!std::isfinite(p.scale)) first_bad = std::min(first_bad, g);
    params[static_cast<size_t>(g)] = p;
  }
  if (first_bad != std::numeric_limits<int64_t>::max()) {
    const std::string where = groups.per_row == 0 ? std::string("the tensor")
                              : "row " + std::to_string(first_bad / groups.per_row) + ", group " +
                                    std::to_string(first_bad % groups.per_row);
    return invalid_argument("scheme " + scheme.name() + ": the scale of " + where +
                            " exceeds the f16 range (65504): weights too large for an f16-scaled format");
  }

  const PlaneSizes sizes = scheme_plane_sizes(scheme, rows, cols);
  out->codes.assign(sizes.codes, 0);
  out->scales.resize(sizes.scales);
  out->zeros.resize(sizes.zeros);
  out->extra.clear();
  for (int64_t g = 0; g < groups.count; ++g) {
    const IntParams& p = params[static_cast<size_t>(g)];
    out->scales[static_cast<size_t>(2 * g)] = static_cast<uint8_t>(p.scale_bits & 0xFF);  // little-endian
    out->scales[static_cast<size_t>(2 * g + 1)] = static_cast<uint8_t>(p.scale_bits >> 8);
    if (asym) out->zeros[static_cast<size_t>(g)] = static_cast<uint8_t>(p.zero);
  }

  const size_t row_bytes = sizes.codes / static_cast<size_t>(rows);
  const int64_t segment = groups.per_row == 0 ? cols : groups.length;  // columns sharing a scale
#pragma omp parallel if (rows > 16)
  {
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* x = w + r * cols;
      for (int64_t c0 = 0; c0 < cols; c0 += segment) {
        const IntParams& p = params[static_cast<size_t>(groups.group_of(r, c0))];
        const float inv = IntCodec::inverse(p.scale);
        for (int64_t col = c0; col < c0 + segment; ++col)
          codes[static_cast<size_t>(col)] = static_cast<uint8_t>(codec.encode(x[col], inv, p.zero));
      }
      pack_bits(codes.data(), cols, scheme.bits, out->codes.data() + static_cast<size_t>(r) * row_bytes);
    }
  }
  return Status::ok();
}

void int_dequantize(const QuantizedTensor& q, float* out, bool asym) {
  const IntCodec codec(q.scheme, asym);
  const GroupLayout groups(q.scheme, q.rows, q.cols);
  const size_t row_bytes = q.packed_row_bytes();
  const int64_t segment = groups.per_row == 0 ? q.cols : groups.length;  // columns sharing a scale
#pragma omp parallel if (q.rows > 16)
  {
    std::vector<uint8_t> codes(static_cast<size_t>(q.cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < q.rows; ++r) {
      unpack_bits(q.codes.data() + static_cast<size_t>(r) * row_bytes, q.cols, q.scheme.bits, codes.data());
      float* y = out + r * q.cols;
      for (int64_t c0 = 0; c0 < q.cols; c0 += segment) {
        const int64_t g = groups.group_of(r, c0);
        const uint16_t bits = static_cast<uint16_t>(q.scales[static_cast<size_t>(2 * g)] |
                                                    (q.scales[static_cast<size_t>(2 * g + 1)] << 8));
        const float scale = f16_to_f32(bits);
        const int zero = asym ? q.zeros[static_cast<size_t>(g)] : 0;
        for (int64_t col = c0; col < c0 + segment; ++col)
          y[col] = codec.decode(codes[static_cast<size_t>(col)], scale, zero);
      }
    }
  }
}

}  // namespace

Status int_sym_quantize_ref(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                            const QuantizeOptions& options, QuantizedTensor* out) {
  return int_quantize(scheme, w, rows, cols, options, out, /*asym=*/false);
}
void int_sym_dequantize_ref(const QuantizedTensor& q, float* out) { int_dequantize(q, out, false); }

Status int_asym_quantize_ref(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                             const QuantizeOptions& options, QuantizedTensor* out) {
  return int_quantize(scheme, w, rows, cols, options, out, /*asym=*/true);
}
void int_asym_dequantize_ref(const QuantizedTensor& q, float* out) { int_dequantize(q, out, true); }

double int_sym_error_bound(const Scheme& scheme) {
  const double qmax = (1 << (scheme.bits - 1)) - 1;
  return (1.0 + 1.0 / 1024) / (2 * qmax) + kFloatSlack;
}
double int_asym_error_bound(const Scheme& scheme) {
  const double levels = (1 << scheme.bits) - 1;
  return (1.0 + 1.0 / 1024) / (2 * levels) + kFloatSlack;
}

}  // namespace qforge::formats
