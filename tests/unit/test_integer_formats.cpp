// Integer (int_sym, int_asym), binary and ternary formats: round-trip error within the derived
// bounds, layout, edge cases, determinism, clipping and importance-weighted scale search.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "qforge/dtype.h"
#include "qforge/format.h"

namespace qforge {
namespace {

// Student-t with 3 degrees of freedom: heavy tails like LLM weights (kurtosis well above normal).
std::vector<float> heavy_tailed(int64_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<float> w(static_cast<size_t>(n));
  for (float& x : w) {
    const double chi2 = [&] {
      double s = 0;
      for (int k = 0; k < 3; ++k) {
        const double z = normal(rng);
        s += z * z;
      }
      return s;
    }();
    x = static_cast<float>(scale * normal(rng) / std::sqrt(chi2 / 3.0));
  }
  return w;
}

Scheme parse(const std::string& name) {
  auto s = Scheme::parse(name);
  EXPECT_TRUE(s.has_value()) << s.status().to_string();
  return s.value();
}

std::vector<float> round_trip(const Scheme& s, const std::vector<float>& w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o = {}, QuantizedTensor* out = nullptr) {
  auto q = quantize(s, w.data(), rows, cols, o);
  EXPECT_TRUE(q.has_value()) << s.name() << ": " << q.status().to_string();
  std::vector<float> y(w.size());
  if (!q.has_value()) return y;
  EXPECT_TRUE(dequantize(*q, y.data()).is_ok());
  if (out) *out = std::move(q).value();
  return y;
}

float stored_scale(const QuantizedTensor& q, int64_t group) {
  return f16_to_f32(static_cast<uint16_t>(q.scales[2 * group] | (q.scales[2 * group + 1] << 8)));
}

// The contiguous groups of a scheme: [begin, begin + length) for each scale.
struct Groups {
  int64_t count, length;
  Groups(const Scheme& s, int64_t rows, int64_t cols)
      : count(s.granularity == Granularity::tensor ? 1 : s.granularity == Granularity::channel ? rows : rows * (cols / s.group_size)),
        length(rows * cols / count) {}
};

struct Case {
  int64_t rows, cols;
  std::string granularity;  // "ch", "tensor", "g<N>"
};
const Case kCases[] = {{3, 33, "ch"}, {3, 33, "tensor"}, {3, 33, "g11"}, {3, 33, "g3"},  {3, 33, "g33"},
                       {1, 1, "ch"},  {1, 1, "tensor"},  {1, 1, "g1"},   {7, 96, "g32"}, {7, 96, "ch"},
                       {7, 96, "tensor"}, {16, 256, "g128"}, {16, 256, "g64"}, {2, 4096, "g4096"}};

// Per element: |x - y| <= error_bound * A, A = group absmax (sym) or zero-including range (asym);
// and <= half the stored step (plus f32 evaluation slack), which is what the bound derives from.
TEST(IntegerFormats, RoundTripWithinDerivedBoundForEveryWidthAndGranularity) {
  int checked = 0;
  for (int bits = 2; bits <= 8; ++bits) {
    for (const char* kind : {"sym", "asym"}) {
      for (const Case& c : kCases) {
        const std::string name = "int" + std::to_string(bits) + "-" + c.granularity + "-" + kind;
        SCOPED_TRACE(name + " on [" + std::to_string(c.rows) + ", " + std::to_string(c.cols) + "]");
        const Scheme s = parse(name);
        const auto w = heavy_tailed(c.rows * c.cols, 1000 + bits * 37 + c.cols);
        QuantizedTensor q;
        const auto y = round_trip(s, w, c.rows, c.cols, {}, &q);
        const FormatTraits& t = format_traits(s.format);
        const double bound = t.error_bound(s);
        const double levels = t.zero_point ? (1 << bits) - 1 : (1 << (bits - 1)) - 1;
        const Groups groups(s, c.rows, c.cols);
        for (int64_t g = 0; g < groups.count; ++g) {
          double lo = 0, hi = 0;
          for (int64_t i = g * groups.length; i < (g + 1) * groups.length; ++i)
            lo = std::min<double>(lo, w[i]), hi = std::max<double>(hi, w[i]);
          const double a = t.zero_point ? hi - lo : std::max(-lo, hi);
          const double step = stored_scale(q, g);
          // Stored scale: rounded up, by less than one f16 ulp (2^-10 relative).
          ASSERT_GE(step, a / levels * (1 - 1e-7)) << "group " << g;
          ASSERT_LE(step, a / levels * (1 + 1.0 / 1024)) << "group " << g;
          for (int64_t i = g * groups.length; i < (g + 1) * groups.length; ++i) {
            const double err = std::fabs(static_cast<double>(w[i]) - y[i]);
            ASSERT_LE(err, bound * a) << "element " << i << " = " << w[i] << " -> " << y[i] << ": |error| " << err
                                      << " > allowed " << bound * a;
            ASSERT_LE(err, step / 2 + a * 1e-6) << "element " << i << ": more than half a step";
          }
        }
        if (t.zero_point) {  // zero-points are codes
          for (uint8_t z : q.zeros) ASSERT_LE(z, (1 << bits) - 1);
        }
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 7 * 2 * static_cast<int>(std::size(kCases)));
}

TEST(IntegerFormats, ZeroIsExactAndAllZeroGroupsDequantizeToZero) {
  for (const char* name : {"int4-g16-asym", "int4-g16-sym", "int3-ch-asym", "int8-ch-sym", "int2-tensor-asym",
                           "int5-tensor-sym", "binary", "ternary"}) {
    SCOPED_TRACE(name);
    const Scheme s = parse(name);
    const int64_t rows = 4, cols = 64;
    auto w = heavy_tailed(rows * cols, 7);
    for (int64_t c = 0; c < cols; ++c) w[1 * cols + c] = 0.0f, w[3 * cols + c] = 0.0f;  // all-zero rows
    for (int64_t c = 0; c < cols; c += 5) w[0 * cols + c] = 0.0f;                       // scattered zeros
    for (int64_t c = 0; c < cols; ++c) w[2 * cols + c] = std::fabs(w[2 * cols + c]) + 0.5f;  // all positive row
    w[2 * cols + 9] = 0.0f;
    QuantizedTensor q;
    const auto y = round_trip(s, w, rows, cols, {}, &q);
    for (int64_t i = 0; i < rows * cols; ++i) {
      ASSERT_TRUE(std::isfinite(y[i])) << i;
      if (w[i] == 0.0f && s.format != FormatId::binary) {
        ASSERT_EQ(y[i], 0.0f) << "element " << i << " of a zero weight";
      }
    }
    if (s.granularity != Granularity::tensor) {
      for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(y[1 * cols + c], 0.0f) << "all-zero row 1, column " << c;
    }
  }
  // A tensor of zeros: scale 0, no division by zero, exact zeros out.
  for (const char* name : {"int4-tensor-sym", "int4-tensor-asym", "int8-g8-asym", "binary", "ternary"}) {
    const std::vector<float> zeros(3 * 16, 0.0f);
    const auto y = round_trip(parse(name), zeros, 3, 16);
    for (float v : y) ASSERT_EQ(v, 0.0f) << name;
  }
}

TEST(IntegerFormats, SingleOutlierOnlyCostsItsOwnGroup) {
  const int64_t rows = 8, cols = 256;
  auto w = heavy_tailed(rows * cols, 11, 0.02f);
  const int64_t outlier = 3 * cols + 77;
  w[outlier] = 40.0f;
  for (const char* kind : {"sym", "asym"}) {
    const std::string k = kind;
    const auto y_group = round_trip(parse("int4-g32-" + k), w, rows, cols);
    const auto y_channel = round_trip(parse("int4-ch-" + k), w, rows, cols);
    const auto y_tensor = round_trip(parse("int4-tensor-" + k), w, rows, cols);
    // The outlier itself stays within the bound of its own group.
    const double bound = format_traits(parse("int4-g32-" + k).format).error_bound(parse("int4-g32-" + k));
    const double range = k == "sym" ? 40.0 : 40.0 - std::min(0.0f, *std::min_element(w.begin() + 3 * cols + 64, w.begin() + 3 * cols + 96));
    EXPECT_LE(std::fabs(w[outlier] - y_group[outlier]), bound * range);
    // Per group: rows other than the outlier's are untouched by it; per channel only its row pays;
    // per tensor everyone pays (most small weights flush to 0).
    auto row_mse = [&](const std::vector<float>& y, int64_t r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += (w[r * cols + c] - y[r * cols + c]) * (w[r * cols + c] - y[r * cols + c]);
      return s / cols;
    };
    EXPECT_LT(row_mse(y_group, 0), row_mse(y_tensor, 0) / 10) << kind;
    auto w_clean = w;
    w_clean[outlier] = 0.01f;
    const auto y_clean = round_trip(parse("int4-g32-" + k), w_clean, rows, cols);
    for (int64_t i = 0; i < rows * cols; ++i)
      if (i / 32 != outlier / 32) {
        ASSERT_EQ(y_group[i], y_clean[i]) << "element " << i << " changed by the outlier";
      }
    EXPECT_LT(row_mse(y_channel, 0), row_mse(y_tensor, 0) / 10) << kind;
    EXPECT_LT(row_mse(y_group, 3), row_mse(y_channel, 3)) << kind;
  }
}

TEST(IntegerFormats, KnownBytes) {
  // int4 sym, one group of 4: absmax 7 -> scale exactly 1; codes q + 8 packed low nibble first.
  const std::vector<float> w_sym = {0.0f, 1.0f, -1.0f, 7.0f};
  QuantizedTensor q;
  round_trip(parse("int4-ch-sym"), w_sym, 1, 4, {}, &q);
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0x98, 0xF7}));
  EXPECT_EQ(q.scales, (std::vector<uint8_t>{0x00, 0x3C}));  // f16 1.0
  EXPECT_TRUE(q.zeros.empty());
  // int4 asym: range [0, 15] -> scale 1, zero-point 0; codes as is.
  const std::vector<float> w_asym = {0.0f, 1.0f, 2.0f, 15.0f};
  round_trip(parse("int4-ch-asym"), w_asym, 1, 4, {}, &q);
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0x10, 0xF2}));
  EXPECT_EQ(q.scales, (std::vector<uint8_t>{0x00, 0x3C}));
  EXPECT_EQ(q.zeros, (std::vector<uint8_t>{0}));
  // Range [-5, 10] with 4 bits: scale 1, zero-point 5; codes x + 5.
  const std::vector<float> w_shift = {-5.0f, 0.0f, 3.0f, 10.0f};
  round_trip(parse("int4-ch-asym"), w_shift, 1, 4, {}, &q);
  EXPECT_EQ(q.zeros, (std::vector<uint8_t>{5}));
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0x50, 0xF8}));
  // int3 rows start on a byte boundary: 3 codes = 9 bits -> 2 bytes per row.
  const std::vector<float> w3 = {3, 0, -3, -3, 0, 3};
  round_trip(parse("int3-ch-sym"), w3, 2, 3, {}, &q);
  ASSERT_EQ(q.codes.size(), 4u);
  // Row 0 codes 7, 4, 1: 111 001 + 001 << 6 -> 0b01_100_111 = 0x67, then bit 8 = 0.
  EXPECT_EQ(q.codes[0], 0x67);
  EXPECT_EQ(q.codes[1], 0x00);
  // Row 1 codes 1, 4, 7: 001 | 100 << 3 | 111 << 6 -> 0xE1, then bit 8 = 1.
  EXPECT_EQ(q.codes[2], 0xE1);
  EXPECT_EQ(q.codes[3], 0x01);
}

