// 4-bit floating-point formats with E2M1 elements (OCP: 1 sign, 2 exponent bits with bias 1,
// 1 mantissa bit; magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6):
//
//   fp4    ("fp4", "fp4-g<N>"): absmax scale per group (default 64, as bitsandbytes' fp4).
//          scale = absmax / 6 stored as f32 (bitsandbytes also keeps an f32 absmax); element code
//          = e2m1(x / scale). Unlike bitsandbytes' own "fp4" table, whose smallest non-zero
//          magnitude is 0.0052 * absmax (= 1/192), the codes are plain OCP E2M1 (0.5/6 = 1/12), so
//          they are interchangeable with MXFP4/NVFP4 element codes.
//   mxfp4  (OCP Microscaling v1.0): blocks of 32 elements sharing one E8M0 scale X = 2^e with
//          e = floor(log2(absmax)) - emax_elem, emax_elem = 2 for E2M1 (the spec's algorithm:
//          the block's largest exponent minus the element format's largest exponent), clamped to
//          E8M0's [-127, 127]; element = e2m1(x / X), magnitudes beyond 6 clamp to 6. An all-zero
//          block stores e = -127 (code 0x00).
//   nvfp4  (NVIDIA): blocks of 16 elements sharing one E4M3 scale, plus one f32 per-tensor
//          scale g = absmax_tensor / (6 * 448). Block scale s = e4m3(absmax_block / (6 * g))
//          (RNE, saturating); element = e2m1(x / (s * g)); value = e2m1 * (s * g). This is
//          TensorRT Model Optimizer's NVFP4 weight recipe. A block whose scale rounds to zero
//          stores codes 0; an all-zero tensor stores g = 0.
//
// E2M1 rounding is to nearest, ties to the even code (OCP conversion), saturating at 6; the sign
// is kept (negative values that round to zero give -0, code 8).
//
// Storage (docs/formats.md):
//   codes   4-bit E2M1 codes, two per byte, element 2k in the low nibble, rows on byte boundaries.
//   scales  fp4: f32 per group [rows, cols/group]; mxfp4: one E8M0 byte per 32 [rows, cols/32];
//           nvfp4: one E4M3FN byte per 16 [rows, cols/16].
//   extra   nvfp4: the f32 per-tensor scale g (4 bytes). Others: empty.
//
// Error bounds (as a fraction of the group/block absmax A, no clipping, no importance weights):
//   fp4:   s = fl(A / 6); x / s never exceeds 6 by more than an ulp, and the largest gap of the
//          E2M1 grid is 2 (between 4 and 6), so |x - q s| <= s = A/6 (+ f32 slack).
//   mxfp4: X = 2^(floor(log2 A) - 2), so a = A / X is in [4, 8); let y = |x| / X <= a.
//          y <= 4: the grid spacing is <= 1, error <= X/2 <= A/8.
//          y in (4, 6]: spacing 2, error <= min(y - 4, 6 - y) X <= min(a - 4, 1) X, and
//            min(a - 4, 1) / a <= 1/5 (at a = 5).
//          y in (6, a]: clamps to 6, error <= (a - 6) X = A (a - 6) / a < A (8 - 6) / 8 = A/4.
//          So the bound is 1/4 (a supremum, approached as a -> 8): the power-of-two scale can
//          leave up to a quarter of the range above the largest code, where fp4's exact scale
//          gives 1/6. Valid for A >= 2^-125, where e is not clamped at -127.
//   nvfp4: s = A / (6 g) (real), s' = e4m3(s); in E4M3's normal range |s' - s| <= s / 16, so
//          s' in [15/16 s, 17/16 s]. y = x / (s' g) has |y| <= 6 s / s' <= 6.4. For |y| <= 6 the
//          error is <= s' g (half the gap 2) <= (17/16) A/6; for y in (6, 6.4] (only when s' < s)
//          the clamp costs <= 0.4 s' g < 0.4 A/6. Bound (17/16)/6 = 17/96 (+ slack). Valid while
//          s >= 2^-6 (E4M3 normal), i.e. A >= absmax_tensor * 2^-6 / 448; smaller blocks get a
//          subnormal E4M3 scale with less relative precision.
//   All: f32 evaluation (scale division, products) adds < 2^-20 of A.
//
// Importance weights: the per-group/block scale is searched over clip ratios
// clip_ratio * [0.5, 1] (51 steps; MXFP4: the distinct exponents they give plus one above) to
// minimise sum w (x - dequant)^2. The plain scale is the first candidate, kept unless another is
// strictly better.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "formats/float_quant_common.h"
#include "formats/format_impl.h"

