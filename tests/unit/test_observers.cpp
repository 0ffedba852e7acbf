#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "calibration/histogram.h"
#include "qforge/observer.h"

namespace qforge {
namespace {

std::unique_ptr<Observer> make(const std::string& spec, ObserverOptions o = {}) {
  auto obs = make_observer(spec, o);
  EXPECT_TRUE(obs.has_value()) << spec << ": " << obs.status().to_string();
  return obs.has_value() ? std::move(obs).value() : nullptr;
}

std::vector<float> gaussian(size_t n, double sigma, uint64_t seed, double mean = 0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(mean, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = float(dist(rng));
  return v;
}

double quant_mse(const std::vector<float>& x, Range r, int bits, bool symmetric) {
  auto qp = range_to_qparams(r, bits, symmetric);
  EXPECT_TRUE(qp.has_value()) << qp.status().to_string();
  double s = 0;
  for (float v : x) {
    const double e = double(qp->fake_quantize(v)) - double(v);
    s += e * e;
  }
  return s / double(x.size());
}

// Nearest-rank sample quantile: the k-th smallest, k = ceil(q * n).
double nearest_rank(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  size_t k = size_t(std::ceil(q * double(v.size())));
  k = std::clamp<size_t>(k, 1, v.size());
  return v[k - 1];
}

Range observe_all(const std::string& spec, ObserverOptions o, const std::vector<std::vector<float>>& batches,
                  int64_t cols = 1) {
  auto obs = make(spec, o);
  for (const auto& b : batches) {
    Status s = obs->observe(b.data(), int64_t(b.size()) / cols, cols);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
  }
  auto r = obs->range();
  EXPECT_TRUE(r.has_value()) << r.status().to_string();
  return r.has_value() ? *r : Range{};
}

// ---- quantization parameters -------------------------------------------------------------------

TEST(QuantParams, SymmetricRestrictedGrid) {
  auto qp = range_to_qparams({-2.0f, 1.0f}, 8, true);
  ASSERT_TRUE(qp.has_value());
  EXPECT_EQ(qp->qmin, -127);
  EXPECT_EQ(qp->qmax, 127);
  EXPECT_EQ(qp->zero_point, 0);
  EXPECT_FLOAT_EQ(qp->scale, 2.0f / 127);
  EXPECT_EQ(qp->quantize(-2.0f), -127);
  EXPECT_EQ(qp->quantize(5.0f), 127);  // clamped
  EXPECT_EQ(qp->quantize(0.0f), 0);
  auto q4 = range_to_qparams({-0.5f, 0.75f}, 4, true);
  ASSERT_TRUE(q4.has_value());
  EXPECT_EQ(q4->qmax, 7);
  EXPECT_FLOAT_EQ(q4->scale, 0.75f / 7);
}

TEST(QuantParams, AsymmetricContainsZeroExactly) {
  auto qp = range_to_qparams({-1.0f, 3.0f}, 8, false);
  ASSERT_TRUE(qp.has_value());
  EXPECT_EQ(qp->qmin, 0);
  EXPECT_EQ(qp->qmax, 255);
  EXPECT_FLOAT_EQ(qp->scale, 4.0f / 255);
  EXPECT_EQ(qp->zero_point, 64);  // round(1 / (4/255)) = round(63.75)
  EXPECT_EQ(qp->fake_quantize(0.0f), 0.0f);
  EXPECT_NEAR(qp->fake_quantize(3.0f), 3.0f, qp->scale);
  // One-sided data: the range is extended to 0, so zero_point is 0.
  auto pos = range_to_qparams({2.0f, 10.0f}, 4, false);
  ASSERT_TRUE(pos.has_value());
  EXPECT_EQ(pos->zero_point, 0);
  EXPECT_FLOAT_EQ(pos->scale, 10.0f / 15);
}

TEST(QuantParams, DegenerateAndInvalid) {
  auto zero = range_to_qparams({0.0f, 0.0f}, 8, true);
  ASSERT_TRUE(zero.has_value());
  EXPECT_EQ(zero->scale, 1.0f);
  EXPECT_EQ(zero->fake_quantize(0.0f), 0.0f);
  auto tiny = range_to_qparams({0.0f, 1e-44f}, 8, true);
  ASSERT_TRUE(tiny.has_value());
  EXPECT_GE(tiny->scale, std::numeric_limits<float>::min());
  EXPECT_FALSE(range_to_qparams({0, 1}, 1, true).has_value());
  EXPECT_FALSE(range_to_qparams({0, 1}, 17, false).has_value());
  EXPECT_FALSE(range_to_qparams({2, 1}, 8, true).has_value());
  auto nan = range_to_qparams({std::nanf(""), 1}, 8, true);
  ASSERT_FALSE(nan.has_value());
  EXPECT_NE(nan.status().message().find("invalid range"), std::string::npos);
}

TEST(QuantParams, PerChannelHelperNamesTheChannel) {
  auto ok = ranges_to_qparams({{-1, 1}, {0, 4}}, 8, true);
  ASSERT_TRUE(ok.has_value());
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_FLOAT_EQ((*ok)[1].scale, 4.0f / 127);
  auto bad = ranges_to_qparams({{-1, 1}, {3, 2}}, 8, true);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.status().message().find("channel 1"), std::string::npos) << bad.status().message();
}

// ---- minmax and ema ----------------------------------------------------------------------------

TEST(MinMax, ExactAndStreamingEqualsOneBatch) {
  const auto x = gaussian(10007, 1.5, 1);
  const auto [mn, mx] = std::minmax_element(x.begin(), x.end());
  Range one = observe_all("minmax", {}, {x});
  EXPECT_EQ(one.min, *mn);
  EXPECT_EQ(one.max, *mx);
  // Uneven batches.
  std::vector<std::vector<float>> parts;
  for (size_t begin = 0, len = 1; begin < x.size(); begin += len, len = len * 3 + 1) {
    parts.emplace_back(x.begin() + begin, x.begin() + std::min(x.size(), begin + len));
  }
  Range streamed = observe_all("minmax", {}, parts);
  EXPECT_EQ(streamed.min, one.min);
  EXPECT_EQ(streamed.max, one.max);
}

TEST(EmaMinMax, MatchesPyTorchFormula) {
  const double m = 0.2;
  auto obs = make("ema-minmax:0.2");
  double emin = 0, emax = 0;
  for (int b = 0; b < 6; ++b) {
    auto x = gaussian(500, 1.0 + 0.5 * b, 10 + b);
    auto [mn, mx] = std::minmax_element(x.begin(), x.end());
    if (b == 0) {
      emin = *mn;
      emax = *mx;
    } else {
      emin = emin + m * (*mn - emin);
      emax = emax + m * (*mx - emax);
    }
    ASSERT_TRUE(obs->observe(x.data(), 50, 10).is_ok());
    auto r = obs->range();
    ASSERT_TRUE(r.has_value());
    EXPECT_NEAR(r->min, emin, 1e-6 * std::fabs(emin)) << "batch " << b;
    EXPECT_NEAR(r->max, emax, 1e-6 * std::fabs(emax)) << "batch " << b;
  }
  EXPECT_EQ(obs->name(), "ema-minmax:0.2");
  EXPECT_EQ(make("ema-minmax")->options().momentum, 0.01);  // PyTorch's averaging_constant
}

// ---- percentile --------------------------------------------------------------------------------

TEST(Percentile, WithinOneBinOfNearestRankWhileRangeGrows) {
  // Batches of growing spread force the histogram to merge bins and slide several times.
  std::vector<std::vector<float>> batches;
  std::vector<double> all, all_abs;
  for (int b = 0; b < 6; ++b) {
    auto x = gaussian(40000, 0.25 * (1 << b), 100 + b, b == 3 ? -2.0 : 0.0);
    for (float v : x) {
      all.push_back(v);
      all_abs.push_back(std::fabs(double(v)));
    }
    batches.push_back(std::move(x));
  }
  for (double p : {99.0, 99.9, 99.99}) {
    ObserverOptions sym;
    sym.percentile = p;
    auto obs = make("percentile", sym);
    for (const auto& b : batches) ASSERT_TRUE(obs->observe(b.data(), int64_t(b.size()), 1).is_ok());
    auto r = obs->range();
    ASSERT_TRUE(r.has_value());
    const double width = obs->resolution()[0];
    const double span = *std::max_element(all_abs.begin(), all_abs.end());
    EXPECT_LE(width, 2 * span / (sym.histogram_bins - 1)) << "histogram lost resolution";
    const double exact = nearest_rank(all_abs, p / 100);
    const double got = std::max(std::fabs(r->min), std::fabs(r->max));
    EXPECT_LE(std::fabs(got - exact), width * (1 + 1e-9)) << "p=" << p << " got " << got << " exact " << exact;

    ObserverOptions asym = sym;
    asym.symmetric = false;
    auto a = make("percentile", asym);
    for (const auto& b : batches) ASSERT_TRUE(a->observe(b.data(), 100, int64_t(b.size()) / 100).is_ok());
    auto ar = a->range();
    ASSERT_TRUE(ar.has_value());
    const double w = a->resolution()[0];
    const double hi = nearest_rank(all, p / 100), lo = nearest_rank(all, 1 - p / 100);
    EXPECT_LE(std::fabs(ar->max - hi), w * (1 + 1e-9)) << "p=" << p;
    EXPECT_LE(std::fabs(ar->min - lo), w * (1 + 1e-9)) << "p=" << p;
  }
}

TEST(Percentile, HundredIsMinMax) {
  const auto x = gaussian(5000, 2.0, 7);
  ObserverOptions o;
  o.symmetric = false;
  Range r = observe_all("percentile:100", o, {x});
  const auto [mn, mx] = std::minmax_element(x.begin(), x.end());
  EXPECT_EQ(r.max, *mx);
  EXPECT_NEAR(r.min, *mn, 2 * (*mx - *mn) / (o.histogram_bins - 1));
}

// ---- mse ---------------------------------------------------------------------------------------

TEST(Mse, FourBitGaussianClipsAndBeatsMinMax) {
  const auto x = gaussian(100000, 1.0, 3);
  for (bool symmetric : {true, false}) {
    ObserverOptions o;
    o.bits = 4;
    o.symmetric = symmetric;
    Range mse = observe_all("mse", o, {x});
    Range mm = observe_all("minmax", o, {x});
    const double amax = std::max(std::fabs(mm.min), std::fabs(mm.max));
    const double t = symmetric ? std::max(std::fabs(mse.min), std::fabs(mse.max)) : mse.max / mm.max * amax;
    const double ratio = t / amax;
    // Optimal uniform 4-bit clipping of a Gaussian is near 2.5-3 sigma; absmax of 1e5 samples is ~4.4 sigma.
    EXPECT_LT(ratio, 0.8) << (symmetric ? "sym" : "asym");
    EXPECT_GT(ratio, 0.4) << (symmetric ? "sym" : "asym");
    const double e_mse = quant_mse(x, mse, 4, symmetric);
    const double e_mm = quant_mse(x, mm, 4, symmetric);
    EXPECT_LT(e_mse, 0.75 * e_mm) << "mse " << e_mse << " minmax " << e_mm;
    // And it is close to the best clip found by brute force on the data itself.
    double best = std::numeric_limits<double>::infinity();
    for (double rr = 0.3; rr <= 1.0; rr += 0.005) {
      Range cand = symmetric ? Range{float(-rr * amax), float(rr * amax)} : Range{float(rr * mm.min), float(rr * mm.max)};
      best = std::min(best, quant_mse(x, cand, 4, symmetric));
    }
    EXPECT_LE(e_mse, 1.01 * best) << (symmetric ? "sym" : "asym") << ": observer " << e_mse << " brute force " << best;
  }
}

TEST(Mse, ExpectedErrorMatchesEmpiricalError) {
  const auto x = gaussian(300000, 1.0, 5);
  calib::GridHistogram h(4096);
  double amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(double(v)));
  h.cover(0, amax);
  for (float v : x) h.add(std::fabs(double(v)));
  calib::MomentTable table(h);
  EXPECT_DOUBLE_EQ(table.total(), double(x.size()));
  for (int bits : {3, 4, 8}) {
    for (double ratio : {0.4, 0.7, 1.0}) {
      Range r{float(-ratio * amax), float(ratio * amax)};
      auto qp = range_to_qparams(r, bits, true);
      ASSERT_TRUE(qp.has_value());
      const double expected = table.expected_error(*qp, true) / double(x.size());
      const double empirical = quant_mse(x, r, bits, true);
      // The piecewise-uniform model is off by at most the error of bins much narrower than a step.
      EXPECT_NEAR(expected, empirical, 0.02 * empirical) << bits << " bits, ratio " << ratio;
    }
  }
}

// ---- entropy -----------------------------------------------------------------------------------

TEST(Entropy, CandidateQuantizeAndExpandMatchesSlideExample) {
  // "8-bit Inference with TensorRT": P = [1 0 2 3 5 3 1 7] merged into 2 levels = [6, 16], expanded
  // over the non-empty bins = [2 0 2 2 4 4 4 4].
  const std::vector<double> bins = {1, 0, 2, 3, 5, 3, 1, 7};
  const auto q = calib::entropy_candidate_q(bins, 8, 2);
  EXPECT_EQ(q, (std::vector<double>{2, 0, 2, 2, 4, 4, 4, 4}));
}

TEST(Entropy, FastDivergencesEqualReference) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> u(0, 1);
  for (int trial = 0; trial < 4; ++trial) {
    std::vector<double> bins(600);
    for (size_t j = 0; j < bins.size(); ++j) {
      const double density = 1000 * std::exp(-double(j) / (60.0 + 40 * trial));
      bins[j] = u(rng) < 0.1 ? 0.0 : std::floor(density * u(rng));  // some empty bins, long tail
    }
    const int levels = 16 << (trial % 2);
    const auto fast = calib::entropy_divergences(bins, levels);
    ASSERT_EQ(fast.size(), bins.size() - levels + 1);
    for (size_t k = 0; k < fast.size(); ++k) {
      const double ref = calib::entropy_divergence_ref(bins, int(k) + levels, levels);
      if (std::isinf(ref)) {
        EXPECT_TRUE(std::isinf(fast[k])) << "i=" << k + levels;
      } else {
        EXPECT_NEAR(fast[k], ref, 1e-9 + 1e-7 * ref) << "i=" << k + levels;
      }
    }
  }
}