TEST(IntegerFormats, DeterministicAcrossRunsAndThreadCounts) {
  const int64_t rows = 32, cols = 256;
  const auto w = heavy_tailed(rows * cols, 5);
  const auto importance = heavy_tailed(rows * cols, 6);
  std::vector<float> imp(importance.size());
  for (size_t i = 0; i < imp.size(); ++i) imp[i] = std::fabs(importance[i]);
  for (const char* name : {"int4-g128-asym", "int3-g64-sym", "int8-ch-asym", "int2-tensor-sym", "binary", "ternary"}) {
    for (bool with_importance : {false, true}) {
      SCOPED_TRACE(std::string(name) + (with_importance ? " with importance" : ""));
      QuantizeOptions o;
      if (with_importance) o.importance = imp.data(), o.importance_size = imp.size();
      const int threads = omp_get_max_threads();
      omp_set_num_threads(1);
      auto a = quantize(parse(name), w.data(), rows, cols, o);
      omp_set_num_threads(std::max(2, threads));
      auto b = quantize(parse(name), w.data(), rows, cols, o);
      auto c = quantize(parse(name), w.data(), rows, cols, o);
      omp_set_num_threads(threads);
      ASSERT_TRUE(a.has_value() && b.has_value() && c.has_value());
      for (const auto* other : {&*b, &*c}) {
        EXPECT_EQ(a->codes, other->codes);
        EXPECT_EQ(a->scales, other->scales);
        EXPECT_EQ(a->zeros, other->zeros);
        EXPECT_EQ(a->extra, other->extra);
      }
    }
  }
}