namespace qforge::formats {

const float kFp4E2M1Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

namespace {

using namespace floatq;

constexpr int64_t kFp4DefaultGroup = 64;
constexpr int64_t kMxBlock = 32;
constexpr int64_t kNvBlock = 16;
constexpr int kE2M1Emax = 2;          // exponent of 4 = the largest power of two below 6
constexpr float kE2M1Max = 6.0f;
constexpr float kE4M3Max = 448.0f;
constexpr double kFloatSlack = 1.0 / (1 << 20);

// Encodes/decodes one group given the multiplier `step` (value = e2m1 * step).
void encode_group(const float* x, int64_t n, float step, uint8_t* row, int64_t first_col) {
  for (int64_t i = 0; i < n; ++i) put_nibble(row, first_col + i, step > 0 ? e2m1_encode(x[i] / step) : 0);
}

double group_weighted_error(const float* x, const float* w, int64_t n, float step) {
  double e = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float deq = step > 0 ? e2m1_decode(e2m1_encode(x[i] / step)) * step : 0.0f;
    const double d = static_cast<double>(x[i]) - deq;
    e += static_cast<double>(w[i]) * d * d;
  }
  return e;
}

void gather_weights(const Importance& imp, int64_t begin, int64_t n, std::vector<float>* w) {
  w->resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) (*w)[static_cast<size_t>(i)] = imp.at(begin + i);
}

// Shared driver: for each group, `choose(x, n, begin)` returns the stored scale bytes' index
// value and fills the step; `store` writes the scale.
struct Layout {
  int64_t rows, cols, group, per_row;
  size_t row_bytes;
};

Layout start(const Scheme& scheme, int64_t rows, int64_t cols, int64_t group, QuantizedTensor* out) {
  Layout l{rows, cols, group, cols / group, nibble_row_bytes(cols)};
  out->scheme = scheme;
  out->rows = rows;
  out->cols = cols;
  out->codes.assign(static_cast<size_t>(rows) * l.row_bytes, 0);
  out->scales.clear();
  out->zeros.clear();
  out->extra.clear();
  return l;
}

int64_t fixed_block(const Scheme& scheme, int64_t block, Status* st) {
  if (scheme.group_size != 0 && scheme.group_size != block)
    *st = invalid_argument(scheme.name() + ": the block is fixed at " + std::to_string(block) + ", not " +
                           std::to_string(scheme.group_size));
  return block;
}

// MXFP4 shared exponent of a block with absmax a > 0: floor(log2 a) - 2, clamped to E8M0.
int mx_exponent(float a) {
  int ex = 0;
  std::frexp(a, &ex);  // a = fr * 2^ex, fr in [0.5, 1): floor(log2 a) = ex - 1
  return std::clamp(ex - 1 - kE2M1Emax, -127, 127);
}

}  // namespace

// ---- fp4 ---------------------------------------------------------------------------------

