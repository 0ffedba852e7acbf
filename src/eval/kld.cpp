// Distribution math of the evaluator: log-sum-exp, KL divergence and sample statistics (mean,
// standard error, percentiles) of per-position values.
#include <algorithm>
#include <cmath>
#include <limits>

#include "eval/softmax_rows.h"
#include "qforge/eval.h"

namespace qforge {

double log_sum_exp(const float* x, int64_t n) {
  const eval_detail::SoftmaxRow s = eval_detail::softmax_row_ref(x, n);
  if (std::isinf(s.max)) return s.max;
  return s.lse();
}

double kl_divergence(const double* log_p, const double* log_q, int64_t n) {
  double kl = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double p = std::exp(log_p[i]);
    if (p == 0) continue;  // 0 * log(0 / q) = 0, even where q = 0
    kl += p * (log_p[i] - log_q[i]);
  }
  return kl > 0 ? kl : (std::isnan(kl) ? kl : 0.0);
}

double sorted_quantile(std::span<const double> sorted, double q) {
  if (sorted.empty()) return std::numeric_limits<double>::quiet_NaN();
  q = std::clamp(q, 0.0, 1.0);
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

SampleStats sample_stats(std::vector<double>& values) {
  SampleStats s;
  s.count = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  // Mean and variance in the given order (deterministic); two passes for accuracy.
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(values.size());
  if (values.size() > 1) {
    double ss = 0;
    for (double v : values) ss += (v - s.mean) * (v - s.mean);
    const double var = ss / static_cast<double>(values.size() - 1);
    s.stderr_mean = std::sqrt(var / static_cast<double>(values.size()));
  }
  if (std::any_of(values.begin(), values.end(), [](double v) { return std::isnan(v); })) {
    s.min = s.median = s.p90 = s.p95 = s.p99 = s.max = std::numeric_limits<double>::quiet_NaN();
    return s;
  }
  std::sort(values.begin(), values.end());
  const std::span<const double> sorted(values);
  s.min = sorted.front();
  s.max = sorted.back();
  s.median = sorted_quantile(sorted, 0.5);
  s.p90 = sorted_quantile(sorted, 0.90);
  s.p95 = sorted_quantile(sorted, 0.95);
  s.p99 = sorted_quantile(sorted, 0.99);
  return s;
}

}  // namespace qforge
