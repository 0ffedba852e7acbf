// Float quantization formats: NF4 (+ double quant), FP4 E2M1, MXFP4, NVFP4, scaled FP8, f16/bf16.
// The reference quantizers are called directly (formats/format_impl.h); expected values come from
// the published constants and from hand computations with the specs' rules, written out here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "formats/format_impl.h"
#include "qforge/dtype.h"
#include "qforge/format.h"

namespace qforge::formats {
namespace {

// ---- helpers ----------------------------------------------------------------------------------

Scheme make(FormatId f, int bits, Granularity g, int64_t group = 0, bool dq = false) {
  Scheme s;
  s.format = f;
  s.bits = bits;
  s.granularity = g;
  s.group_size = group;
  s.double_quant = dq;
  return s;
}

struct Case {
  const char* label;
  Scheme scheme;
  QuantizeFn quantize;
  DequantizeFn dequantize;
  double (*bound)(const Scheme&);
  int64_t group;  // elements sharing one scale (0 = whole row, -1 = whole tensor)
};

std::vector<Case> all_cases() {
  using G = Granularity;
  return {
      {"nf4", make(FormatId::nf4, 4, G::group, 64), nf4_quantize_ref, nf4_dequantize_ref, nf4_error_bound, 64},
      {"nf4-g32", make(FormatId::nf4, 4, G::group, 32), nf4_quantize_ref, nf4_dequantize_ref, nf4_error_bound, 32},
      {"nf4-g128", make(FormatId::nf4, 4, G::group, 128), nf4_quantize_ref, nf4_dequantize_ref, nf4_error_bound, 128},
      {"nf4-dq", make(FormatId::nf4, 4, G::group, 64, true), nf4_quantize_ref, nf4_dequantize_ref, nf4_error_bound, 64},
      {"fp4", make(FormatId::fp4_e2m1, 4, G::group, 64), fp4_quantize_ref, fp4_dequantize_ref, fp4_error_bound, 64},
      {"fp4-g32", make(FormatId::fp4_e2m1, 4, G::group, 32), fp4_quantize_ref, fp4_dequantize_ref, fp4_error_bound, 32},
      {"mxfp4", make(FormatId::mxfp4, 4, G::group, 32), mxfp4_quantize_ref, mxfp4_dequantize_ref, mxfp4_error_bound, 32},
      {"nvfp4", make(FormatId::nvfp4, 4, G::group, 16), nvfp4_quantize_ref, nvfp4_dequantize_ref, nvfp4_error_bound, 16},
      {"fp8-e4m3-tensor", make(FormatId::fp8_e4m3, 8, G::tensor), fp8_quantize_ref, fp8_dequantize_ref, fp8_error_bound, -1},
      {"fp8-e4m3-ch", make(FormatId::fp8_e4m3, 8, G::channel), fp8_quantize_ref, fp8_dequantize_ref, fp8_error_bound, 0},
      {"fp8-e5m2-tensor", make(FormatId::fp8_e5m2, 8, G::tensor), fp8_quantize_ref, fp8_dequantize_ref, fp8_error_bound, -1},
      {"fp8-e5m2-ch", make(FormatId::fp8_e5m2, 8, G::channel), fp8_quantize_ref, fp8_dequantize_ref, fp8_error_bound, 0},
      {"f16", make(FormatId::f16, 16, G::tensor), float_cast_quantize_ref, float_cast_dequantize_ref, float_cast_error_bound, -1},
      {"bf16", make(FormatId::bf16, 16, G::tensor), float_cast_quantize_ref, float_cast_dequantize_ref, float_cast_error_bound, -1},
  };
}

QuantizedTensor quantize_ok(const Case& c, const std::vector<float>& w, int64_t rows, int64_t cols,
                            const QuantizeOptions& o = {}) {
  QuantizedTensor q;
  Status s = c.quantize(c.scheme, w.data(), rows, cols, o, &q);
  EXPECT_TRUE(s.is_ok()) << c.label << ": " << s.to_string();
  return q;
}

std::vector<float> dequant(const Case& c, const QuantizedTensor& q) {
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols));
  c.dequantize(q, out.data());
  return out;
}

float f32_at(const std::vector<uint8_t>& plane, size_t i) {
  float v;
  std::memcpy(&v, plane.data() + 4 * i, 4);
  return v;
}

uint8_t nibble(const QuantizedTensor& q, int64_t r, int64_t c) {
  const uint8_t b = q.codes[static_cast<size_t>(r * ((q.cols + 1) / 2) + c / 2)];
  return c % 2 == 0 ? (b & 0xF) : (b >> 4);
}

// Heavy-tailed weights: Student-t with 3 degrees of freedom, scaled.
std::vector<float> student_t(int64_t n, uint64_t seed, float scale = 0.02f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<float> w(static_cast<size_t>(n));
  for (auto& v : w) {
    const double z = nd(rng);
    const double chi = (nd(rng) * nd(rng) + nd(rng) * nd(rng) + nd(rng) * nd(rng)) / 3.0;
    v = static_cast<float>(scale * z / std::sqrt(std::max(chi, 1e-3)));
  }
  return w;
}

