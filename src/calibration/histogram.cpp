#include "calibration/histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace qforge::calib {

// ---- GridHistogram ------------------------------------------------------------------------------

GridHistogram::GridHistogram(int bins) : bins_(std::max(bins, 3)) {}

uint64_t GridHistogram::total() const {
  uint64_t t = point_count_;
  for (uint64_t c : counts_) t += c;
  return t;
}

void GridHistogram::init_grid() {
  const double span = hi_ - lo_;
  const double max_abs = std::max(std::fabs(lo_), std::fabs(hi_));
  // bins - 2 leaves one bin of slack for the floor() alignment of the window start. The cap keeps
  // |v| * inv_width <= 2^30 so indices stay exact integers however far the data sits from 0.
  double inv = double(bins_ - 2) / span;
  inv = std::min(inv, std::ldexp(1.0, 30) / max_abs);
  while (std::floor(hi_ * inv) - std::floor(lo_ * inv) > bins_ - 1) inv *= 0.5;
  inv_width_ = inv;
  k0_ = static_cast<int64_t>(std::floor(lo_ * inv));
  counts_.assign(static_cast<size_t>(bins_), 0);
}

void GridHistogram::cover(double lo, double hi) {
  if (!has_range_) {
    has_range_ = true;
    lo_ = lo;
    hi_ = hi;
    if (hi_ > lo_) init_grid();
    return;
  }
  const double new_lo = std::min(lo_, lo);
  const double new_hi = std::max(hi_, hi);
  if (inv_width_ == 0) {
    // Point mass so far (every value == lo_). Build the grid once there is a spread.
    const double point = lo_;
    lo_ = new_lo;
    hi_ = new_hi;
    if (hi_ > lo_) {
      init_grid();
      counts_[static_cast<size_t>(index_of(point))] += point_count_;
      point_count_ = 0;
    }
    return;
  }
  // Smallest power-of-two coarsening that fits [new_lo, new_hi] into the window. Scaling by
  // 2^-d is exact, so floor(v * inv) == floor(floor(v * inv_width_) / 2^d) for every value v:
  // old bin K lands in new bin K >> d.
  double inv = inv_width_;
  int d = 0;
  while (std::floor(new_hi * inv) - std::floor(new_lo * inv) > bins_ - 1) {
    inv *= 0.5;
    ++d;
  }
  const int64_t k0 = static_cast<int64_t>(std::floor(new_lo * inv));
  if (d > 0 || k0 != k0_) {
    std::vector<uint64_t> merged(static_cast<size_t>(bins_), 0);
    for (int i = 0; i < bins_; ++i) {
      const uint64_t c = counts_[static_cast<size_t>(i)];
      if (c == 0) continue;
      const int64_t k = k0_ + i;
      const int64_t coarse = d >= 63 ? (k < 0 ? -1 : 0) : (k >> d);  // floor division by 2^d
      int64_t j = coarse - k0;
      j = std::clamp<int64_t>(j, 0, bins_ - 1);
      merged[static_cast<size_t>(j)] += c;
    }
    counts_.swap(merged);
    inv_width_ = inv;
    k0_ = k0;
  }
  lo_ = new_lo;
  hi_ = new_hi;
}

std::vector<MassBin> GridHistogram::mass(bool include_empty) const {
  std::vector<MassBin> out;
  if (inv_width_ == 0) {
    if (point_count_ > 0) out.push_back({lo_, lo_, double(point_count_)});
    return out;
  }
  for (int i = 0; i < bins_; ++i) {
    const uint64_t c = counts_[static_cast<size_t>(i)];
    if (c == 0 && !include_empty) continue;
    double a = std::max(double(k0_ + i) / inv_width_, lo_);
    double b = std::min(double(k0_ + i + 1) / inv_width_, hi_);
    a = std::min(a, hi_);
    b = std::max(b, a);
    out.push_back({a, b, double(c)});
  }
  return out;
}

// ---- quantiles and re-binning -------------------------------------------------------------------

