// GGUF block formats: layouts against an independent element-wise oracle, quantize / dequantize
// error bounds, determinism, the scale search against a plain absmax / min-max baseline, and
// importance weighting.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "formats/gguf_blocks.h"
#include "formats/gguf_impl.h"
#include "qforge/dtype.h"
#include "qforge/format.h"
#include "qforge/gguf.h"
#include "qforge/safetensors.h"
#include "test_support.h"

namespace qforge {
namespace {

using namespace qforge::formats;

// ---------------------------------------------------------------------------------------------
// Independent helpers (not the library's): f16 decoding by fields, little-endian reads.
// ---------------------------------------------------------------------------------------------

float f16_oracle(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else {
    EXPECT_NE(exp, 31) << "test blocks use finite f16 fields only";
    v = std::ldexp(static_cast<float>(mant + 1024), exp - 25);
  }
  return sign ? -v : v;
}

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
void wr16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// f32 -> f16 -> f32 with the library conversion (only used by the baselines, not as an oracle).
float f16_round(float v) { return f16_to_f32(f32_to_f16(v)); }

constexpr int8_t kIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// ---------------------------------------------------------------------------------------------
// The element-wise specification of each block (the oracle). Byte offsets are written out
// literally from the ggml layouts; each formula is evaluated in f32 in ggml's order.
// ---------------------------------------------------------------------------------------------

void spec_q4_0(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b));
  for (int e = 0; e < 32; ++e) {
    const int q = (b[2 + e % 16] >> (4 * (e / 16))) & 15;
    y[e] = static_cast<float>(q - 8) * d;
  }
}

void spec_q4_1(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b)), m = f16_oracle(rd16(b + 2));
  for (int e = 0; e < 32; ++e) {
    const int q = (b[4 + e % 16] >> (4 * (e / 16))) & 15;
    y[e] = static_cast<float>(q) * d + m;
  }
}

void spec_q5_0(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b));
  const uint32_t qh = rd32(b + 2);
  for (int e = 0; e < 32; ++e) {
    const int q = ((b[6 + e % 16] >> (4 * (e / 16))) & 15) | (static_cast<int>((qh >> e) & 1) << 4);
    y[e] = static_cast<float>(q - 16) * d;
  }
}

void spec_q5_1(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b)), m = f16_oracle(rd16(b + 2));
  const uint32_t qh = rd32(b + 4);
  for (int e = 0; e < 32; ++e) {
    const int q = ((b[8 + e % 16] >> (4 * (e / 16))) & 15) | (static_cast<int>((qh >> e) & 1) << 4);
    y[e] = static_cast<float>(q) * d + m;
  }
}

void spec_q8_0(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b));
  for (int e = 0; e < 32; ++e) y[e] = static_cast<float>(static_cast<int8_t>(b[2 + e])) * d;
}

void spec_iq4_nl(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b));
  for (int e = 0; e < 32; ++e) y[e] = d * static_cast<float>(kIq4nl[(b[2 + e % 16] >> (4 * (e / 16))) & 15]);
}

// Q2_K: scales[16] @0, qs[64] @16, d @80, dmin @82.
void spec_q2_k(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b + 80)), dmin = f16_oracle(rd16(b + 82));
  for (int e = 0; e < 256; ++e) {
    const int sc = b[e / 16] & 15, m = b[e / 16] >> 4;
    const int q = (b[16 + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
    y[e] = dl * static_cast<float>(q) - ml;
  }
}

// Q3_K: hmask[32] @0, qs[64] @32, scales[12] @96, d @108.
void spec_q3_k(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b + 108));
  const uint8_t* s = b + 96;
  for (int e = 0; e < 256; ++e) {
    const int j = e / 16;
    const int low = j < 8 ? (s[j] & 15) : (s[j - 8] >> 4);
    const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    const int scale = (low | (high << 4)) - 32;
    const int q2 = (b[32 + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    const int h = (b[e % 32] >> (e / 32)) & 1;
    const float dl = d * static_cast<float>(scale);
    y[e] = dl * static_cast<float>(q2 - (h ? 0 : 4));
  }
}

void spec_scale_min_k4(int j, const uint8_t* s, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q4_K: d @0, dmin @2, scales[12] @4, qs[128] @16.
void spec_q4_k(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b)), dmin = f16_oracle(rd16(b + 2));
  for (int e = 0; e < 256; ++e) {
    int sc, m;
    spec_scale_min_k4(e / 32, b + 4, &sc, &m);
    const int q = (b[16 + 32 * (e / 64) + e % 32] >> (4 * ((e % 64) / 32))) & 15;
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    y[e] = d1 * static_cast<float>(q) - m1;
  }
}

// Q5_K: d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48.
void spec_q5_k(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b)), dmin = f16_oracle(rd16(b + 2));
  for (int e = 0; e < 256; ++e) {
    int sc, m;
    spec_scale_min_k4(e / 32, b + 4, &sc, &m);
    const int q = ((b[48 + 32 * (e / 64) + e % 32] >> (4 * ((e % 64) / 32))) & 15) +
                  16 * ((b[16 + e % 32] >> (e / 32)) & 1);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    y[e] = d1 * static_cast<float>(q) - m1;
  }
}

// Q6_K: ql[128] @0, qh[64] @128, scales[16] @192, d @208.
void spec_q6_k(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b + 208));
  for (int e = 0; e < 256; ++e) {
    const int n = e / 128, g = (e % 128) / 32, l = e % 32;
    const int low = (b[64 * n + 32 * (g & 1) + l] >> (4 * (g >> 1))) & 15;
    const int high = (b[128 + 32 * n + l] >> (2 * g)) & 3;
    const int sc = static_cast<int8_t>(b[192 + e / 16]);
    y[e] = d * static_cast<float>(sc) * static_cast<float>((low | (high << 4)) - 32);
  }
}