Status fp4_quantize_ref(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                        const QuantizeOptions& options, QuantizedTensor* out) {
  const int64_t group = scheme.group_size > 0 ? scheme.group_size : kFp4DefaultGroup;
  QFORGE_RETURN_IF_ERROR(check_shape(scheme, rows, cols, group));
  Importance imp(QuantizeOptions{}, rows, cols);
  QFORGE_RETURN_IF_ERROR(check_options(options, rows, cols, &imp));
  const Layout l = start(scheme, rows, cols, group, out);
  out->scales.assign(static_cast<size_t>(rows * l.per_row) * 4, 0);
  std::vector<float> weights;
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = out->codes.data() + static_cast<size_t>(r) * l.row_bytes;
    for (int64_t g = 0; g < l.per_row; ++g) {
      const int64_t begin = r * cols + g * group;
      const float* x = w + begin;
      const float a = absmax(x, group);
      float step = options.clip_ratio * a / kE2M1Max;
      if (imp.present() && a > 0) {
        gather_weights(imp, begin, group, &weights);
        double best = group_weighted_error(x, weights.data(), group, step);
        for (int k = 1; k < kSearchSteps; ++k) {
          const float cand = search_ratio(options.clip_ratio, k) * a / kE2M1Max;
          const double e = group_weighted_error(x, weights.data(), group, cand);
          if (e < best) best = e, step = cand;
        }
      }
      put_f32(out->scales, static_cast<size_t>(r * l.per_row + g), step);
      encode_group(x, group, step, row, g * group);
    }
  }
  return Status::ok();
}

void fp4_dequantize_ref(const QuantizedTensor& q, float* out) {
  const int64_t group = q.scheme.group_size > 0 ? q.scheme.group_size : kFp4DefaultGroup;
  const int64_t per_row = q.cols / group;
  const size_t row_bytes = nibble_row_bytes(q.cols);
  for (int64_t r = 0; r < q.rows; ++r) {
    const uint8_t* row = q.codes.data() + static_cast<size_t>(r) * row_bytes;
    for (int64_t c = 0; c < q.cols; ++c) {
      const float step = get_f32(q.scales, static_cast<size_t>(r * per_row + c / group));
      out[r * q.cols + c] = e2m1_decode(get_nibble(row, c)) * step;
    }
  }
}

double fp4_error_bound(const Scheme&) { return 1.0 / 6.0 + kFloatSlack; }

// ---- mxfp4 -------------------------------------------------------------------------------

Status mxfp4_quantize_ref(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                          const QuantizeOptions& options, QuantizedTensor* out) {
  Status st;
  const int64_t block = fixed_block(scheme, kMxBlock, &st);
  QFORGE_RETURN_IF_ERROR(st);
  QFORGE_RETURN_IF_ERROR(check_shape(scheme, rows, cols, block));
  Importance imp(QuantizeOptions{}, rows, cols);
  QFORGE_RETURN_IF_ERROR(check_options(options, rows, cols, &imp));
  const Layout l = start(scheme, rows, cols, block, out);
  out->scales.assign(static_cast<size_t>(rows * l.per_row), 0);
  std::vector<float> weights;
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = out->codes.data() + static_cast<size_t>(r) * l.row_bytes;
    for (int64_t b = 0; b < l.per_row; ++b) {
      const int64_t begin = r * cols + b * block;
      const float* x = w + begin;
      const float a = absmax(x, block);
      int e = -127;
      if (a > 0) {
        e = mx_exponent(options.clip_ratio * a);
        if (imp.present()) {
          gather_weights(imp, begin, block, &weights);
          double best = group_weighted_error(x, weights.data(), block, std::ldexp(1.0f, e));
          const int first = e;
          int tried_low = first;  // exponents only decrease along the ratio grid
          auto consider = [&](int cand) {
            const double err = group_weighted_error(x, weights.data(), block, std::ldexp(1.0f, cand));
            if (err < best) best = err, e = cand;
          };
          for (int k = 1; k < kSearchSteps; ++k) {
            const int cand = mx_exponent(search_ratio(options.clip_ratio, k) * a);
            if (cand < tried_low) {
              tried_low = cand;
              consider(cand);
            }
          }
          if (first < 127) consider(first + 1);  // one step up: no clamping at the top
        }
      }
      out->scales[static_cast<size_t>(r * l.per_row + b)] = static_cast<uint8_t>(e + 127);
      encode_group(x, block, a > 0 ? std::ldexp(1.0f, e) : 0.0f, row, b * block);
    }
  }
  return Status::ok();
}