double mass_quantile(const std::vector<MassBin>& mass, double q) {
  if (mass.empty()) return 0;
  double total = 0;
  for (const auto& m : mass) total += m.count;
  const double target = std::clamp(q, 0.0, 1.0) * total;
  double cumulative = 0;
  for (const auto& m : mass) {
    if (m.count > 0 && cumulative + m.count >= target) {
      const double frac = std::clamp((target - cumulative) / m.count, 0.0, 1.0);
      return m.a + (m.b - m.a) * frac;
    }
    cumulative += m.count;
  }
  return mass.back().b;
}

std::vector<double> resample(const std::vector<MassBin>& mass, double lo, double hi, int n) {
  std::vector<double> out(static_cast<size_t>(n), 0.0);
  const double scale = double(n) / (hi - lo);
  auto target_of = [&](double v) {
    double t = std::floor((v - lo) * scale);
    return static_cast<int>(std::clamp(t, 0.0, double(n - 1)));
  };
  for (const auto& m : mass) {
    const int t0 = target_of(m.a);
    const int t1 = target_of(m.b);
    if (t0 == t1 || !(m.b > m.a)) {
      out[static_cast<size_t>(t0)] += m.count;
      continue;
    }
    const double density = m.count / (m.b - m.a);
    for (int t = t0; t <= t1; ++t) {
      const double left = t == t0 ? m.a : lo + double(t) / scale;
      const double right = t == t1 ? m.b : lo + double(t + 1) / scale;
      out[static_cast<size_t>(t)] += density * std::max(0.0, right - left);
    }
  }
  return out;
}

// ---- entropy (KL) calibration -------------------------------------------------------------------

namespace {
// First bin of level l when i bins are merged into `levels` levels: ceil(l * i / levels).
inline int64_t level_start(int64_t l, int64_t i, int64_t levels) { return (l * i + levels - 1) / levels; }
}  // namespace

std::vector<double> entropy_candidate_q(const std::vector<double>& bins, int i, int levels) {
  std::vector<double> q(static_cast<size_t>(i), 0.0);
  for (int l = 0; l < levels; ++l) {
    const int64_t begin = level_start(l, i, levels);
    const int64_t end = level_start(l + 1, i, levels);
    double sum = 0;
    int64_t nonempty = 0;
    for (int64_t j = begin; j < end; ++j) {
      sum += bins[static_cast<size_t>(j)];
      nonempty += bins[static_cast<size_t>(j)] > 0 ? 1 : 0;
    }
    if (nonempty == 0) continue;
    for (int64_t j = begin; j < end; ++j) {
      if (bins[static_cast<size_t>(j)] > 0) q[static_cast<size_t>(j)] = sum / double(nonempty);
    }
  }
  return q;
}

double entropy_divergence_ref(const std::vector<double>& bins, int i, int levels) {
  std::vector<double> p(bins.begin(), bins.begin() + i);
  double outliers = 0;
  for (size_t j = static_cast<size_t>(i); j < bins.size(); ++j) outliers += bins[j];
  p[static_cast<size_t>(i - 1)] += outliers;
  std::vector<double> q = entropy_candidate_q(bins, i, levels);
  double p_sum = 0, q_sum = 0;
  for (int j = 0; j < i; ++j) {
    p_sum += p[static_cast<size_t>(j)];
    q_sum += q[static_cast<size_t>(j)];
  }
  if (p_sum <= 0 || q_sum <= 0) return std::numeric_limits<double>::infinity();
  double kl = 0;
  for (int j = 0; j < i; ++j) {
    const double pj = p[static_cast<size_t>(j)] / p_sum;
    const double qj = q[static_cast<size_t>(j)] / q_sum;
    if (pj <= 0) continue;
    if (qj <= 0) return std::numeric_limits<double>::infinity();
    kl += pj * std::log(pj / qj);
  }
  return kl;
}

