// Exhaustive tests of the scalar float conversions against an independent oracle written here:
// codes are decoded from their sign/exponent/mantissa fields with ldexp, and f32 values are
// encoded by searching the sorted table of representable values (nearest, ties to the even
// code), so nothing is shared with src/core/float_convert.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "qforge/dtype.h"

namespace qforge {
namespace {

enum class Special { ieee, e4m3fn };  // ieee: top exponent = Inf/NaN; e4m3fn: only S.1111.111 is NaN

enum class Overflow { inf, nan, saturate };  // what a value past the largest finite becomes

struct Format {
  const char* name;
  int ebits, mbits, bias;
  Special special;
  Overflow overflow;
  float (*decode)(uint32_t);
  uint32_t (*encode)(float);
  double published_max;  // largest finite value as the format's definition states it
};

void PrintTo(const Format& f, std::ostream* os) { *os << f.name; }

int total_bits(const Format& f) { return 1 + f.ebits + f.mbits; }

// Independent decoder: the value of a code from its fields.
double ref_decode(const Format& f, uint32_t code) {
  const uint32_t sign = code >> (f.ebits + f.mbits);
  const int e = static_cast<int>((code >> f.mbits) & ((1u << f.ebits) - 1));
  const int m = static_cast<int>(code & ((1u << f.mbits) - 1));
  const int emax_field = (1 << f.ebits) - 1;
  double v;
  if (f.special == Special::ieee && e == emax_field) {
    v = m == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (f.special == Special::e4m3fn && e == emax_field && m == (1 << f.mbits) - 1) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - f.bias - f.mbits);
  } else {
    v = std::ldexp(static_cast<double>(m + (1 << f.mbits)), e - f.bias - f.mbits);
  }
  return sign ? -v : v;
}

// Sorted positive finite values; index == code (all formats here are sign-magnitude with the
// positive finite codes contiguous from 0).
struct Table {
  std::vector<double> values;  // values[code]
  double virtual_next = 0;     // the value one step past the largest finite (where overflow starts)
};

Table make_table(const Format& f) {
  Table t;
  const uint32_t half = 1u << (f.ebits + f.mbits);
  for (uint32_t c = 0; c < half; ++c) {
    double v = ref_decode(f, c);
    if (!std::isfinite(v)) break;
    t.values.push_back(v);
  }
  const size_t n = t.values.size();
  t.virtual_next = t.values[n - 1] + (t.values[n - 1] - t.values[n - 2]);
  return t;
}

uint32_t sign_bit(const Format& f) { return 1u << (f.ebits + f.mbits); }

// The code of +Inf (ieee) or the positive NaN used on overflow.
uint32_t overflow_code(const Format& f, const Table& t) {
  const uint32_t max_code = static_cast<uint32_t>(t.values.size() - 1);
  switch (f.overflow) {
    case Overflow::saturate: return max_code;
    case Overflow::inf: return max_code + 1;  // ieee: S.11..1.00..0 follows the largest finite
    case Overflow::nan: return max_code + 1;  // e4m3fn: S.1111.111 follows 448
  }
  return 0;
}

// Oracle encoder for non-NaN x: nearest representable, ties to the even code, then overflow.
uint32_t ref_encode(const Format& f, const Table& t, double x) {
  const uint32_t sign = std::signbit(x) ? sign_bit(f) : 0;
  const double a = std::fabs(x);
  const uint32_t n = static_cast<uint32_t>(t.values.size());
  uint32_t code;
  if (a >= t.virtual_next) {
    code = n;
  } else {
    auto it = std::upper_bound(t.values.begin(), t.values.end(), a);
    uint32_t lo = static_cast<uint32_t>(it - t.values.begin()) - 1;
    const double lo_v = t.values[lo];
    const double hi_v = lo + 1 < n ? t.values[lo + 1] : t.virtual_next;
    const double dlo = a - lo_v, dhi = hi_v - a;  // exact in double for these widths
    if (dlo < dhi) code = lo;
    else if (dhi < dlo) code = lo + 1;
    else code = (lo % 2 == 0) ? lo : lo + 1;
  }
  if (code >= n) code = overflow_code(f, t);
  return sign | code;
}

// Library wrappers.
float dec_f16(uint32_t c) { return f16_to_f32(static_cast<uint16_t>(c)); }
uint32_t enc_f16(float x) { return f32_to_f16(x); }
float dec_bf16(uint32_t c) { return bf16_to_f32(static_cast<uint16_t>(c)); }
uint32_t enc_bf16(float x) { return f32_to_bf16(x); }
float dec_e4m3(uint32_t c) { return f8_e4m3fn_to_f32(static_cast<uint8_t>(c)); }
uint32_t enc_e4m3_sat(float x) { return f32_to_f8_e4m3fn(x, Fp8Overflow::saturate); }
uint32_t enc_e4m3_nan(float x) { return f32_to_f8_e4m3fn(x, Fp8Overflow::to_nan_or_inf); }
float dec_e5m2(uint32_t c) { return f8_e5m2_to_f32(static_cast<uint8_t>(c)); }
uint32_t enc_e5m2_sat(float x) { return f32_to_f8_e5m2(x, Fp8Overflow::saturate); }
uint32_t enc_e5m2_inf(float x) { return f32_to_f8_e5m2(x, Fp8Overflow::to_nan_or_inf); }

const Format kFormats[] = {
    {"f16", 5, 10, 15, Special::ieee, Overflow::inf, dec_f16, enc_f16, 65504.0},
    {"bf16", 8, 7, 127, Special::ieee, Overflow::inf, dec_bf16, enc_bf16, 0x1.FEp127},
    {"e4m3fn/saturate", 4, 3, 7, Special::e4m3fn, Overflow::saturate, dec_e4m3, enc_e4m3_sat, 448.0},
    {"e4m3fn/to_nan", 4, 3, 7, Special::e4m3fn, Overflow::nan, dec_e4m3, enc_e4m3_nan, 448.0},
    {"e5m2/saturate", 5, 2, 15, Special::ieee, Overflow::saturate, dec_e5m2, enc_e5m2_sat, 57344.0},
    {"e5m2/to_inf", 5, 2, 15, Special::ieee, Overflow::inf, dec_e5m2, enc_e5m2_inf, 57344.0},
};

class FloatFormat : public ::testing::TestWithParam<Format> {};

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%X", v);
  return buf;
}

