// GGUF K-quants (super-blocks of 256): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and the intermediate Q8_K.
//
// Dequantization follows ggml's dequantize_row_* exactly (same f32 operations, same order:
// (d * sc) * q - (dmin * m) for the formats with mins, (d * sc) * q for Q3_K / Q6_K).
//
// Quantization, two levels (see gguf_search.h for the shared rules):
//  1. each sub-block gets a proposal: the (scale, min) or signed scale that minimises its
//     weighted squared error, unrounded;
//  2. for a few candidate super-block scales (d, dmin) rounded to f16 (from the proposals, from
//     the plain min-max / absmax proposals, and weighted least-squares refits of d and dmin to the
//     chosen integers), every sub-block picks its quantized scale / min among the three nearest
//     integers of its proposal and RE-QUANTIZES its values against the actual (d * sc, dmin * m);
//     the candidate with the lowest total error (within the format's error bound) wins.
// The plain encoding (sub-block min-max or absmax, scales rounded to the nearest integer) is one
// of the candidates, so the search is never worse than it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "formats/gguf_blocks.h"
#include "formats/gguf_impl.h"
#include "formats/gguf_search.h"
#include "qforge/dtype.h"

namespace qforge::formats {

using namespace gguf;

namespace {

constexpr double kF16U = 1.0 / 2048.0;  // relative rounding error of an f16 (normal range)
constexpr double kBoundSlack = 1.25;    // as in gguf_legacy.cpp

// Worst case of the plain encodings as a fraction of the super-block absmax A (derivation in
// docs/formats.md, "GGUF block formats"). With S = the largest sub-block scale and d = S / smax:
//  Q4_K / Q5_K / Q2_K: a sub-block scale s <= 2A / nmax is off by at most d / 2 after rounding
//    to an integer multiple of d, so the half step is <= (s + d / 2) / 2; the min and the top of
//    the range move by at most dmin / 2 + nmax d / 2, less than that.
//  Q3_K / Q6_K: sub-block scales s = m / -4 (-32); d = S / -32 (-128); values of the sign
//    opposite to m reach only 3 |t| (31 |t|) with |t - s| <= |d| (1 + 64u) (clamp at 31 / 127),
//    losing |s| + 3 |t - s| (|s| + 31 |t - s|).
//  Q8_K: f32 scale, A / 127: half a step.
constexpr double kQ2KBound = kBoundSlack * (31 + kF16U) / 90.0;
constexpr double kQ3KBound = kBoundSlack * (0.25 + 3.0 * (1 + kF16U) * (1 + 64 * kF16U) / 128.0);
constexpr double kQ4KBound = kBoundSlack * (127 + kF16U) / 1890.0;
constexpr double kQ5KBound = kBoundSlack * (127 + kF16U) / 3906.0;
constexpr double kQ6KBound = kBoundSlack * (1.0 / 32 + 31.0 * (1 + kF16U) * (1 + 256 * kF16U) / 4096.0);
constexpr double kQ8KBound = kBoundSlack * (1 + 1e-6) / 254.0;

template <class Block>
Block load_block(const uint8_t* p) {
  Block b;
  std::memcpy(&b, p, sizeof(Block));
  return b;
}

template <class Block>
void store_block(const Block& b, uint8_t* p) {
  std::memcpy(p, &b, sizeof(Block));
}

// (admissible, err) ordering shared by the candidates below.
struct Score {
  double err = std::numeric_limits<double>::infinity();
  bool admissible = false;
  bool valid = false;
};

bool better(const Score& a, const Score& b) {
  if (!a.valid) return false;
  if (!b.valid) return true;
  if (a.admissible != b.admissible) return a.admissible;
  return a.err < b.err;
}

// Error sums may stop once they reach the best admissible error: they can no longer win.
double stop_for(const Score& best) { return best.valid && best.admissible ? best.err : kNoStop; }

// A partial super-block encoding (error `total` so far) cannot beat `best`.
bool cannot_beat(double total, bool admissible, const Score& best) {
  return best.valid && best.admissible && (!admissible || total >= best.err);
}

int round_clamp(float v, int lo, int hi) {
  if (!std::isfinite(v)) return v > 0 ? hi : lo;
  const float c = std::clamp(v, static_cast<float>(lo) - 1.0f, static_cast<float>(hi) + 1.0f);
  return std::clamp(round_small(c), lo, hi);
}

// =============================================================================================
// Formats with mins: y = (d * sc) * q - (dmin * m), q in 0..nmax, sc and m in 0..smax.
// =============================================================================================

struct MinFormat {
  int nsub;     // sub-blocks per super-block
  int sub_len;  // values per sub-block
  int nmax;     // largest code
  int smax;     // largest quantized scale / min
  AffineSearch sub_search;
};

struct MinEncoding {
  float d = 0, dmin = 0;  // f16-rounded
  uint8_t sc[16] = {}, m[16] = {};
  uint8_t q[kQK_K] = {};
  Score score;
};

// Picks, for fixed f16 (d, dmin), each sub-block's (sc, m) among the integers around its
// proposal (s[j] / d, o[j] / dmin) and its codes against the quantized values.
// `beat` is the best complete encoding so far: the evaluation stops (leaving a score that does
// not beat it) as soon as it cannot win.
void choose_min_scales(const float* x, const float* w, const MinFormat& f, float d, float dmin, const float* s,
                       const float* o, float max_err, const Score& beat, MinEncoding* enc) {
  enc->d = d;
  enc->dmin = dmin;
  enc->score = Score{};
  if (!std::isfinite(d) || !std::isfinite(dmin) || d < 0 || dmin < 0) return;
  double total = 0;
  bool admissible = true;
  uint8_t qtmp[32];
  for (int j = 0; j < f.nsub; ++j) {
    const float* xs = x + j * f.sub_len;
    const float* ws = w + j * f.sub_len;
    const int rs = d > 0 ? round_clamp(s[j] / d, 0, f.smax) : 0;
    const int rm = dmin > 0 ? round_clamp(o[j] / dmin, 0, f.smax) : 0;
    Score best;
    for (int sc = std::max(0, rs - 1); sc <= std::min(f.smax, rs + 1); ++sc) {
      if (d == 0 && sc != 0) continue;
      for (int m = std::max(0, rm - 1); m <= std::min(f.smax, rm + 1); ++m) {
        if (dmin == 0 && m != 0) continue;
        const float t = d * static_cast<float>(sc);
        const float off = dmin * static_cast<float>(m);
        double worst = 0;
        Score cand;
        cand.err = affine_codes(xs, ws, f.sub_len, f.nmax, t, -off, qtmp, &worst, stop_for(best));
        cand.admissible = worst <= static_cast<double>(max_err);
        cand.valid = true;
        if (better(cand, best)) {
          best = cand;
          enc->sc[j] = static_cast<uint8_t>(sc);
          enc->m[j] = static_cast<uint8_t>(m);
          std::copy(qtmp, qtmp + f.sub_len, enc->q + j * f.sub_len);
        }
      }
    }
    total += best.err;
    admissible = admissible && best.admissible;
    if (cannot_beat(total, admissible, beat)) break;
  }
  enc->score.err = total;
  enc->score.admissible = admissible;
  enc->score.valid = true;
}

// Weighted least squares of (d, dmin) for fixed integers: x ~ d * (sc q) - dmin * m.
bool refit_min_scales(const float* x, const float* w, const MinFormat& f, const MinEncoding& e, float* d,
                      float* dmin) {
  double a2 = 0, ac = 0, c2 = 0, xa = 0, xc = 0;
  for (int j = 0; j < f.nsub; ++j) {
    for (int i = 0; i < f.sub_len; ++i) {
      const int idx = j * f.sub_len + i;
      const double wi = w[idx];
      const double a = static_cast<double>(e.sc[j]) * e.q[idx];
      const double c = e.m[j];
      a2 += wi * a * a;
      ac += wi * a * c;
      c2 += wi * c * c;
      xa += wi * x[idx] * a;
      xc += wi * x[idx] * c;
    }
  }
  if (!(a2 > 0)) return false;
  double dd = xa / a2, gg = 0;
  const double det = a2 * c2 - ac * ac;
  if (c2 > 0 && det > 1e-12 * a2 * c2) {
    dd = (xa * c2 - ac * xc) / det;
    gg = (ac * xa - a2 * xc) / det;
    if (gg < 0) {
      gg = 0;
      dd = xa / a2;
    }
  } else {
    gg = e.dmin;  // no mins in use: keep dmin
  }
  if (!(dd > 0)) return false;
  *d = store_scale(static_cast<float>(dd), ScaleStore::f16);
  *dmin = store_scale(static_cast<float>(gg), ScaleStore::f16);
  return true;
}

// Full search for one super-block; false when the scales overflow f16.
bool encode_min_superblock(const float* x, const float* w, const MinFormat& f, float max_err, MinEncoding* out) {
  float s[16], o[16], sb[16], ob[16];
  uint8_t qtmp[32];
  const float inf = std::numeric_limits<float>::infinity();
  for (int j = 0; j < f.nsub; ++j) {
    const float* xs = x + j * f.sub_len;
    float lo = 0, hi = xs[0];
    for (int i = 0; i < f.sub_len; ++i) {
      lo = std::min(lo, xs[i]);
      hi = std::max(hi, xs[i]);
    }
    sb[j] = (hi - lo) / static_cast<float>(f.nmax);  // plain min-max, min clamped to <= 0
    ob[j] = -lo;
    const AffineResult r = search_affine(xs, w + j * f.sub_len, f.sub_len, f.sub_search, ScaleStore::exact, inf, qtmp);
    s[j] = r.s;
    o[j] = -r.b;
  }
  auto max_of = [&](const float* v) {
    float m = 0;
    for (int j = 0; j < f.nsub; ++j) m = std::max(m, v[j]);
    return m;
  };
  const float smax = static_cast<float>(f.smax);

  MinEncoding cand;
  *out = MinEncoding{};
  auto consider = [&](float d, float dmin, const float* ps, const float* po) {
    choose_min_scales(x, w, f, d, dmin, ps, po, max_err, out->score, &cand);
    if (better(cand.score, out->score)) *out = cand;
  };
  // The plain encoding first, then the searched proposals.
  consider(store_scale(max_of(sb) / smax, ScaleStore::f16), store_scale(max_of(ob) / smax, ScaleStore::f16), sb, ob);
  const float ds = max_of(s), dos = max_of(o);
  consider(store_scale(ds / smax, ScaleStore::f16), store_scale(dos / smax, ScaleStore::f16), s, o);
  // Slightly smaller super scales let the largest sub-block scales use the top codes better.
  for (float delta : {0.5f, 1.0f, 2.0f}) {
    consider(store_scale(ds / (smax + delta), ScaleStore::f16), store_scale(dos / (smax + delta), ScaleStore::f16),
             s, o);
  }
  for (int it = 0; it < 4 && out->score.valid; ++it) {
    float d, dmin;
    if (!refit_min_scales(x, w, f, *out, &d, &dmin)) break;
    if (d == out->d && dmin == out->dmin) break;
    const Score before = out->score;
    consider(d, dmin, s, o);
    if (!better(out->score, before)) break;
  }
  return out->score.valid;
}

MinFormat q2_k_format() {
  MinFormat f{16, 16, 3, 15, {}};
  f.sub_search.nmax = 3;
  f.sub_search.delta_min = -0.5f;
  f.sub_search.delta_max = 1.0f;
  f.sub_search.delta_step = 0.1f;
  f.sub_search.offset_nonpositive = true;
  return f;
}

MinFormat q4_k_format() {
  MinFormat f{8, 32, 15, 63, {}};
  f.sub_search.nmax = 15;
  f.sub_search.delta_min = -1.0f;
  f.sub_search.delta_max = 1.5f;
  f.sub_search.delta_step = 0.125f;
  f.sub_search.offset_nonpositive = true;
  return f;
}

MinFormat q5_k_format() {
  MinFormat f{8, 32, 31, 63, {}};
  f.sub_search.nmax = 31;
  f.sub_search.delta_min = -1.0f;
  f.sub_search.delta_max = 2.0f;
  f.sub_search.delta_step = 0.25f;
  f.sub_search.offset_nonpositive = true;
  return f;
}

bool encode_q2_k(const float* x, const float* w, float max_err, uint8_t* out) {
  MinEncoding e;
  if (!encode_min_superblock(x, w, q2_k_format(), max_err, &e)) return false;
  BlockQ2_K b{};
  for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<uint8_t>(e.sc[j] | (e.m[j] << 4));
  for (int el = 0; el < kQK_K; ++el) {
    const int byte = 32 * (el / 128) + el % 32;
    const int shift = 2 * ((el % 128) / 32);
    b.qs[byte] = static_cast<uint8_t>(b.qs[byte] | (e.q[el] << shift));
  }
  b.d = f32_to_f16(e.d);
  b.dmin = f32_to_f16(e.dmin);
  store_block(b, out);
  return true;
}

bool encode_q4_k(const float* x, const float* w, float max_err, uint8_t* out) {
  MinEncoding e;
  if (!encode_min_superblock(x, w, q4_k_format(), max_err, &e)) return false;
  BlockQ4_K b{};
  b.d = f32_to_f16(e.d);
  b.dmin = f32_to_f16(e.dmin);
  pack_scale_min_k4(e.sc, e.m, b.scales);
  for (int el = 0; el < kQK_K; ++el) {
    const int byte = 32 * (el / 64) + el % 32;
    const int shift = 4 * ((el % 64) / 32);
    b.qs[byte] = static_cast<uint8_t>(b.qs[byte] | ((e.q[el] & 0xF) << shift));
  }
  store_block(b, out);
  return true;
}

bool encode_q5_k(const float* x, const float* w, float max_err, uint8_t* out) {
  MinEncoding e;
  if (!encode_min_superblock(x, w, q5_k_format(), max_err, &e)) return false;
  BlockQ5_K b{};
  b.d = f32_to_f16(e.d);
  b.dmin = f32_to_f16(e.dmin);
  pack_scale_min_k4(e.sc, e.m, b.scales);
  for (int el = 0; el < kQK_K; ++el) {
    const int byte = 32 * (el / 64) + el % 32;
    const int shift = 4 * ((el % 64) / 32);
    b.qs[byte] = static_cast<uint8_t>(b.qs[byte] | ((e.q[el] & 0xF) << shift));
    b.qh[el % 32] = static_cast<uint8_t>(b.qh[el % 32] | (((e.q[el] >> 4) & 1) << (el / 32)));
  }
  store_block(b, out);
  return true;
}

// =============================================================================================
// Signed sub-block scales: y = (d * sc) * q, sc in sclo..schi, q in levels.lo..levels.hi.
// =============================================================================================

struct SymFormat {
  int sclo, schi;  // quantized sub-block scale range
  SymmetricSearch sub_search;
};
constexpr int kSymSub = 16;  // Q3_K and Q6_K: 16 sub-blocks of 16

struct SymEncoding {
  float d = 0;
  int sc[kSymSub] = {};
  uint8_t k[kQK_K] = {};  // level indices
  Score score;
};

void choose_sym_scales(const float* x, const float* w, const SymFormat& f, float d, const float* s, float max_err,
                       const Score& beat, SymEncoding* enc) {
  enc->d = d;
  enc->score = Score{};
  if (!std::isfinite(d)) return;
  const Levels& lv = f.sub_search.levels;
  double total = 0;
  bool admissible = true;
  uint8_t ktmp[kSymSub];
  for (int j = 0; j < kSymSub; ++j) {
    const float* xs = x + j * kSymSub;
    const float* ws = w + j * kSymSub;
    const int r = d != 0 ? round_clamp(s[j] / d, f.sclo, f.schi) : 0;
    Score best;
    for (int sc = std::max(f.sclo, r - 1); sc <= std::min(f.schi, r + 1); ++sc) {
      if (d == 0 && sc != 0) continue;
      const float t = d * static_cast<float>(sc);
      double worst = 0;
      Score cand;
      cand.err = symmetric_codes(xs, ws, kSymSub, lv, t, ktmp, &worst, stop_for(best));
      cand.admissible = worst <= static_cast<double>(max_err);
      cand.valid = true;
      if (better(cand, best)) {
        best = cand;
        enc->sc[j] = sc;
        std::copy(ktmp, ktmp + kSymSub, enc->k + j * kSymSub);
      }
    }
    total += best.err;
    admissible = admissible && best.admissible;
    if (cannot_beat(total, admissible, beat)) break;
  }
  enc->score.err = total;
  enc->score.admissible = admissible;
  enc->score.valid = true;
}

bool encode_sym_superblock(const float* x, const float* w, const SymFormat& f, float max_err, SymEncoding* out) {
  const Levels& lv = f.sub_search.levels;
  const float inf = std::numeric_limits<float>::infinity();
  float s[kSymSub], sb[kSymSub];
  uint8_t ktmp[kSymSub];
  for (int j = 0; j < kSymSub; ++j) {
    const float* xs = x + j * kSymSub;
    float m = 0, amax = 0;
    for (int i = 0; i < kSymSub; ++i) {
      if (std::fabs(xs[i]) > amax) {
        amax = std::fabs(xs[i]);
        m = xs[i];
      }
    }
    sb[j] = m / static_cast<float>(lv.lo);  // plain: the largest magnitude onto the lowest level
    const SymmetricResult r = search_symmetric(xs, w + j * kSymSub, kSymSub, f.sub_search, ScaleStore::exact, inf, ktmp);
    s[j] = r.d;
  }
  auto signed_max = [&](const float* v) {
    float m = 0;
    for (int j = 0; j < kSymSub; ++j)
      if (std::fabs(v[j]) > std::fabs(m)) m = v[j];
    return m;
  };
  const float lo = static_cast<float>(f.sclo), hi = static_cast<float>(f.schi);

  SymEncoding cand;
  *out = SymEncoding{};
  auto consider = [&](float d, const float* ps) {
    choose_sym_scales(x, w, f, d, ps, max_err, out->score, &cand);
    if (better(cand.score, out->score)) *out = cand;
  };
  const float mb = signed_max(sb), ms = signed_max(s);
  consider(store_scale(mb / lo, ScaleStore::f16), sb);  // the plain encoding first
  for (float delta : {0.0f, 0.5f, 1.0f, 2.0f}) {
    consider(store_scale(ms / (lo - delta), ScaleStore::f16), s);
    consider(store_scale(ms / (hi + delta), ScaleStore::f16), s);
  }
  for (int it = 0; it < 4 && out->score.valid; ++it) {
    double num = 0, den = 0;
    for (int j = 0; j < kSymSub; ++j) {
      for (int i = 0; i < kSymSub; ++i) {
        const int idx = j * kSymSub + i;
        const double a = static_cast<double>(out->sc[j]) * lv.value(out->k[idx]);
        num += static_cast<double>(w[idx]) * x[idx] * a;
        den += static_cast<double>(w[idx]) * a * a;
      }
    }
    if (!(den > 0)) break;
    const float d = store_scale(static_cast<float>(num / den), ScaleStore::f16);
    if (d == out->d) break;
    const Score before = out->score;
    consider(d, s);
    if (!better(out->score, before)) break;
  }
  return out->score.valid;
}

SymFormat q3_k_format() {
  SymFormat f{-32, 31, {}};
  f.sub_search.levels.lo = -4;
  f.sub_search.levels.hi = 3;
  f.sub_search.delta_min = -0.5f;
  f.sub_search.delta_max = 1.0f;
  f.sub_search.delta_step = 0.1f;
  return f;
}

SymFormat q6_k_format() {
  SymFormat f{-128, 127, {}};
  f.sub_search.levels.lo = -32;
  f.sub_search.levels.hi = 31;
  f.sub_search.delta_min = -1.0f;
  f.sub_search.delta_max = 2.0f;
  f.sub_search.delta_step = 0.25f;
  return f;
}

bool encode_q3_k(const float* x, const float* w, float max_err, uint8_t* out) {
  SymEncoding e;
  if (!encode_sym_superblock(x, w, q3_k_format(), max_err, &e)) return false;
  BlockQ3_K b{};
  uint8_t stored[16];
  for (int j = 0; j < 16; ++j) stored[j] = static_cast<uint8_t>(e.sc[j] + 32);
  pack_scales_q3_k(stored, b.scales);
  for (int el = 0; el < kQK_K; ++el) {
    const int k = e.k[el];  // level k - 4: low 2 bits, and the high bit set when no -4 applies
    const int byte = 32 * (el / 128) + el % 32;
    const int shift = 2 * ((el % 128) / 32);
    b.qs[byte] = static_cast<uint8_t>(b.qs[byte] | ((k & 3) << shift));
    if (k >= 4) b.hmask[el % 32] = static_cast<uint8_t>(b.hmask[el % 32] | (1 << (el / 32)));
  }
  b.d = f32_to_f16(e.d);
  store_block(b, out);
  return true;
}

bool encode_q6_k(const float* x, const float* w, float max_err, uint8_t* out) {
  SymEncoding e;
  if (!encode_sym_superblock(x, w, q6_k_format(), max_err, &e)) return false;
  BlockQ6_K b{};
  for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<int8_t>(e.sc[j]);
  for (int el = 0; el < kQK_K; ++el) {
    const int k = e.k[el];  // q + 32
    const int n = el / 128, g = (el % 128) / 32, l = el % 32;
    const int lbyte = 64 * n + 32 * (g & 1) + l;
    b.ql[lbyte] = static_cast<uint8_t>(b.ql[lbyte] | ((k & 0xF) << (4 * (g >> 1))));
    b.qh[32 * n + l] = static_cast<uint8_t>(b.qh[32 * n + l] | ((k >> 4) << (2 * g)));
  }
  b.d = f32_to_f16(e.d);
  store_block(b, out);
  return true;
}

bool encode_q8_k(const float* x, const float* w, float max_err, uint8_t* out) {
  SymmetricSearch cfg;
  cfg.levels.lo = -127;  // as ggml: |q| <= 127
  cfg.levels.hi = 127;
  cfg.delta_min = -1.0f;
  cfg.delta_max = 2.0f;
  cfg.delta_step = 0.25f;
  uint8_t k[kQK_K];
  const SymmetricResult r = search_symmetric(x, w, kQK_K, cfg, ScaleStore::f32, max_err, k);
  if (!std::isfinite(r.d)) return false;
  BlockQ8_K b{};
  b.d = r.d;
  for (int j = 0; j < kQK_K; ++j) b.qs[j] = static_cast<int8_t>(cfg.levels.value(k[j]));
  for (int g = 0; g < kQK_K / 16; ++g) {
    int sum = 0;
    for (int i = 0; i < 16; ++i) sum += b.qs[16 * g + i];
    b.bsums[g] = static_cast<int16_t>(sum);
  }
  store_block(b, out);
  return true;
}

// =============================================================================================
// Decoders: ggml's dequantize_row_*, one super-block.
// =============================================================================================

void decode_q2_k(const uint8_t* p, float* y) {
  const auto b = load_block<BlockQ2_K>(p);
  const float d = f16_to_f32(b.d);
  const float dmin = f16_to_f32(b.dmin);
  const uint8_t* q = b.qs;
  int is = 0;
  for (int n = 0; n < kQK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      uint8_t sc = b.scales[is++];
      float dl = d * static_cast<float>(sc & 0xF);
      float ml = dmin * static_cast<float>(sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[l] >> shift) & 3) - ml;
      sc = b.scales[is++];
      dl = d * static_cast<float>(sc & 0xF);
      ml = dmin * static_cast<float>(sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[l + 16] >> shift) & 3) - ml;
      shift += 2;
    }
    q += 32;
  }
}

