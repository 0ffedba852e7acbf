// Tokenizer encode/decode throughput on the held-out text of ref-llama-25m (perplexity runs
// tokenize whole files, so this must stay far below model time). Fixtures come from ../shared
// (QFORGE_SHARED overrides); a missing fixture skips that benchmark.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "qforge/tokenizer.h"

namespace {

std::string shared_dir() {
  if (const char* env = std::getenv("QFORGE_SHARED")) return env;
  return (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "shared").string();
}

const std::string& heldout() {
  static const std::string text = [] {
    std::ifstream in(shared_dir() + "/models/ref-llama-25m/heldout.txt", std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }();
  return text;
}

void run_encode(benchmark::State& state, const std::string& relative, int64_t vocab_size) {
  qforge::TokenizerOptions opt;
  opt.vocab_size = vocab_size;
  auto tok = qforge::load_tokenizer(shared_dir() + "/" + relative, opt);
  if (!tok.has_value() || heldout().empty()) {
    state.SkipWithError(("fixture missing: " + relative).c_str());
    return;
  }
  size_t tokens = 0;
  for (auto _ : state) {
    auto ids = (*tok)->encode(heldout());
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * heldout().size()));
  state.counters["tokens"] = static_cast<double>(tokens);
}

void run_decode(benchmark::State& state, const std::string& relative) {
  auto tok = qforge::load_tokenizer(shared_dir() + "/" + relative);
  if (!tok.has_value() || heldout().empty()) {
    state.SkipWithError(("fixture missing: " + relative).c_str());
    return;
  }
  const std::vector<int32_t> ids = (*tok)->encode(heldout());
  for (auto _ : state) {
    std::string text = (*tok)->decode(ids);
    benchmark::DoNotOptimize(text.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * heldout().size()));
}

const char* const kVocab = "tokenizers/llama.cpp-vocab/";

void BM_EncodeSentencePiece(benchmark::State& s) { run_encode(s, "models/ref-llama-25m/tokenizer.model", 0); }
void BM_EncodeGgufSpm(benchmark::State& s) { run_encode(s, std::string(kVocab) + "ggml-vocab-llama-spm.gguf", 0); }
void BM_EncodeGgufGpt2(benchmark::State& s) { run_encode(s, std::string(kVocab) + "ggml-vocab-gpt-2.gguf", 0); }
void BM_EncodeGgufBert(benchmark::State& s) { run_encode(s, std::string(kVocab) + "ggml-vocab-bert-bge.gguf", 0); }
void BM_EncodeLlama2c(benchmark::State& s) { run_encode(s, "models/stories260K/tok512.bin", 512); }
void BM_DecodeGgufSpm(benchmark::State& s) { run_decode(s, std::string(kVocab) + "ggml-vocab-llama-spm.gguf"); }
void BM_DecodeGgufGpt2(benchmark::State& s) { run_decode(s, std::string(kVocab) + "ggml-vocab-gpt-2.gguf"); }

BENCHMARK(BM_EncodeSentencePiece)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeGgufSpm)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeGgufGpt2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeGgufBert)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeLlama2c)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodeGgufSpm)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodeGgufGpt2)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
