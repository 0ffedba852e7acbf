// SmoothQuant migration scales and their exact fold (include/qforge/smoothquant.h).
#include "qforge/smoothquant.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace qforge {

Expected<std::vector<float>> smoothquant_scales(const float* act_absmax, int64_t in, std::span<const AwqWeight> weights,
                                                const SmoothQuantOptions& options) {
  if (!(options.alpha >= 0.0 && options.alpha <= 1.0))
    return invalid_argument("smoothquant: --alpha " + std::to_string(options.alpha) + " is not in [0, 1]");
  if (weights.empty()) return invalid_argument("smoothquant: a group without linears");
  std::vector<float> wmax(static_cast<size_t>(in), 0.0f);
  for (const AwqWeight& w : weights) {
    if (w.cols != in)
      return invalid_argument("smoothquant: a linear has " + std::to_string(w.cols) + " input columns, the statistics " +
                              std::to_string(in));
    for (int64_t r = 0; r < w.rows; ++r)
      for (int64_t c = 0; c < in; ++c) wmax[static_cast<size_t>(c)] = std::max(wmax[static_cast<size_t>(c)], std::fabs(w.w[r * in + c]));
  }
  std::vector<float> s(static_cast<size_t>(in), 1.0f);
  for (int64_t j = 0; j < in; ++j) {
    const double a = act_absmax[j], b = wmax[static_cast<size_t>(j)];
    if (!(a > 0.0) || !(b > 0.0) || !std::isfinite(a)) continue;
    const double v = std::pow(a, options.alpha) / std::pow(b, 1.0 - options.alpha);
    s[static_cast<size_t>(j)] = static_cast<float>(std::clamp(v, 1e-5, 1e5));
  }
  return s;
}

void smoothquant_fold_norm(std::span<float> norm_weight, std::span<float> norm_bias, const std::vector<float>& s) {
  for (size_t j = 0; j < norm_weight.size() && j < s.size(); ++j) norm_weight[j] /= s[j];
  for (size_t j = 0; j < norm_bias.size() && j < s.size(); ++j) norm_bias[j] /= s[j];
}

}  // namespace qforge