// Q8_K: f32 d @0, qs[256] @4, bsums[16] @260.
void spec_q8_k(const uint8_t* b, float* y) {
  float d;
  std::memcpy(&d, b, 4);
  for (int e = 0; e < 256; ++e) y[e] = d * static_cast<float>(static_cast<int8_t>(b[4 + e]));
}

// TQ1_0: qs[48] @0, qh[4] @48, d @52. A byte holds ceil(256 v / 243), v = sum t_n 3^(4-n),
// so v = floor(243 byte / 256) and trit n = (v / 3^(4-n)) % 3.
int spec_trit(uint8_t byte, int n) {
  static const int kPow[5] = {81, 27, 9, 3, 1};
  const int v = (byte * 243) / 256;
  return (v / kPow[n]) % 3;
}

void spec_tq1_0(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b + 52));
  for (int e = 0; e < 256; ++e) {
    int t;
    if (e < 160) {
      t = spec_trit(b[e % 32], e / 32);
    } else if (e < 240) {
      t = spec_trit(b[32 + (e - 160) % 16], (e - 160) / 16);
    } else {
      t = spec_trit(b[48 + (e - 240) % 4], (e - 240) / 4);
    }
    y[e] = static_cast<float>(t - 1) * d;
  }
}

// TQ2_0: qs[64] @0, d @64.
void spec_tq2_0(const uint8_t* b, float* y) {
  const float d = f16_oracle(rd16(b + 64));
  for (int e = 0; e < 256; ++e) {
    const int q = (b[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    y[e] = static_cast<float>(q - 1) * d;
  }
}

// ---------------------------------------------------------------------------------------------
// Plain baselines (the same layouts, no search): ggml-style absmax / min-max encodings,
// computed directly as reconstructed values for one block.
// ---------------------------------------------------------------------------------------------

float signed_absmax(const float* x, int n) {
  float m = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > std::fabs(m)) m = x[i];
  return m;
}

int iround_clamp(float v, int lo, int hi) {
  if (!std::isfinite(v)) return 0;
  return static_cast<int>(std::clamp<long>(std::lrintf(std::clamp(v, lo - 1.0f, hi + 1.0f)), lo, hi));
}

// y = d * q with d = m / edge (m the largest-magnitude value), q in lo..hi.
void plain_sym(const float* x, float* y, int n, int lo, int hi, int edge, bool f16) {
  const float m = signed_absmax(x, n);
  const float d = f16 ? f16_round(m / static_cast<float>(edge)) : m / static_cast<float>(edge);
  for (int i = 0; i < n; ++i) {
    const int q = d != 0 ? iround_clamp(x[i] / d, lo, hi) : 0;
    y[i] = static_cast<float>(q) * d;
  }
}

void base_q8_0(const float* x, float* y) { plain_sym(x, y, 32, -127, 127, 127, true); }
void base_q4_0(const float* x, float* y) { plain_sym(x, y, 32, -8, 7, -8, true); }
void base_q5_0(const float* x, float* y) { plain_sym(x, y, 32, -16, 15, -16, true); }
void base_q8_k(const float* x, float* y) { plain_sym(x, y, 256, -127, 127, -127, false); }
void base_ternary(const float* x, float* y) { plain_sym(x, y, 256, -1, 1, 1, true); }

void base_iq4_nl(const float* x, float* y) {
  const float d = f16_round(signed_absmax(x, 32) / -127.0f);
  for (int i = 0; i < 32; ++i) {
    int best = 0;
    for (int k = 1; k < 16; ++k)
      if (std::fabs(x[i] - d * kIq4nl[k]) < std::fabs(x[i] - d * kIq4nl[best])) best = k;
    y[i] = d * static_cast<float>(kIq4nl[best]);
  }
}

void plain_affine(const float* x, float* y, int n, int nmax) {
  const float lo = *std::min_element(x, x + n), hi = *std::max_element(x, x + n);
  const float s = f16_round((hi - lo) / static_cast<float>(nmax)), b = f16_round(lo);
  for (int i = 0; i < n; ++i) {
    const int q = s != 0 ? iround_clamp((x[i] - b) / s, 0, nmax) : 0;
    y[i] = static_cast<float>(q) * s + b;
  }
}

void base_q4_1(const float* x, float* y) { plain_affine(x, y, 32, 15); }
void base_q5_1(const float* x, float* y) { plain_affine(x, y, 32, 31); }

// K-quants with mins: per sub-block min (clamped to <= 0) and max; 6-bit (4-bit) scales and
// mins rounded to the nearest multiple of d = max scale / smax, dmin = max min / smax.
void plain_kmin(const float* x, float* y, int nsub, int len, int nmax, int smax) {
  std::vector<float> s(nsub), o(nsub);
  float S = 0, O = 0;
  for (int j = 0; j < nsub; ++j) {
    float lo = 0, hi = x[j * len];
    for (int i = 0; i < len; ++i) {
      lo = std::min(lo, x[j * len + i]);
      hi = std::max(hi, x[j * len + i]);
    }
    s[j] = (hi - lo) / static_cast<float>(nmax);
    o[j] = -lo;
    S = std::max(S, s[j]);
    O = std::max(O, o[j]);
  }
  const float d = f16_round(S / static_cast<float>(smax)), dmin = f16_round(O / static_cast<float>(smax));
  for (int j = 0; j < nsub; ++j) {
    const int sc = d > 0 ? iround_clamp(s[j] / d, 0, smax) : 0;
    const int m = dmin > 0 ? iround_clamp(o[j] / dmin, 0, smax) : 0;
    const float t = d * static_cast<float>(sc), off = dmin * static_cast<float>(m);
    for (int i = 0; i < len; ++i) {
      const int q = t != 0 ? iround_clamp((x[j * len + i] + off) / t, 0, nmax) : 0;
      y[j * len + i] = t * static_cast<float>(q) - off;
    }
  }
}

void base_q2_k(const float* x, float* y) { plain_kmin(x, y, 16, 16, 3, 15); }
void base_q4_k(const float* x, float* y) { plain_kmin(x, y, 8, 32, 15, 63); }
void base_q5_k(const float* x, float* y) { plain_kmin(x, y, 8, 32, 31, 63); }

// Q3_K / Q6_K: sub-block scale m / qlo, super scale (largest-magnitude scale) / sclo.
void plain_ksym(const float* x, float* y, int qlo, int qhi, int sclo, int schi) {
  float s[16];
  for (int j = 0; j < 16; ++j) s[j] = signed_absmax(x + 16 * j, 16) / static_cast<float>(qlo);
  const float d = f16_round(signed_absmax(s, 16) / static_cast<float>(sclo));
  for (int j = 0; j < 16; ++j) {
    const int sc = d != 0 ? iround_clamp(s[j] / d, sclo, schi) : 0;
    const float t = d * static_cast<float>(sc);
    for (int i = 0; i < 16; ++i) {
      const int q = t != 0 ? iround_clamp(x[16 * j + i] / t, qlo, qhi) : 0;
      y[16 * j + i] = t * static_cast<float>(q);
    }
  }
}

void base_q3_k(const float* x, float* y) { plain_ksym(x, y, -4, 3, -32, 31); }
void base_q6_k(const float* x, float* y) { plain_ksym(x, y, -32, 31, -128, 127); }

// ---------------------------------------------------------------------------------------------
// The formats under test.
// ---------------------------------------------------------------------------------------------

struct Format {
  const char* name;
  FormatId id;
  int bits;
  int block;
  int bytes;
  QuantizeFn quantize;
  DequantizeFn dequantize;
  double (*bound)(const Scheme&);
  void (*spec)(const uint8_t*, float*);
  void (*baseline)(const float*, float*);
  std::vector<int> f16_offsets;  // byte offsets of the f16 fields (finite values in hand-built blocks)
  int f32_offset = -1;           // Q8_K's f32 d
};

const std::vector<Format>& formats() {
  static const std::vector<Format> kFormats = {
      {"q8_0", FormatId::gguf_q8_0, 8, 32, 34, gguf_q8_0_quantize_ref, gguf_q8_0_dequantize_ref, gguf_q8_0_error_bound,
       spec_q8_0, base_q8_0, {0}},
      {"q4_0", FormatId::gguf_q4_0, 4, 32, 18, gguf_q4_0_quantize_ref, gguf_q4_0_dequantize_ref, gguf_q4_0_error_bound,
       spec_q4_0, base_q4_0, {0}},
      {"q4_1", FormatId::gguf_q4_1, 4, 32, 20, gguf_q4_1_quantize_ref, gguf_q4_1_dequantize_ref, gguf_q4_1_error_bound,
       spec_q4_1, base_q4_1, {0, 2}},
      {"q5_0", FormatId::gguf_q5_0, 5, 32, 22, gguf_q5_0_quantize_ref, gguf_q5_0_dequantize_ref, gguf_q5_0_error_bound,
       spec_q5_0, base_q5_0, {0}},
      {"q5_1", FormatId::gguf_q5_1, 5, 32, 24, gguf_q5_1_quantize_ref, gguf_q5_1_dequantize_ref, gguf_q5_1_error_bound,
       spec_q5_1, base_q5_1, {0, 2}},
      {"q2_k", FormatId::gguf_q2_k, 2, 256, 84, gguf_q2_k_quantize_ref, gguf_q2_k_dequantize_ref, gguf_q2_k_error_bound,
       spec_q2_k, base_q2_k, {80, 82}},
      {"q3_k", FormatId::gguf_q3_k, 3, 256, 110, gguf_q3_k_quantize_ref, gguf_q3_k_dequantize_ref,
       gguf_q3_k_error_bound, spec_q3_k, base_q3_k, {108}},
      {"q4_k", FormatId::gguf_q4_k, 4, 256, 144, gguf_q4_k_quantize_ref, gguf_q4_k_dequantize_ref,
       gguf_q4_k_error_bound, spec_q4_k, base_q4_k, {0, 2}},
      {"q5_k", FormatId::gguf_q5_k, 5, 256, 176, gguf_q5_k_quantize_ref, gguf_q5_k_dequantize_ref,
       gguf_q5_k_error_bound, spec_q5_k, base_q5_k, {0, 2}},
      {"q6_k", FormatId::gguf_q6_k, 6, 256, 210, gguf_q6_k_quantize_ref, gguf_q6_k_dequantize_ref,
       gguf_q6_k_error_bound, spec_q6_k, base_q6_k, {208}},
      {"q8_k", FormatId::gguf_q8_k, 8, 256, 292, gguf_q8_k_quantize_ref, gguf_q8_k_dequantize_ref,
       gguf_q8_k_error_bound, spec_q8_k, base_q8_k, {}, 0},
      {"iq4_nl", FormatId::gguf_iq4_nl, 4, 32, 18, gguf_iq4_nl_quantize_ref, gguf_iq4_nl_dequantize_ref,
       gguf_iq4_nl_error_bound, spec_iq4_nl, base_iq4_nl, {0}},
      {"tq1_0", FormatId::gguf_tq1_0, 2, 256, 54, gguf_tq1_0_quantize_ref, gguf_tq1_0_dequantize_ref,
       gguf_tq1_0_error_bound, spec_tq1_0, base_ternary, {52}},
      {"tq2_0", FormatId::gguf_tq2_0, 2, 256, 66, gguf_tq2_0_quantize_ref, gguf_tq2_0_dequantize_ref,
       gguf_tq2_0_error_bound, spec_tq2_0, base_ternary, {64}},
  };
  return kFormats;
}

Scheme scheme_of(const Format& f) {
  Scheme s;
  s.format = f.id;
  s.bits = f.bits;
  s.granularity = Granularity::group;
  s.group_size = f.block;
  return s;
}

// Heavy-tailed data: Student-t (3 dof) times a per-row scale, with rare large outliers.
std::vector<float> heavy_tailed(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> t3(3.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = 0.5f + 2.0f * u(rng);
    for (int64_t c = 0; c < cols; ++c) {
      float v = t3(rng) * scale;
      if (u(rng) < 0.003f) v *= 12.0f;
      w[static_cast<size_t>(r * cols + c)] = v;
    }
  }
  return w;
}

QuantizedTensor quantize_ok(const Format& f, const std::vector<float>& w, int64_t rows, int64_t cols,
                            const QuantizeOptions& opt = {}) {
  QuantizedTensor q;
  const Status st = f.quantize(scheme_of(f), w.data(), rows, cols, opt, &q);
  EXPECT_TRUE(st.is_ok()) << f.name << ": " << st.to_string();
  return q;
}

std::vector<float> dequantize(const Format& f, const QuantizedTensor& q) {
  std::vector<float> y(static_cast<size_t>(q.rows * q.cols));
  f.dequantize(q, y.data());
  return y;
}

double weighted_sq_err(const std::vector<float>& x, const std::vector<float>& y, const float* imp, int64_t cols) {
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - y[i];
    s += (imp ? imp[i % static_cast<size_t>(cols)] : 1.0) * d * d;
  }
  return s;
}