TEST(IntegerFormats, ClipRatioShrinksTheRangeAndClampsBeyondIt) {
  const int64_t rows = 5, cols = 128;
  const auto w = heavy_tailed(rows * cols, 21);
  for (const char* kind : {"sym", "asym"}) {
    for (float clip : {0.9f, 0.5f, 0.1f}) {
      const Scheme s = parse(std::string("int4-g32-") + kind);
      SCOPED_TRACE(s.name() + " clip " + std::to_string(clip));
      QuantizeOptions o;
      o.clip_ratio = clip;
      QuantizedTensor q;
      const auto y = round_trip(s, w, rows, cols, o, &q);
      const FormatTraits& t = format_traits(s.format);
      const double bound = t.error_bound(s);
      for (int64_t g = 0; g < rows * cols / 32; ++g) {
        double lo = 0, hi = 0;
        for (int64_t i = g * 32; i < (g + 1) * 32; ++i) lo = std::min<double>(lo, w[i]), hi = std::max<double>(hi, w[i]);
        lo *= clip, hi *= clip;  // the clipped range
        const double a = t.zero_point ? hi - lo : std::max(-lo, hi);
        const double step = stored_scale(q, g);
        ASSERT_LE(step, a / (t.zero_point ? 15 : 7) * (1 + 1.0 / 1024));
        for (int64_t i = g * 32; i < (g + 1) * 32; ++i) {
          const double x = w[i];
          const double err = std::fabs(x - y[i]);
          if (t.zero_point ? (x >= lo && x <= hi) : std::fabs(x) <= std::max(-lo, hi)) {
            ASSERT_LE(err, bound * a) << "element " << i << " inside the clipped range";
          } else {  // clamped to the extreme code, on the element's side
            ASSERT_LE(std::fabs(y[i]), std::max(-lo, hi) + step) << "element " << i;
            ASSERT_GE(y[i] * x, 0) << "element " << i << " clamped to the wrong side";
          }
        }
      }
    }
  }
}

