// fp32 CPU forward pass of ref-llama-25m: prefill throughput at several context lengths and
// single-token decode after a prefill. Set QFORGE_SHARED to the fixtures folder (default ../shared
// relative to the working directory).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "qforge/model.h"

namespace {

qforge::Model* ref_model() {
  static std::unique_ptr<qforge::Model> model;
  static bool tried = false;
  if (!tried) {
    tried = true;
    const char* env = std::getenv("QFORGE_SHARED");
    std::string dir = std::string(env ? env : "../shared") + "/models/ref-llama-25m";
    auto m = qforge::Model::load(dir);
    if (m.has_value()) model = std::make_unique<qforge::Model>(std::move(m).value());
  }
  return model.get();
}

std::vector<int32_t> tokens(int64_t n) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919 + 13) % 32000);
  return ids;
}

void BM_Prefill(benchmark::State& state) {
  qforge::Model* m = ref_model();
  if (!m) {
    state.SkipWithError("ref-llama-25m not found (set QFORGE_SHARED)");
    return;
  }
  const int64_t n = state.range(0);
  auto ids = tokens(n);
  for (auto _ : state) {
    auto logits = m->forward_batch(ids.data(), 1, n);
    benchmark::DoNotOptimize(logits);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Prefill)->Arg(64)->Arg(256)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Decode(benchmark::State& state) {
  qforge::Model* m = ref_model();
  if (!m) {
    state.SkipWithError("ref-llama-25m not found (set QFORGE_SHARED)");
    return;
  }
  const int64_t past = state.range(0);
  auto ids = tokens(past + 1);
  auto cache = m->make_cache(1, past + 1).value();
  qforge::TokenChunk prefix{0, std::span<const int32_t>(ids.data(), static_cast<size_t>(past))};
  (void)m->forward({&prefix, 1}, cache, qforge::LogitsMode::none, nullptr);
  qforge::Tensor logits;
  for (auto _ : state) {
    (void)cache.truncate(0, past);
    qforge::TokenChunk step{0, std::span<const int32_t>(ids.data() + past, 1)};
    (void)m->forward({&step, 1}, cache, qforge::LogitsMode::last, &logits);
  }
  state.counters["tokens/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Decode)->Arg(16)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