// Checks the library's encoding of x against the oracle; NaN results compare by NaN-ness and sign.
void expect_encode(const Format& f, const Table& t, float x, const char* what) {
  const uint32_t got = f.encode(x);
  const double got_v = ref_decode(f, got);
  if (std::isnan(x)) {
    EXPECT_TRUE(std::isnan(got_v)) << f.name << " " << what << ": NaN input gave " << hex(got);
    EXPECT_EQ((got & sign_bit(f)) != 0, std::signbit(x)) << f.name << ": NaN sign lost";
    return;
  }
  const uint32_t want = ref_encode(f, t, static_cast<double>(x));
  if (std::isnan(ref_decode(f, want))) {
    EXPECT_TRUE(std::isnan(got_v) && (got & sign_bit(f)) == (want & sign_bit(f)))
        << f.name << " " << what << ": x=" << x << " expected NaN, got " << hex(got);
  } else {
    EXPECT_EQ(got, want) << f.name << " " << what << ": x=" << x << " (" << hex(std::bit_cast<uint32_t>(x))
                         << ") expected " << hex(want) << " = " << ref_decode(f, want) << ", got " << hex(got)
                         << " = " << got_v;
  }
}

TEST_P(FloatFormat, DecodeEveryCodeMatchesFieldDecoder) {
  const Format& f = GetParam();
  const uint32_t count = 1u << total_bits(f);
  int failures = 0;
  for (uint32_t c = 0; c < count && failures < 10; ++c) {
    const double want = ref_decode(f, c);
    const float got = f.decode(c);
    if (std::isnan(want)) {
      if (!std::isnan(got)) ++failures;
      EXPECT_TRUE(std::isnan(got)) << f.name << " code " << hex(c) << " should be NaN, got " << got;
      continue;
    }
    const bool same = static_cast<double>(got) == want && std::signbit(got) == std::signbit(want);
    if (!same) ++failures;
    EXPECT_TRUE(same) << f.name << " code " << hex(c) << ": expected " << want << ", got " << got;
  }
}

TEST_P(FloatFormat, EveryFiniteCodeRoundTrips) {
  const Format& f = GetParam();
  const uint32_t count = 1u << total_bits(f);
  int failures = 0;
  for (uint32_t c = 0; c < count && failures < 10; ++c) {
    const double v = ref_decode(f, c);
    if (!std::isfinite(v)) continue;
    const uint32_t back = f.encode(static_cast<float>(v));
    if (back != c) ++failures;
    EXPECT_EQ(back, c) << f.name << ": code " << hex(c) << " (" << v << ") re-encoded as " << hex(back);
  }
}

