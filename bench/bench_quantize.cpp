// Quantize / dequantize throughput of the reference formats, in GB/s of f32 weights processed.
//
// The weight is 4096 x 4096 f32 (64 MiB), larger than the L3 cache (32 MiB on the dev machine), so
// the numbers include streaming from memory as a real model's weights would. Schemes whose
// functions are not implemented report an error and are skipped.
//
//   cmake --build build --target bench_quantize
//   OMP_NUM_THREADS=1 ./build/bench/bench_quantize       # single-core throughput (CPU time)
//   ./build/bench/bench_quantize --benchmark_filter='Quantize/int4'   # one family, all threads
// With one OpenMP thread the rates come from the thread's CPU time, which other processes on a
// shared machine do not inflate; with several threads they come from wall-clock time.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "qforge/format.h"

namespace {

constexpr int64_t kRows = 4096;
constexpr int64_t kCols = 4096;

// Heavy-tailed weights (Student-t, 3 degrees of freedom, scale 0.02), generated once.
const std::vector<float>& weights() {
  static const std::vector<float> w = [] {
    std::mt19937_64 rng(2024);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(static_cast<size_t>(kRows * kCols));
    for (float& x : v) {
      float chi2 = 0;
      for (int k = 0; k < 3; ++k) {
        const float z = normal(rng);
        chi2 += z * z;
      }
      x = 0.02f * normal(rng) / std::sqrt(chi2 / 3.0f + 1e-12f);
    }
    return v;
  }();
  return w;
}

// Per-column importance (what an imatrix gives), for the importance-search variants.
const std::vector<float>& importance() {
  static const std::vector<float> imp = [] {
    std::mt19937_64 rng(7);
    std::exponential_distribution<float> e(1.0f);
    std::vector<float> v(static_cast<size_t>(kCols));
    for (float& x : v) x = e(rng);
    return v;
  }();
  return imp;
}

const int64_t kBytes = kRows * kCols * static_cast<int64_t>(sizeof(float));

void BM_Quantize(benchmark::State& state, const std::string& name, bool with_importance) {
  auto scheme = qforge::Scheme::parse(name);
  if (!scheme.has_value()) {
    state.SkipWithError(scheme.status().to_string().c_str());
    return;
  }
  qforge::QuantizeOptions options;
  if (with_importance) {
    options.importance = importance().data();
    options.importance_size = importance().size();
  }
  const auto& w = weights();
  for (auto _ : state) {
    auto q = qforge::quantize(*scheme, w.data(), kRows, kCols, options);
    if (!q.has_value()) {
      state.SkipWithError(q.status().to_string().c_str());
      return;
    }
    benchmark::DoNotOptimize(q->codes.data());
  }
  state.SetBytesProcessed(state.iterations() * kBytes);
  state.counters["bits/w"] = qforge::scheme_bits_per_weight(*scheme, kRows, kCols);
}

void BM_Dequantize(benchmark::State& state, const std::string& name) {
  auto scheme = qforge::Scheme::parse(name);
  if (!scheme.has_value()) {
    state.SkipWithError(scheme.status().to_string().c_str());
    return;
  }
  const auto& w = weights();
  auto q = qforge::quantize(*scheme, w.data(), kRows, kCols);
  if (!q.has_value()) {
    state.SkipWithError(q.status().to_string().c_str());
    return;
  }
  std::vector<float> out(w.size());
  for (auto _ : state) {
    const qforge::Status s = qforge::dequantize(*q, out.data());
    if (!s.is_ok()) {
      state.SkipWithError(s.to_string().c_str());
      return;
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kBytes);
  // Report the round-trip quality alongside the speed.
  state.counters["sqnr_dB"] = qforge::error_stats(w.data(), out.data(), kRows * kCols).sqnr_db;
}

std::vector<std::string> schemes() {
  std::vector<std::string> list;
  for (int bits = 2; bits <= 8; ++bits) {
    const std::string b = "int" + std::to_string(bits);
    for (const char* g : {"-g128-asym", "-g128-sym", "-ch-asym", "-ch-sym", "-tensor-sym"}) list.push_back(b + g);
  }
  for (const char* s : {"nf4", "nf4-dq", "fp4", "mxfp4", "nvfp4", "fp8-e4m3-ch", "fp8-e4m3-tensor", "fp8-e5m2-ch",
                        "fp8-e5m2-tensor", "f16", "bf16", "f32", "binary", "ternary"})
    list.push_back(s);
  return list;
}

void configure(benchmark::internal::Benchmark* b) {
  b->Unit(benchmark::kMillisecond);
  if (omp_get_max_threads() > 1) b->UseRealTime();
}

const bool kRegistered = [] {
  for (const std::string& s : schemes()) {
    configure(benchmark::RegisterBenchmark(("Quantize/" + s).c_str(), BM_Quantize, s, false));
    configure(benchmark::RegisterBenchmark(("Dequantize/" + s).c_str(), BM_Dequantize, s));
  }
  // The importance-weighted scale search (per-column importance, as an imatrix gives).
  for (const char* s : {"int4-g128-sym", "int4-g128-asym", "int2-g128-asym", "nf4", "binary"})
    configure(benchmark::RegisterBenchmark((std::string("QuantizeImportance/") + s).c_str(), BM_Quantize, std::string(s), true));
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