// Absmax of the scale group holding element (r, c).
double group_absmax(const Case& c, const std::vector<float>& w, int64_t rows, int64_t cols, int64_t r, int64_t col) {
  int64_t begin, len;
  if (c.group < 0) begin = 0, len = rows * cols;
  else if (c.group == 0) begin = r * cols, len = cols;
  else begin = r * cols + (col / c.group) * c.group, len = c.group;
  double a = 0;
  for (int64_t i = 0; i < len; ++i) a = std::max(a, std::fabs(static_cast<double>(w[static_cast<size_t>(begin + i)])));
  return a;
}

// The documented regimes where a format's relative bound does not apply, with the absolute or
// weaker bound its .cpp derives instead. Returns the allowed error for element (r, c).
double allowed_error(const Case& c, const QuantizedTensor& q, const std::vector<float>& w, int64_t rows, int64_t cols,
                     int64_t r, int64_t col) {
  const double a = group_absmax(c, w, rows, cols, r, col);
  double allowed = c.bound(c.scheme) * a;
  const std::string label = c.label;
  if (label == "f16") allowed += std::ldexp(1.0, -25);   // f16 subnormal results: half of 2^-24
  if (label == "bf16") allowed += std::ldexp(1.0, -134);  // bf16 subnormal results
  if (label == "mxfp4" && a < std::ldexp(1.0, -125)) allowed = a;  // exponent clamped at -127
  if (label == "nvfp4") {
    float g;
    std::memcpy(&g, q.extra.data(), 4);
    if (a / (6.0 * g) < std::ldexp(1.0, -6)) allowed = a;  // subnormal E4M3 block scale
  }
  if (label == "nf4-dq") {
    // Exact form: |x - c A'| <= h A + |A - A'| with the reconstructed absmax A' of the group.
    const int64_t j = r * (cols / 64) + col / 64;
    const float* map = nf4_dq_dynamic_map();
    const float offset = f32_at(q.extra, 0), m2 = f32_at(q.extra, 1 + static_cast<size_t>(j / 256));
    const double a_rec = static_cast<double>(map[q.scales[static_cast<size_t>(j)]] * m2 + offset);
    const Scheme plain = make(FormatId::nf4, 4, Granularity::group, 64);
    allowed = nf4_error_bound(plain) * a + std::fabs(a - a_rec) * (1 + 1e-6);
  }
  return allowed;
}

void expect_within_bound(const Case& c, const std::vector<float>& w, int64_t rows, int64_t cols, const char* data) {
  const QuantizedTensor q = quantize_ok(c, w, rows, cols);
  const std::vector<float> d = dequant(c, q);
  int failures = 0;
  for (int64_t r = 0; r < rows && failures < 5; ++r) {
    for (int64_t col = 0; col < cols && failures < 5; ++col) {
      const size_t i = static_cast<size_t>(r * cols + col);
      const double err = std::fabs(static_cast<double>(w[i]) - d[i]);
      const double allowed = allowed_error(c, q, w, rows, cols, r, col);
      if (!(err <= allowed)) {
        ++failures;
        ADD_FAILURE() << c.label << " on " << data << ": element (" << r << ", " << col << ") x=" << w[i]
                      << " dequant=" << d[i] << " error " << err << " > allowed " << allowed
                      << " (bound " << c.bound(c.scheme) << " x group absmax "
                      << group_absmax(c, w, rows, cols, r, col) << ")";
      }
    }
  }
}

// ---- NF4 --------------------------------------------------------------------------------------

// The NormalFloat4 table as published in bitsandbytes (bitsandbytes/functional.py,
// get_4bit_type("nf4"), and the QLoRA paper, arXiv:2305.14314, Appendix E), index = bnb code.
constexpr double kPublishedNf4[16] = {
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0};

TEST(Nf4, CodebookIsThePublishedTable) {
  for (int i = 0; i < 16; ++i)
    EXPECT_EQ(kNf4Codebook[i], static_cast<float>(kPublishedNf4[i])) << "index " << i;
}

TEST(Nf4, CodesAreNearestCodebookValueTiesLow) {
  // One group of 64 with absmax 1: y = x exactly, so codes can be checked against an argmin.
  std::vector<float> w(64, 0.0f);
  w[0] = 1.0f;
  w[1] = 0.07958029955625534f / 2;    // exact midpoint of codes 7 and 8 -> lower (7)
  w[2] = -0.09105003625154495f / 2;   // exact midpoint of codes 6 and 7 -> lower (6)
  w[3] = -1.0f;
  w[4] = 0.5f;
  w[5] = -0.3f;
  w[6] = 0.9f;
  w[7] = 0.86f;
  const Case c = all_cases()[0];
  const QuantizedTensor q = quantize_ok(c, w, 1, 64);
  EXPECT_EQ(nibble(q, 0, 1), 7);
  EXPECT_EQ(nibble(q, 0, 2), 6);
  for (int i = 0; i < 64; ++i) {
    if (i == 1 || i == 2) continue;
    int best = 0;  // argmin |y - codebook|, first index on ties (bitsandbytes' CPU reference)
    for (int k = 1; k < 16; ++k)
      if (std::fabs(w[i] - kPublishedNf4[k]) < std::fabs(w[i] - kPublishedNf4[best])) best = k;
    EXPECT_EQ(nibble(q, 0, i), best) << "x=" << w[i];
  }
  EXPECT_EQ(f32_at(q.scales, 0), 1.0f);
  EXPECT_EQ(q.scales.size(), 4u);
  EXPECT_TRUE(q.extra.empty());
  EXPECT_EQ(q.codes.size(), 32u);
  // Packing: element 0 (code 15) in the low nibble of byte 0, element 1 (code 7) in the high one.
  EXPECT_EQ(q.codes[0], 0x7F);
}