TEST_P(FloatFormat, TableIsMonotonicAndHasTheDocumentedMaximum) {
  const Format& f = GetParam();
  const Table t = make_table(f);
  for (size_t i = 1; i < t.values.size(); ++i) ASSERT_LT(t.values[i - 1], t.values[i]) << f.name << " code " << i;
  EXPECT_EQ(t.values.back(), f.published_max) << f.name;
}

// Midpoints between every pair of adjacent representable values (and between the largest finite
// and where overflow starts) go to the even code; the f32 neighbours of each midpoint go to the
// nearer value. Covers the subnormal boundaries (0 <-> smallest subnormal, largest subnormal <->
// smallest normal) and the overflow threshold.
TEST_P(FloatFormat, MidpointsRoundToEvenAndNeighboursToNearer) {
  const Format& f = GetParam();
  const Table t = make_table(f);
  std::vector<double> v = t.values;
  v.push_back(t.virtual_next);
  int checked = 0;
  for (size_t i = 0; i + 1 < v.size(); ++i) {
    const double mid = 0.5 * (v[i] + v[i + 1]);
    const float midf = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(midf), mid) << f.name << ": midpoint not exact in f32";
    const uint32_t lo = static_cast<uint32_t>(i), hi = static_cast<uint32_t>(i + 1);
    const uint32_t n = static_cast<uint32_t>(t.values.size());
    auto fix = [&](uint32_t code) { return code >= n ? overflow_code(f, t) : code; };
    const uint32_t even = fix(lo % 2 == 0 ? lo : hi);
    for (float s : {1.0f, -1.0f}) {
      const uint32_t sb = s < 0 ? sign_bit(f) : 0;
      const float m = s * midf;
      const float above = std::nextafter(m, s * INFINITY), below = std::nextafter(m, 0.0f);
      const struct {
        float x;
        uint32_t want;
        const char* what;
      } cases[] = {{m, sb | even, "midpoint"}, {above, sb | fix(hi), "just above midpoint"},
                   {below, sb | fix(lo), "just below midpoint"}};
      for (const auto& c : cases) {
        const uint32_t got = f.encode(c.x);
        const double want_v = ref_decode(f, c.want);
        if (std::isnan(want_v)) {
          EXPECT_TRUE(std::isnan(ref_decode(f, got)) && (got & sign_bit(f)) == sb)
              << f.name << " " << c.what << " " << c.x << ": expected NaN, got " << hex(got);
        } else {
          ASSERT_EQ(got, c.want) << f.name << " " << c.what << " between " << v[i] << " and " << v[i + 1]
                                 << " (x=" << c.x << "): expected " << hex(c.want) << ", got " << hex(got);
        }
        expect_encode(f, t, c.x, c.what);  // and the oracle agrees
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0);
}

TEST_P(FloatFormat, RandomInputsMatchOracle) {
  const Format& f = GetParam();
  const Table t = make_table(f);
  std::mt19937_64 rng(1234);
  const int emin = 1 - f.bias - f.mbits - 3, emax = (1 << f.ebits) - f.bias + 2;
  std::uniform_int_distribution<int> exp_dist(emin, emax);
  std::uniform_int_distribution<uint32_t> mant(0, (1u << 24) - 1);
  for (int i = 0; i < 100000; ++i) {
    // Values in and around the format's range, with full f32 mantissas.
    float x = static_cast<float>(std::ldexp(static_cast<double>(mant(rng)), exp_dist(rng) - 24));
    if (i & 1) x = -x;
    expect_encode(f, t, x, "random in range");
    // Arbitrary f32 bit patterns (huge, tiny, f32 subnormals, Inf, NaN).
    const float y = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    expect_encode(f, t, y, "random bits");
    if (HasFailure()) return;
  }
}

TEST_P(FloatFormat, SpecialValues) {
  const Format& f = GetParam();
  const Table t = make_table(f);
  const uint32_t sb = sign_bit(f);
  EXPECT_EQ(f.encode(0.0f), 0u) << f.name;
  EXPECT_EQ(f.encode(-0.0f), sb) << f.name << ": -0 must keep its sign";
  EXPECT_TRUE(std::signbit(f.decode(sb))) << f.name;
  // Smallest f32 subnormal is far below every format's smallest subnormal except bf16's half
  // step; all round to (signed) zero here.
  EXPECT_EQ(f.encode(std::numeric_limits<float>::denorm_min()), 0u) << f.name;
  EXPECT_EQ(f.encode(-std::numeric_limits<float>::denorm_min()), sb) << f.name;
  for (float inf : {INFINITY, -INFINITY}) {
    const uint32_t got = f.encode(inf);
    const uint32_t s = inf < 0 ? sb : 0;
    const uint32_t max_code = static_cast<uint32_t>(t.values.size() - 1);
    switch (f.overflow) {
      case Overflow::saturate: EXPECT_EQ(got, s | max_code) << f.name << ": Inf saturates (OCP)"; break;
      case Overflow::inf: EXPECT_EQ(ref_decode(f, got), static_cast<double>(inf)) << f.name; break;
      case Overflow::nan: EXPECT_TRUE(std::isnan(ref_decode(f, got)) && (got & sb) == s) << f.name; break;
    }
  }
  // NaN stays NaN, quiet (top mantissa bit set), sign kept, even from a signalling f32 NaN.
  for (uint32_t bits : {0x7FC00000u, 0x7F800001u, 0xFFC00000u, 0xFF800001u, 0x7FBFFFFFu}) {
    const float nan = std::bit_cast<float>(bits);
    const uint32_t got = f.encode(nan);
    EXPECT_TRUE(std::isnan(ref_decode(f, got))) << f.name << " from " << hex(bits) << " got " << hex(got);
    EXPECT_EQ((got & sb) != 0, (bits >> 31) != 0) << f.name;
    EXPECT_NE(got & (1u << (f.mbits - 1)), 0u) << f.name << ": NaN " << hex(got) << " is not quiet";
  }
}

INSTANTIATE_TEST_SUITE_P(All, FloatFormat, ::testing::ValuesIn(kFormats),
                         [](const ::testing::TestParamInfo<Format>& info) {
                           std::string s = info.param.name;
                           for (char& c : s)
                             if (c == '/') c = '_';
                           return s;
                         });

// E8M0: unsigned power of two.
uint8_t ref_e8m0_encode(double a) {
  if (std::isnan(a) || a == INFINITY) return 0xFF;
  if (!(a > 0)) return 0x00;
  int best = -127;
  for (int k = -127; k <= 127; ++k) {  // nearest 2^k; on a tie the larger (ties up)
    const double dk = std::fabs(a - std::ldexp(1.0, k)), db = std::fabs(a - std::ldexp(1.0, best));
    if (dk <= db) best = k;
  }
  return static_cast<uint8_t>(best + 127);
}

TEST(E8M0, DecodeEveryCode) {
  for (int c = 0; c < 255; ++c)
    EXPECT_EQ(static_cast<double>(f8_e8m0_to_f32(static_cast<uint8_t>(c))), std::ldexp(1.0, c - 127)) << "code " << c;
  EXPECT_TRUE(std::isnan(f8_e8m0_to_f32(0xFF)));
}

TEST(E8M0, EncodeRoundsToNearestPowerOfTwoTiesUp) {
  for (int k = -127; k <= 127; ++k) {
    const float p = std::ldexp(1.0f, k);
    EXPECT_EQ(f32_to_f8_e8m0(p), k + 127) << "2^" << k;
    if (k < 127) {
      const float tie = 1.5f * p;  // exactly between 2^k and 2^(k+1)
      EXPECT_EQ(f32_to_f8_e8m0(tie), k + 128) << "1.5 * 2^" << k << " ties up";
      EXPECT_EQ(f32_to_f8_e8m0(std::nextafter(tie, 0.0f)), k + 127) << "just below 1.5 * 2^" << k;
    }
  }
  EXPECT_EQ(f32_to_f8_e8m0(std::numeric_limits<float>::max()), 0xFE) << "finite values clamp to 2^127";
  EXPECT_EQ(f32_to_f8_e8m0(std::numeric_limits<float>::denorm_min()), 0x00) << "tiny values clamp to 2^-127";
  EXPECT_EQ(f32_to_f8_e8m0(0.0f), 0x00);
  EXPECT_EQ(f32_to_f8_e8m0(-0.0f), 0x00);
  EXPECT_EQ(f32_to_f8_e8m0(-3.0f), 0x00);
  EXPECT_EQ(f32_to_f8_e8m0(-INFINITY), 0x00);
  EXPECT_EQ(f32_to_f8_e8m0(INFINITY), 0xFF);
  EXPECT_EQ(f32_to_f8_e8m0(NAN), 0xFF);
}

TEST(E8M0, RandomPositiveMatchesOracle) {
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    const float x = std::bit_cast<float>(static_cast<uint32_t>(rng()) & 0x7FFFFFFFu);
    if (std::isnan(x)) continue;
    ASSERT_EQ(f32_to_f8_e8m0(x), ref_e8m0_encode(x)) << "x=" << x << " (" << hex(std::bit_cast<uint32_t>(x)) << ")";
  }
}

