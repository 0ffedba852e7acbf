// Calibration observers (see include/qforge/observer.h for the methods and their guarantees).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "calibration/histogram.h"
#include "qforge/observer.h"
#include "qforge/parallel.h"

namespace qforge {

// ---- quantization parameters --------------------------------------------------------------------

int32_t QuantParams::quantize(float x) const {
  if (std::isnan(x)) return zero_point;
  const double q = std::nearbyint(double(x) / double(scale)) + double(zero_point);
  return static_cast<int32_t>(std::clamp(q, double(qmin), double(qmax)));
}

Expected<QuantParams> range_to_qparams(Range range, int bits, bool symmetric) {
  if (bits < 2 || bits > 16) {
    return invalid_argument("range_to_qparams: bits must be in [2, 16], got " + std::to_string(bits));
  }
  if (!std::isfinite(range.min) || !std::isfinite(range.max) || range.min > range.max) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "range_to_qparams: invalid range [%g, %g]", double(range.min), double(range.max));
    return invalid_argument(buf);
  }
  constexpr double kMinScale = std::numeric_limits<float>::min();
  QuantParams qp;
  if (symmetric) {
    qp.qmax = (1 << (bits - 1)) - 1;
    qp.qmin = -qp.qmax;
    const double amax = std::max(std::fabs(double(range.min)), std::fabs(double(range.max)));
    qp.scale = amax == 0 ? 1.0f : float(std::max(amax / qp.qmax, kMinScale));
    qp.zero_point = 0;
    return qp;
  }
  qp.qmin = 0;
  qp.qmax = (1 << bits) - 1;
  const double lo = std::min(double(range.min), 0.0);
  const double hi = std::max(double(range.max), 0.0);
  if (hi == lo) {
    qp.scale = 1.0f;
    qp.zero_point = 0;
    return qp;
  }
  qp.scale = float(std::max((hi - lo) / double(qp.qmax - qp.qmin), kMinScale));
  const double zp = double(qp.qmin) - std::nearbyint(lo / double(qp.scale));
  qp.zero_point = static_cast<int32_t>(std::clamp(zp, double(qp.qmin), double(qp.qmax)));
  return qp;
}

Expected<std::vector<QuantParams>> ranges_to_qparams(const std::vector<Range>& ranges, int bits, bool symmetric) {
  std::vector<QuantParams> out;
  out.reserve(ranges.size());
  for (size_t c = 0; c < ranges.size(); ++c) {
    auto qp = range_to_qparams(ranges[c], bits, symmetric);
    if (!qp.has_value()) return qp.status().with_context("channel " + std::to_string(c));
    out.push_back(*qp);
  }
  return out;
}

// ---- names and options --------------------------------------------------------------------------

const char* observer_method_name(ObserverMethod method) {
  switch (method) {
    case ObserverMethod::minmax: return "minmax";
    case ObserverMethod::ema_minmax: return "ema-minmax";
    case ObserverMethod::percentile: return "percentile";
    case ObserverMethod::mse: return "mse";
    case ObserverMethod::entropy: return "entropy";
  }
  return "unknown";
}

namespace {

constexpr ObserverMethod kMethods[] = {ObserverMethod::minmax, ObserverMethod::ema_minmax, ObserverMethod::percentile,
                                       ObserverMethod::mse, ObserverMethod::entropy};
constexpr const char* kSpecHelp = "minmax, ema-minmax[:momentum], percentile[:p], mse, entropy";

std::string format_number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

}  // namespace

std::string Observer::name() const {
  std::string n = observer_method_name(method_);
  if (method_ == ObserverMethod::ema_minmax || method_ == ObserverMethod::percentile) {
    n += ':';
    n += format_number(method_ == ObserverMethod::ema_minmax ? options_.momentum : options_.percentile);
  }
  return n;
}

Expected<Range> Observer::range() const {
  QFORGE_ASSIGN_OR_RETURN(std::vector<Range> all, ranges());
  if (all.size() != 1) {
    return invalid_argument("observer '" + name() + "': range() needs a per-tensor observer; it has " +
                            std::to_string(all.size()) + " channels (use ranges())");
  }
  return all[0];
}