TEST(Nf4, DynamicMapMatchesBitsandbytesConstruction) {
  // create_dynamic_map(signed=True, 7, 8): decade i = 0..6 holds the 2^i midpoints of
  // linspace(0.1, 1, 2^i + 1) times 10^(i-6), both signs; plus 0 and 1.
  std::vector<double> want;
  for (int i = 0; i < 7; ++i) {
    const int n = (1 << i) + 1;
    for (int k = 0; k + 1 < n; ++k) {
      const double b0 = 0.1 + 0.9 * k / (n - 1), b1 = 0.1 + 0.9 * (k + 1) / (n - 1);
      want.push_back(std::pow(10.0, i - 6) * (b0 + b1) / 2);
      want.push_back(-want.back());
    }
  }
  want.push_back(0);
  want.push_back(1);
  std::sort(want.begin(), want.end());
  ASSERT_EQ(want.size(), 256u);
  const float* map = nf4_dq_dynamic_map();
  for (int i = 0; i < 256; ++i) {
    EXPECT_NEAR(map[i], want[static_cast<size_t>(i)], 4e-7 * std::fabs(want[static_cast<size_t>(i)]) + 1e-12)
        << "index " << i;
    if (i > 0) {
      EXPECT_LT(map[i - 1], map[i]);
    }
  }
  EXPECT_EQ(map[127], 0.0f);
  EXPECT_EQ(map[255], 1.0f);
}

TEST(Nf4, DoubleQuantLayoutAndOffset) {
  const int64_t rows = 24, cols = 1024;  // 384 groups: two second-level blocks (256 + 128)
  const std::vector<float> w = student_t(rows * cols, 11);
  const Case c = all_cases()[3];
  const QuantizedTensor q = quantize_ok(c, w, rows, cols);
  ASSERT_EQ(q.scales.size(), 384u);
  ASSERT_EQ(q.extra.size(), 4u + 4u * 2u);
  EXPECT_EQ(nf4_extra_bytes(c.scheme, rows, cols), q.extra.size());
  double sum = 0;
  std::vector<double> absmax(384);
  for (int64_t j = 0; j < 384; ++j) {
    double a = 0;
    for (int64_t i = 0; i < 64; ++i) a = std::max(a, std::fabs(static_cast<double>(w[static_cast<size_t>(j * 64 + i)])));
    absmax[static_cast<size_t>(j)] = a;
    sum += a;
  }
  const float offset = f32_at(q.extra, 0);
  EXPECT_NEAR(offset, sum / 384, 1e-6 * sum / 384);
  for (int b = 0; b < 2; ++b) {
    double m2 = 0;
    for (int j = b * 256; j < std::min(384, (b + 1) * 256); ++j)
      m2 = std::max(m2, std::fabs(absmax[static_cast<size_t>(j)] - offset));
    EXPECT_NEAR(f32_at(q.extra, 1 + static_cast<size_t>(b)), m2, 1e-6 * m2) << "block " << b;
  }
  // Reconstructed absmax within half the largest dynamic-map gap of m2.
  const float* map = nf4_dq_dynamic_map();
  for (int j = 0; j < 384; ++j) {
    const float m2 = f32_at(q.extra, 1 + static_cast<size_t>(j / 256));
    const double rec = map[q.scales[static_cast<size_t>(j)]] * m2 + offset;
    EXPECT_LE(std::fabs(rec - absmax[static_cast<size_t>(j)]), 0.00703125 * m2 * (1 + 1e-5) + 1e-9) << "group " << j;
  }
  // Codes are the same as without double quant (bitsandbytes computes them with the exact absmax).
  const QuantizedTensor plain = quantize_ok(all_cases()[0], w, rows, cols);
  EXPECT_EQ(q.codes, plain.codes);
}

// ---- error bounds over every scheme ------------------------------------------------------------

class FloatFormatBound : public ::testing::TestWithParam<Case> {};

TEST_P(FloatFormatBound, HeavyTailedRandom) {
  const Case& c = GetParam();
  expect_within_bound(c, student_t(16 * 256, 1), 16, 256, "student-t");
  expect_within_bound(c, student_t(3 * 512, 2, 5.0f), 3, 512, "student-t large");
}

