// NF4 (NormalFloat4, QLoRA / bitsandbytes): 4-bit indices into a fixed 16-value codebook of
// normal-distribution quantiles in [-1, 1], scaled by the absmax of each block of `group` weights
// (default 64, as bitsandbytes), with optional double quantization of the absmax values.
//
// Storage (docs/formats.md has the field-by-field layout):
//   codes   4-bit codebook indices (0 = -1.0, 7 = 0.0, 15 = 1.0: bitsandbytes' indices), two per
//           byte, element 2k in the low nibble (qforge bit stream; bitsandbytes puts element 2k in
//           the HIGH nibble, so exporters to bnb swap nibbles), rows start on byte boundaries.
//   scales  "nf4"/"nf4-g<N>": one f32 absmax per group, [rows, cols / group] (bitsandbytes keeps
//           the absmax in f32 too). "nf4-dq": one u8 per group, an index into bitsandbytes'
//           signed 8-bit dynamic map (see below).
//   extra   "nf4-dq" only: f32 offset (the mean of all group absmax values), then one f32
//           second-level absmax per block of 256 consecutive groups (row-major group order, the
//           last block may be short): 4 + 4 * ceil(groups / 256) bytes.
//
// Quantization (as bitsandbytes' quantize_4bit): A = absmax of the group, y = x * (1 / A) in f32,
// clamped to [-1, 1], code = nearest codebook value; a y exactly halfway between two codebook
// values takes the LOWER one (bitsandbytes' CPU path is argmin, which returns the first index; its
// CUDA decision tree compares with '>' against the midpoints, same result). A = 0 gives code 7.
// Dequantization: codebook[code] * A.
//
// Double quantization (bitsandbytes compress_statistics=True): codes are computed with the exact
// absmax first; then offset = mean(absmax) and the values absmax - offset are quantized
// blockwise (256) with bitsandbytes' 8-bit signed dynamic map: m2 = max |absmax_j - offset| in the
// block, index = nearest map value to (absmax_j - offset) * (1 / m2) (ties to the lower index).
// Dequantization rebuilds absmax'_j = map[index] * m2 + offset (f32) and uses it as A.
// The dynamic map is built here exactly as bitsandbytes' create_dynamic_map(signed=True,
// max_exponent_bits=7, total_bits=8) does, in f32 arithmetic (torch.linspace's CPU formula): for
// i = 0..6 the 2^i midpoints of linspace(0.1, 1, 2^i + 1), times 10^(i-6), both signs, plus 0 and
// 1, sorted (256 values). The mean is accumulated in double and rounded to f32 (torch's f32 mean
// may differ in the last ulp).
//
// Error bound (error_bound), as a fraction of the group absmax A, no clipping or importance:
//   the largest gap between adjacent codebook values is the first, 1 - 0.6961928 = 0.3038072, so
//   rounding to the nearest value costs at most 0.1519036 A. y = x * fl(1/A) is within 2 ulp of
//   x / A, and the clamp to [-1, 1] and the product codebook * A add at most a few ulp:
//   kFloatSlack = 2^-20 covers them.
//   With double quantization A is replaced by absmax', |A - absmax'| <= h2 * m2 + ulp, where
//   h2 = 0.00703125 is the largest half-gap of the dynamic map (in its top decade, linspace step
//   0.9/64), and m2 <= the largest group absmax of the tensor (every absmax and their mean lie in
//   [0, max]). Since |codebook| <= 1 the element error grows by at most h2 * m2. The bound
//   returned for "nf4-dq" is 0.1519036 + h2 + slack: exact as a fraction of the tensor's largest
//   group absmax, and of the group's own absmax whenever m2 <= A (groups of similar absmax, as
//   real weights have). The unit test checks the exact per-element form.
//
// Importance weights: per group, the stored absmax is searched over clip_ratio * [0.5, 1]
// (51 steps) to minimise sum w (x - dequant)^2; the plain absmax is the first candidate.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "formats/float_quant_common.h"
#include "formats/format_impl.h"