Status validate_observer_options(ObserverMethod method, const ObserverOptions& o) {
  const std::string who = std::string("observer '") + observer_method_name(method) + "': ";
  int max_bits = 16;
  if (method == ObserverMethod::mse) max_bits = 12;
  if (method == ObserverMethod::entropy) max_bits = 10;
  if (o.bits < 2 || o.bits > max_bits) {
    return invalid_argument(who + "bits must be in [2, " + std::to_string(max_bits) + "], got " + std::to_string(o.bits));
  }
  if (o.histogram_bins < 16 || o.histogram_bins > (1 << 22)) {
    return invalid_argument(who + "histogram_bins must be in [16, 4194304], got " + std::to_string(o.histogram_bins));
  }
  if (method == ObserverMethod::ema_minmax && !(o.momentum > 0 && o.momentum <= 1)) {
    return invalid_argument(who + "momentum must be in (0, 1], got " + format_number(o.momentum));
  }
  if (method == ObserverMethod::percentile && !(o.percentile >= 50 && o.percentile <= 100)) {
    return invalid_argument(who + "percentile must be in [50, 100], got " + format_number(o.percentile));
  }
  switch (o.axis) {
    case ObserverAxis::per_tensor:
    case ObserverAxis::per_channel:
    case ObserverAxis::per_row: break;
    default: return invalid_argument(who + "unknown axis");
  }
  return Status::ok();
}

namespace {

// ---- shared machinery ---------------------------------------------------------------------------

struct Stats {
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  uint64_t count = 0;  // finite values
  void add(double v) {
    min = std::min(min, v);
    max = std::max(max, v);
    ++count;
  }
  void merge(const Stats& o) {
    min = std::min(min, o.min);
    max = std::max(max, o.max);
    count += o.count;
  }
};

const char* axis_word(ObserverAxis axis) {
  switch (axis) {
    case ObserverAxis::per_tensor: return "per-tensor";
    case ObserverAxis::per_channel: return "per-channel";
    case ObserverAxis::per_row: return "per-row";
  }
  return "?";
}

Range clip_to_threshold(const Stats& s, double t) {
  return Range{float(std::max(s.min, -t)), float(std::min(s.max, t))};
}

// Observer plumbing: input checks, per-channel batch statistics (pass 1) and exact running
// min/max; subclasses add their own state in on_batch().
class ObserverBase : public Observer {
 public:
  ObserverBase(ObserverMethod method, ObserverOptions options) : Observer(method, options) {}

