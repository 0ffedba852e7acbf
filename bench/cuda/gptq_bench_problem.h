// The GPTQ benchmark's and tests' problem: calibration-like layer inputs and random weights
// (plain C++, shared by the CPU-only timing program and the GPU bench/tests).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace qforge::gptq_bench {

// x[tokens, cols]: per-channel scales over two orders of magnitude (so act-order reorders), a
// shared component per token (correlated channels), and `dead` channels that are always 0.
inline std::vector<float> make_inputs(int64_t tokens, int64_t cols, int dead, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> scale(static_cast<size_t>(cols));
  for (auto& s : scale) s = std::exp(1.2f * nd(rng));
  for (int d = 0; d < dead; ++d) scale[static_cast<size_t>((d * 7919 + 13) % cols)] = 0.f;
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  for (int64_t t = 0; t < tokens; ++t) {
    const float common = nd(rng);
    for (int64_t c = 0; c < cols; ++c)
      x[static_cast<size_t>(t * cols + c)] = scale[static_cast<size_t>(c)] * (nd(rng) + 0.5f * common);
  }
  return x;
}

// Weights N(0, 0.02²), one generator (same values on every machine for a seed).
inline std::vector<float> make_weights(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = nd(rng);
  return w;
}

}  // namespace qforge::gptq_bench
