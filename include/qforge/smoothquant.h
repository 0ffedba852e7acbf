// SmoothQuant (Xiao et al. 2022, "SmoothQuant: Accurate and Efficient Post-Training Quantization
// for Large Language Models"): migrates activation outliers into the weights with a per-input-
// channel scale, so that both quantize well to int8 (W8A8).
//
//   s_j = max_t |X_tj|^α / max_{k,o} |W_k[o, j]|^(1-α)        (α = migration strength, default 0.5)
// over the linears k sharing the input X (q/k/v after input_layernorm; gate/up after
// post_attention_layernorm). The fold is exact: the norm's weight (and bias) are divided by s and
// the linears' columns multiplied by s (awq_scale_columns), so X' = X diag(1/s), W' = W diag(s)
// and X' W'ᵀ = X Wᵀ. Channels whose activation or weight maximum is 0 keep s = 1, and s is clamped
// to [1e-5, 1e5] so a dead channel cannot blow the fold up.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "qforge/awq.h"
#include "qforge/status.h"

namespace qforge {

struct SmoothQuantOptions {
  double alpha = 0.5;  // in [0, 1]
};

// The scales above from the per-channel activation maxima `act_absmax` [in] and the group's weights.
Expected<std::vector<float>> smoothquant_scales(const float* act_absmax, int64_t in, std::span<const AwqWeight> weights,
                                                const SmoothQuantOptions& options);

// Folds s into a norm (weight, and bias when non-empty: both divided by s).
void smoothquant_fold_norm(std::span<float> norm_weight, std::span<float> norm_bias, const std::vector<float>& s);

}  // namespace qforge
