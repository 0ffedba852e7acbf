// Calibration observers: range estimators for activations and weights, fed batch by batch.
//
// A batch is a row-major float matrix [rows, cols]; for activations rows are tokens and cols are
// channels. An observer keeps statistics across observe() calls and reports a Range per tensor or
// per channel, which range_to_qparams() turns into (scale, zero_point) for b-bit integers.
//
//   auto obs = make_observer("percentile:99.99", {.axis = ObserverAxis::per_channel});
//   for (auto& batch : batches) QFORGE_RETURN_IF_ERROR((*obs)->observe(batch.data(), tokens, dim));
//   QFORGE_ASSIGN_OR_RETURN(auto ranges, (*obs)->ranges());   // one Range per column
//
// Methods (spec names for make_observer):
//   minmax            exact running min and max.
//   ema-minmax[:m]    per-batch min/max averaged as PyTorch's MovingAverageMinMaxObserver:
//                     first batch sets the range, then r += m * (batch_r - r); m defaults to 0.01.
//   percentile[:p]    p-th percentile of |x| -> [-T, T] (symmetric), or the (100-p)-th and p-th
//                     percentiles of x (asymmetric); p defaults to 99.99. Computed from the
//                     streaming histogram (below): within one bin width (resolution()) of the
//                     nearest-rank sample percentile.
//   mse               clip ratio minimising the expected b-bit quantization MSE, found by grid
//                     search on the histogram treated as a piecewise-uniform density (exact
//                     integral per quantization cell) over r = 1.00, 0.99, ..., 0.01, refined in
//                     steps of 0.0005 around the best. Symmetric: [-r*amax, r*amax];
//                     asymmetric: [r*min, r*max] of the zero-including range. The grid scored
//                     is the one range_to_qparams() builds (options.bits, options.symmetric).
//   entropy           TensorRT's KL-divergence calibration ("8-bit Inference with TensorRT",
//                     GTC 2017): a 2048-bin histogram of |x| over [0, amax]; for every candidate
//                     i from 2^(b-1) (128 at 8 bits) to 2048 bins, P = bins[0..i) with the
//                     outliers folded into bin i-1, Q = bins[0..i) merged into 2^(b-1) levels and
//                     expanded back over the non-empty bins; the i minimising KL(P||Q) gives
//                     T = (i + 0.5) * bin width (capped at amax). With symmetric=false and no
//                     negative values the 2^b unsigned levels are used (pytorch-quantization's
//                     "unsigned"). Note: pytorch-quantization reports i * bin width and replaces
//                     bin 0 by bin 1; qforge follows the slide.
//
// Histograms (percentile, mse, entropy) are kept per channel on an aligned grid whose width
// doubles (exact pairwise merging) and whose window slides when a batch exceeds the range, so any
// number of batches fit in `histogram_bins` counters while the observed range always spans more
// than half of them (bin width <= 2 * (max - min) / (histogram_bins - 1), or 2^-30 * max|x| when
// that is larger, for data far from 0 with a tiny spread). Entropy re-bins that
// histogram to exactly 2048 bins over [0, amax], splitting stored bins in proportion to overlap
// (uniform density inside a bin); with the default 4096 stored bins a stored bin is at most
// 2 * amax / 4095 (1.0003 target bins) wide, so re-binning moves mass by about one target bin at
// most. Memory: 8 bytes * histogram_bins per channel (per-channel histograms of wide layers are
// large: 4096 channels * 4096 bins = 128 MiB; lower histogram_bins there if needed).
//
// Symmetric observers report [max(min, -T), min(max, T)], i.e. the threshold intersected with the
// observed range, so that asymmetric qparams on one-sided data stay tight; symmetric qparams of
// that range use exactly T.
//
// NaN/Inf: by default observe() rejects a batch containing one (invalid_argument naming the row
// and column; the observer is left unchanged). With nonfinite = skip they are ignored; a channel
// without any finite value has no range (ranges() fails naming it).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/status.h"

