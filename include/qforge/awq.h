// AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization"): per-input-channel scales
// searched on calibration statistics, folded exactly into the preceding norm or linear, then a
// per-group clipping search, then RTN or GPTQ on the result.
//
// Everything here works on second-order statistics of a linear group's input X [tokens, in]:
//   G = Σ_t x_t x_tᵀ (the un-normalised Gram matrix, = GPTQ's H / 2) and m_j = mean_t |x_tj|.
// The output error of replacing W [out, in] by W' on the calibration inputs is exactly
//   E(W') = Σ_t ||W x_t - W' x_t||² = Σ_o d_oᵀ G d_o,   d_o = row o of (W - W'),
// so every candidate is scored on all calibration tokens without re-running the model.
//
// Scale search (one group of linears sharing the input, e.g. q/k/v after input_layernorm):
//   for α in {0, 1/n, ..., (n-1)/n} (n = grid, default 20):
//     s_j = max(m_j, 1e-4)^α, normalised by sqrt(max s · min s) (AutoAWQ's normalisation);
//     W'_k = Q(W_k · diag(s)) · diag(1/s) for each linear k of the group (Q = the target scheme's
//     round-to-nearest quantizer);   score(α) = Σ_k E_k(W'_k).
//   The α with the lowest score wins; α = 0 is s = 1, plain RTN, so the search never loses to RTN
//   on the calibration data. Folding: the preceding norm's weight (and bias) /= s, the group's
//   columns *= s (or, for v->o and up->down, the producer's output rows /= s): exact in real
//   arithmetic, so the float model is unchanged up to rounding.
// Clipping search (per linear, after scaling): for every (row, group) of `group_size` columns the
// clamp threshold r · max|w| for r in {1, 1 - 1/n, ..., 1 - max_shrink} (AutoAWQ: n = 20,
// max_shrink 0.5, so 10 candidates) minimising the group's output error d_gᵀ G_gg d_g (G_gg the
// group's diagonal block of G; other groups' errors are independent of this choice only up to the
// cross terms, which AutoAWQ's per-group search also ignores). The weights are clamped to
// [-r max|w|, r max|w|] before the final quantizer runs. AutoAWQ skips clipping for q and k.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "qforge/format.h"
#include "qforge/status.h"

namespace qforge {

struct AwqOptions {
  int grid = 20;              // α candidates in [0, 1)
  int clip_grid = 20;         // clip ratios step 1 / clip_grid
  double max_shrink = 0.5;    // smallest clip ratio = 1 - max_shrink
  bool clip = true;
};

// One linear of a group: W [rows, cols] row-major f32 (modified in place by the fold / clip helpers).
struct AwqWeight {
  float* w = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

struct AwqScaleResult {
  std::vector<float> scales;  // s [in], > 0
  double alpha = 0;           // chosen α
  double error = 0;           // score of the chosen α
  double error_rtn = 0;       // score of α = 0 (plain round-to-nearest)
};

// The scale search above. `gram` is G [in, in] (row-major, symmetric), `mean_abs` m [in].
Expected<AwqScaleResult> awq_search_scales(std::span<const AwqWeight> weights, const double* gram,
                                           const double* mean_abs, int64_t in, const Scheme& scheme,
                                           const AwqOptions& options);

// Output error Σ_o d_oᵀ G d_o of replacing `w` by `approx` (both [rows, cols]).
double awq_output_error(const float* w, const float* approx, int64_t rows, int64_t cols, const double* gram);

// W · diag(s): columns of each weight multiplied by s.
void awq_scale_columns(const AwqWeight& w, const float* s);
// diag(1/s) · W (and the bias): output rows divided by s (the producer side of v->o, up->down).
void awq_unscale_rows(const AwqWeight& w, const float* s, float* bias = nullptr);
// The statistics of X · diag(1/s), the input once the scales are folded upstream: G_ij /= s_i s_j,
// m_j /= s_j (exact).
void awq_rescale_stats(double* gram, double* mean_abs, int64_t in, const float* s);

struct AwqClipResult {
  double mean_ratio = 1;   // mean chosen clip ratio over (row, group)
  double error_before = 0; // Σ group errors at ratio 1
  double error_after = 0;  // Σ group errors at the chosen ratios
};
// The clipping search above; clamps `w` in place. Needs a group or channel int scheme (any
// format works: the group's error is measured through the table's quantizer).
Expected<AwqClipResult> awq_search_clip(const AwqWeight& w, const double* gram, const Scheme& scheme,
                                        const AwqOptions& options);

}  // namespace qforge