TEST(Entropy, GaussianWithOutliersThresholdIsSensible) {
  // N(0, 1) plus 0.01% outliers at 20-40 sigma. Min-KL 8-bit calibration should ignore the
  // outliers (threshold far below absmax) without clipping the bulk (above the ~3.9 sigma that
  // only 0.01% of a Gaussian exceeds, at most a handful of sigma).
  auto x = gaussian(1000000, 1.0, 21);
  std::mt19937_64 rng(22);
  std::uniform_real_distribution<double> u(20, 40);
  for (size_t k = 0; k < x.size(); k += 10000) x[k] = float((k / 10000) % 2 ? u(rng) : -u(rng));
  std::vector<std::vector<float>> batches;
  for (size_t b = 0; b < 4; ++b) batches.emplace_back(x.begin() + b * 250000, x.begin() + (b + 1) * 250000);
  Range r = observe_all("entropy", {}, batches, 1000);
  const double t = std::max(std::fabs(r.min), std::fabs(r.max));
  double amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(double(v)));
  EXPECT_LT(t, 0.25 * amax);
  EXPECT_GT(t, 3.0);
  EXPECT_LT(t, 8.0);

  // Same algorithm straight from the slide on an exact 2048-bin histogram of |x| over [0, amax]:
  // the streamed observer re-bins its histogram, so allow a couple of bins of difference.
  std::vector<double> bins(2048, 0.0);
  for (float v : x) bins[std::min<size_t>(2047, size_t(std::fabs(double(v)) / amax * 2048))] += 1;
  int best = 2048;
  double best_kl = std::numeric_limits<double>::infinity();
  for (int i = 128; i <= 2048; ++i) {
    const double kl = calib::entropy_divergence_ref(bins, i, 128);
    if (kl <= best_kl) {
      best_kl = kl;
      best = i;
    }
  }
  const double t_ref = (best + 0.5) * amax / 2048;
  EXPECT_NEAR(t, t_ref, 3 * amax / 2048) << "observer " << t << " reference " << t_ref;
}

