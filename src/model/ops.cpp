// Elementwise and normalisation kernels of the fp32 forward pass. Reductions accumulate in double
// so results sit closer to the exact value than a plain fp32 sum; the PyTorch references we are
// compared against are themselves within a few fp32 ulps of it.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "model/model_impl.h"

namespace qforge::ops {

void rms_norm(const float* x, const float* w, int64_t n, int64_t dim, double eps, float* y) {
#pragma omp parallel for if (n * dim > 32768)
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * dim;
    float* yr = y + t * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

void layer_norm(const float* x, const float* w, const float* b, int64_t n, int64_t dim, double eps, float* y) {
#pragma omp parallel for if (n * dim > 32768)
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * dim;
    float* yr = y + t * dim;
    double sum = 0;
    for (int64_t i = 0; i < dim; ++i) sum += xr[i];
    const double mean = sum / static_cast<double>(dim);
    double var = 0;
    for (int64_t i = 0; i < dim; ++i) {
      const double d = xr[i] - mean;
      var += d * d;
    }
    var /= static_cast<double>(dim);
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < dim; ++i)
      yr[i] = static_cast<float>((xr[i] - mean) * inv) * w[i] + (b ? b[i] : 0.0f);
  }
}

bool use_avx2() {
  static const bool yes = [] {
    const char* level = std::getenv("QFORGE_SIMD_LEVEL");
    if (level != nullptr && std::strcmp(level, "scalar") == 0) return false;
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
  }();
  return yes;
}

void silu_mul(const float* gate, const float* up, int64_t count, float* y) {
  if (use_avx2()) {
    silu_mul_avx2(gate, up, count, y);
  } else {
    silu_mul_ref(gate, up, count, y);
  }
}

void softmax(float* x, int64_t n) {
  if (use_avx2()) {
    softmax_avx2(x, n);
  } else {
    softmax_ref(x, n);
  }
}

void softmax_ref(float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  if (mx == -std::numeric_limits<float>::infinity()) {
    for (int64_t i = 0; i < n; ++i) x[i] = 0.0f;
    return;
  }
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul_ref(const float* gate, const float* up, int64_t count, float* y) {
#pragma omp parallel for if (count > 65536)
  for (int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    y[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void gelu_tanh(float* x, int64_t count) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
#pragma omp parallel for if (count > 65536)
  for (int64_t i = 0; i < count; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

void gelu_erf(float* x, int64_t count) {
#pragma omp parallel for if (count > 65536)
  for (int64_t i = 0; i < count; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::erf(v * 0.7071067811865476f));
  }
}

void rope(float* x, int64_t heads, int64_t head_dim, int64_t position, const float* inv_freq, RopeStyle style) {
  const int64_t half = head_dim / 2;
  // The angle is rounded to fp32 as HF does (fp32 positions times fp32 inverse frequencies), then
  // its cosine and sine are taken accurately.
  float cos_buf[512], sin_buf[512];
  const bool small = half <= 512;
  std::vector<float> cos_big, sin_big;
  float* cs = cos_buf;
  float* sn = sin_buf;
  if (!small) {
    cos_big.resize(static_cast<size_t>(half));
    sin_big.resize(static_cast<size_t>(half));
    cs = cos_big.data();
    sn = sin_big.data();
  }
  const float pos = static_cast<float>(position);
  for (int64_t i = 0; i < half; ++i) {
    const float angle = pos * inv_freq[i];
    cs[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
    sn[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
  }
  rope_apply(x, heads, head_dim, cs, sn, style);
}

void rope_apply(float* x, int64_t heads, int64_t head_dim, const float* cs, const float* sn, RopeStyle style) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * head_dim;
    if (style == RopeStyle::half_split) {
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cs[i] - b * sn[i];
        v[i + half] = b * cs[i] + a * sn[i];
      }
    } else {
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * cs[i] - b * sn[i];
        v[2 * i + 1] = a * sn[i] + b * cs[i];
      }
    }
  }
}

}  // namespace qforge::ops
