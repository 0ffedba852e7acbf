// Shared by the CUDA bench and tests: random weights, row-parallel quantization through the
// format table, and CUDA error checks that abort with a message (bench/test code only).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "qforge/format.h"

#define BENCH_CUDA(expr)                                                                              \
  do {                                                                                                \
    cudaError_t e_ = (expr);                                                                          \
    if (e_ != cudaSuccess) {                                                                          \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(2);                                                                                   \
    }                                                                                                 \
  } while (0)

namespace qforge::cuda_bench {

// Normal(0, 1) values, split over threads (seeded per chunk: deterministic for a given seed).
inline std::vector<float> random_normal(size_t n, uint64_t seed, float stddev = 1.f) {
  std::vector<float> v(n);
  const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  const size_t chunk = (n + threads - 1) / threads;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng(seed * 1000003u + t);
      std::normal_distribution<float> dist(0.f, stddev);
      for (size_t i = t * chunk; i < std::min(n, (t + 1) * chunk); ++i) v[i] = dist(rng);
    });
  }
  for (auto& th : pool) th.join();
  return v;
}

// qforge::quantize over row blocks in parallel; exact for schemes whose planes are per row
// (channel and group granularity): the planes of consecutive row blocks concatenate.
inline QuantizedTensor quantize_rows_parallel(const Scheme& scheme, const float* w, int64_t rows, int64_t cols) {
  if (scheme.granularity == Granularity::tensor || rows < 64) {
    auto q = quantize(scheme, w, rows, cols);
    if (!q.has_value()) {
      std::fprintf(stderr, "quantize %s: %s\n", scheme.name().c_str(), q.status().to_string().c_str());
      std::exit(2);
    }
    return std::move(q).value();
  }
  const int threads = static_cast<int>(std::max(1u, std::min(16u, std::thread::hardware_concurrency())));
  const int64_t per = (rows + threads - 1) / threads;
  std::vector<QuantizedTensor> parts(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const int64_t r0 = t * per, r1 = std::min(rows, r0 + per);
      if (r0 >= r1) return;
      auto q = quantize(scheme, w + r0 * cols, r1 - r0, cols);
      if (!q.has_value()) {
        std::fprintf(stderr, "quantize %s: %s\n", scheme.name().c_str(), q.status().to_string().c_str());
        std::exit(2);
      }
      parts[static_cast<size_t>(t)] = std::move(q).value();
    });
  }
  for (auto& th : pool) th.join();
  QuantizedTensor out = std::move(parts[0]);
  out.rows = rows;
  for (size_t t = 1; t < parts.size(); ++t) {
    auto& p = parts[t];
    out.codes.insert(out.codes.end(), p.codes.begin(), p.codes.end());
    out.scales.insert(out.scales.end(), p.scales.begin(), p.scales.end());
    out.zeros.insert(out.zeros.end(), p.zeros.begin(), p.zeros.end());
  }
  return out;
}

}  // namespace qforge::cuda_bench