namespace qforge {

struct Range {
  float min = 0;
  float max = 0;
};

// b-bit integer grid: x ~ (q - zero_point) * scale with q in [qmin, qmax].
struct QuantParams {
  float scale = 1;
  int32_t zero_point = 0;
  int32_t qmin = 0;
  int32_t qmax = 0;

  // clamp(round_half_even(x / scale) + zero_point, qmin, qmax)
  int32_t quantize(float x) const;
  float dequantize(int32_t q) const { return float(q - zero_point) * scale; }
  float fake_quantize(float x) const { return dequantize(quantize(x)); }
};

// symmetric:  q in [-(2^(b-1)-1), 2^(b-1)-1] (restricted, as TensorRT/ModelOpt), zero_point 0,
//             scale = max(|min|, |max|) / (2^(b-1)-1).
// asymmetric: q in [0, 2^b - 1]; the range is first extended to contain 0 (so 0 is exact),
//             scale = (max - min) / (2^b - 1), zero_point = round(-min / scale) clamped to [0, 2^b-1].
// An all-zero range gives scale 1; scales below FLT_MIN are raised to FLT_MIN.
// bits in [2, 16]; min <= max, both finite.
Expected<QuantParams> range_to_qparams(Range range, int bits, bool symmetric);
// range_to_qparams for each channel; errors name the channel.
Expected<std::vector<QuantParams>> ranges_to_qparams(const std::vector<Range>& ranges, int bits, bool symmetric);

enum class ObserverMethod { minmax, ema_minmax, percentile, mse, entropy };

enum class ObserverAxis {
  per_tensor,   // one range for everything
  per_channel,  // one range per column (activation channel); cols fixed across batches
  per_row,      // one range per row (weights [out, in] per output channel); rows fixed
};

enum class NonFinitePolicy { error, skip };

struct ObserverOptions {
  ObserverAxis axis = ObserverAxis::per_tensor;
  int bits = 8;              // target width: mse in [2, 12], entropy in [2, 10]
  bool symmetric = true;     // histogram of |x| (symmetric) or of x (asymmetric)
  double momentum = 0.01;    // ema-minmax, in (0, 1]
  double percentile = 99.99; // percentile, in (0, 100]
  int histogram_bins = 4096; // per channel, in [16, 1 << 22]
  NonFinitePolicy nonfinite = NonFinitePolicy::error;
};

class Observer {
 public:
  virtual ~Observer() = default;

  // Adds one batch, row-major [rows, cols]. rows or cols may be 0 (no-op).
  virtual Status observe(const float* x, int64_t rows, int64_t cols) = 0;
  // One Range per channel (size 1 for per_tensor). Fails before any data.
  virtual Expected<std::vector<Range>> ranges() const = 0;
  // The single range of a per_tensor observer.
  Expected<Range> range() const;
  // Per channel, the bin width of the histogram the result was read from (0 for minmax and
  // ema-minmax, which are exact). Bounds the percentile error.
  virtual std::vector<double> resolution() const = 0;
  // Channels seen so far (0 before data).
  virtual int64_t channels() const = 0;
  // Finite values observed so far, all channels together.
  virtual uint64_t count() const = 0;
  virtual void reset() = 0;

  ObserverMethod method() const { return method_; }
  const ObserverOptions& options() const { return options_; }
  // The spec it was made from, e.g. "percentile:99.99".
  std::string name() const;

 protected:
  Observer(ObserverMethod method, ObserverOptions options) : method_(method), options_(options) {}
  ObserverMethod method_;
  ObserverOptions options_;
};

// Checks options for a method (ranges above); the error names the option and the value.
Status validate_observer_options(ObserverMethod method, const ObserverOptions& options);

// "minmax", "ema-minmax[:momentum]", "percentile[:p]", "mse", "entropy". A value in the spec
// overrides options.momentum / options.percentile. Errors list the valid names.
Expected<std::unique_ptr<Observer>> make_observer(std::string_view spec, ObserverOptions options = {});
Expected<std::unique_ptr<Observer>> make_observer(ObserverMethod method, ObserverOptions options = {});

const char* observer_method_name(ObserverMethod method);

}  // namespace qforge