TEST_P(FloatFormatBound, EdgeValues) {
  const Case& c = GetParam();
  const int64_t rows = 4, cols = 128;
  const size_t n = rows * cols;
  expect_within_bound(c, std::vector<float>(n, 0.0f), rows, cols, "all zeros");
  std::vector<float> outlier = student_t(rows * cols, 3);
  outlier[77] = 1000.0f;
  expect_within_bound(c, outlier, rows, cols, "single huge outlier");
  std::vector<float> neg = student_t(rows * cols, 4);
  for (auto& v : neg) v = -std::fabs(v) - 1e-3f;
  expect_within_bound(c, neg, rows, cols, "negative only");
  std::vector<float> tiny = student_t(rows * cols, 5, 1e-30f);
  expect_within_bound(c, tiny, rows, cols, "tiny (1e-30)");
  std::vector<float> denormal = student_t(rows * cols, 6, 1e-40f);  // f32 subnormals
  expect_within_bound(c, denormal, rows, cols, "f32 subnormal");
  std::vector<float> constant(n, 0.37f);
  expect_within_bound(c, constant, rows, cols, "constant");
}

TEST_P(FloatFormatBound, Deterministic) {
  const Case& c = GetParam();
  const std::vector<float> w = student_t(8 * 256, 9);
  std::vector<float> imp(256);
  for (size_t i = 0; i < imp.size(); ++i) imp[i] = 0.5f + static_cast<float>(i % 7);
  QuantizeOptions o;
  o.importance = imp.data();
  o.importance_size = imp.size();
  for (const QuantizeOptions& opt : {QuantizeOptions{}, o}) {
    const QuantizedTensor a = quantize_ok(c, w, 8, 256, opt), b = quantize_ok(c, w, 8, 256, opt);
    EXPECT_EQ(a.codes, b.codes) << c.label;
    EXPECT_EQ(a.scales, b.scales) << c.label;
    EXPECT_EQ(a.extra, b.extra) << c.label;
  }
}

double weighted_sq_error(const std::vector<float>& w, const std::vector<float>& d, const std::vector<float>& imp,
                         int64_t cols) {
  double e = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double diff = static_cast<double>(w[i]) - d[i];
    e += imp[i % static_cast<size_t>(cols)] * diff * diff;
  }
  return e;
}

TEST_P(FloatFormatBound, ImportanceNeverWorseOnTheWeightedMetric) {
  const Case& c = GetParam();
  const int64_t rows = 8, cols = 256;
  const std::vector<float> w = student_t(rows * cols, 21);
  std::mt19937 rng(5);
  std::exponential_distribution<float> ed(1.0f);
  std::vector<float> imp(static_cast<size_t>(cols));
  for (auto& v : imp) v = ed(rng);
  QuantizeOptions o;
  o.importance = imp.data();
  o.importance_size = imp.size();
  const double plain = weighted_sq_error(w, dequant(c, quantize_ok(c, w, rows, cols)), imp, cols);
  const double weighted = weighted_sq_error(w, dequant(c, quantize_ok(c, w, rows, cols, o)), imp, cols);
  const std::string label = c.label;
  if (label == "nf4-dq") {
    // The search runs on the exact absmax; double quantization then perturbs both results.
    EXPECT_LE(weighted, plain * 1.05) << label;
  } else {
    EXPECT_LE(weighted, plain * (1 + 1e-12)) << label << ": weighted " << weighted << " vs plain " << plain;
  }
}

TEST_P(FloatFormatBound, RejectsBadOptions) {
  const Case& c = GetParam();
  const std::vector<float> w(2 * 128, 1.0f);
  QuantizeOptions o;
  o.clip_ratio = 0.0f;
  QuantizedTensor q;
  EXPECT_FALSE(c.quantize(c.scheme, w.data(), 2, 128, o, &q).is_ok()) << c.label;
  o.clip_ratio = 1.5f;
  EXPECT_FALSE(c.quantize(c.scheme, w.data(), 2, 128, o, &q).is_ok()) << c.label;
  std::vector<float> imp(7, 1.0f);
  QuantizeOptions oi;
  oi.importance = imp.data();
  oi.importance_size = imp.size();
  const Status s = c.quantize(c.scheme, w.data(), 2, 128, oi, &q);
  EXPECT_FALSE(s.is_ok()) << c.label;
  EXPECT_NE(s.message().find("importance"), std::string::npos) << s.message();
}