TEST(Entropy, OneSidedUnsignedUsesAllLevels) {
  // ReLU-like data: with symmetric=false and no negatives the grid has 2^b levels, so the
  // threshold is at least as large as with 2^(b-1) levels (finer grid, less need to clip).
  auto x = gaussian(200000, 1.0, 31);
  for (auto& v : x) v = std::fabs(v);
  ObserverOptions u;
  u.symmetric = false;
  u.bits = 4;
  ObserverOptions s = u;
  s.symmetric = true;
  Range ru = observe_all("entropy", u, {x});
  Range rs = observe_all("entropy", s, {x});
  EXPECT_EQ(ru.min, rs.min);
  EXPECT_GE(ru.max, 0.0f);
  EXPECT_GE(ru.max, rs.max);
}

// ---- per-channel, per-row ----------------------------------------------------------------------

TEST(Observers, PerChannelEqualsPerTensorOnEachColumn) {
  const int64_t rows = 3000, cols = 7;
  std::vector<std::vector<float>> batches;
  for (int b = 0; b < 3; ++b) {
    auto x = gaussian(size_t(rows * cols), 1.0, 40 + b);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        float& v = x[size_t(r * cols + c)];
        if (c == 0) v = 0.0f;                        // dead channel
        if (c == 1) v = 2.5f;                        // constant channel
        if (c >= 2) v = v * float(0.2 * c * (1 + b)) + float(c == 6 ? 3.0 : 0.0);  // growing scale, one offset
      }
    }
    batches.push_back(std::move(x));
  }
  for (const char* spec : {"minmax", "ema-minmax:0.1", "percentile:99.9", "mse", "entropy"}) {
    for (bool symmetric : {true, false}) {
      ObserverOptions pc;
      pc.axis = ObserverAxis::per_channel;
      pc.symmetric = symmetric;
      pc.bits = 4;
      pc.histogram_bins = 512;
      auto obs = make(spec, pc);
      for (const auto& b : batches) ASSERT_TRUE(obs->observe(b.data(), rows, cols).is_ok());
      auto got = obs->ranges();
      ASSERT_TRUE(got.has_value()) << got.status().to_string();
      ASSERT_EQ(got->size(), size_t(cols));
      for (int64_t c = 0; c < cols; ++c) {
        ObserverOptions pt = pc;
        pt.axis = ObserverAxis::per_tensor;
        auto single = make(spec, pt);
        for (const auto& b : batches) {
          std::vector<float> col(static_cast<size_t>(rows));
          for (int64_t r = 0; r < rows; ++r) col[size_t(r)] = b[size_t(r * cols + c)];
          ASSERT_TRUE(single->observe(col.data(), rows, 1).is_ok());
        }
        auto want = single->range();
        ASSERT_TRUE(want.has_value());
        EXPECT_EQ((*got)[size_t(c)].min, want->min) << spec << " sym=" << symmetric << " column " << c;
        EXPECT_EQ((*got)[size_t(c)].max, want->max) << spec << " sym=" << symmetric << " column " << c;
      }
      // Per-row on the transpose gives the same ranges.
      ObserverOptions pr = pc;
      pr.axis = ObserverAxis::per_row;
      auto rowwise = make(spec, pr);
      for (const auto& b : batches) {
        std::vector<float> t(b.size());
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c) t[size_t(c * rows + r)] = b[size_t(r * cols + c)];
        ASSERT_TRUE(rowwise->observe(t.data(), cols, rows).is_ok());
      }
      auto by_row = rowwise->ranges();
      ASSERT_TRUE(by_row.has_value());
      for (int64_t c = 0; c < cols; ++c) {
        EXPECT_EQ((*by_row)[size_t(c)].min, (*got)[size_t(c)].min) << spec << " row " << c;
        EXPECT_EQ((*by_row)[size_t(c)].max, (*got)[size_t(c)].max) << spec << " row " << c;
      }
    }
  }
}

