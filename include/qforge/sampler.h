// Next-token sampling for text generation: greedy, temperature, top-k and top-p (nucleus), driven
// by qforge's own PRNG so a seed gives the same tokens on every platform and standard library.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "qforge/status.h"

namespace qforge {

// PCG32 (O'Neill, pcg32_random_r: 64-bit LCG state, XSH-RR output). Fully specified, so sequences
// are reproducible everywhere (unlike std::*_distribution).
class Pcg32 {
 public:
  explicit Pcg32(uint64_t seed, uint64_t stream = 0x853c49e6748fea9bULL);
  uint32_t next_u32();
  // Uniform in [0, 1) with 53 random bits.
  double next_double();

 private:
  uint64_t state_ = 0;
  uint64_t inc_ = 0;
};

struct SamplerOptions {
  double temperature = 0.8;  // 0: greedy (argmax, first index on ties)
  int64_t top_k = 40;        // 0: no limit
  double top_p = 0.95;       // 1: no limit
  uint64_t seed = 0;
};

class Sampler {
 public:
  // Errors name the option: temperature < 0, top_k < 0, top_p outside (0, 1].
  static Expected<Sampler> create(const SamplerOptions& options);
  // Picks the next token from one row of logits. Candidates are ordered by logit (descending,
  // lower id first on ties), cut to top_k, softmaxed at the temperature in double, cut to the
  // smallest prefix whose probability reaches top_p, and drawn with one PRNG number.
  int32_t sample(std::span<const float> logits);
  const SamplerOptions& options() const { return options_; }

 private:
  explicit Sampler(const SamplerOptions& options) : options_(options), rng_(options.seed) {}
  SamplerOptions options_;
  Pcg32 rng_;
  std::vector<int32_t> order_;
  std::vector<double> probs_;
};

// Index of the largest value (the first on ties); NaN values are never chosen unless all are NaN.
int32_t argmax(std::span<const float> values);

}  // namespace qforge