INSTANTIATE_TEST_SUITE_P(All, FloatFormatBound, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           std::string s = info.param.label;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

// ---- importance: a case where the search must help ---------------------------------------------

TEST(Importance, UnimportantOutlierNoLongerSetsTheScale) {
  // One group: a large outlier with zero importance and small important values. The search
  // shrinks the scale (clipping the outlier) and the important values get a finer grid.
  std::vector<float> w(64);
  for (int i = 0; i < 64; ++i) w[static_cast<size_t>(i)] = 0.01f * static_cast<float>((i % 9) - 4);
  w[10] = 0.09f;
  std::vector<float> imp(64, 1.0f);
  imp[10] = 0.0f;
  QuantizeOptions o;
  o.importance = imp.data();
  o.importance_size = 64;
  for (const Case& c : all_cases()) {
    if (std::string(c.label) != "nf4" && std::string(c.label) != "fp4") continue;
    const double plain = weighted_sq_error(w, dequant(c, quantize_ok(c, w, 1, 64)), imp, 64);
    const double weighted = weighted_sq_error(w, dequant(c, quantize_ok(c, w, 1, 64, o)), imp, 64);
    EXPECT_LT(weighted, plain * 0.9) << c.label << ": weighted " << weighted << " plain " << plain;
  }
}

// ---- clip_ratio --------------------------------------------------------------------------------

TEST(ClipRatio, ScalesShrinkAndValuesClamp) {
  const std::vector<float> w = student_t(2 * 128, 31);
  QuantizeOptions o;
  o.clip_ratio = 0.7f;
  const auto cases = all_cases();
  for (const Case& c : cases) {
    const std::string label = c.label;
    if (label == "f16" || label == "bf16" || label == "nf4-dq") continue;
    const QuantizedTensor q = quantize_ok(c, w, 2, 128, o);
    const std::vector<float> d = dequant(c, q);
    for (int64_t r = 0; r < 2; ++r) {
      for (int64_t col = 0; col < 128; ++col) {
        const double a = group_absmax(c, w, 2, 128, r, col);
        // No dequantized magnitude exceeds the clipped range (MXFP4: up to its power-of-two
        // grid's top, 6 * 2^(floor(log2(0.7 a)) - 2) <= 1.5 * 0.7 a).
        // NVFP4: the E4M3 block scale may round up by 1/16.
        const double factor = label == "mxfp4" ? 1.5 : label == "nvfp4" ? 17.0 / 16.0 : 1.0;
        const double limit = factor * 0.7 * a * (1 + 1e-6);
        EXPECT_LE(std::fabs(d[static_cast<size_t>(r * 128 + col)]), limit) << label;
      }
    }
    if (label == "nf4" || label == "fp4" || label.rfind("fp8", 0) == 0) {
      const double max = label == "nf4" ? 1.0 : label == "fp4" ? 6.0 : label.find("e4m3") != std::string::npos ? 448.0 : 57344.0;
      const double a = group_absmax(c, w, 2, 128, 0, 0);
      EXPECT_FLOAT_EQ(f32_at(q.scales, 0), static_cast<float>(0.7f * static_cast<float>(a) / max)) << label;
    }
  }
}

// ---- FP4 / MXFP4 / NVFP4 hand-computed examples ------------------------------------------------

TEST(Fp4, E2M1ValuesAndCodes) {
  const float want[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(kFp4E2M1Values[i], want[i]);
    EXPECT_EQ(kFp4E2M1Values[i + 8], -want[i]);
    EXPECT_TRUE(std::signbit(kFp4E2M1Values[i + 8]));
  }
}

// Oracle: nearest E2M1 magnitude, ties to the even code, clamped at 6, sign kept.
uint8_t e2m1_oracle(double y) {
  const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  const double a = std::min(std::fabs(y), 6.0);
  int best = 0;
  for (int k = 1; k < 8; ++k) {
    const double dk = std::fabs(a - mags[k]), db = std::fabs(a - mags[best]);
    if (dk < db || (dk == db && k % 2 == 0)) best = k;
  }
  return static_cast<uint8_t>((std::signbit(y) ? 8 : 0) | best);
}

TEST(Fp4, RoundingMatchesNearestEvenOracle) {
  // Absmax 6 makes the scale exactly 1, so codes are e2m1(x) directly.
  std::vector<float> probes;
  const float mids[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 6.0f, 0.5f, 3.0f};
  for (float m : mids)
    for (float v : {m, std::nextafter(m, 0.0f), std::nextafter(m, 10.0f)}) {
      if (v > 6.0f) continue;  // keep the group absmax at exactly 6
      probes.push_back(v);
      probes.push_back(-v);
    }
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> ud(-6.0f, 6.0f);
  while (probes.size() % 63 != 0) probes.push_back(ud(rng));
  const Case c = all_cases()[4];
  for (size_t start = 0; start < probes.size(); start += 63) {
    std::vector<float> w(64);
    w[0] = 6.0f;
    std::copy(probes.begin() + static_cast<long>(start), probes.begin() + static_cast<long>(start + 63), w.begin() + 1);
    const QuantizedTensor q = quantize_ok(c, w, 1, 64);
    ASSERT_EQ(f32_at(q.scales, 0), 1.0f);
    for (int i = 1; i < 64; ++i)
      ASSERT_EQ(nibble(q, 0, i), e2m1_oracle(w[static_cast<size_t>(i)])) << "x=" << w[static_cast<size_t>(i)];
  }
}

TEST(Fp4, HandExample) {
  // Group absmax 3 -> scale 0.5; x / 0.5 = 6, 2.5 (tie -> 2, even code 4), -0.25 (tie -> -0).
  std::vector<float> w(64, 0.0f);
  w[0] = 3.0f;
  w[1] = 1.25f;
  w[2] = -0.125f;
  w[3] = -0.8f;  // -1.6 -> -1.5 (code 0xB)
  const Case c = all_cases()[4];
  const QuantizedTensor q = quantize_ok(c, w, 1, 64);
  EXPECT_EQ(f32_at(q.scales, 0), 0.5f);
  EXPECT_EQ(nibble(q, 0, 0), 0x7);
  EXPECT_EQ(nibble(q, 0, 1), 0x4);
  EXPECT_EQ(nibble(q, 0, 2), 0x8);
  EXPECT_EQ(nibble(q, 0, 3), 0xB);
  const std::vector<float> d = dequant(c, q);
  EXPECT_EQ(d[0], 3.0f);
  EXPECT_EQ(d[1], 1.0f);
  EXPECT_EQ(d[2], 0.0f);
  EXPECT_EQ(d[3], -0.75f);
}

TEST(Mxfp4, HandExampleFromTheSpecAlgorithm) {
  // Block 0: absmax 13, floor(log2 13) = 3, shared exponent 3 - emax(E2M1) 2 = 1, X = 2,
  // E8M0 byte 127 + 1 = 128. Elements x / 2 rounded RNE to E2M1, clamped at 6.
  // Block 1: absmax 0.75, floor(log2 0.75) = -1, exponent -3, X = 0.125, byte 124.
  std::vector<float> w(64, 0.0f);
  const struct {
    int index;
    float x;
    uint8_t code;
    float value;
  } e[] = {
      {0, 13.0f, 0x7, 12.0f},    // 6.5 clamps to 6
      {1, 5.0f, 0x4, 4.0f},      // 2.5 ties to 2 (even code 4)
      {2, -1.5f, 0xA, -2.0f},    // -0.75 ties to -1 (code 2 even), times X = 2
      {3, 0.5f, 0x0, 0.0f},      // 0.25 ties to 0
      {4, 7.0f, 0x6, 8.0f},      // 3.5 ties to 4 (code 6)
      {5, 10.0f, 0x6, 8.0f},     // 5 ties to 4 (code 6)
      {6, -0.2f, 0x8, -0.0f},    // -0.1 rounds to -0
      {7, 3.1f, 0x3, 3.0f},      // 1.55 -> 1.5
      {32, 0.75f, 0x7, 0.75f},   // 6 exactly
      {33, 0.3f, 0x4, 0.25f},    // 2.4 -> 2
      {34, -0.45f, 0xE, -0.5f},  // -3.6 -> -4 (code 6 with sign)
  };
  for (const auto& x : e) w[static_cast<size_t>(x.index)] = x.x;
  const Case c = all_cases()[6];
  const QuantizedTensor q = quantize_ok(c, w, 1, 64);
  ASSERT_EQ(q.scales.size(), 2u);
  EXPECT_EQ(q.scales[0], 128);
  EXPECT_EQ(q.scales[1], 124);
  const std::vector<float> d = dequant(c, q);
  for (const auto& x : e) {
    EXPECT_EQ(nibble(q, 0, x.index), x.code) << "element " << x.index;
    EXPECT_EQ(d[static_cast<size_t>(x.index)], x.value) << "element " << x.index;
  }
  EXPECT_EQ(q.codes.size(), 32u);
  EXPECT_TRUE(q.extra.empty());
}

TEST(Mxfp4, AllZeroBlockAndBoundIsAttainedNearTheTop) {
  // absmax just below 8 X: 7.9 -> X = 1 (floor(log2 7.9) = 2, exponent 0); 7.9 clamps to 6.
  std::vector<float> w(32, 0.0f);
  w[0] = 7.9f;
  const Case c = all_cases()[6];
  QuantizedTensor q = quantize_ok(c, w, 1, 32);
  EXPECT_EQ(q.scales[0], 127);
  const double err = 7.9 - dequant(c, q)[0];
  EXPECT_NEAR(err, 1.9, 1e-6);
  EXPECT_LE(err, mxfp4_error_bound(c.scheme) * 7.9);
  EXPECT_GT(err, 0.2 * 7.9) << "the 1/4 bound is nearly attained";
  q = quantize_ok(c, std::vector<float>(32, 0.0f), 1, 32);
  EXPECT_EQ(q.scales[0], 0);
}

TEST(Nvfp4, HandExample) {
  // Tensor absmax 1344 -> global g = 1344 / (6 * 448) = 0.5.
  // Block 0 (absmax 1344): s = 1344 / (6 * 0.5) = 448 -> E4M3 0x7E; step s g = 224.
  //   1344 / 224 = 6 -> code 7; 500 / 224 = 2.23 -> 2 (code 4) = 448; -100 / 224 = -0.446 -> -0.5.
  // Block 1 (absmax 50): s = 50 / 3 = 16.67 -> E4M3 neighbours 16 and 18 -> 16 (0x58); step 8.
  //   50 / 8 = 6.25 -> clamps to 6 = 48; -15 / 8 = -1.875 -> -2 (code 0xC) = -16; 9 / 8 = 1.125 -> 1.
  std::vector<float> w(32, 0.0f);
  w[0] = 1344.0f;
  w[1] = 500.0f;
  w[2] = -100.0f;
  w[16] = 50.0f;
  w[17] = -15.0f;
  w[18] = 9.0f;
  const Case c = all_cases()[7];
  const QuantizedTensor q = quantize_ok(c, w, 1, 32);
  ASSERT_EQ(q.extra.size(), 4u);
  EXPECT_EQ(f32_at(q.extra, 0), 0.5f);
  ASSERT_EQ(q.scales.size(), 2u);
  EXPECT_EQ(q.scales[0], 0x7E);
  EXPECT_EQ(q.scales[1], 0x58);
  EXPECT_EQ(f8_e4m3fn_to_f32(0x58), 16.0f);
  const std::vector<float> d = dequant(c, q);
  EXPECT_EQ(nibble(q, 0, 0), 0x7);
  EXPECT_EQ(d[0], 1344.0f);
  EXPECT_EQ(nibble(q, 0, 1), 0x4);
  EXPECT_EQ(d[1], 448.0f);
  EXPECT_EQ(nibble(q, 0, 2), 0x9);
  EXPECT_EQ(d[2], -112.0f);
  EXPECT_EQ(d[16], 48.0f);
  EXPECT_EQ(nibble(q, 0, 17), 0xC);
  EXPECT_EQ(d[17], -16.0f);
  EXPECT_EQ(d[18], 8.0f);
  EXPECT_EQ(nvfp4_extra_bytes(c.scheme, 1, 32), 4u);
}

TEST(Fp8, PerChannelScaleAndCodes) {
  const int64_t rows = 3, cols = 40;
  const std::vector<float> w = student_t(rows * cols, 41);
  for (const Case& c : all_cases()) {
    const std::string label = c.label;
    if (label.rfind("fp8", 0) != 0) continue;
    const bool e5 = label.find("e5m2") != std::string::npos;
    const bool per_tensor = label.find("tensor") != std::string::npos;
    const QuantizedTensor q = quantize_ok(c, w, rows, cols);
    ASSERT_EQ(q.codes.size(), static_cast<size_t>(rows * cols));
    ASSERT_EQ(q.scales.size(), per_tensor ? 4u : 4u * rows);
    for (int64_t r = 0; r < rows; ++r) {
      const float a = static_cast<float>(group_absmax(c, w, rows, cols, r, 0));
      const float scale = f32_at(q.scales, per_tensor ? 0 : static_cast<size_t>(r));
      EXPECT_EQ(scale, a / (e5 ? 57344.0f : 448.0f)) << label;
      for (int64_t col = 0; col < cols; ++col) {
        const float x = w[static_cast<size_t>(r * cols + col)];
        const uint8_t want = e5 ? f32_to_f8_e5m2(x / scale) : f32_to_f8_e4m3fn(x / scale);
        EXPECT_EQ(q.codes[static_cast<size_t>(r * cols + col)], want) << label;
      }
    }
  }
}

TEST(FloatCast, CodesAreTheCastAndOverflowIsAnError) {
  const std::vector<float> w = {1.0f, -2.5f, 65504.0f, 1e-8f, 0.1f, -0.0f};
  const auto cases = all_cases();
  const Case& f16 = cases[12];
  const Case& bf16 = cases[13];
  const QuantizedTensor q = quantize_ok(f16, w, 2, 3);
  ASSERT_EQ(q.codes.size(), 12u);
  for (size_t i = 0; i < w.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, q.codes.data() + 2 * i, 2);
    EXPECT_EQ(h, f32_to_f16(w[i]));
  }
  std::vector<float> big = {1.0f, 70000.0f};
  QuantizedTensor out;
  Status s = f16.quantize(f16.scheme, big.data(), 1, 2, {}, &out);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("index 1"), std::string::npos) << s.message();
  EXPECT_TRUE(bf16.quantize(bf16.scheme, big.data(), 1, 2, {}, &out).is_ok());
  EXPECT_EQ(dequant(bf16, out)[1], 70144.0f);  // bf16 RNE of 70000: spacing 512 above 65536
}