TEST(Observers, ConstantAndZeroChannelsAreExact) {
  ObserverOptions o;
  o.axis = ObserverAxis::per_channel;
  for (const char* spec : {"minmax", "percentile", "mse", "entropy"}) {
    auto obs = make(spec, o);
    std::vector<float> x = {0, 2.5f, 0, 2.5f, 0, 2.5f};
    ASSERT_TRUE(obs->observe(x.data(), 3, 2).is_ok());
    auto r = obs->ranges();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ((*r)[0].min, 0.0f) << spec;
    EXPECT_EQ((*r)[0].max, 0.0f) << spec;
    EXPECT_EQ((*r)[1].max, 2.5f) << spec;
  }
}

// ---- bad input ---------------------------------------------------------------------------------

TEST(Observers, NonFiniteRejectedByDefaultAndStateUnchanged) {
  for (const char* spec : {"minmax", "percentile", "mse", "entropy", "ema-minmax"}) {
    auto obs = make(spec);
    const auto good = gaussian(400, 1.0, 50);
    ASSERT_TRUE(obs->observe(good.data(), 20, 20).is_ok());
    auto before = obs->range();
    ASSERT_TRUE(before.has_value());
    auto bad = gaussian(400, 10.0, 51);
    bad[2 * 20 + 1] = std::numeric_limits<float>::quiet_NaN();
    bad[5 * 20 + 3] = std::numeric_limits<float>::infinity();
    Status s = obs->observe(bad.data(), 20, 20);
    ASSERT_FALSE(s.is_ok()) << spec;
    EXPECT_EQ(s.code(), ErrorCode::invalid_argument);
    EXPECT_NE(s.message().find("NaN at row 2, column 1"), std::string::npos) << s.message();
    auto after = obs->range();
    ASSERT_TRUE(after.has_value());
    EXPECT_EQ(after->min, before->min) << spec;
    EXPECT_EQ(after->max, before->max) << spec;
    EXPECT_EQ(obs->count(), 400u);
  }
}