double rmse(const std::vector<float>& x, const std::vector<float>& y) {
  return std::sqrt(weighted_sq_err(x, y, nullptr, 1) / static_cast<double>(x.size()));
}

std::vector<float> baseline_of(const Format& f, const std::vector<float>& w) {
  std::vector<float> y(w.size());
  for (size_t b = 0; b < w.size(); b += static_cast<size_t>(f.block)) f.baseline(w.data() + b, y.data() + b);
  return y;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

TEST(GgufBlocks, StructSizesMatchGgml) {
  using namespace qforge::formats::gguf;
  const size_t sizes[] = {sizeof(BlockQ8_0), sizeof(BlockQ4_0), sizeof(BlockQ4_1),  sizeof(BlockQ5_0),
                          sizeof(BlockQ5_1), sizeof(BlockQ2_K), sizeof(BlockQ3_K),  sizeof(BlockQ4_K),
                          sizeof(BlockQ5_K), sizeof(BlockQ6_K), sizeof(BlockQ8_K),  sizeof(BlockIQ4_NL),
                          sizeof(BlockTQ1_0), sizeof(BlockTQ2_0)};
  ASSERT_EQ(std::size(sizes), formats().size());
  for (size_t i = 0; i < formats().size(); ++i) EXPECT_EQ(sizes[i], static_cast<size_t>(formats()[i].bytes)) << formats()[i].name;
}

// Hand-built blocks (random bytes, finite chosen scales) dequantize exactly to the spec formula.
TEST(GgufBlocks, HandBuiltBlocksMatchSpecFormula) {
  const uint16_t kScales[] = {0x3C00 /* 1 */, 0x2E66 /* ~0.1 */, 0xB800 /* -0.5 */, 0x1E00 /* ~0.0059 */,
                              0x0203 /* subnormal */, 0x5640 /* 100 */};
  std::mt19937 rng(7);
  for (const Format& f : formats()) {
    SCOPED_TRACE(f.name);
    const int nblocks = 24;
    QuantizedTensor q;
    q.scheme = scheme_of(f);
    q.rows = 2;
    q.cols = static_cast<int64_t>(nblocks / 2) * f.block;
    q.codes.resize(static_cast<size_t>(nblocks * f.bytes));
    for (auto& b : q.codes) b = static_cast<uint8_t>(rng());
    for (int i = 0; i < nblocks; ++i) {
      uint8_t* blk = q.codes.data() + i * f.bytes;
      for (size_t k = 0; k < f.f16_offsets.size(); ++k)
        wr16(blk + f.f16_offsets[k], kScales[(i + 2 * k) % std::size(kScales)]);
      if (f.f32_offset >= 0) {
        const float d = 0.0123f * static_cast<float>(i + 1) * (i % 2 ? -1.0f : 1.0f);
        std::memcpy(blk + f.f32_offset, &d, 4);
      }
    }
    // Edge codes: first block all 0x00, second all 0xFF (scales kept finite).
    for (int i = 0; i < 2; ++i) {
      uint8_t* blk = q.codes.data() + i * f.bytes;
      std::vector<uint8_t> keep(blk, blk + f.bytes);
      std::memset(blk, i == 0 ? 0x00 : 0xFF, static_cast<size_t>(f.bytes));
      for (int off : f.f16_offsets) std::memcpy(blk + off, keep.data() + off, 2);
      if (f.f32_offset >= 0) std::memcpy(blk + f.f32_offset, keep.data() + f.f32_offset, 4);
    }
    const std::vector<float> got = dequantize(f, q);
    std::vector<float> want(got.size());
    for (int i = 0; i < nblocks; ++i) f.spec(q.codes.data() + i * f.bytes, want.data() + i * f.block);
    int mismatches = 0;
    for (size_t i = 0; i < got.size() && mismatches < 5; ++i) {
      if (std::memcmp(&got[i], &want[i], 4) != 0) {
        ADD_FAILURE() << f.name << " element " << i << " (block " << i / f.block << "): got " << got[i]
                      << ", spec " << want[i];
        ++mismatches;
      }
    }
  }
}

// A few fully hand-computed values, independent of any loop: Q4_0, Q4_K, Q6_K, TQ1_0.
TEST(GgufBlocks, HandComputedValues) {
  {  // Q4_0, d = 0.5: qs[0] = 0x3A -> element 0: 0xA - 8 = 2 -> 1.0; element 16: 3 - 8 = -5 -> -2.5
    QuantizedTensor q;
    q.scheme = scheme_of(formats()[1]);
    q.rows = 1;
    q.cols = 32;
    q.codes.assign(18, 0x88);  // every other code 8 -> 0
    wr16(q.codes.data(), 0x3800);
    q.codes[2] = 0x3A;
    std::vector<float> y(32);
    gguf_q4_0_dequantize_ref(q, y.data());
    EXPECT_EQ(y[0], 1.0f);
    EXPECT_EQ(y[16], -2.5f);
    EXPECT_EQ(y[1], 0.0f);
  }
  {  // Q4_K, d = 1, dmin = 0.25; sub-block 5: sc = (byte 9 low) | (byte 1 >> 6) << 4 = 3 | 1 << 4 = 19,
     // m = (byte 9 high) | (byte 5 >> 6) << 4 = 2 | 2 << 4 = 34; element 5 * 32 + 3 = 163 is in
     // qs[16 + 32 * 2 + 3] high nibble = 7 -> 19 * 7 - 0.25 * 34 = 124.5.
    QuantizedTensor q;
    q.scheme = scheme_of(formats()[7]);
    q.rows = 1;
    q.cols = 256;
    q.codes.assign(144, 0);
    wr16(q.codes.data(), 0x3C00);
    wr16(q.codes.data() + 2, 0x3400);
    uint8_t* s = q.codes.data() + 4;
    s[9] = 0x23;
    s[1] = 0x40;
    s[5] = 0x80;
    q.codes[16 + 64 + 3] = 0x70;
    std::vector<float> y(256);
    gguf_q4_k_dequantize_ref(q, y.data());
    EXPECT_EQ(y[163], 124.5f);
    EXPECT_EQ(y[160], -8.5f);  // same sub-block, code 0
    EXPECT_EQ(y[131], 0.0f);   // sub-block 4: scale and min 0
  }
  {  // Q6_K, d = 0.5; element 200 = 128 + 32 * 2 + 8: low = ql[64 + 8] high nibble, high = qh[32 + 8]
     // bits 4..5; scale = scales[12] = -3. ql = 0x50 -> 5, qh = 0x30 -> 3: q = 5 | 48 = 53 - 32 = 21.
    QuantizedTensor q;
    q.scheme = scheme_of(formats()[9]);
    q.rows = 1;
    q.cols = 256;
    q.codes.assign(210, 0);
    wr16(q.codes.data() + 208, 0x3800);
    q.codes[64 + 8] = 0x50;
    q.codes[128 + 32 + 8] = 0x30;
    q.codes[192 + 12] = static_cast<uint8_t>(-3);
    std::vector<float> y(256);
    gguf_q6_k_dequantize_ref(q, y.data());
    EXPECT_EQ(y[200], -31.5f);  // 0.5 * -3 * 21
  }
  {  // TQ1_0, d = 2: byte 0 = ceil(256 * v / 243) for trits (2, 0, 1, 1, 0): v = 162 + 9 + 3 = 174
     // -> 184; elements 0, 32, 64, 96, 128 = 2, -2, 0, 0, -2.
    QuantizedTensor q;
    q.scheme = scheme_of(formats()[12]);
    q.rows = 1;
    q.cols = 256;
    q.codes.assign(54, 0);
    wr16(q.codes.data() + 52, 0x4000);
    q.codes[0] = 184;
    std::vector<float> y(256);
    gguf_tq1_0_dequantize_ref(q, y.data());
    EXPECT_EQ(y[0], 2.0f);
    EXPECT_EQ(y[32], -2.0f);
    EXPECT_EQ(y[64], 0.0f);
    EXPECT_EQ(y[96], 0.0f);
    EXPECT_EQ(y[128], -2.0f);
    EXPECT_EQ(y[1], -2.0f);  // byte 1 = 0: all trits 0
  }
}

// Every element of quantize -> dequantize is within bound * block absmax.
TEST(GgufBlocks, RoundTripWithinErrorBound) {
  const int64_t rows = 12, cols = 1024;
  const std::vector<float> w = heavy_tailed(rows, cols, 11);
  for (const Format& f : formats()) {
    SCOPED_TRACE(f.name);
    const QuantizedTensor q = quantize_ok(f, w, rows, cols);
    ASSERT_EQ(q.codes.size(), static_cast<size_t>(rows * (cols / f.block) * f.bytes));
    EXPECT_TRUE(q.scales.empty() && q.zeros.empty() && q.extra.empty());
    const std::vector<float> y = dequantize(f, q);
    const double bound = f.bound(scheme_of(f));
    double worst_ratio = 0;
    for (size_t b = 0; b < w.size(); b += static_cast<size_t>(f.block)) {
      float absmax = 0;
      for (int i = 0; i < f.block; ++i) absmax = std::max(absmax, std::fabs(w[b + i]));
      for (int i = 0; i < f.block; ++i) {
        const double err = std::fabs(static_cast<double>(w[b + i]) - y[b + i]);
        worst_ratio = std::max(worst_ratio, err / absmax);
        ASSERT_LE(err, bound * absmax) << f.name << " element " << b + i << ": |" << w[b + i] << " - " << y[b + i]
                                       << "| = " << err << " > allowed " << bound * absmax;
      }
    }
    EXPECT_GT(worst_ratio, 0.0);
  }
}

TEST(GgufBlocks, AllZeroBlocksAreExact) {
  const int64_t rows = 3, cols = 512;
  // Rows 0 and 2 are zero; row 1 is zero in its first 256 columns, non-zero after.
  std::vector<float> w(static_cast<size_t>(rows * cols), 0.0f);
  for (int64_t c = 256; c < cols; ++c) w[static_cast<size_t>(cols + c)] = 0.01f * static_cast<float>(c % 7 - 3);
  for (const Format& f : formats()) {
    SCOPED_TRACE(f.name);
    const std::vector<float> y = dequantize(f, quantize_ok(f, w, rows, cols));
    for (int64_t i = 0; i < rows * cols; ++i) {
      const bool in_zero_block = i / cols != 1 || i % cols < 256;
      if (in_zero_block) {
        ASSERT_EQ(y[static_cast<size_t>(i)], 0.0f) << f.name << " element " << i;
      }
    }
  }
}

// One large outlier per block: still within the bound (relative to that outlier), and the
// outlier itself is reconstructed within the bound.
TEST(GgufBlocks, OneOutlierPerBlock) {
  const int64_t rows = 4, cols = 512;
  std::mt19937 rng(3);
  std::normal_distribution<float> n01(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = n01(rng);
  for (size_t b = 0; b < w.size(); b += 32) w[b + (b / 32) % 32] = (b / 32) % 2 ? 40.0f : -25.0f;
  for (const Format& f : formats()) {
    SCOPED_TRACE(f.name);
    const std::vector<float> y = dequantize(f, quantize_ok(f, w, rows, cols));
    const double bound = f.bound(scheme_of(f));
    for (size_t b = 0; b < w.size(); b += static_cast<size_t>(f.block)) {
      float absmax = 0;
      for (int i = 0; i < f.block; ++i) absmax = std::max(absmax, std::fabs(w[b + i]));
      for (int i = 0; i < f.block; ++i)
        ASSERT_LE(std::fabs(static_cast<double>(w[b + i]) - y[b + i]), bound * absmax)
            << f.name << " element " << b + i << " (" << w[b + i] << " -> " << y[b + i] << ")";
    }
  }
}

TEST(GgufBlocks, DeterministicAcrossRunsAndThreadCounts) {
  const int64_t rows = 16, cols = 512;
  const std::vector<float> w = heavy_tailed(rows, cols, 5);
  std::vector<float> imp(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) imp[static_cast<size_t>(c)] = 0.1f + static_cast<float>(c % 13);
  QuantizeOptions opt;
  opt.importance = imp.data();
  opt.importance_size = imp.size();
  const int threads = omp_get_max_threads();
  for (const Format& f : formats()) {
    SCOPED_TRACE(f.name);
    const QuantizedTensor a = quantize_ok(f, w, rows, cols, opt);
    omp_set_num_threads(1);
    const QuantizedTensor b = quantize_ok(f, w, rows, cols, opt);
    omp_set_num_threads(std::max(threads, 3));
    const QuantizedTensor c = quantize_ok(f, w, rows, cols, opt);
    omp_set_num_threads(threads);
    EXPECT_EQ(a.codes, b.codes);
    EXPECT_EQ(a.codes, c.codes);
  }
}

TEST(GgufBlocks, RejectsBadShapesAndOptions) {
  std::vector<float> w(256 * 3, 0.5f);
  for (const Format& f : formats()) {
    SCOPED_TRACE(f.name);
    QuantizedTensor q;
    const Scheme s = scheme_of(f);
    // Rows whose length is not a multiple of the block.
    Status st = f.quantize(s, w.data(), 1, f.block + 16, {}, &q);
    EXPECT_EQ(st.code(), ErrorCode::invalid_argument);
    EXPECT_NE(st.message().find("multiple"), std::string::npos) << st.message();
    // Importance of the wrong size, negative importance, NaN weights, bad clip ratio.
    std::vector<float> imp(7, 1.0f);
    QuantizeOptions opt;
    opt.importance = imp.data();
    opt.importance_size = imp.size();
    EXPECT_FALSE(f.quantize(s, w.data(), 1, f.block, opt, &q).is_ok());
    imp.assign(static_cast<size_t>(f.block), 1.0f);
    imp[3] = -1.0f;
    opt.importance = imp.data();
    opt.importance_size = imp.size();
    EXPECT_FALSE(f.quantize(s, w.data(), 1, f.block, opt, &q).is_ok());
    std::vector<float> bad(w);
    bad[5] = std::nanf("");
    st = f.quantize(s, bad.data(), 1, f.block, {}, &q);
    EXPECT_FALSE(st.is_ok());
    EXPECT_NE(st.message().find("element 5"), std::string::npos) << st.message();
    QuantizeOptions clip;
    clip.clip_ratio = 0.0f;
    EXPECT_FALSE(f.quantize(s, w.data(), 1, f.block, clip, &q).is_ok());
  }
}

TEST(GgufBlocks, ScaleOverflowIsAnError) {
  for (const Format& f : formats()) {
    SCOPED_TRACE(f.name);
    if (f.f32_offset >= 0) continue;  // Q8_K's f32 scale holds any finite block
    std::vector<float> w(static_cast<size_t>(f.block), 1.0f);
    w[1] = 3.0e38f;
    QuantizedTensor q;
    const Status st = f.quantize(scheme_of(f), w.data(), 1, f.block, {}, &q);
    EXPECT_EQ(st.code(), ErrorCode::invalid_argument);
    EXPECT_NE(st.message().find("row 0, block 0"), std::string::npos) << st.message();
  }
}

// The search never loses to the plain encoding of the same layout (RMSE over random data).
TEST(GgufBlocks, SearchBeatsPlainBaselineOnRandomData) {
  const int64_t rows = 16, cols = 2048;
  for (uint32_t seed : {21u, 22u}) {
    const std::vector<float> w = heavy_tailed(rows, cols, seed);
    for (const Format& f : formats()) {
      SCOPED_TRACE(f.name);
      const double searched = rmse(w, dequantize(f, quantize_ok(f, w, rows, cols)));
      const double plain = rmse(w, baseline_of(f, w));
      EXPECT_LE(searched, plain) << f.name << ": search RMSE " << searched << " vs plain " << plain;
      std::printf("[ quality  ] %-7s seed %u: RMSE search %.5f, plain %.5f (%.1f%% lower)\n", f.name, seed, searched,
                  plain, 100.0 * (1.0 - searched / plain));
    }
  }
}

// Importance weights: the weighted error of the weighted search is lower than that of the
// unweighted search, for per-column (imatrix-like) and per-element importance.
TEST(GgufBlocks, ImportanceLowersWeightedError) {
  const int64_t rows = 16, cols = 1024;
  const std::vector<float> w = heavy_tailed(rows, cols, 31);
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> logu(-4.0f, 4.0f);
  std::vector<float> imp_col(static_cast<size_t>(cols));
  for (auto& v : imp_col) v = std::exp(logu(rng));
  std::vector<float> imp_el(w.size());
  for (auto& v : imp_el) v = std::exp(logu(rng));
  for (const Format& f : formats()) {
    SCOPED_TRACE(f.name);
    const std::vector<float> plain = dequantize(f, quantize_ok(f, w, rows, cols));
    QuantizeOptions opt;
    opt.importance = imp_col.data();
    opt.importance_size = imp_col.size();
    const std::vector<float> weighted = dequantize(f, quantize_ok(f, w, rows, cols, opt));
    const double e_plain = weighted_sq_err(w, plain, imp_col.data(), cols);
    const double e_weighted = weighted_sq_err(w, weighted, imp_col.data(), cols);
    EXPECT_LT(e_weighted, e_plain) << f.name << " per-column importance";

    opt.importance = imp_el.data();
    opt.importance_size = imp_el.size();
    const std::vector<float> weighted_el = dequantize(f, quantize_ok(f, w, rows, cols, opt));
    const double e_plain_el = weighted_sq_err(w, plain, imp_el.data(), static_cast<int64_t>(w.size()));
    const double e_weighted_el = weighted_sq_err(w, weighted_el, imp_el.data(), static_cast<int64_t>(w.size()));
    EXPECT_LT(e_weighted_el, e_plain_el) << f.name << " per-element importance";
    std::printf("[ imatrix  ] %-7s weighted error: per-column %.1f%% lower, per-element %.1f%% lower\n", f.name,
                100.0 * (1.0 - e_weighted / e_plain), 100.0 * (1.0 - e_weighted_el / e_plain_el));
  }
}

TEST(GgufBlocks, Q8KRoundTripAndBlockSums) {
  const Format& f = formats()[10];
  ASSERT_STREQ(f.name, "q8_k");
  const int64_t rows = 4, cols = 1024;
  const std::vector<float> w = heavy_tailed(rows, cols, 8);
  const QuantizedTensor q = quantize_ok(f, w, rows, cols);
  const std::vector<float> y = dequantize(f, q);
  for (size_t b = 0; b < q.codes.size(); b += 292) {
    const uint8_t* blk = q.codes.data() + b;
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += static_cast<int8_t>(blk[4 + 16 * g + i]);
      const int16_t stored = static_cast<int16_t>(rd16(blk + 260 + 2 * g));
      ASSERT_EQ(stored, sum) << "block " << b / 292 << " group " << g;
    }
    for (int i = 0; i < 256; ++i) ASSERT_GE(static_cast<int8_t>(blk[4 + i]), -127);
  }
  // Data on an int8 grid with a full-range value per block round-trips exactly.
  std::vector<float> grid(w.size());
  std::mt19937 rng(12);
  for (size_t i = 0; i < grid.size(); ++i)
    grid[i] = 0.125f * static_cast<float>(i % 256 == 17 ? -127 : static_cast<int>(rng() % 255) - 127);
  const std::vector<float> g = dequantize(f, quantize_ok(f, grid, rows, cols));
  for (size_t i = 0; i < grid.size(); ++i) ASSERT_EQ(g[i], grid[i]) << "element " << i;
  double worst = 0;
  for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(y[i]) - w[i]));
  EXPECT_GT(worst, 0.0);
}