TEST(FixedBlocks, WrongGroupSizeOrShapeIsRejected) {
  const std::vector<float> w(48, 1.0f);
  QuantizedTensor q;
  const auto cases = all_cases();
  EXPECT_FALSE(mxfp4_quantize_ref(cases[6].scheme, w.data(), 1, 48, {}, &q).is_ok()) << "48 % 32 != 0";
  EXPECT_TRUE(nvfp4_quantize_ref(cases[7].scheme, w.data(), 1, 48, {}, &q).is_ok());
  Scheme bad = cases[6].scheme;
  bad.group_size = 64;
  EXPECT_FALSE(mxfp4_quantize_ref(bad, w.data(), 1, 48, {}, &q).is_ok());
  EXPECT_FALSE(nf4_quantize_ref(cases[0].scheme, w.data(), 1, 48, {}, &q).is_ok()) << "48 % 64 != 0";
  Scheme fp8_group = cases[8].scheme;
  fp8_group.granularity = Granularity::group;
  fp8_group.group_size = 16;
  EXPECT_FALSE(fp8_quantize_ref(fp8_group, w.data(), 1, 48, {}, &q).is_ok());
}

TEST(ErrorBounds, DerivedValues) {
  const auto cases = all_cases();
  EXPECT_NEAR(nf4_error_bound(cases[0].scheme), (1.0 - 0.6961928009986877) / 2, 1e-5);
  EXPECT_NEAR(fp4_error_bound(cases[4].scheme), 1.0 / 6, 1e-5);
  EXPECT_NEAR(mxfp4_error_bound(cases[6].scheme), 0.25, 1e-5);
  EXPECT_NEAR(nvfp4_error_bound(cases[7].scheme), 17.0 / 96, 1e-5);
  EXPECT_NEAR(fp8_error_bound(cases[8].scheme), 1.0 / 28, 1e-5);
  EXPECT_NEAR(fp8_error_bound(cases[10].scheme), 1.0 / 14, 1e-5);
  EXPECT_GT(nf4_error_bound(cases[3].scheme), nf4_error_bound(cases[0].scheme));
}

