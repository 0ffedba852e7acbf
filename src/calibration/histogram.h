// Internal building blocks of the histogram-based observers (percentile, mse, entropy).
// Exposed to tests through the src/ include path; not part of the public API.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "qforge/observer.h"

namespace qforge::calib {

// Mass spread uniformly over [a, b]; a == b is a point mass.
struct MassBin {
  double a = 0;
  double b = 0;
  double count = 0;
};

// Streaming histogram on an aligned power-of-two grid.
//
// Bin i holds values v with floor(v * inv_width) == k0 + i. When a batch falls outside the window,
// the grid width doubles (pairs of bins merge exactly, since grid cells nest) and/or the window
// slides, so counts stay exact integers and the final histogram depends only on the first batch
// with a spread (which sets the base width) and the overall range, not on how the rest of the data
// was split. The width is the smallest power-of-two multiple of the base width that fits, so the
// observed range spans more than (bins-1)/2 bins: bin width <= max(2 * (max - min) / (bins - 1),
// 2^-30 * max|x|). Until a batch with a spread arrives the histogram is a point mass (all values
// equal) and allocates nothing.
class GridHistogram {
 public:
  explicit GridHistogram(int bins = 2048);

  // Extends the covered range to include [lo, hi] (finite, lo <= hi). Call before add()ing
  // values of a batch with that batch's min and max.
  void cover(double lo, double hi);
  // Adds one value inside the covered range.
  void add(double v) {
    if (inv_width_ == 0) {
      ++point_count_;
    } else {
      ++counts_[static_cast<size_t>(index_of(v))];
    }
  }

  bool empty() const { return total() == 0; }
  double inv_width() const { return inv_width_; }
  int64_t first_index() const { return k0_; }
  uint64_t total() const;
  int bins() const { return bins_; }
  double lo() const { return lo_; }  // smallest covered value
  double hi() const { return hi_; }  // largest covered value
  // Width of one bin; 0 while the histogram is a point mass.
  double bin_width() const { return inv_width_ == 0 ? 0.0 : 1.0 / inv_width_; }
  const std::vector<uint64_t>& counts() const { return counts_; }
  // Non-empty bins as uniform mass on [edge_i, edge_i+1] clipped to [lo, hi], ascending; with
  // include_empty, every bin of the window (a point mass stays a single entry).
  std::vector<MassBin> mass(bool include_empty = false) const;

 private:
  // Window bin of v: floor(v * inv_width) - k0 clamped (the clamp only matters for rounding at the
  // window edge). |v * inv_width| stays below 2^32 (see init_grid), so the truncation-based floor
  // is exact and avoids a libm call on baseline x86-64 (no SSE4.1 roundsd).
  int64_t index_of(double v) const {
    const double x = v * inv_width_;
    int64_t k = static_cast<int64_t>(x);
    k -= (x < double(k)) ? 1 : 0;
    int64_t i = k - k0_;
    if (i < 0) i = 0;
    if (i >= bins_) i = bins_ - 1;
    return i;
  }
  void init_grid();

  int bins_;
  bool has_range_ = false;
  double lo_ = 0;
  double hi_ = 0;
  double inv_width_ = 0;  // 0: no grid yet (point mass)
  int64_t k0_ = 0;
  std::vector<uint64_t> counts_;
  uint64_t point_count_ = 0;
};

// Value below which a fraction q in [0, 1] of the mass lies, interpolating linearly inside the
// bin where the cumulative count crosses q * total. For a histogram of a sample this is within
// one bin width of the nearest-rank sample quantile (the k-th smallest, k = ceil(q * n)).
double mass_quantile(const std::vector<MassBin>& mass, double q);

// Re-bins mass into n equal bins over [lo, hi] (lo < hi), splitting each source bin in
// proportion to overlap (uniform density inside a bin); mass outside goes to the end bins.
std::vector<double> resample(const std::vector<MassBin>& mass, double lo, double hi, int n);

// ---- TensorRT entropy (KL) calibration ----

// Candidate distribution Q for threshold index i: bins[0..i) merged into `levels` levels (bin j
// belongs to level floor(j * levels / i)), then expanded back to i bins by spreading each level's
// count evenly over its non-empty bins (empty bins stay empty). Unnormalised.
std::vector<double> entropy_candidate_q(const std::vector<double>& bins, int i, int levels);

// KL(P || Q) for threshold index i, straight from the definition: P = bins[0..i) with the
// outliers bins[i..] added to bin i-1, Q = entropy_candidate_q, both normalised. +inf when P has
// mass where Q has none. The reference for entropy_divergences().
double entropy_divergence_ref(const std::vector<double>& bins, int i, int levels);

// KL(P || Q) for every i in [levels, bins.size()] (index i - levels), in O(levels) per i using
// prefix sums of counts, of non-empty-bin counts and of c*log(c); equal to the reference up to
// rounding.
std::vector<double> entropy_divergences(const std::vector<double>& bins, int levels);

// Index i in [levels, bins.size()] with minimal divergence (ties: the larger i, i.e. less
// clipping); bins.size() when every candidate is infinite.
int entropy_best_index(const std::vector<double>& bins, int levels);

// ---- MSE-optimal clipping ----

// Moments of a histogram read as a piecewise-uniform density (each bin's count spread evenly over
// the bin, the end bins clipped to the observed [lo, hi]), for the expected squared quantization
// error integrated exactly cell by cell. Lookups are O(1): the bin of t is computed from the grid.
class MomentTable {
 public:
  explicit MomentTable(const GridHistogram& hist);
  double total() const { return totals_[0]; }
  // {count, sum x, sum x^2} of the mass at or below t.
  std::array<double, 3> below(double t) const;
  // Expected sum of squared errors under the b-bit grid qp. magnitude: the histogram is of |x|
  // and the grid symmetric (the error of a symmetric quantizer is even in x).
  double expected_error(const QuantParams& qp, bool magnitude) const;

 private:
  std::vector<MassBin> bins_;                   // dense: one per grid bin (or one point mass)
  std::vector<std::array<double, 3>> prefix_;   // moments of bins_[0..i)
  std::array<double, 3> totals_{};
  double inv_width_ = 0;
  int64_t k0_ = 0;
};

struct ClipSearchResult {
  double ratio = 1;        // chosen clip ratio in (0, 1]
  double error = 0;        // expected squared error at that ratio (sum over the mass)
  double error_full = 0;   // expected squared error without clipping (ratio 1)
};

// Grid search of the clip ratio: 1.00, 0.99, ..., 0.01, then steps of 0.0005 within +-0.01 of the
// best. magnitude: range [-ratio*amax, ratio*amax] with amax = max of `mass`; otherwise the range
// [ratio*lo, ratio*hi] with lo = min(min of mass, 0), hi = max(max of mass, 0). The grid is the one
// range_to_qparams builds, so the search optimises what will actually be used.
ClipSearchResult search_clip_ratio(const MomentTable& table, double lo, double hi, int bits, bool magnitude);

}  // namespace qforge::calib
