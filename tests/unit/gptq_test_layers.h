// Synthetic linear layers for the GPTQ tests: inputs with correlated columns of varied scale (a few
// latent factors plus noise, as real activations have), normal weights, and Σ x xᵀ.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace qforge::test {

struct GptqLayer {
  int64_t rows = 0, cols = 0, tokens = 0;
  std::vector<float> w;     // [rows, cols]
  std::vector<float> x;     // [tokens, cols]
  std::vector<double> xtx;  // [cols, cols]
};

// `latent` factors mix into every column; column `dead_col` (if >= 0) is all zeros.
inline GptqLayer make_gptq_layer(int64_t rows, int64_t cols, int64_t tokens, uint32_t seed, int latent = 16,
                                 int64_t dead_col = -1) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  GptqLayer L;
  L.rows = rows;
  L.cols = cols;
  L.tokens = tokens;
  L.w.resize(static_cast<size_t>(rows * cols));
  for (auto& v : L.w) v = n01(rng);
  std::vector<float> mix(static_cast<size_t>(latent * cols)), scale(static_cast<size_t>(cols));
  for (auto& v : mix) v = n01(rng);
  for (auto& s : scale) s = std::exp(0.7f * n01(rng));
  L.x.resize(static_cast<size_t>(tokens * cols));
  std::vector<float> z(static_cast<size_t>(latent));
  for (int64_t t = 0; t < tokens; ++t) {
    for (auto& v : z) v = n01(rng);
    for (int64_t c = 0; c < cols; ++c) {
      float v = 0.3f * n01(rng);
      for (int j = 0; j < latent; ++j) v += z[static_cast<size_t>(j)] * mix[static_cast<size_t>(j * cols + c)];
      L.x[static_cast<size_t>(t * cols + c)] = c == dead_col ? 0.0f : v * scale[static_cast<size_t>(c)];
    }
  }
  L.xtx.assign(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < cols; ++i) {
      const double xi = L.x[static_cast<size_t>(t * cols + i)];
      for (int64_t j = 0; j < cols; ++j) L.xtx[static_cast<size_t>(i * cols + j)] += xi * L.x[static_cast<size_t>(t * cols + j)];
    }
  return L;
}

}  // namespace qforge::test