// ---- through the public API (format table) -----------------------------------------------------

TEST(PublicApi, EverySchemeNameRoundTripsWithinItsBound) {
  const int64_t rows = 8, cols = 256;
  const std::vector<float> w = student_t(rows * cols, 51);
  for (const Case& c : all_cases()) {
    auto parsed = Scheme::parse(c.label);
    ASSERT_TRUE(parsed.has_value()) << c.label << ": " << parsed.status().to_string();
    EXPECT_EQ(parsed->format, c.scheme.format) << c.label;
    EXPECT_EQ(parsed->granularity, c.scheme.granularity) << c.label;
    EXPECT_EQ(parsed->double_quant, c.scheme.double_quant) << c.label;
    EXPECT_EQ(parsed->name(), c.label);
    auto q = qforge::quantize(*parsed, w.data(), rows, cols);
    ASSERT_TRUE(q.has_value()) << c.label << ": " << q.status().to_string();
    // Byte-identical to the direct call of the format's reference quantizer.
    const QuantizedTensor direct = quantize_ok(c, w, rows, cols);
    EXPECT_EQ(q->codes, direct.codes) << c.label;
    EXPECT_EQ(q->scales, direct.scales) << c.label;
    EXPECT_EQ(q->extra, direct.extra) << c.label;
    std::vector<float> d(w.size());
    ASSERT_TRUE(qforge::dequantize(*q, d.data()).is_ok()) << c.label;
    EXPECT_EQ(d, dequant(c, direct)) << c.label;
    const FormatTraits& t = format_traits(parsed->format);
    EXPECT_EQ(t.error_bound(*parsed), c.bound(c.scheme)) << c.label;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t col = 0; col < cols; ++col) {
        const size_t i = static_cast<size_t>(r * cols + col);
        const double allowed = allowed_error(c, *q, w, rows, cols, r, col);
        ASSERT_LE(std::fabs(static_cast<double>(w[i]) - d[i]), allowed) << c.label << " element " << i;
      }
  }
}