double weighted_error(const std::vector<float>& w, const std::vector<float>& y, const std::vector<float>& imp,
                      int64_t cols, int64_t begin, int64_t end) {
  const bool per_column = imp.size() == static_cast<size_t>(cols) && w.size() != imp.size();
  double s = 0;
  for (int64_t i = begin; i < end; ++i) {
    const double d = static_cast<double>(w[i]) - y[i];
    s += (per_column ? imp[i % cols] : imp[i]) * d * d;
  }
  return s;
}

TEST(IntegerFormats, ImportanceSearchNeverLosesToRoundToNearest) {
  const int64_t rows = 12, cols = 256;
  const auto w = heavy_tailed(rows * cols, 31);
  std::mt19937_64 rng(32);
  std::exponential_distribution<float> expo(1.0f);
  std::vector<float> per_element(rows * cols), per_column(cols);
  for (float& v : per_element) v = expo(rng);
  for (float& v : per_column) v = expo(rng) * expo(rng);
  double total_rtn = 0, total_searched = 0;
  for (int bits = 2; bits <= 8; ++bits) {
    for (const char* kind : {"sym", "asym"}) {
      for (const char* granularity : {"g32", "ch", "tensor"}) {
        for (const auto* imp : {&per_element, &per_column}) {
          const Scheme s = parse("int" + std::to_string(bits) + "-" + granularity + "-" + kind);
          SCOPED_TRACE(s.name() + (imp == &per_column ? " per-column importance" : " per-element importance"));
          QuantizeOptions o;
          o.importance = imp->data();
          o.importance_size = imp->size();
          const auto y_rtn = round_trip(s, w, rows, cols);
          const auto y_imp = round_trip(s, w, rows, cols, o);
          const Groups groups(s, rows, cols);
          for (int64_t g = 0; g < groups.count; ++g) {
            const double rtn = weighted_error(w, y_rtn, *imp, cols, g * groups.length, (g + 1) * groups.length);
            const double searched = weighted_error(w, y_imp, *imp, cols, g * groups.length, (g + 1) * groups.length);
            ASSERT_LE(searched, rtn * (1 + 1e-9)) << "group " << g << ": weighted error " << searched << " > RTN's " << rtn;
            if (bits <= 4) total_rtn += rtn, total_searched += searched;
          }
        }
      }
    }
  }
  // On heavy-tailed data the search must find real gains at low bit widths (clipping outliers).
  EXPECT_LT(total_searched, 0.9 * total_rtn) << "searched " << total_searched << " vs RTN " << total_rtn;

  // All-zero importance carries no information: same bytes as no importance.
  const std::vector<float> zero_importance(cols, 0.0f);
  QuantizeOptions o;
  o.importance = zero_importance.data();
  o.importance_size = zero_importance.size();
  for (const char* name : {"int4-g32-sym", "int4-g32-asym"}) {
    auto a = quantize(parse(name), w.data(), rows, cols, o);
    auto b = quantize(parse(name), w.data(), rows, cols);
    ASSERT_TRUE(a.has_value() && b.has_value());
    EXPECT_EQ(a->codes, b->codes) << name;
    EXPECT_EQ(a->scales, b->scales) << name;
    EXPECT_EQ(a->zeros, b->zeros) << name;
  }
}