TEST(GgufBlocks, TernaryDataIsExact) {
  const int64_t rows = 6, cols = 1024;
  std::mt19937 rng(4);
  const float kAmps[] = {1.0f, 0.75f, 0.0234375f, 3.5f};  // exact in f16
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      w[static_cast<size_t>(r * cols + c)] =
          kAmps[(r + c / 256) % 4] * static_cast<float>(static_cast<int>(rng() % 3) - 1);
  for (const Format& f : formats()) {
    if (std::string_view(f.name).substr(0, 2) != "tq") continue;
    SCOPED_TRACE(f.name);
    const std::vector<float> y = dequantize(f, quantize_ok(f, w, rows, cols));
    for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(y[i], w[i]) << f.name << " element " << i;
  }
}

// A second independent check of the TQ1_0 packing: the base-3 value of each byte, decoded with
// floor(243 b / 256), equals ggml's multiply-and-shift trit extraction for all 256 bytes.
TEST(GgufBlocks, Tq1TritExtractionMatchesBase3) {
  for (int b = 0; b < 256; ++b)
    for (int n = 0; n < 5; ++n) ASSERT_EQ(gguf::tq1_trit(static_cast<uint8_t>(b), n), spec_trit(static_cast<uint8_t>(b), n));
  const int kPow[5] = {81, 27, 9, 3, 1};
  int t[5];
  for (int v = 0; v < 243; ++v) {
    for (int n = 0; n < 5; ++n) t[n] = (v / kPow[n]) % 3;
    const uint8_t byte = gguf::tq1_pack(t, 5);
    for (int n = 0; n < 5; ++n) ASSERT_EQ(spec_trit(byte, n), t[n]) << "v " << v << " trit " << n;
  }
}