std::vector<double> entropy_divergences(const std::vector<double>& bins, int levels) {
  const int64_t n = static_cast<int64_t>(bins.size());
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> out;
  if (n < levels) return out;
  out.assign(static_cast<size_t>(n - levels + 1), inf);
  // Prefix sums: counts, non-empty bins, c * log(c).
  std::vector<double> sum(static_cast<size_t>(n + 1), 0.0), clogc(static_cast<size_t>(n + 1), 0.0);
  std::vector<int64_t> nonempty(static_cast<size_t>(n + 1), 0);
  for (int64_t j = 0; j < n; ++j) {
    const double c = bins[static_cast<size_t>(j)];
    sum[static_cast<size_t>(j + 1)] = sum[static_cast<size_t>(j)] + c;
    nonempty[static_cast<size_t>(j + 1)] = nonempty[static_cast<size_t>(j)] + (c > 0 ? 1 : 0);
    clogc[static_cast<size_t>(j + 1)] = clogc[static_cast<size_t>(j)] + (c > 0 ? c * std::log(c) : 0.0);
  }
  const double total = sum[static_cast<size_t>(n)];
  if (!(total > 0)) return out;
  // log(S / NZ) of a level depends only on its bin span [begin, begin + width); across all
  // candidates there are far fewer distinct spans (width <= ceil(n / levels) + 1) than
  // (candidate, level) pairs, so cache them: ~7x fewer log() calls at 8 bits.
  const int64_t max_width = (n + levels - 1) / levels + 1;
  const bool use_cache = n * (max_width + 1) <= (int64_t(1) << 22);
  std::vector<double> cache(use_cache ? static_cast<size_t>(n * (max_width + 1)) : 0,
                            std::numeric_limits<double>::quiet_NaN());
  auto level_log_q = [&](int64_t b, int64_t e, double s, int64_t nz) {
    if (!use_cache) return std::log(s / double(nz));
    double& slot = cache[static_cast<size_t>(b * (max_width + 1) + (e - b))];
    if (std::isnan(slot)) slot = std::log(s / double(nz));
    return slot;
  };
  for (int64_t i = levels; i <= n; ++i) {
    // Same quantity as entropy_divergence_ref. With T = total, Z = sum of bins[0..i) = sum of Q,
    // P summing to T and Q constant (S_l / NZ_l) on the non-empty bins of level l:
    //   KL = (1/T) * [sum_j P_j log P_j - sum_l log(S_l / NZ_l) * (P mass of level l)] + log(Z / T).
    const double z = sum[static_cast<size_t>(i)];
    const double outliers = total - z;
    const double last = bins[static_cast<size_t>(i - 1)];
    if (last <= 0 && outliers > 0) continue;  // P has mass in a bin where Q is empty: infinite
    if (!(z > 0)) continue;
    const double p_last = last + outliers;
    double p_log_p = clogc[static_cast<size_t>(i - 1)] + (p_last > 0 ? p_last * std::log(p_last) : 0.0);
    double p_log_q = 0;
    // Level ends ceil((l + 1) * i / levels), stepped without divisions: (l + 1) * i = q * levels + r.
    const int64_t step_q = i / levels, step_r = i % levels;
    int64_t q = 0, r = 0, b = 0;
    for (int64_t l = 0; l < levels; ++l, b = q + (r > 0 ? 1 : 0)) {
      q += step_q;
      r += step_r;
      if (r >= levels) {
        r -= levels;
        ++q;
      }
      const int64_t e = q + (r > 0 ? 1 : 0);
      const double s = sum[static_cast<size_t>(e)] - sum[static_cast<size_t>(b)];
      const int64_t nz = nonempty[static_cast<size_t>(e)] - nonempty[static_cast<size_t>(b)];
      if (nz == 0 || !(s > 0)) continue;
      const double level_mass = (l == levels - 1) ? s + outliers : s;
      p_log_q += level_log_q(b, e, s, nz) * level_mass;
    }
    const double kl = (p_log_p - p_log_q) / total + std::log(z / total);
    out[static_cast<size_t>(i - levels)] = std::max(kl, 0.0);
  }
  return out;
}

int entropy_best_index(const std::vector<double>& bins, int levels) {
  const std::vector<double> kl = entropy_divergences(bins, levels);
  int best = static_cast<int>(bins.size());
  double best_kl = std::numeric_limits<double>::infinity();
  for (size_t k = 0; k < kl.size(); ++k) {
    if (kl[k] <= best_kl && std::isfinite(kl[k])) {  // <=: ties go to the larger threshold
      best_kl = kl[k];
      best = static_cast<int>(k) + levels;
    }
  }
  return best;
}

// ---- MSE ----------------------------------------------------------------------------------------