TEST(Observers, NonFiniteSkippedOnRequest) {
  auto x = gaussian(1000, 1.0, 60);
  std::vector<float> clean;
  for (size_t k = 0; k < x.size(); ++k) {
    if (k % 97 == 5) x[k] = (k % 2) ? std::numeric_limits<float>::quiet_NaN() : -std::numeric_limits<float>::infinity();
    else clean.push_back(x[k]);
  }
  ObserverOptions skip;
  skip.nonfinite = NonFinitePolicy::skip;
  for (const char* spec : {"minmax", "percentile:99", "mse", "entropy"}) {
    auto a = make(spec, skip);
    ASSERT_TRUE(a->observe(x.data(), 10, 100).is_ok());
    EXPECT_EQ(a->count(), clean.size());
    Range ra = *a->range();
    Range rb = observe_all(spec, {}, {clean});
    EXPECT_EQ(ra.min, rb.min) << spec;
    EXPECT_EQ(ra.max, rb.max) << spec;
  }
  // A channel with nothing finite has no range.
  ObserverOptions pc = skip;
  pc.axis = ObserverAxis::per_channel;
  auto obs = make("minmax", pc);
  std::vector<float> y = {1, std::nanf(""), 2, std::nanf("")};
  ASSERT_TRUE(obs->observe(y.data(), 2, 2).is_ok());
  auto r = obs->ranges();
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("channel 1 has no finite values"), std::string::npos) << r.status().message();
}

