// Next-token sampling (see sampler.h).
#include "qforge/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace qforge {

Pcg32::Pcg32(uint64_t seed, uint64_t stream) {
  // pcg32_srandom_r
  inc_ = (stream << 1u) | 1u;
  state_ = 0;
  next_u32();
  state_ += seed;
  next_u32();
}

uint32_t Pcg32::next_u32() {
  const uint64_t old = state_;
  state_ = old * 6364136223846793005ULL + inc_;
  const uint32_t xorshifted = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
  const uint32_t rot = static_cast<uint32_t>(old >> 59u);
  return (xorshifted >> rot) | (xorshifted << ((32u - rot) & 31u));
}

double Pcg32::next_double() {
  const uint64_t hi = next_u32() >> 5;  // 27 bits
  const uint64_t lo = next_u32() >> 6;  // 26 bits
  return static_cast<double>((hi << 26) | lo) * (1.0 / 9007199254740992.0);  // / 2^53
}

int32_t argmax(std::span<const float> values) {
  int32_t best = 0;
  for (size_t i = 1; i < values.size(); ++i)
    if (values[i] > values[static_cast<size_t>(best)] || std::isnan(values[static_cast<size_t>(best)]))
      best = static_cast<int32_t>(i);
  return best;
}

Expected<Sampler> Sampler::create(const SamplerOptions& o) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    return invalid_argument("--temp " + std::to_string(o.temperature) + ": must be >= 0 (0 = greedy)");
  if (o.top_k < 0) return invalid_argument("--top-k " + std::to_string(o.top_k) + ": must be >= 0 (0 = no limit)");
  if (!(o.top_p > 0 && o.top_p <= 1))
    return invalid_argument("--top-p " + std::to_string(o.top_p) + ": must be in (0, 1]");
  return Sampler(o);
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (logits.empty()) return 0;
  if (options_.temperature == 0) return argmax(logits);
  const size_t n = logits.size();
  size_t keep = options_.top_k > 0 ? std::min(n, static_cast<size_t>(options_.top_k)) : n;
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
  // NaN logits sort last and never get probability.
  auto before = [&](int32_t a, int32_t b) {
    const float x = logits[static_cast<size_t>(a)], y = logits[static_cast<size_t>(b)];
    if (std::isnan(x) != std::isnan(y)) return std::isnan(y);
    if (x != y) return x > y;
    return a < b;
  };
  std::partial_sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(keep), order_.end(), before);
  const double top = logits[static_cast<size_t>(order_[0])];
  if (std::isnan(top)) return order_[0];
  probs_.resize(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) {
    const float l = logits[static_cast<size_t>(order_[i])];
    const double p = std::isnan(l) ? 0.0 : std::exp((static_cast<double>(l) - top) / options_.temperature);
    probs_[i] = p;
    sum += p;
  }
  if (options_.top_p < 1) {
    double cum = 0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      cum += probs_[i] / sum;
      if (cum >= options_.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += probs_[i];
  }
  const double u = rng_.next_double() * sum;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += probs_[i];
    if (u < cum) return order_[i];
  }
  return order_[keep - 1];  // u rounded up to the total
}

}  // namespace qforge