TEST(IntegerFormats, TinyWeightsStayWithinHalfAStep) {
  // Group absmax below qmax * 2^-14 gives subnormal f16 scales; the error is still at most half the
  // stored step (the bound as a fraction of absmax does not apply there; see integer.cpp).
  const int64_t rows = 4, cols = 64;
  const auto w = heavy_tailed(rows * cols, 41, 1e-6f);
  for (const char* name : {"int8-g16-sym", "int4-g16-asym", "int8-tensor-asym"}) {
    QuantizedTensor q;
    const Scheme s = parse(name);
    const auto y = round_trip(s, w, rows, cols, {}, &q);
    const Groups groups(s, rows, cols);
    for (int64_t i = 0; i < rows * cols; ++i) {
      const double step = stored_scale(q, i / groups.length);
      ASSERT_GT(step, 0);
      ASSERT_LE(std::fabs(static_cast<double>(w[i]) - y[i]), step / 2 * (1 + 1e-6)) << name << " element " << i;
    }
  }
}

// Direct computation of the published definitions, independent of the implementation's structure.
TEST(BinaryTernary, MatchDirectComputation) {
  const int64_t rows = 9, cols = 77;
  const auto w = heavy_tailed(rows * cols, 51, 0.03f);
  QuantizedTensor qb, qt;
  const auto yb = round_trip(parse("binary"), w, rows, cols, {}, &qb);
  const auto yt = round_trip(parse("ternary"), w, rows, cols, {}, &qt);
  EXPECT_EQ(qb.codes.size(), static_cast<size_t>(rows * ((cols + 7) / 8)));
  EXPECT_EQ(qt.codes.size(), static_cast<size_t>(rows * ((2 * cols + 7) / 8)));
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = &w[r * cols];
    double sum_abs = 0, absmax = 0;
    for (int64_t c = 0; c < cols; ++c) sum_abs += std::fabs(x[c]), absmax = std::max<double>(absmax, std::fabs(x[c]));
    const float alpha = f16_to_f32(f32_to_f16(static_cast<float>(sum_abs / cols)));
    const double delta = 0.7 * (sum_abs / cols);
    double kept = 0;
    int count = 0;
    for (int64_t c = 0; c < cols; ++c)
      if (std::fabs(x[c]) > delta) kept += std::fabs(x[c]), ++count;
    const float beta = f16_to_f32(f32_to_f16(static_cast<float>(count ? kept / count : 0.0)));
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      ASSERT_EQ(yb[i], x[c] >= 0 ? alpha : -alpha) << "binary row " << r << " col " << c;
      const float t = x[c] > delta ? beta : (x[c] < -delta ? -beta : 0.0f);
      ASSERT_EQ(yt[i], t) << "ternary row " << r << " col " << c << " x " << x[c] << " delta " << delta;
      ASSERT_LE(std::fabs(x[c] - yb[i]), format_traits(FormatId::binary).error_bound(qb.scheme) * absmax);
      ASSERT_LE(std::fabs(x[c] - yt[i]), format_traits(FormatId::ternary).error_bound(qt.scheme) * absmax);
    }
    // Ternary codes are t + 1 in 2 bits; code 3 never appears.
    std::vector<uint8_t> codes(cols);
    unpack_bits(qt.codes.data() + r * qt.packed_row_bytes(), cols, 2, codes.data());
    for (int64_t c = 0; c < cols; ++c) ASSERT_LE(codes[c], 2);
  }
}