MomentTable::MomentTable(const GridHistogram& hist)
    : bins_(hist.mass(/*include_empty=*/true)), inv_width_(hist.inv_width()), k0_(hist.first_index()) {
  prefix_.resize(bins_.size() + 1, {0, 0, 0});
  for (size_t i = 0; i < bins_.size(); ++i) {
    const auto& m = bins_[i];
    const std::array<double, 3> full = {m.count, m.count * (m.a + m.b) / 2,
                                        m.count * (m.a * m.a + m.a * m.b + m.b * m.b) / 3};
    for (int k = 0; k < 3; ++k) prefix_[i + 1][k] = prefix_[i][k] + full[k];
  }
  totals_ = prefix_.back();
}

std::array<double, 3> MomentTable::below(double t) const {
  if (bins_.empty()) return {0, 0, 0};
  int64_t j = 0;
  if (inv_width_ != 0) {
    const double k = std::floor(t * inv_width_) - double(k0_);
    if (k < 0) return {0, 0, 0};
    if (k >= double(bins_.size())) return totals_;
    j = static_cast<int64_t>(k);
  }
  // Bins before j entirely, then the part of bin j at or below t.
  std::array<double, 3> r = prefix_[static_cast<size_t>(j)];
  const auto& m = bins_[static_cast<size_t>(j)];
  if (t >= m.b) {
    for (int k = 0; k < 3; ++k) r[k] = prefix_[static_cast<size_t>(j) + 1][k];
  } else if (t > m.a) {
    // Uniform density on [a, b] integrated over [a, t]; factored to avoid cancellation.
    const double w = t - m.a;
    const double density = m.count / (m.b - m.a);
    r[0] += density * w;
    r[1] += density * w * (t + m.a) / 2;
    r[2] += density * w * (t * t + t * m.a + m.a * m.a) / 3;
  }
  return r;
}

double MomentTable::expected_error(const QuantParams& qp, bool magnitude) const {
  const double s = qp.scale;
  double err = 0;
  // Levels are (q - zp) * s; the decision boundary between q and q + 1 is at (q + 0.5 - zp) * s.
  // For magnitude histograms only q >= zp = 0 matters (|x| >= 0): the cells start at q = 0.
  const int32_t first = magnitude ? 0 : qp.qmin;
  std::array<double, 3> a = {0, 0, 0};  // moments below the current cell
  for (int32_t q = first; q <= qp.qmax; ++q) {
    const double level = double(q - qp.zero_point) * s;
    const std::array<double, 3> b = q == qp.qmax ? totals_ : below((double(q - qp.zero_point) + 0.5) * s);
    const double m0 = b[0] - a[0], m1 = b[1] - a[1], m2 = b[2] - a[2];
    if (m0 > 0) err += std::max(0.0, m2 - 2 * level * m1 + level * level * m0);
    a = b;
    if (a[0] >= totals_[0] && q < qp.qmax) {
      // Everything is below: remaining cells are empty.
      break;
    }
  }
  return err;
}

ClipSearchResult search_clip_ratio(const MomentTable& table, double lo, double hi, int bits, bool magnitude) {
  const double zlo = std::min(lo, 0.0), zhi = std::max(hi, 0.0);
  auto error_at = [&](double ratio) {
    Range r = magnitude ? Range{float(-ratio * zhi), float(ratio * zhi)} : Range{float(ratio * zlo), float(ratio * zhi)};
    auto qp = range_to_qparams(r, bits, magnitude);
    QFORGE_CHECK(qp.has_value());
    return table.expected_error(*qp, magnitude);
  };
  ClipSearchResult best;
  best.error_full = error_at(1.0);
  best.ratio = 1.0;
  best.error = best.error_full;
  for (int k = 1; k < 100; ++k) {
    const double ratio = 1.0 - 0.01 * k;
    const double e = error_at(ratio);
    if (e < best.error) {
      best.error = e;
      best.ratio = ratio;
    }
  }
  const double center = best.ratio;
  for (int k = -20; k <= 20; ++k) {
    const double ratio = center + 0.0005 * k;
    if (k == 0 || ratio <= 0 || ratio > 1) continue;
    const double e = error_at(ratio);
    if (e < best.error || (e == best.error && ratio > best.ratio)) {
      best.error = e;
      best.ratio = ratio;
    }
  }
  return best;
}

}  // namespace qforge::calib
