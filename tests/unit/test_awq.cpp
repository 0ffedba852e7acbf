// AWQ and SmoothQuant math: the Gram-matrix error equals the direct output error, the scale search
// never loses to round-to-nearest and wins clearly on inputs with outlier channels, folds are exact,
// the statistics rescale exactly, the clip search only lowers the error, and SmoothQuant balances
// activation and weight ranges.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "qforge/awq.h"
#include "qforge/smoothquant.h"

namespace qforge {
namespace {

struct Problem {
  int64_t tokens = 512, in = 128, out = 64;
  std::vector<float> x, w;
  std::vector<double> gram, mean_abs;
  std::vector<float> absmax;
};

// Activations with a few strong outlier channels (the situation AWQ and SmoothQuant address).
Problem make_problem(uint32_t seed, int64_t out = 64) {
  Problem p;
  p.out = out;
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  p.x.resize(static_cast<size_t>(p.tokens * p.in));
  for (int64_t t = 0; t < p.tokens; ++t)
    for (int64_t j = 0; j < p.in; ++j) p.x[static_cast<size_t>(t * p.in + j)] = d(rng) * (j % 16 == 3 ? 25.0f : 1.0f);
  p.w.resize(static_cast<size_t>(p.out * p.in));
  for (auto& v : p.w) v = 0.02f * d(rng);
  p.gram.assign(static_cast<size_t>(p.in * p.in), 0.0);
  p.mean_abs.assign(static_cast<size_t>(p.in), 0.0);
  p.absmax.assign(static_cast<size_t>(p.in), 0.0f);
  for (int64_t t = 0; t < p.tokens; ++t)
    for (int64_t i = 0; i < p.in; ++i) {
      const double xi = p.x[static_cast<size_t>(t * p.in + i)];
      p.mean_abs[static_cast<size_t>(i)] += std::fabs(xi) / p.tokens;
      p.absmax[static_cast<size_t>(i)] = std::max(p.absmax[static_cast<size_t>(i)], static_cast<float>(std::fabs(xi)));
      for (int64_t j = 0; j < p.in; ++j) p.gram[static_cast<size_t>(i * p.in + j)] += xi * p.x[static_cast<size_t>(t * p.in + j)];
    }
  return p;
}

double direct_error(const Problem& p, const std::vector<float>& approx) {
  double e = 0;
  for (int64_t t = 0; t < p.tokens; ++t)
    for (int64_t o = 0; o < p.out; ++o) {
      double y = 0;
      for (int64_t i = 0; i < p.in; ++i)
        y += (static_cast<double>(p.w[static_cast<size_t>(o * p.in + i)]) - approx[static_cast<size_t>(o * p.in + i)]) *
             p.x[static_cast<size_t>(t * p.in + i)];
      e += y * y;
    }
  return e;
}

std::vector<float> rtn(const Problem& p, const Scheme& s, const std::vector<float>& w) {
  auto q = quantize(s, w.data(), p.out, p.in);
  EXPECT_TRUE(q.has_value());
  std::vector<float> d(w.size());
  EXPECT_TRUE(dequantize(*q, d.data()).is_ok());
  return d;
}

TEST(Awq, GramErrorEqualsDirectError) {
  const Problem p = make_problem(1);
  const auto approx = rtn(p, *Scheme::parse("int4-g32-asym"), p.w);
  const double a = awq_output_error(p.w.data(), approx.data(), p.out, p.in, p.gram.data());
  const double b = direct_error(p, approx);
  // f32 Gram copy and f32 GEMM: relative error ~ in * 2^-24 per term.
  EXPECT_NEAR(a, b, 1e-4 * b) << a << " vs " << b;
}

TEST(Awq, ScaleSearchBeatsRtnOnOutlierChannels) {
  const Problem p = make_problem(2);
  for (const char* name : {"int4-g32-asym", "int3-g32-asym", "int4-ch-sym"}) {
    const Scheme s = *Scheme::parse(name);
    std::vector<float> w = p.w;
    AwqWeight aw{w.data(), p.out, p.in};
    auto r = awq_search_scales(std::span<const AwqWeight>(&aw, 1), p.gram.data(), p.mean_abs.data(), p.in, s, {});
    ASSERT_TRUE(r.has_value()) << r.status().message();
    // α = 0 is plain RTN: its score must be the direct RTN error.
    const double rtn_err = direct_error(p, rtn(p, s, p.w));
    EXPECT_NEAR(r->error_rtn, rtn_err, 1e-4 * rtn_err) << name;
    EXPECT_LE(r->error, r->error_rtn) << name;
    EXPECT_GT(r->alpha, 0.0) << name;
    EXPECT_LT(r->error, 0.8 * r->error_rtn) << name << ": AWQ scaling should cut the error on outlier channels";
    // Applying the result reproduces the score: quantize W diag(s), divide by s.
    awq_scale_columns(aw, r->scales.data());
    auto q = rtn(p, s, w);
    for (int64_t o = 0; o < p.out; ++o)
      for (int64_t i = 0; i < p.in; ++i) q[static_cast<size_t>(o * p.in + i)] /= r->scales[static_cast<size_t>(i)];
    EXPECT_NEAR(direct_error(p, q), r->error, 1e-3 * r->error) << name;
  }
}

TEST(Awq, FoldsAndRescaledStatsAreExact) {
  Problem p = make_problem(3);
  std::vector<float> s(static_cast<size_t>(p.in));
  for (int64_t j = 0; j < p.in; ++j) s[static_cast<size_t>(j)] = 0.5f + 0.01f * static_cast<float>(j);
  // Column scaling of W and 1/s on X keep X Wᵀ (up to f32 rounding).
  std::vector<float> w = p.w;
  AwqWeight aw{w.data(), p.out, p.in};
  awq_scale_columns(aw, s.data());
  for (int64_t t = 0; t < 4; ++t)
    for (int64_t o = 0; o < p.out; ++o) {
      double a = 0, b = 0, mag = 0;
      for (int64_t i = 0; i < p.in; ++i) {
        const float x = p.x[static_cast<size_t>(t * p.in + i)];
        a += static_cast<double>(x) * p.w[static_cast<size_t>(o * p.in + i)];
        b += static_cast<double>(x / s[static_cast<size_t>(i)]) * w[static_cast<size_t>(o * p.in + i)];
        mag += std::fabs(static_cast<double>(x) * p.w[static_cast<size_t>(o * p.in + i)]);
      }
      ASSERT_NEAR(a, b, 4e-7 * mag);
    }
  // Producer side: rows / s then the consumer's columns * s.
  std::vector<float> up = p.w, bias(static_cast<size_t>(p.out), 1.0f);
  std::vector<float> s_out(s.begin(), s.begin() + p.out);
  awq_unscale_rows(AwqWeight{up.data(), p.out, p.in}, s_out.data(), bias.data());
  EXPECT_FLOAT_EQ(up[5] * s_out[0], p.w[5]);
  EXPECT_FLOAT_EQ(bias[3] * s_out[3], 1.0f);
  // Statistics of X diag(1/s).
  std::vector<double> g = p.gram, m = p.mean_abs;
  awq_rescale_stats(g.data(), m.data(), p.in, s.data());
  double g01 = 0;
  for (int64_t t = 0; t < p.tokens; ++t)
    g01 += static_cast<double>(p.x[static_cast<size_t>(t * p.in)]) / s[0] * p.x[static_cast<size_t>(t * p.in + 1)] / s[1];
  EXPECT_NEAR(g[1], g01, 1e-9 * std::fabs(g01) + 1e-9);
  EXPECT_NEAR(m[7], p.mean_abs[7] / s[7], 1e-12);
}

TEST(Awq, ClipSearchOnlyLowersTheError) {
  const Problem p = make_problem(4);
  for (const char* name : {"int3-g32-asym", "int4-g64-sym"}) {
    const Scheme s = *Scheme::parse(name);
    std::vector<float> w = p.w;
    AwqWeight aw{w.data(), p.out, p.in};
    auto r = awq_search_clip(aw, p.gram.data(), s, {});
    ASSERT_TRUE(r.has_value()) << r.status().message();
    EXPECT_LE(r->error_after, r->error_before) << name;
    EXPECT_GE(r->mean_ratio, 0.55 - 1e-6) << name;
    EXPECT_LE(r->mean_ratio, 1.0) << name;
    // Clamped weights never exceed the originals in magnitude.
    for (size_t k = 0; k < w.size(); ++k) ASSERT_LE(std::fabs(w[k]), std::fabs(p.w[k]));
    // The block-diagonal estimate agrees with the direct error of the clipped weights' quantization
    // only up to the cross-group terms; the full error must still not be worse than plain RTN by more
    // than those terms allow: check it did not explode.
    const double before = direct_error(p, rtn(p, s, p.w));
    const double after = direct_error(p, rtn(p, s, w));
    EXPECT_LT(after, 1.5 * before) << name;
  }
  std::vector<float> w = p.w;
  EXPECT_FALSE(awq_search_clip(AwqWeight{w.data(), p.out, p.in}, p.gram.data(), *Scheme::parse("int8-tensor-sym"), {}).has_value());
}

TEST(SmoothQuant, BalancesActivationAndWeightRanges) {
  const Problem p = make_problem(5);
  std::vector<float> w = p.w;
  AwqWeight aw{w.data(), p.out, p.in};
  auto s = smoothquant_scales(p.absmax.data(), p.in, std::span<const AwqWeight>(&aw, 1), {.alpha = 0.5});
  ASSERT_TRUE(s.has_value());
  std::vector<float> wmax(static_cast<size_t>(p.in), 0.0f);
  for (int64_t o = 0; o < p.out; ++o)
    for (int64_t i = 0; i < p.in; ++i) wmax[static_cast<size_t>(i)] = std::max(wmax[static_cast<size_t>(i)], std::fabs(p.w[static_cast<size_t>(o * p.in + i)]));
  // α = 0.5: after the fold, max|X_j| / s_j == max|W_j| s_j == sqrt(max|X_j| max|W_j|).
  for (int64_t j = 0; j < p.in; ++j) {
    const double a = p.absmax[static_cast<size_t>(j)] / (*s)[static_cast<size_t>(j)];
    const double b = wmax[static_cast<size_t>(j)] * (*s)[static_cast<size_t>(j)];
    ASSERT_NEAR(a, b, 1e-5 * a) << "channel " << j;
  }
  // Folding into a norm divides weight and bias.
  std::vector<float> nw(static_cast<size_t>(p.in), 2.0f), nb(static_cast<size_t>(p.in), 1.0f);
  smoothquant_fold_norm(nw, nb, *s);
  EXPECT_FLOAT_EQ(nw[3] * (*s)[3], 2.0f);
  EXPECT_FLOAT_EQ(nb[3] * (*s)[3], 1.0f);
  // Dead channels keep s = 1; bad alpha is rejected.
  std::vector<float> dead = p.absmax;
  dead[0] = 0.0f;
  auto s2 = smoothquant_scales(dead.data(), p.in, std::span<const AwqWeight>(&aw, 1), {});
  ASSERT_TRUE(s2.has_value());
  EXPECT_EQ((*s2)[0], 1.0f);
  EXPECT_FALSE(smoothquant_scales(p.absmax.data(), p.in, std::span<const AwqWeight>(&aw, 1), {.alpha = 1.5}).has_value());
}

}  // namespace
}  // namespace qforge