void decode_q3_k(const uint8_t* p, float* y) {
  const auto b = load_block<BlockQ3_K>(p);
  const float d_all = f16_to_f32(b.d);
  const uint8_t* q = b.qs;
  uint8_t m = 1;
  int is = 0;
  for (int n = 0; n < kQK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d_all * static_cast<float>(static_cast<int>(unpack_scale_q3_k(is++, b.scales)) - 32);
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
          const int v = ((q[l] >> shift) & 3) - ((b.hmask[l] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
      shift += 2;
      m = static_cast<uint8_t>(m << 1);
    }
    q += 32;
  }
}

void decode_q4_k(const uint8_t* p, float* y) {
  const auto b = load_block<BlockQ4_K>(p);
  const float d = f16_to_f32(b.d);
  const float dmin = f16_to_f32(b.dmin);
  const uint8_t* q = b.qs;
  int is = 0;
  for (int j = 0; j < kQK_K; j += 64) {
    uint8_t sc, m;
    unpack_scale_min_k4(is + 0, b.scales, &sc, &m);
    const float d1 = d * static_cast<float>(sc);
    const float m1 = dmin * static_cast<float>(m);
    unpack_scale_min_k4(is + 1, b.scales, &sc, &m);
    const float d2 = d * static_cast<float>(sc);
    const float m2 = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

void decode_q5_k(const uint8_t* p, float* y) {
  const auto b = load_block<BlockQ5_K>(p);
  const float d = f16_to_f32(b.d);
  const float dmin = f16_to_f32(b.dmin);
  const uint8_t* ql = b.qs;
  int is = 0;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < kQK_K; j += 64) {
    uint8_t sc, m;
    unpack_scale_min_k4(is + 0, b.scales, &sc, &m);
    const float d1 = d * static_cast<float>(sc);
    const float m1 = dmin * static_cast<float>(m);
    unpack_scale_min_k4(is + 1, b.scales, &sc, &m);
    const float d2 = d * static_cast<float>(sc);
    const float m2 = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>((ql[l] & 0xF) + (b.qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>((ql[l] >> 4) + (b.qh[l] & u2 ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}

void decode_q6_k(const uint8_t* p, float* y) {
  const auto b = load_block<BlockQ6_K>(p);
  const float d = f16_to_f32(b.d);
  const uint8_t* ql = b.ql;
  const uint8_t* qh = b.qh;
  const int8_t* sc = b.scales;
  for (int n = 0; n < kQK_K; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

void decode_q8_k(const uint8_t* p, float* y) {
  const auto b = load_block<BlockQ8_K>(p);
  for (int j = 0; j < kQK_K; ++j) y[j] = b.d * static_cast<float>(b.qs[j]);
}

}  // namespace

// ---- table entry points ----

Status gguf_q2_k_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("q2_k", kQK_K, sizeof(BlockQ2_K), kQ2KBound, encode_q2_k, s, w, rows, cols, o, out);
}
void gguf_q2_k_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK_K, sizeof(BlockQ2_K), decode_q2_k, out);
}
double gguf_q2_k_error_bound(const Scheme&) { return kQ2KBound; }

Status gguf_q3_k_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("q3_k", kQK_K, sizeof(BlockQ3_K), kQ3KBound, encode_q3_k, s, w, rows, cols, o, out);
}
void gguf_q3_k_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK_K, sizeof(BlockQ3_K), decode_q3_k, out);
}
double gguf_q3_k_error_bound(const Scheme&) { return kQ3KBound; }

Status gguf_q4_k_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("q4_k", kQK_K, sizeof(BlockQ4_K), kQ4KBound, encode_q4_k, s, w, rows, cols, o, out);
}
void gguf_q4_k_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK_K, sizeof(BlockQ4_K), decode_q4_k, out);
}
double gguf_q4_k_error_bound(const Scheme&) { return kQ4KBound; }

Status gguf_q5_k_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("q5_k", kQK_K, sizeof(BlockQ5_K), kQ5KBound, encode_q5_k, s, w, rows, cols, o, out);
}
void gguf_q5_k_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK_K, sizeof(BlockQ5_K), decode_q5_k, out);
}
double gguf_q5_k_error_bound(const Scheme&) { return kQ5KBound; }

Status gguf_q6_k_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("q6_k", kQK_K, sizeof(BlockQ6_K), kQ6KBound, encode_q6_k, s, w, rows, cols, o, out);
}
void gguf_q6_k_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK_K, sizeof(BlockQ6_K), decode_q6_k, out);
}
double gguf_q6_k_error_bound(const Scheme&) { return kQ6KBound; }

Status gguf_q8_k_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("q8_k", kQK_K, sizeof(BlockQ8_K), kQ8KBound, encode_q8_k, s, w, rows, cols, o, out);
}
void gguf_q8_k_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK_K, sizeof(BlockQ8_K), decode_q8_k, out);
}
double gguf_q8_k_error_bound(const Scheme&) { return kQ8KBound; }

}  // namespace qforge::formats