// Names.
TEST(DTypeNames, RoundTrip) {
  for (int i = 0; i <= static_cast<int>(DType::f64); ++i) {
    const auto t = static_cast<DType>(i);
    EXPECT_EQ(dtype_from_name(dtype_name(t)), t) << dtype_name(t);
    EXPECT_EQ(dtype_from_safetensors_name(dtype_safetensors_name(t)), t) << dtype_safetensors_name(t);
  }
  EXPECT_FALSE(dtype_from_name("float33").has_value());
  EXPECT_FALSE(dtype_from_safetensors_name("F33").has_value());
  EXPECT_EQ(dtype_from_safetensors_name("BF16"), DType::bf16);
  EXPECT_EQ(dtype_from_safetensors_name("F8_E4M3"), DType::f8_e4m3fn);
  EXPECT_EQ(dtype_size(DType::f8_e5m2), 1u);
  EXPECT_EQ(dtype_size(DType::i64), 8u);
  EXPECT_TRUE(dtype_is_float(DType::f8_e8m0));
  EXPECT_FALSE(dtype_is_float(DType::i32));
}

// Bulk conversions.
template <class T>
std::vector<T> from_f32(DType t, const std::vector<float>& in) {
  std::vector<T> out(in.size());
  Status s = convert_from_f32(t, in.data(), out.data(), in.size());
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  return out;
}