TEST(Observers, ShapeErrors) {
  ObserverOptions pc;
  pc.axis = ObserverAxis::per_channel;
  auto obs = make("minmax", pc);
  std::vector<float> x(12, 1.0f);
  EXPECT_FALSE(obs->observe(x.data(), -1, 4).is_ok());
  EXPECT_FALSE(obs->observe(nullptr, 3, 4).is_ok());
  EXPECT_TRUE(obs->observe(nullptr, 0, 4).is_ok());  // empty batch: no-op
  auto none = obs->ranges();
  ASSERT_FALSE(none.has_value());
  EXPECT_NE(none.status().message().find("no data observed"), std::string::npos);
  ASSERT_TRUE(obs->observe(x.data(), 3, 4).is_ok());
  Status s = obs->observe(x.data(), 4, 3);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("has 4 channels, this batch has 3 columns"), std::string::npos) << s.message();
  auto single = obs->range();
  ASSERT_FALSE(single.has_value());
  EXPECT_NE(single.status().message().find("per-tensor"), std::string::npos);
  EXPECT_FALSE(obs->observe(x.data(), int64_t(1) << 62, 8).is_ok());  // overflow
  obs->reset();
  EXPECT_EQ(obs->channels(), 0);
  ASSERT_TRUE(obs->observe(x.data(), 4, 3).is_ok());  // new shape after reset
  EXPECT_EQ(obs->channels(), 3);
}

