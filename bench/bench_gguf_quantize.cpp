// Throughput of the GGUF block quantizers and dequantizers on a 4096 x 4096 f32 weight.
// bytes_per_second counts the f32 input (quantize) or the f32 output (dequantize), per wall-clock
// second with all threads (OMP_NUM_THREADS=1 for one core); the CPU column is the whole process's.
//   build/bench/bench_gguf_quantize --benchmark_filter=quantize/q4_k
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "formats/gguf_impl.h"
#include "qforge/format.h"

namespace {

using namespace qforge;
using namespace qforge::formats;

constexpr int64_t kRows = 4096, kCols = 4096;

struct BenchFormat {
  const char* name;
  FormatId id;
  int bits;
  int block;
  QuantizeFn quantize;
  DequantizeFn dequantize;
};

const BenchFormat kFormats[] = {
    {"q8_0", FormatId::gguf_q8_0, 8, 32, gguf_q8_0_quantize_ref, gguf_q8_0_dequantize_ref},
    {"q4_0", FormatId::gguf_q4_0, 4, 32, gguf_q4_0_quantize_ref, gguf_q4_0_dequantize_ref},
    {"q4_1", FormatId::gguf_q4_1, 4, 32, gguf_q4_1_quantize_ref, gguf_q4_1_dequantize_ref},
    {"q5_0", FormatId::gguf_q5_0, 5, 32, gguf_q5_0_quantize_ref, gguf_q5_0_dequantize_ref},
    {"q5_1", FormatId::gguf_q5_1, 5, 32, gguf_q5_1_quantize_ref, gguf_q5_1_dequantize_ref},
    {"q2_k", FormatId::gguf_q2_k, 2, 256, gguf_q2_k_quantize_ref, gguf_q2_k_dequantize_ref},
    {"q3_k", FormatId::gguf_q3_k, 3, 256, gguf_q3_k_quantize_ref, gguf_q3_k_dequantize_ref},
    {"q4_k", FormatId::gguf_q4_k, 4, 256, gguf_q4_k_quantize_ref, gguf_q4_k_dequantize_ref},
    {"q5_k", FormatId::gguf_q5_k, 5, 256, gguf_q5_k_quantize_ref, gguf_q5_k_dequantize_ref},
    {"q6_k", FormatId::gguf_q6_k, 6, 256, gguf_q6_k_quantize_ref, gguf_q6_k_dequantize_ref},
    {"q8_k", FormatId::gguf_q8_k, 8, 256, gguf_q8_k_quantize_ref, gguf_q8_k_dequantize_ref},
    {"iq4_nl", FormatId::gguf_iq4_nl, 4, 32, gguf_iq4_nl_quantize_ref, gguf_iq4_nl_dequantize_ref},
    {"tq1_0", FormatId::gguf_tq1_0, 2, 256, gguf_tq1_0_quantize_ref, gguf_tq1_0_dequantize_ref},
    {"tq2_0", FormatId::gguf_tq2_0, 2, 256, gguf_tq2_0_quantize_ref, gguf_tq2_0_dequantize_ref},
};

Scheme scheme_of(const BenchFormat& f) {
  Scheme s;
  s.format = f.id;
  s.bits = f.bits;
  s.granularity = Granularity::group;
  s.group_size = f.block;
  return s;
}

// Weight-like data: Gaussian with per-row scales and rare outliers (deterministic).
const std::vector<float>& weights() {
  static const std::vector<float> w = [] {
    std::vector<float> v(static_cast<size_t>(kRows * kCols));
    std::mt19937 rng(1234);
    std::normal_distribution<float> n01(0.0f, 1.0f);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (int64_t r = 0; r < kRows; ++r) {
      const float scale = 0.01f + 0.04f * u(rng);
      for (int64_t c = 0; c < kCols; ++c) {
        float x = n01(rng) * scale;
        if (u(rng) < 0.001f) x *= 10.0f;
        v[static_cast<size_t>(r * kCols + c)] = x;
      }
    }
    return v;
  }();
  return w;
}

void bm_quantize(benchmark::State& state, const BenchFormat* f) {
  const std::vector<float>& w = weights();
  QuantizedTensor q;
  for (auto _ : state) {
    const Status st = f->quantize(scheme_of(*f), w.data(), kRows, kCols, {}, &q);
    if (!st.is_ok()) {
      state.SkipWithError(st.to_string().c_str());
      return;
    }
    benchmark::DoNotOptimize(q.codes.data());
  }
  state.SetBytesProcessed(state.iterations() * kRows * kCols * static_cast<int64_t>(sizeof(float)));
  state.counters["bits_per_weight"] = static_cast<double>(q.codes.size()) * 8.0 / static_cast<double>(kRows * kCols);
}

void bm_dequantize(benchmark::State& state, const BenchFormat* f) {
  QuantizedTensor q;
  const Status st = f->quantize(scheme_of(*f), weights().data(), kRows, kCols, {}, &q);
  if (!st.is_ok()) {
    state.SkipWithError(st.to_string().c_str());
    return;
  }
  std::vector<float> out(static_cast<size_t>(kRows * kCols));
  for (auto _ : state) {
    f->dequantize(q, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * kRows * kCols * static_cast<int64_t>(sizeof(float)));
}

const bool kRegistered = [] {
  for (const BenchFormat& f : kFormats) {
    benchmark::RegisterBenchmark((std::string("quantize/") + f.name).c_str(), bm_quantize, &f)
        ->Unit(benchmark::kMillisecond)
        ->MeasureProcessCPUTime()  // the quantizer runs rows on all threads
        ->UseRealTime()
        ->MinTime(1.0);
    benchmark::RegisterBenchmark((std::string("dequantize/") + f.name).c_str(), bm_dequantize, &f)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