TEST(BulkConvert, IntegersRoundHalfEvenAndSaturate) {
  const std::vector<float> in = {0.0f, 2.5f, -2.5f, 3.5f, -0.5f, 0.49999997f, 1e30f, -1e30f, 126.6f, INFINITY, -INFINITY};
  EXPECT_EQ(from_f32<int8_t>(DType::i8, in), (std::vector<int8_t>{0, 2, -2, 4, 0, 0, 127, -128, 127, 127, -128}));
  EXPECT_EQ(from_f32<uint8_t>(DType::u8, in), (std::vector<uint8_t>{0, 2, 0, 4, 0, 0, 255, 0, 127, 255, 0}));
  EXPECT_EQ(from_f32<int16_t>(DType::i16, in),
            (std::vector<int16_t>{0, 2, -2, 4, 0, 0, 32767, -32768, 127, 32767, -32768}));
  EXPECT_EQ(from_f32<int32_t>(DType::i32, in),
            (std::vector<int32_t>{0, 2, -2, 4, 0, 0, INT32_MAX, INT32_MIN, 127, INT32_MAX, INT32_MIN}));
  EXPECT_EQ(from_f32<int64_t>(DType::i64, in),
            (std::vector<int64_t>{0, 2, -2, 4, 0, 0, INT64_MAX, INT64_MIN, 127, INT64_MAX, INT64_MIN}));
  // Edges of i32/i64: 2^31 and 2^63 are the first f32 values outside the range.
  EXPECT_EQ(from_f32<int32_t>(DType::i32, {2147483648.0f, -2147483648.0f, 2147483520.0f}),
            (std::vector<int32_t>{INT32_MAX, INT32_MIN, 2147483520}));
  EXPECT_EQ(from_f32<int64_t>(DType::i64, {9223372036854775808.0f, 9223371487098961920.0f}),
            (std::vector<int64_t>{INT64_MAX, 9223371487098961920LL}));
}