  Status observe(const float* x, int64_t rows, int64_t cols) final {
    const std::string who = "observer '" + name() + "'";
    if (rows < 0 || cols < 0) {
      return invalid_argument(who + ": negative batch shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    }
    if (rows == 0 || cols == 0) return Status::ok();
    if (rows > std::numeric_limits<int64_t>::max() / cols) {
      return invalid_argument(who + ": batch shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "] overflows");
    }
    if (x == nullptr) return invalid_argument(who + ": null data for a non-empty batch");
    const int64_t nch = options_.axis == ObserverAxis::per_tensor ? 1
                        : options_.axis == ObserverAxis::per_channel ? cols
                                                                     : rows;
    if (!totals_.empty() && nch != int64_t(totals_.size())) {
      const char* dim = options_.axis == ObserverAxis::per_channel ? "columns" : "rows";
      return invalid_argument(who + ": " + axis_word(options_.axis) + " observer has " + std::to_string(totals_.size()) +
                              " channels, this batch has " + std::to_string(nch) + " " + dim);
    }
    std::vector<Stats> batch(static_cast<size_t>(nch));
    QFORGE_RETURN_IF_ERROR(batch_stats(x, rows, cols, batch));
    if (totals_.empty()) {
      totals_.resize(static_cast<size_t>(nch));
      start_channels(nch);
    }
    on_batch(x, rows, cols, batch);
    for (size_t c = 0; c < batch.size(); ++c) totals_[c].merge(batch[c]);
    return Status::ok();
  }

  Expected<std::vector<Range>> ranges() const final {
    if (totals_.empty()) return invalid_argument("observer '" + name() + "': no data observed");
    for (size_t c = 0; c < totals_.size(); ++c) {
      if (totals_[c].count == 0) {
        return invalid_argument("observer '" + name() + "': channel " + std::to_string(c) +
                                " has no finite values (all NaN/Inf were skipped)");
      }
    }
    std::vector<Range> out(totals_.size());
    compute_ranges(out);
    return out;
  }

  std::vector<double> resolution() const override { return std::vector<double>(totals_.size(), 0.0); }
  int64_t channels() const final { return int64_t(totals_.size()); }
  uint64_t count() const final {
    uint64_t n = 0;
    for (const auto& s : totals_) n += s.count;
    return n;
  }
  void reset() final {
    totals_.clear();
    reset_state();
  }

 protected:
  virtual void start_channels(int64_t channels) = 0;
  virtual void reset_state() = 0;
  virtual void on_batch(const float* x, int64_t rows, int64_t cols, const std::vector<Stats>& batch) = 0;
  virtual void compute_ranges(std::vector<Range>& out) const = 0;

  bool skip_nonfinite() const { return options_.nonfinite == NonFinitePolicy::skip; }

  std::vector<Stats> totals_;

 private:
  Status nonfinite_error(float v, int64_t r, int64_t c) const {
    return invalid_argument("observer '" + name() + "': " + (std::isnan(v) ? "NaN" : "Inf") + " at row " +
                            std::to_string(r) + ", column " + std::to_string(c) +
                            " (non-finite values are rejected; use nonfinite=skip to ignore them)");
  }

  // Pass 1: min, max and count of the finite values of each channel. Rejects the whole batch on
  // the first non-finite value (row-major order) unless skipping, before any state changes.
  Status batch_stats(const float* x, int64_t rows, int64_t cols, std::vector<Stats>& batch) const {
    const bool skip = skip_nonfinite();
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * cols;
      switch (options_.axis) {
        case ObserverAxis::per_tensor:
        case ObserverAxis::per_row: {
          Stats& s = batch[options_.axis == ObserverAxis::per_row ? size_t(r) : 0];
          for (int64_t c = 0; c < cols; ++c) {
            const float v = row[c];
            if (!std::isfinite(v)) {
              if (!skip) return nonfinite_error(v, r, c);
              continue;
            }
            s.add(v);
          }
          break;
        }
        case ObserverAxis::per_channel:
          for (int64_t c = 0; c < cols; ++c) {
            const float v = row[c];
            if (!std::isfinite(v)) {
              if (!skip) return nonfinite_error(v, r, c);
              continue;
            }
            batch[size_t(c)].add(v);
          }
          break;
      }
    }
    return Status::ok();
  }
};

// ---- minmax -------------------------------------------------------------------------------------

class MinMaxObserver final : public ObserverBase {
 public:
  explicit MinMaxObserver(ObserverOptions o) : ObserverBase(ObserverMethod::minmax, o) {}

 protected:
  void start_channels(int64_t) override {}
  void reset_state() override {}
  void on_batch(const float*, int64_t, int64_t, const std::vector<Stats>&) override {}
  void compute_ranges(std::vector<Range>& out) const override {
    for (size_t c = 0; c < out.size(); ++c) out[c] = Range{float(totals_[c].min), float(totals_[c].max)};
  }
};

// ---- moving-average minmax ----------------------------------------------------------------------

class EmaMinMaxObserver final : public ObserverBase {
 public:
  explicit EmaMinMaxObserver(ObserverOptions o) : ObserverBase(ObserverMethod::ema_minmax, o) {}

 protected:
  void start_channels(int64_t channels) override { ema_.assign(static_cast<size_t>(channels), Stats{}); }
  void reset_state() override { ema_.clear(); }
  void on_batch(const float*, int64_t, int64_t, const std::vector<Stats>& batch) override {
    const double m = options_.momentum;
    for (size_t c = 0; c < batch.size(); ++c) {
      if (batch[c].count == 0) continue;  // nothing finite in this channel this time
      Stats& e = ema_[c];
      if (e.count == 0) {
        e.min = batch[c].min;
        e.max = batch[c].max;
      } else {
        e.min += m * (batch[c].min - e.min);
        e.max += m * (batch[c].max - e.max);
      }
      e.count += batch[c].count;
    }
  }
  void compute_ranges(std::vector<Range>& out) const override {
    for (size_t c = 0; c < out.size(); ++c) out[c] = Range{float(ema_[c].min), float(ema_[c].max)};
  }