namespace qforge::formats {

// bitsandbytes NF4 codebook (bitsandbytes/functional.py get_4bit_type("nf4"), csrc/kernels.cu),
// ascending; index i is bitsandbytes' code i.
const float kNf4Codebook[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

namespace {

using namespace floatq;

constexpr int64_t kDefaultGroup = 64;
constexpr int64_t kDqBlock = 256;
constexpr double kFloatSlack = 1.0 / (1 << 20);
constexpr uint8_t kZeroCode = 7;

int64_t group_of(const Scheme& s) { return s.group_size > 0 ? s.group_size : kDefaultGroup; }

// Decision thresholds: the largest f32 <= each midpoint of adjacent codebook values, so that for
// an f32 y, "y > threshold" is exactly "y > midpoint" (ties go to the lower index).
std::array<float, 15> make_thresholds() {
  std::array<float, 15> t{};
  for (size_t i = 0; i < 15; ++i) {
    const double mid = 0.5 * (static_cast<double>(kNf4Codebook[i]) + kNf4Codebook[i + 1]);
    float f = static_cast<float>(mid);
    if (static_cast<double>(f) > mid) f = std::nextafter(f, -INFINITY);
    t[i] = f;
  }
  return t;
}

// Nearest codebook index of y in [-1, 1]; ties go to the lower index.
uint8_t nf4_encode(float y) {
  static const std::array<float, 15> thresholds = make_thresholds();
  uint8_t code = 0;
  for (float t : thresholds) code += y > t ? 1 : 0;
  return code;
}

// y = x * (1 / A) as bitsandbytes computes it; for an f32-subnormal A whose inverse overflows,
// the division is used instead (bitsandbytes would produce NaN codes there).
uint8_t encode_scaled(float x, float inv, float scale) {
  const float y = std::isinf(inv) ? x / scale : x * inv;
  return nf4_encode(std::clamp(y, -1.0f, 1.0f));
}

// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), in f32.
std::array<float, 256> build_dynamic_map() {
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    const int64_t n = (int64_t{1} << i) + 1;  // linspace points
    const float start = 0.1f, end = 1.0f;
    const float step = (end - start) / static_cast<float>(n - 1);
    std::vector<float> b(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k)  // torch.linspace CPU: from both ends towards the middle
      b[static_cast<size_t>(k)] = k < n / 2 ? start + step * static_cast<float>(k)
                                            : end - step * static_cast<float>(n - k - 1);
    const float mult = static_cast<float>(std::pow(10.0, i - 6));
    for (int64_t k = 0; k + 1 < n; ++k) {
      const float mean = (b[static_cast<size_t>(k)] + b[static_cast<size_t>(k + 1)]) / 2.0f;
      data.push_back(mult * mean);
      data.push_back(-(mult * mean));
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  QFORGE_CHECK(data.size() == 256);
  std::sort(data.begin(), data.end());
  std::array<float, 256> out{};
  std::copy(data.begin(), data.end(), out.begin());
  return out;
}

const std::array<float, 256>& dynamic_map() {
  static const std::array<float, 256> map = build_dynamic_map();
  return map;
}

// Largest half-gap between adjacent dynamic-map values (0.00703125 up to f32 rounding).
double dynamic_map_max_half_gap() {
  const auto& m = dynamic_map();
  double g = 0;
  for (size_t i = 0; i + 1 < m.size(); ++i) g = std::max(g, 0.5 * (static_cast<double>(m[i + 1]) - m[i]));
  return g;
}

// Nearest dynamic-map index of y in [-1, 1]; ties to the lower index.
uint8_t dynamic_encode(float y) {
  const auto& m = dynamic_map();
  auto it = std::lower_bound(m.begin(), m.end(), y);
  if (it == m.begin()) return 0;
  if (it == m.end()) return 255;
  const size_t hi = static_cast<size_t>(it - m.begin()), lo = hi - 1;
  const double dlo = static_cast<double>(y) - m[lo], dhi = static_cast<double>(m[hi]) - y;
  return static_cast<uint8_t>(dhi < dlo ? hi : lo);
}

// Importance-weighted squared error of quantizing the group with absmax-scale `scale`.
double weighted_error(const float* x, const float* w, int64_t n, float scale) {
  const float inv = 1.0f / scale;
  double e = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - static_cast<double>(kNf4Codebook[encode_scaled(x[i], inv, scale)] * scale);
    e += static_cast<double>(w[i]) * d * d;
  }
  return e;
}

size_t dq_blocks(int64_t groups) { return static_cast<size_t>((groups + kDqBlock - 1) / kDqBlock); }

void double_quantize(const std::vector<float>& absmax, QuantizedTensor* out) {
  const size_t n = absmax.size();
  double sum = 0;
  for (float a : absmax) sum += a;
  const float offset = static_cast<float>(sum / static_cast<double>(n));
  const size_t nb = dq_blocks(static_cast<int64_t>(n));
  out->scales.assign(n, 0);
  out->extra.assign(4 + 4 * nb, 0);
  put_f32(out->extra, 0, offset);
  for (size_t b = 0; b < nb; ++b) {
    const size_t begin = b * kDqBlock, end = std::min(n, begin + kDqBlock);
    float m2 = 0;
    for (size_t j = begin; j < end; ++j) m2 = std::max(m2, std::fabs(absmax[j] - offset));
    put_f32(out->extra, 1 + b, m2);
    const float inv = m2 > 0 ? 1.0f / m2 : 0.0f;
    for (size_t j = begin; j < end; ++j)
      out->scales[j] = dynamic_encode(std::clamp((absmax[j] - offset) * inv, -1.0f, 1.0f));
  }
}

}  // namespace

Status nf4_quantize_ref(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                        const QuantizeOptions& options, QuantizedTensor* out) {
  const int64_t group = group_of(scheme);
  QFORGE_RETURN_IF_ERROR(check_shape(scheme, rows, cols, group));
  Importance imp(QuantizeOptions{}, rows, cols);
  QFORGE_RETURN_IF_ERROR(check_options(options, rows, cols, &imp));
  const int64_t per_row = cols / group;
  const size_t row_bytes = nibble_row_bytes(cols);
  out->scheme = scheme;
  out->rows = rows;
  out->cols = cols;
  out->codes.assign(static_cast<size_t>(rows) * row_bytes, 0);
  out->zeros.clear();
  out->extra.clear();
  std::vector<float> absmax_used(static_cast<size_t>(rows * per_row));
  std::vector<float> weights;
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* code_row = out->codes.data() + static_cast<size_t>(r) * row_bytes;
    for (int64_t g = 0; g < per_row; ++g) {
      const int64_t begin = r * cols + g * group;
      const float* x = w + begin;
      const float a = absmax(x, group);
      float scale = options.clip_ratio * a;
      if (imp.present() && a > 0) {
        weights.resize(static_cast<size_t>(group));
        for (int64_t i = 0; i < group; ++i) weights[static_cast<size_t>(i)] = imp.at(begin + i);
        double best = weighted_error(x, weights.data(), group, scale);
        for (int k = 1; k < kSearchSteps; ++k) {
          const float cand = search_ratio(options.clip_ratio, k) * a;
          const double e = weighted_error(x, weights.data(), group, cand);
          if (e < best) best = e, scale = cand;
        }
      }
      absmax_used[static_cast<size_t>(r * per_row + g)] = scale;
      const float inv = scale > 0 ? 1.0f / scale : 0.0f;
      for (int64_t i = 0; i < group; ++i)
        put_nibble(code_row, g * group + i, scale > 0 ? encode_scaled(x[i], inv, scale) : kZeroCode);
    }
  }
  if (scheme.double_quant) {
    double_quantize(absmax_used, out);
  } else {
    out->scales.assign(absmax_used.size() * 4, 0);
    for (size_t j = 0; j < absmax_used.size(); ++j) put_f32(out->scales, j, absmax_used[j]);
  }
  return Status::ok();
}

void nf4_dequantize_ref(const QuantizedTensor& q, float* out) {
  const int64_t group = group_of(q.scheme);
  const int64_t per_row = q.cols / group;
  const size_t row_bytes = nibble_row_bytes(q.cols);
  const auto& map = dynamic_map();
  const float offset = q.scheme.double_quant ? get_f32(q.extra, 0) : 0.0f;
  for (int64_t r = 0; r < q.rows; ++r) {
    const uint8_t* code_row = q.codes.data() + static_cast<size_t>(r) * row_bytes;
    for (int64_t g = 0; g < per_row; ++g) {
      const size_t j = static_cast<size_t>(r * per_row + g);
      float a;
      if (q.scheme.double_quant) a = map[q.scales[j]] * get_f32(q.extra, 1 + j / kDqBlock) + offset;
      else a = get_f32(q.scales, j);
      for (int64_t i = 0; i < group; ++i) {
        const int64_t c = g * group + i;
        out[r * q.cols + c] = kNf4Codebook[get_nibble(code_row, c)] * a;
      }
    }
  }
}

double nf4_error_bound(const Scheme& scheme) {
  double codebook_half_gap = 0;  // the first gap, 0.1519036
  for (int i = 0; i < 15; ++i)
    codebook_half_gap = std::max(codebook_half_gap, 0.5 * (static_cast<double>(kNf4Codebook[i + 1]) - kNf4Codebook[i]));
  double bound = codebook_half_gap + kFloatSlack;
  if (scheme.double_quant) bound += dynamic_map_max_half_gap();
  return bound;
}

// Bytes of the `extra` plane: the double-quant offset and second-level scales.
size_t nf4_extra_bytes(const Scheme& scheme, int64_t rows, int64_t cols) {
  if (!scheme.double_quant) return 0;
  const int64_t groups = rows * (cols / group_of(scheme));
  return 4 + 4 * dq_blocks(groups);
}

// The dynamic map, for tests and exporters.
const float* nf4_dq_dynamic_map() { return dynamic_map().data(); }

}  // namespace qforge::formats
