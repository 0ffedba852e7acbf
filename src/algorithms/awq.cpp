// AWQ scale and clipping searches on Gram-matrix statistics (include/qforge/awq.h).
#include "qforge/awq.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace qforge {
namespace {

// Σ_o d_oᵀ G d_o for D [rows, cols] and G [cols, cols] (f32 copy), via M = D·G.
double gram_error(const float* d, int64_t rows, int64_t cols, const float* gram_f, std::vector<float>& m) {
  m.resize(static_cast<size_t>(rows * cols));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols),
              static_cast<int>(cols), 1.0f, d, static_cast<int>(cols), gram_f, static_cast<int>(cols), 0.0f, m.data(),
              static_cast<int>(cols));
  double e = 0;
  for (size_t k = 0; k < m.size(); ++k) e += static_cast<double>(d[k]) * m[k];
  return e;
}

std::vector<float> to_float(const double* g, int64_t n) {
  std::vector<float> f(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) f[static_cast<size_t>(i)] = static_cast<float>(g[i]);
  return f;
}

// dequant(quantize(w)) into out.
Status fake_quantize(const Scheme& scheme, const float* w, int64_t rows, int64_t cols, float* out) {
  QFORGE_ASSIGN_OR_RETURN(QuantizedTensor q, quantize(scheme, w, rows, cols));
  return dequantize(q, out);
}

}  // namespace

double awq_output_error(const float* w, const float* approx, int64_t rows, int64_t cols, const double* gram) {
  std::vector<float> d(static_cast<size_t>(rows * cols)), m;
  for (size_t k = 0; k < d.size(); ++k) d[k] = w[k] - approx[k];
  const std::vector<float> g = to_float(gram, cols * cols);
  return gram_error(d.data(), rows, cols, g.data(), m);
}

void awq_scale_columns(const AwqWeight& w, const float* s) {
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t c = 0; c < w.cols; ++c) w.w[r * w.cols + c] *= s[c];
}

void awq_unscale_rows(const AwqWeight& w, const float* s, float* bias) {
  for (int64_t r = 0; r < w.rows; ++r) {
    const float inv = 1.0f / s[r];
    for (int64_t c = 0; c < w.cols; ++c) w.w[r * w.cols + c] *= inv;
    if (bias != nullptr) bias[r] *= inv;
  }
}

void awq_rescale_stats(double* gram, double* mean_abs, int64_t in, const float* s) {
  for (int64_t i = 0; i < in; ++i) {
    if (mean_abs != nullptr) mean_abs[i] /= s[i];
    if (gram != nullptr)
      for (int64_t j = 0; j < in; ++j) gram[i * in + j] /= static_cast<double>(s[i]) * s[j];
  }
}

Expected<AwqScaleResult> awq_search_scales(std::span<const AwqWeight> weights, const double* gram,
                                           const double* mean_abs, int64_t in, const Scheme& scheme,
                                           const AwqOptions& options) {
  if (weights.empty()) return invalid_argument("awq: a group without linears");
  if (options.grid < 1 || options.grid > 1000) return invalid_argument("awq: grid must be in [1, 1000]");
  for (const AwqWeight& w : weights)
    if (w.cols != in) return invalid_argument("awq: a linear of the group has " + std::to_string(w.cols) +
                                              " input columns, the statistics " + std::to_string(in));
  const std::vector<float> g = to_float(gram, in * in);
  AwqScaleResult best;
  best.error = std::numeric_limits<double>::infinity();
  std::vector<float> s(static_cast<size_t>(in)), scaled, approx, d, m;
  for (int step = 0; step < options.grid; ++step) {
    const double alpha = static_cast<double>(step) / options.grid;
    float smax = 0, smin = std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < in; ++j) {
      const float v = static_cast<float>(std::pow(std::max(mean_abs[j], 1e-4), alpha));
      s[static_cast<size_t>(j)] = v;
      smax = std::max(smax, v);
      smin = std::min(smin, v);
    }
    const float norm = std::sqrt(smax * smin);
    for (float& v : s) v /= norm;
    double err = 0;
    for (const AwqWeight& w : weights) {
      const size_t n = static_cast<size_t>(w.rows * w.cols);
      scaled.assign(w.w, w.w + n);
      for (int64_t r = 0; r < w.rows; ++r)
        for (int64_t c = 0; c < w.cols; ++c) scaled[static_cast<size_t>(r * w.cols + c)] *= s[static_cast<size_t>(c)];
      approx.resize(n);
      QFORGE_RETURN_IF_ERROR(fake_quantize(scheme, scaled.data(), w.rows, w.cols, approx.data()));
      d.resize(n);
      for (int64_t r = 0; r < w.rows; ++r)
        for (int64_t c = 0; c < w.cols; ++c) {
          const size_t k = static_cast<size_t>(r * w.cols + c);
          d[k] = w.w[k] - approx[k] / s[static_cast<size_t>(c)];
        }
      err += gram_error(d.data(), w.rows, w.cols, g.data(), m);
    }
    if (step == 0) best.error_rtn = err;
    if (err < best.error) {
      best.error = err;
      best.alpha = alpha;
      best.scales = s;
    }
  }
  return best;
}