TEST(Observers, FactoryNamesAndErrors) {
  for (const char* spec : {"minmax", "ema-minmax", "ema-minmax:0.05", "percentile", "percentile:99.9", "mse", "entropy"}) {
    auto obs = make_observer(spec);
    ASSERT_TRUE(obs.has_value()) << spec << ": " << obs.status().to_string();
  }
  EXPECT_EQ((*make_observer("percentile:99.9"))->name(), "percentile:99.9");
  EXPECT_EQ((*make_observer("percentile"))->name(), "percentile:99.99");
  EXPECT_EQ((*make_observer("entropy"))->method(), ObserverMethod::entropy);

  struct Bad {
    const char* spec;
    const char* message;
  };
  for (const Bad& b : {Bad{"foo", "unknown observer 'foo' (valid: minmax"}, Bad{"", "unknown observer ''"},
                       Bad{"percentile:abc", "'abc' is not a number"}, Bad{"percentile:", "'' is not a number"},
                       Bad{"percentile:99.9x", "'99.9x' is not a number"},
                       Bad{"percentile:101", "percentile must be in [50, 100], got 101"},
                       Bad{"percentile:nan", "is not a number"}, Bad{"ema-minmax:0", "momentum must be in (0, 1]"},
                       Bad{"ema-minmax:1.5", "momentum must be in (0, 1], got 1.5"},
                       Bad{"mse:3", "'mse' takes no value"}, Bad{"minmax:1", "'minmax' takes no value"},
                       Bad{"MinMax", "unknown observer"}}) {
    auto obs = make_observer(b.spec);
    ASSERT_FALSE(obs.has_value()) << b.spec;
    EXPECT_EQ(obs.status().code(), ErrorCode::invalid_argument);
    EXPECT_NE(obs.status().message().find(b.message), std::string::npos)
        << b.spec << " -> " << obs.status().message();
  }
  ObserverOptions o;
  o.bits = 13;
  EXPECT_FALSE(make_observer("mse", o).has_value());
  o.bits = 11;
  auto e = make_observer("entropy", o);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.status().message().find("bits must be in [2, 10], got 11"), std::string::npos) << e.status().message();
  o.bits = 8;
  o.histogram_bins = 8;
  EXPECT_FALSE(make_observer("percentile", o).has_value());
}

// ---- histogram internals -----------------------------------------------------------------------

TEST(GridHistogram, GrowthKeepsCountsAndResolution) {
  calib::GridHistogram h(256);
  uint64_t added = 0;
  std::mt19937_64 rng(70);
  double lo = 0, hi = 0;
  // Point mass first, then ranges that grow on both sides by uneven factors.
  for (int b = 0; b < 12; ++b) {
    const double blo = b == 0 ? 1.0 : -0.3 * std::pow(1.7, b), bhi = b == 0 ? 1.0 : 0.5 * std::pow(1.9, b);
    std::uniform_real_distribution<double> u(blo, bhi);
    h.cover(blo, bhi);
    lo = std::min(lo == 0 && b == 0 ? blo : lo, blo);
    hi = std::max(hi, bhi);
    for (int k = 0; k < 1000; ++k) {
      h.add(b == 0 ? 1.0 : u(rng));
      ++added;
    }
    ASSERT_EQ(h.total(), added);
    if (b > 0) {
      EXPECT_LE(h.bin_width(), 2 * (hi - lo) / (h.bins() - 1)) << "batch " << b;
      double mass = 0;
      for (const auto& m : h.mass()) {
        EXPECT_GE(m.a, lo);
        EXPECT_LE(m.b, hi);
        mass += m.count;
      }
      EXPECT_EQ(mass, double(added));
    }
  }
  // Quantile of a point mass is the point.
  calib::GridHistogram p(64);
  p.cover(3.5, 3.5);
  for (int k = 0; k < 10; ++k) p.add(3.5);
  EXPECT_EQ(calib::mass_quantile(p.mass(), 0.5), 3.5);
  EXPECT_EQ(p.bin_width(), 0.0);
}

TEST(GridHistogram, ResamplePreservesMass) {
  std::vector<calib::MassBin> mass = {{0.0, 0.1, 10}, {0.1, 0.35, 5}, {0.5, 0.5, 3}, {0.9, 1.0, 2}};
  auto bins = calib::resample(mass, 0.0, 1.0, 10);
  double total = 0;
  for (double b : bins) total += b;
  EXPECT_NEAR(total, 20.0, 1e-12);
  EXPECT_NEAR(bins[0], 10.0, 1e-12);
  EXPECT_NEAR(bins[1], 2.0, 1e-12);  // 0.1..0.2 of the 0.1..0.35 bin
  EXPECT_NEAR(bins[3], 1.0, 1e-12);  // 0.3..0.35
  EXPECT_NEAR(bins[5], 3.0, 1e-12);  // point mass at 0.5
  EXPECT_NEAR(bins[9], 2.0, 1e-12);
}

}  // namespace
}  // namespace qforge