// The table rows: names (lower and ggml's upper case), GGML type ids, validation, and the
// public quantize / dequantize entry points.
TEST(GgufBlocks, TableRowsNamesAndPublicApi) {
  const int ggml_types[] = {8, 2, 3, 6, 7, 10, 11, 12, 13, 14, 15, 20, 34, 35};
  const double bits_per_weight[] = {8.5, 4.5, 5.0, 5.5, 6.0, 2.625, 3.4375, 4.5, 5.5, 6.5625, 9.125, 4.5, 1.6875, 2.0625};
  const int64_t rows = 4, cols = 512;
  const std::vector<float> w = heavy_tailed(rows, cols, 77);
  for (size_t i = 0; i < formats().size(); ++i) {
    const Format& f = formats()[i];
    SCOPED_TRACE(f.name);
    const FormatTraits& t = format_traits(f.id);
    EXPECT_STREQ(t.name, f.name);
    EXPECT_EQ(t.gguf_type, ggml_types[i]);
    EXPECT_EQ(find_format_by_gguf_type(ggml_types[i]), &t);
    EXPECT_EQ(t.block, f.block);
    EXPECT_EQ(t.bytes_per_block, f.bytes);
    EXPECT_TRUE(t.blocks_in_codes);
    EXPECT_EQ(t.quantize_ref, f.quantize);
    EXPECT_EQ(t.dequantize_ref, f.dequantize);
    // The GGUF reader/writer keeps its own ggml type table (io/gguf_types.cpp): same geometry.
    const GgmlTypeInfo* gt = find_ggml_type(static_cast<uint32_t>(ggml_types[i]));
    ASSERT_NE(gt, nullptr);
    EXPECT_EQ(gt->block_size, f.block);
    EXPECT_EQ(gt->type_size, static_cast<uint32_t>(f.bytes));
    EXPECT_EQ(Scheme::parse(gt->name).value(), scheme_of(f)) << gt->name;

    auto parsed = Scheme::parse(f.name);
    ASSERT_TRUE(parsed.has_value()) << parsed.status().to_string();
    EXPECT_EQ(*parsed, scheme_of(f));
    EXPECT_EQ(parsed->name(), f.name);
    std::string upper(f.name);
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    auto parsed_upper = Scheme::parse(upper);
    ASSERT_TRUE(parsed_upper.has_value()) << upper << ": " << parsed_upper.status().to_string();
    EXPECT_EQ(*parsed_upper, scheme_of(f));
    EXPECT_FALSE(Scheme::parse(std::string(f.name) + "-g32").has_value());

    EXPECT_TRUE(validate_scheme(scheme_of(f), rows, cols).is_ok());
    const Status bad = validate_scheme(scheme_of(f), rows, cols + f.block / 2);
    EXPECT_FALSE(bad.is_ok());
    EXPECT_NE(bad.message().find("does not divide"), std::string::npos) << bad.message();
    EXPECT_DOUBLE_EQ(scheme_bits_per_weight(scheme_of(f), rows, cols), bits_per_weight[i]);

    auto q = qforge::quantize(scheme_of(f), w.data(), rows, cols);
    ASSERT_TRUE(q.has_value()) << q.status().to_string();
    EXPECT_DOUBLE_EQ(q->bits_per_weight(), bits_per_weight[i]);
    const QuantizedTensor direct = quantize_ok(f, w, rows, cols);
    EXPECT_EQ(q->codes, direct.codes);  // the table runs the same reference quantizer
    std::vector<float> y(w.size());
    ASSERT_TRUE(qforge::dequantize(*q, y.data()).is_ok());
    EXPECT_EQ(y, dequantize(f, direct));
    QuantizedTensor truncated = *q;
    truncated.codes.pop_back();
    EXPECT_FALSE(qforge::dequantize(truncated, y.data()).is_ok());
    EXPECT_FALSE(qforge::quantize(scheme_of(f), w.data(), rows, cols - f.block / 2).has_value());
  }
}