 private:
  std::vector<Stats> ema_;
};

// ---- histogram observers ------------------------------------------------------------------------

class HistogramObserver : public ObserverBase {
 public:
  HistogramObserver(ObserverMethod method, ObserverOptions o) : ObserverBase(method, o) {}

  std::vector<double> resolution() const override {
    std::vector<double> r(hists_.size(), 0.0);
    for (size_t c = 0; c < hists_.size(); ++c) r[c] = hists_[c].bin_width();
    return r;
  }

 protected:
  // Symmetric observers histogram |x| over [0, amax]; asymmetric ones x over [min, max].
  virtual bool magnitude() const { return options_.symmetric; }
  virtual Range channel_range(size_t c) const = 0;

  void start_channels(int64_t channels) override {
    hists_.assign(static_cast<size_t>(channels), calib::GridHistogram(options_.histogram_bins));
  }
  void reset_state() override { hists_.clear(); }

  void on_batch(const float* x, int64_t rows, int64_t cols, const std::vector<Stats>& batch) override {
    const bool mag = magnitude();
    for (size_t c = 0; c < batch.size(); ++c) {
      const Stats& s = batch[c];
      if (s.count == 0) continue;
      if (mag) {
        hists_[c].cover(0.0, std::max(std::fabs(s.min), std::fabs(s.max)));
      } else {
        hists_[c].cover(s.min, s.max);
      }
    }
    // Pass 2. Every channel's histogram is filled by one thread in row order, so the counts do not
    // depend on the thread count.
    auto add_values = [&](calib::GridHistogram& h, const float* v, int64_t n, int64_t stride) {
      for (int64_t k = 0; k < n; ++k) {
        const float f = v[k * stride];
        if (!std::isfinite(f)) continue;
        h.add(mag ? std::fabs(double(f)) : double(f));
      }
    };
    switch (options_.axis) {
      case ObserverAxis::per_tensor:
        add_values(hists_[0], x, rows * cols, 1);
        break;
      case ObserverAxis::per_row:
        parallel_for(rows, 16, [&](int64_t, int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) add_values(hists_[size_t(r)], x + r * cols, cols, 1);
        });
        break;
      case ObserverAxis::per_channel:
        // Blocks of 16 channels: one cache line of each row. With few rows per batch the cost is
        // dominated by the histograms' own memory traffic (8 * histogram_bins bytes a channel).
        parallel_for(cols, 16, [&](int64_t, int64_t c0, int64_t c1) {
          for (int64_t r = 0; r < rows; ++r) {
            const float* row = x + r * cols;
            for (int64_t c = c0; c < c1; ++c) {
              const float f = row[c];
              if (!std::isfinite(f)) continue;
              hists_[size_t(c)].add(mag ? std::fabs(double(f)) : double(f));
            }
          }
        });
        break;
    }
  }

  void compute_ranges(std::vector<Range>& out) const override {
    parallel_for(int64_t(out.size()), 1, [&](int64_t, int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) out[size_t(c)] = channel_range(size_t(c));
    });
  }

  std::vector<calib::GridHistogram> hists_;
};

class PercentileObserver final : public HistogramObserver {
 public:
  explicit PercentileObserver(ObserverOptions o) : HistogramObserver(ObserverMethod::percentile, o) {}

 protected:
  Range channel_range(size_t c) const override {
    const auto mass = hists_[c].mass();
    const double p = options_.percentile / 100.0;
    if (magnitude()) return clip_to_threshold(totals_[c], calib::mass_quantile(mass, p));
    return Range{float(calib::mass_quantile(mass, 1.0 - p)), float(calib::mass_quantile(mass, p))};
  }
};

class MseObserver final : public HistogramObserver {
 public:
  explicit MseObserver(ObserverOptions o) : HistogramObserver(ObserverMethod::mse, o) {}