void mxfp4_dequantize_ref(const QuantizedTensor& q, float* out) {
  const int64_t per_row = q.cols / kMxBlock;
  const size_t row_bytes = nibble_row_bytes(q.cols);
  for (int64_t r = 0; r < q.rows; ++r) {
    const uint8_t* row = q.codes.data() + static_cast<size_t>(r) * row_bytes;
    for (int64_t c = 0; c < q.cols; ++c) {
      const int e = static_cast<int>(q.scales[static_cast<size_t>(r * per_row + c / kMxBlock)]) - 127;
      // 0xFF (NaN scale) is never written; a file carrying it decodes to NaN, as the spec says.
      const float v = e == 128 ? NAN : std::ldexp(e2m1_decode(get_nibble(row, c)), e);
      out[r * q.cols + c] = v;
    }
  }
}

double mxfp4_error_bound(const Scheme&) { return 0.25 + kFloatSlack; }

// ---- nvfp4 -------------------------------------------------------------------------------

Status nvfp4_quantize_ref(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                          const QuantizeOptions& options, QuantizedTensor* out) {
  Status st;
  const int64_t block = fixed_block(scheme, kNvBlock, &st);
  QFORGE_RETURN_IF_ERROR(st);
  QFORGE_RETURN_IF_ERROR(check_shape(scheme, rows, cols, block));
  Importance imp(QuantizeOptions{}, rows, cols);
  QFORGE_RETURN_IF_ERROR(check_options(options, rows, cols, &imp));
  const Layout l = start(scheme, rows, cols, block, out);
  out->scales.assign(static_cast<size_t>(rows * l.per_row), 0);
  out->extra.assign(4, 0);
  const float tensor_absmax = absmax(w, rows * cols);
  const float g = tensor_absmax / (kE2M1Max * kE4M3Max);
  put_f32(out->extra, 0, g);
  if (g == 0) return Status::ok();  // all zeros: codes and block scales stay 0
  const float block_den = kE2M1Max * g;
  std::vector<float> weights;
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = out->codes.data() + static_cast<size_t>(r) * l.row_bytes;
    for (int64_t b = 0; b < l.per_row; ++b) {
      const int64_t begin = r * cols + b * block;
      const float* x = w + begin;
      const float a = absmax(x, block);
      uint8_t s = f32_to_f8_e4m3fn(options.clip_ratio * a / block_den, Fp8Overflow::saturate);
      if (imp.present() && a > 0) {
        gather_weights(imp, begin, block, &weights);
        double best = group_weighted_error(x, weights.data(), block, f8_e4m3fn_to_f32(s) * g);
        uint8_t last = s;
        for (int k = 1; k < kSearchSteps; ++k) {
          const uint8_t cand = f32_to_f8_e4m3fn(search_ratio(options.clip_ratio, k) * a / block_den);
          if (cand == last) continue;  // codes only decrease along the grid
          last = cand;
          const double e = group_weighted_error(x, weights.data(), block, f8_e4m3fn_to_f32(cand) * g);
          if (e < best) best = e, s = cand;
        }
      }
      out->scales[static_cast<size_t>(r * l.per_row + b)] = s;
      encode_group(x, block, f8_e4m3fn_to_f32(s) * g, row, b * block);
    }
  }
  return Status::ok();
}

void nvfp4_dequantize_ref(const QuantizedTensor& q, float* out) {
  const int64_t per_row = q.cols / kNvBlock;
  const size_t row_bytes = nibble_row_bytes(q.cols);
  const float g = get_f32(q.extra, 0);
  for (int64_t r = 0; r < q.rows; ++r) {
    const uint8_t* row = q.codes.data() + static_cast<size_t>(r) * row_bytes;
    for (int64_t c = 0; c < q.cols; ++c) {
      const float step = f8_e4m3fn_to_f32(q.scales[static_cast<size_t>(r * per_row + c / kNvBlock)]) * g;
      out[r * q.cols + c] = e2m1_decode(get_nibble(row, c)) * step;
    }
  }
}

double nvfp4_error_bound(const Scheme&) { return (17.0 / 16.0) / 6.0 + kFloatSlack; }

size_t nvfp4_extra_bytes(const Scheme&, int64_t, int64_t) { return 4; }

}  // namespace qforge::formats