// The search never loses to the plain encoding on any 2-D weight of a real trained model
// (ref-llama-18m: every dimension a multiple of 256). Rows are subsampled evenly (up to 24 per
// weight) to keep the test fast under sanitizers; every weight and every format is covered.
TEST(GgufBlocks, SearchBeatsPlainBaselineOnRefLlama18m) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-18m");
  auto ckpt = SafetensorsCheckpoint::open(test::shared_dir() + "/models/ref-llama-18m");
  ASSERT_TRUE(ckpt.has_value()) << ckpt.status().to_string();
  struct Total {
    double search = 0, plain = 0;
  };
  std::vector<Total> totals(formats().size());
  int weights = 0;
  for (const std::string& name : ckpt->tensor_names()) {
    const SafetensorsTensorInfo* info = ckpt->find(name);
    if (info == nullptr || info->shape.size() != 2) continue;
    auto t = ckpt->tensor(name);
    ASSERT_TRUE(t.has_value()) << t.status().to_string();
    auto f32 = t->to_f32();
    ASSERT_TRUE(f32.has_value()) << f32.status().to_string();
    const int64_t all_rows = f32->dim(0), cols = f32->dim(1);
    ASSERT_EQ(cols % 256, 0) << name;
    const int64_t rows = std::min<int64_t>(all_rows, 24), stride = all_rows / rows;
    std::vector<float> w(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(w.data() + r * cols, f32->data_as<float>() + r * stride * cols, sizeof(float) * static_cast<size_t>(cols));
    ++weights;
    for (size_t i = 0; i < formats().size(); ++i) {
      const Format& f = formats()[i];
      auto q = qforge::quantize(scheme_of(f), w.data(), rows, cols);
      ASSERT_TRUE(q.has_value()) << name << " " << f.name << ": " << q.status().to_string();
      std::vector<float> y(w.size());
      ASSERT_TRUE(qforge::dequantize(*q, y.data()).is_ok());
      const double searched = rmse(w, y), plain = rmse(w, baseline_of(f, w));
      EXPECT_LE(searched, plain) << name << " " << f.name << ": search RMSE " << searched << " vs plain " << plain;
      totals[i].search += searched * searched;
      totals[i].plain += plain * plain;
    }
  }
  EXPECT_EQ(weights, 1 + 12 * 7) << "embedding + 12 layers x (q, k, v, o, gate, up, down)";
  for (size_t i = 0; i < formats().size(); ++i)
    std::printf("[ ref-18m  ] %-7s mean-square error %.1f%% below the plain encoding over %d weights\n",
                formats()[i].name, 100.0 * (1.0 - totals[i].search / totals[i].plain), weights);
}

}  // namespace
}  // namespace qforge