 protected:
  Range channel_range(size_t c) const override {
    const Stats& s = totals_[c];
    const calib::GridHistogram& h = hists_[c];
    const calib::MomentTable table(h);
    if (magnitude()) {
      const double amax = h.hi();
      if (amax == 0) return Range{0, 0};
      const auto best = calib::search_clip_ratio(table, 0.0, amax, options_.bits, true);
      return clip_to_threshold(s, best.ratio * amax);
    }
    const double lo = std::min(s.min, 0.0), hi = std::max(s.max, 0.0);
    if (lo == hi) return Range{0, 0};
    const auto best = calib::search_clip_ratio(table, lo, hi, options_.bits, false);
    return Range{float(best.ratio * lo), float(best.ratio * hi)};
  }
};

class EntropyObserver final : public HistogramObserver {
 public:
  static constexpr int kBins = 2048;  // TensorRT's histogram size
  explicit EntropyObserver(ObserverOptions o) : HistogramObserver(ObserverMethod::entropy, o) {}

  std::vector<double> resolution() const override {
    std::vector<double> r(hists_.size(), 0.0);
    for (size_t c = 0; c < hists_.size(); ++c) r[c] = std::max(hists_[c].bin_width(), hists_[c].hi() / kBins);
    return r;
  }

 protected:
  bool magnitude() const override { return true; }  // KL calibration works on |x|

  Range channel_range(size_t c) const override {
    const Stats& s = totals_[c];
    const calib::GridHistogram& h = hists_[c];
    const double amax = h.hi();
    if (amax == 0) return Range{0, 0};
    const bool unsigned_grid = !options_.symmetric && s.min >= 0;
    const int levels = 1 << (unsigned_grid ? options_.bits : options_.bits - 1);
    const std::vector<double> bins = calib::resample(h.mass(), 0.0, amax, kBins);
    const int best = calib::entropy_best_index(bins, levels);
    const double threshold = std::min((double(best) + 0.5) * (amax / kBins), amax);
    return clip_to_threshold(s, threshold);
  }
};

Expected<double> parse_spec_number(std::string_view spec, std::string_view text) {
  double v = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || ptr != end || !std::isfinite(v)) {
    return invalid_argument("observer spec '" + std::string(spec) + "': '" + std::string(text) + "' is not a number");
  }
  return v;
}

}  // namespace

Expected<std::unique_ptr<Observer>> make_observer(ObserverMethod method, ObserverOptions options) {
  QFORGE_RETURN_IF_ERROR(validate_observer_options(method, options));
  switch (method) {
    case ObserverMethod::minmax: return std::unique_ptr<Observer>(new MinMaxObserver(options));
    case ObserverMethod::ema_minmax: return std::unique_ptr<Observer>(new EmaMinMaxObserver(options));
    case ObserverMethod::percentile: return std::unique_ptr<Observer>(new PercentileObserver(options));
    case ObserverMethod::mse: return std::unique_ptr<Observer>(new MseObserver(options));
    case ObserverMethod::entropy: return std::unique_ptr<Observer>(new EntropyObserver(options));
  }
  return invalid_argument("unknown observer method");
}

Expected<std::unique_ptr<Observer>> make_observer(std::string_view spec, ObserverOptions options) {
  const size_t colon = spec.find(':');
  const std::string_view name = spec.substr(0, colon);
  const bool has_value = colon != std::string_view::npos;
  const std::string_view value = has_value ? spec.substr(colon + 1) : std::string_view();
  for (ObserverMethod m : kMethods) {
    if (name != observer_method_name(m)) continue;
    if (has_value) {
      if (m != ObserverMethod::ema_minmax && m != ObserverMethod::percentile) {
        return invalid_argument("observer spec '" + std::string(spec) + "': '" + std::string(name) +
                                "' takes no value (valid: " + kSpecHelp + ")");
      }
      QFORGE_ASSIGN_OR_RETURN(double v, parse_spec_number(spec, value));
      if (m == ObserverMethod::ema_minmax) options.momentum = v;
      if (m == ObserverMethod::percentile) options.percentile = v;
    }
    auto made = make_observer(m, options);
    if (!made.has_value()) return made.status().with_context("observer spec '" + std::string(spec) + "'");
    return made;
  }
  return invalid_argument("unknown observer '" + std::string(spec) + "' (valid: " + kSpecHelp + ")");
}

}  // namespace qforge