TEST(BulkConvert, NaNToIntegerIsAnErrorNamingTheIndex) {
  const std::vector<float> in = {1.0f, 2.0f, 3.0f, NAN, 5.0f};
  for (DType t : {DType::i8, DType::u8, DType::i16, DType::i32, DType::i64, DType::boolean}) {
    std::vector<uint8_t> out(in.size() * dtype_size(t));
    Status s = convert_from_f32(t, in.data(), out.data(), in.size());
    ASSERT_FALSE(s.is_ok()) << dtype_name(t);
    EXPECT_EQ(s.code(), ErrorCode::invalid_argument);
    EXPECT_NE(s.message().find("element 3"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(dtype_name(t)), std::string::npos) << s.message();
  }
}

TEST(BulkConvert, IntegersToF32ByValue) {
  std::vector<float> out(3);
  const int8_t i8[] = {-128, 0, 127};
  ASSERT_TRUE(convert_to_f32(DType::i8, i8, out.data(), 3).is_ok());
  EXPECT_EQ(out, (std::vector<float>{-128, 0, 127}));
  const uint8_t u8[] = {0, 200, 255};
  ASSERT_TRUE(convert_to_f32(DType::u8, u8, out.data(), 3).is_ok());
  EXPECT_EQ(out, (std::vector<float>{0, 200, 255}));
  const int16_t i16[] = {-32768, 1, 32767};
  ASSERT_TRUE(convert_to_f32(DType::i16, i16, out.data(), 3).is_ok());
  EXPECT_EQ(out, (std::vector<float>{-32768, 1, 32767}));
  const int32_t i32[] = {INT32_MIN, 16777217, INT32_MAX};  // 2^24 + 1 rounds to even 2^24
  ASSERT_TRUE(convert_to_f32(DType::i32, i32, out.data(), 3).is_ok());
  EXPECT_EQ(out, (std::vector<float>{-2147483648.0f, 16777216.0f, 2147483648.0f}));
  const int64_t i64[] = {INT64_MIN, -5, INT64_MAX};
  ASSERT_TRUE(convert_to_f32(DType::i64, i64, out.data(), 3).is_ok());
  EXPECT_EQ(out, (std::vector<float>{-9223372036854775808.0f, -5.0f, 9223372036854775808.0f}));
  const uint8_t b[] = {0, 1, 7};
  ASSERT_TRUE(convert_to_f32(DType::boolean, b, out.data(), 3).is_ok());
  EXPECT_EQ(out, (std::vector<float>{0, 1, 1}));
  EXPECT_EQ(from_f32<uint8_t>(DType::boolean, {0.0f, -0.0f, 0.25f, -INFINITY}), (std::vector<uint8_t>{0, 0, 1, 1}));
}

TEST(BulkConvert, FloatTypesUseTheScalarRules) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 100.0f);
  std::vector<float> in(1000);
  for (auto& v : in) v = nd(rng);
  in[0] = NAN;
  in[1] = 1e9f;
  for (DType t : {DType::f16, DType::bf16, DType::f8_e4m3fn, DType::f8_e5m2, DType::f8_e8m0, DType::f32, DType::f64}) {
    std::vector<uint8_t> buf(in.size() * dtype_size(t));
    ASSERT_TRUE(convert_from_f32(t, in.data(), buf.data(), in.size()).is_ok()) << dtype_name(t);
    std::vector<float> back(in.size());
    ASSERT_TRUE(convert_to_f32(t, buf.data(), back.data(), in.size()).is_ok()) << dtype_name(t);
    for (size_t i = 0; i < in.size(); ++i) {
      float want;
      switch (t) {
        case DType::f16: { want = f16_to_f32(f32_to_f16(in[i])); break; }
        case DType::bf16: { want = bf16_to_f32(f32_to_bf16(in[i])); break; }
        case DType::f8_e4m3fn: { want = f8_e4m3fn_to_f32(f32_to_f8_e4m3fn(in[i])); break; }
        case DType::f8_e5m2: { want = f8_e5m2_to_f32(f32_to_f8_e5m2(in[i])); break; }
        case DType::f8_e8m0: { want = f8_e8m0_to_f32(f32_to_f8_e8m0(in[i])); break; }
        default: { want = in[i]; break; }
      }
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(back[i])) << dtype_name(t) << " element " << i;
      } else {
        ASSERT_EQ(back[i], want) << dtype_name(t) << " element " << i;
      }
    }
  }
  // f64 -> f32 narrows with RNE.
  const double d[] = {1.0 + std::ldexp(1.0, -24), 1.0 + 3 * std::ldexp(1.0, -24), 1e300};
  float out[3];
  ASSERT_TRUE(convert_to_f32(DType::f64, d, out, 3).is_ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 1.0f + std::ldexp(1.0f, -22));
  EXPECT_EQ(out[2], INFINITY);
}

TEST(BulkConvert, NullBuffersAreErrorsAndEmptyIsFine) {
  float f = 0;
  EXPECT_TRUE(convert_to_f32(DType::f16, nullptr, nullptr, 0).is_ok());
  EXPECT_FALSE(convert_to_f32(DType::f16, nullptr, &f, 1).is_ok());
  EXPECT_FALSE(convert_from_f32(DType::f16, &f, nullptr, 1).is_ok());
}

}  // namespace
}  // namespace qforge