TEST(BinaryTernary, ImportanceGivesTheWeightedLeastSquaresScale) {
  const int64_t rows = 3, cols = 40;
  const auto w = heavy_tailed(rows * cols, 61);
  std::vector<float> imp(cols);
  for (int64_t c = 0; c < cols; ++c) imp[c] = static_cast<float>(1 + c % 5);
  QuantizeOptions o;
  o.importance = imp.data();
  o.importance_size = imp.size();
  const auto yb = round_trip(parse("binary"), w, rows, cols, o);
  const auto yb_plain = round_trip(parse("binary"), w, rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    double num = 0, den = 0;
    for (int64_t c = 0; c < cols; ++c) num += imp[c] * std::fabs(w[r * cols + c]), den += imp[c];
    const float alpha = f16_to_f32(f32_to_f16(static_cast<float>(num / den)));
    EXPECT_EQ(std::fabs(yb[r * cols]), alpha) << "row " << r;
    // The weighted optimum beats the unweighted scale on the weighted error (up to f16 rounding).
    EXPECT_LE(weighted_error(w, yb, imp, cols, r * cols, (r + 1) * cols),
              weighted_error(w, yb_plain, imp, cols, r * cols, (r + 1) * cols) * (1 + 1e-3));
  }
  QuantizeOptions clip;
  clip.clip_ratio = 0.5f;
  EXPECT_FALSE(quantize(parse("ternary"), w.data(), rows, cols, clip).has_value());
}

}  // namespace
}  // namespace qforge