TEST(PublicApi, NonFiniteWeightsAreRejected) {
  const int64_t rows = 2, cols = 128;
  for (const Case& c : all_cases()) {
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      std::vector<float> w = student_t(rows * cols, 61);
      w[170] = bad;
      auto q = qforge::quantize(*Scheme::parse(c.label), w.data(), rows, cols);
      ASSERT_FALSE(q.has_value()) << c.label;
      EXPECT_NE(q.status().message().find("element 170"), std::string::npos) << q.status().message();
    }
  }
}

TEST(PublicApi, DequantizeRejectsTruncatedPlanes) {
  const std::vector<float> w = student_t(4 * 64, 71);
  for (const char* name : {"nf4-dq", "nvfp4", "mxfp4", "fp8-e4m3-ch"}) {
    auto q = qforge::quantize(*Scheme::parse(name), w.data(), 4, 64);
    ASSERT_TRUE(q.has_value()) << name;
    std::vector<float> out(w.size());
    QuantizedTensor bad = *q;
    bad.scales.pop_back();
    EXPECT_FALSE(qforge::dequantize(bad, out.data()).is_ok()) << name;
    if (!q->extra.empty()) {
      bad = *q;
      bad.extra.pop_back();
      EXPECT_FALSE(qforge::dequantize(bad, out.data()).is_ok()) << name;
    }
  }
}

TEST(PublicApi, PlaneSizesAgreeWithTheTable) {
  for (const char* name : {"nf4-g128-dq", "nf4-g32-dq", "nvfp4", "fp4-g32"}) {
    const Scheme s = *Scheme::parse(name);
    for (int64_t rows : {1, 7, 300}) {
      const int64_t cols = 256;
      const std::vector<float> w = student_t(rows * cols, 81);
      auto q = qforge::quantize(s, w.data(), rows, cols);
      ASSERT_TRUE(q.has_value()) << name << ": " << q.status().to_string();
      const PlaneSizes p = scheme_plane_sizes(s, rows, cols);
      EXPECT_EQ(q->extra.size(), p.extra) << name;
      if (s.format == FormatId::nf4) {
        EXPECT_EQ(nf4_extra_bytes(s, rows, cols), p.extra) << name;
      }
    }
  }
}

}  // namespace
}  // namespace qforge::formats