Expected<AwqClipResult> awq_search_clip(const AwqWeight& w, const double* gram, const Scheme& scheme,
                                        const AwqOptions& options) {
  if (scheme.granularity == Granularity::tensor)
    return invalid_argument("awq clip search: per-tensor schemes have no independent groups");
  if (options.clip_grid < 1 || !(options.max_shrink > 0 && options.max_shrink < 1))
    return invalid_argument("awq clip search: clip_grid >= 1 and max_shrink in (0, 1) required");
  QFORGE_RETURN_IF_ERROR(validate_scheme(scheme, w.rows, w.cols));
  const int64_t rows = w.rows, cols = w.cols;
  const int64_t gs = scheme.granularity == Granularity::group ? scheme.group_size : cols;
  const int64_t groups = cols / gs;
  const size_t n = static_cast<size_t>(rows * cols);
  // The diagonal blocks G_gg as f32.
  std::vector<float> blocks(static_cast<size_t>(groups * gs * gs));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t i = 0; i < gs; ++i)
      for (int64_t j = 0; j < gs; ++j)
        blocks[static_cast<size_t>((g * gs + i) * gs + j)] = static_cast<float>(gram[(g * gs + i) * cols + g * gs + j]);
  std::vector<float> amax(static_cast<size_t>(rows * groups), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float& a = amax[static_cast<size_t>(r * groups + c / gs)];
      a = std::max(a, std::fabs(w.w[r * cols + c]));
    }
  const int candidates = std::max(1, static_cast<int>(options.max_shrink * options.clip_grid));
  std::vector<double> best_err(static_cast<size_t>(rows * groups), std::numeric_limits<double>::infinity());
  std::vector<float> best_ratio(static_cast<size_t>(rows * groups), 1.0f);
  std::vector<float> clamped(n), approx(n), dg(static_cast<size_t>(rows * gs)), m;
  AwqClipResult result;
  for (int i = 0; i < candidates; ++i) {
    const float ratio = 1.0f - static_cast<float>(i) / static_cast<float>(options.clip_grid);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float t = amax[static_cast<size_t>(r * groups + c / gs)] * ratio;
        clamped[static_cast<size_t>(r * cols + c)] = std::clamp(w.w[r * cols + c], -t, t);
      }
    QFORGE_RETURN_IF_ERROR(fake_quantize(scheme, clamped.data(), rows, cols, approx.data()));
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < gs; ++j) {
          const int64_t c = g * gs + j;
          dg[static_cast<size_t>(r * gs + j)] = w.w[r * cols + c] - approx[static_cast<size_t>(r * cols + c)];
        }
      m.resize(dg.size());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(gs),
                  static_cast<int>(gs), 1.0f, dg.data(), static_cast<int>(gs), blocks.data() + g * gs * gs,
                  static_cast<int>(gs), 0.0f, m.data(), static_cast<int>(gs));
      for (int64_t r = 0; r < rows; ++r) {
        double e = 0;
        for (int64_t j = 0; j < gs; ++j) e += static_cast<double>(dg[static_cast<size_t>(r * gs + j)]) * m[static_cast<size_t>(r * gs + j)];
        const size_t k = static_cast<size_t>(r * groups + g);
        if (i == 0) result.error_before += e;
        if (e < best_err[k]) {  // strict: ties keep the larger ratio
          best_err[k] = e;
          best_ratio[k] = ratio;
        }
      }
    }
  }
  double ratio_sum = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const size_t k = static_cast<size_t>(r * groups + c / gs);
      const float t = amax[k] * best_ratio[k];
      w.w[r * cols + c] = std::clamp(w.w[r * cols + c], -t, t);
    }
  for (size_t k = 0; k < best_err.size(); ++k) {
    result.error_after += best_err[k];
    ratio_sum += best_ratio[k];
  }
  result.mean_ratio = best_err.empty() ? 1.0 : ratio_sum / static_cast<double>(best_err.size());
  return result;
}

}  // namespace qforge
