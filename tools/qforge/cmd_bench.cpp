// qforge bench MODEL [-p 512] [-n 128] [-r 5] [--threads N] [--json OUT]: llama-bench-like speed
// table. pp<P>: one prompt of P tokens through an empty cache (logits for the last token only);
// tg<N>: N single-token steps from an empty cache, each producing logits. Each test runs once to
// warm up, then -r times; tokens/s is reported as mean ± sample standard deviation.
#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>

#include "cli_common.h"
#include "cli_model.h"
#include "commands.h"
#include "qforge/atomic_file.h"
#include "qforge/kernels.h"

namespace qforge::cli {
namespace {

struct BenchOptions {
  ModelSpec model;
  int64_t prompt = 512;
  int64_t gen = 128;
  int reps = 5;
  int threads = 0;
  std::string act_precision;
  std::string json;
};

struct Sample {
  double mean = 0, sd = 0;
};

Sample summarize(const std::vector<double>& v) {
  Sample s;
  if (v.empty()) return s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  if (v.size() > 1) {
    double ss = 0;
    for (double x : v) ss += (x - s.mean) * (x - s.mean);
    s.sd = std::sqrt(ss / static_cast<double>(v.size() - 1));
  }
  return s;
}

uint64_t peak_rss_bytes() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<uint64_t>(u.ru_maxrss) * 1024;  // Linux: kilobytes
}

// Bytes of the model on disk (a directory: its files).
uint64_t model_file_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return fs::file_size(path, ec);
  uint64_t total = 0;
  for (const auto& e : fs::directory_iterator(path, ec))
    if (e.is_regular_file(ec) && e.path().extension() == ".safetensors") total += e.file_size(ec);
  return total;
}

// Bytes of the weights the engine holds as it runs them: each linear once (a tied head shares the
// embedding) plus the f32 embedding table used for lookups.
uint64_t weight_bytes_in_memory(const Model& m) {
  uint64_t total = m.token_embedding().nbytes();
  for (const LinearSite& site : m.linear_sites()) {
    const Linear* l = m.linear(site);
    if (site.role == TensorRole::output && m.config().tie_word_embeddings && l->describe() == "f32") continue;
    total += l->weight_bytes();
  }
  return total;
}

// Weights of the quantized linears by scheme ("q4_k x 72, q6_k x 13").
std::string linear_schemes(const Model& m) {
  std::map<std::string, int> count;
  for (const LinearSite& site : m.linear_sites()) ++count[m.linear(site)->describe()];
  std::string s;
  for (const auto& [name, n] : count) s += (s.empty() ? "" : ", ") + name + " x" + std::to_string(n);
  return s;
}

int run_bench(const BenchOptions& o) {
  if (o.prompt < 0 || o.gen < 0 || o.prompt + o.gen == 0)
    return report_error(invalid_argument("-p and -n must be >= 0 and not both 0"));
  if (o.reps < 1) return report_error(invalid_argument("-r " + std::to_string(o.reps) + ": must be >= 1"));
  ThreadSetting threads(o.threads);
  if (!o.act_precision.empty()) {
    const auto p = kernels::parse_act_precision(o.act_precision);
    if (!p) return report_error(invalid_argument("--act-precision " + o.act_precision + ": expected int8 or int8x2"));
    kernels::set_default_act_precision(*p);
  }
  auto loaded = load_cli_model(o.model);
  if (!loaded) return report_error(loaded.status());
  Model& model = loaded->model;
  const ModelConfig& cfg = model.config();
  if (!cfg.causal) return report_error(invalid_argument(o.model.path + " is an encoder model: qforge bench measures decoders"));
  const int64_t context = std::max(o.prompt, o.gen);
  if (cfg.learned_positions && context > cfg.max_positions)
    return report_error(invalid_argument("-p/-n " + std::to_string(context) + " exceed the model's " +
                                         std::to_string(cfg.max_positions) + " positions"));
  auto cache = model.make_cache(1, context);
  if (!cache) return report_error(cache.status());
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(cfg.vocab_size - 1));
  std::vector<int32_t> tokens(static_cast<size_t>(context));
  for (int32_t& t : tokens) t = pick(rng);
  std::vector<float> logits(static_cast<size_t>(cfg.vocab_size));

  auto run_pp = [&]() -> Expected<double> {
    cache->clear();
    const double t0 = now_seconds();
    TokenChunk chunk{0, std::span<const int32_t>(tokens.data(), static_cast<size_t>(o.prompt))};
    QFORGE_RETURN_IF_ERROR(model.forward(std::span<const TokenChunk>(&chunk, 1), *cache, LogitsMode::last, logits));
    return static_cast<double>(o.prompt) / (now_seconds() - t0);
  };
  auto run_tg = [&]() -> Expected<double> {
    cache->clear();
    const double t0 = now_seconds();
    for (int64_t i = 0; i < o.gen; ++i) {
      TokenChunk chunk{0, std::span<const int32_t>(tokens.data() + i, 1)};
      QFORGE_RETURN_IF_ERROR(model.forward(std::span<const TokenChunk>(&chunk, 1), *cache, LogitsMode::last, logits));
    }
    return static_cast<double>(o.gen) / (now_seconds() - t0);
  };
  std::vector<double> pp, tg;
  for (int r = 0; r <= o.reps; ++r) {  // r = 0 warms up
    if (o.prompt > 0) {
      auto v = run_pp();
      if (!v) return report_error(v.status());
      if (r > 0) pp.push_back(*v);
    }
    if (o.gen > 0) {
      auto v = run_tg();
      if (!v) return report_error(v.status());
      if (r > 0) tg.push_back(*v);
    }
  }
  const Sample pps = summarize(pp), tgs = summarize(tg);
  const uint64_t file_bytes = model_file_bytes(o.model.path);
  const uint64_t mem_bytes = weight_bytes_in_memory(model);
  const uint64_t rss = peak_rss_bytes();
  const char* isa = kernels::isa_name(kernels::active_isa());

  std::printf("model: %s\n", describe_model(*loaded).c_str());
  std::printf("linears: %s\n", linear_schemes(model).c_str());
  std::printf("\n| %-28s | %10s | %10s | %7s | %-10s | %-7s | %20s |\n", "model", "size", "params", "threads", "isa",
              "test", "t/s");
  std::printf("| %s | %s | %s | %s | %s | %s | %s |\n", std::string(28, '-').c_str(), std::string(10, '-').c_str(),
              std::string(10, '-').c_str(), std::string(7, '-').c_str(), std::string(10, '-').c_str(),
              std::string(7, '-').c_str(), std::string(20, '-').c_str());
  const std::string name = std::filesystem::path(o.model.path).filename().string();
  auto row = [&](const std::string& test, const Sample& s) {
    std::printf("| %-28s | %10s | %10s | %7d | %-10s | %-7s | %20s |\n", name.substr(0, 28).c_str(),
                format_bytes(file_bytes).c_str(), format_count(static_cast<uint64_t>(loaded->parameters)).c_str(),
                threads.threads(), isa, test.c_str(),
                (format_fixed(s.mean, 2) + " ± " + format_fixed(s.sd, 2)).c_str());
  };
  if (o.prompt > 0) row("pp" + std::to_string(o.prompt), pps);
  if (o.gen > 0) row("tg" + std::to_string(o.gen), tgs);
  std::printf("\nweights in memory %s, peak RSS %s, %d repetitions, activations of the integer kernels %s\n",
              format_bytes(mem_bytes).c_str(), format_bytes(rss).c_str(), o.reps,
              kernels::act_precision_name(kernels::default_act_precision()));

  if (!o.json.empty()) {
    nlohmann::ordered_json j;
    j["model"] = o.model.path;
    j["model_kind"] = model_file_kind_name(loaded->kind);
    j["linears"] = linear_schemes(model);
    j["parameters"] = loaded->parameters;
    j["model_bytes"] = file_bytes;
    j["weight_bytes_in_memory"] = mem_bytes;
    j["peak_rss_bytes"] = rss;
    j["threads"] = threads.threads();
    j["isa"] = isa;
    j["act_precision"] = kernels::act_precision_name(kernels::default_act_precision());
    j["n_prompt"] = o.prompt;
    j["n_gen"] = o.gen;
    j["repetitions"] = o.reps;
    auto sample_json = [](const Sample& s, const std::vector<double>& v) {
      nlohmann::ordered_json x;
      x["mean"] = s.mean;
      x["sd"] = s.sd;
      x["samples"] = v;
      return x;
    };
    j["pp_tokens_per_s"] = o.prompt > 0 ? sample_json(pps, pp) : nlohmann::ordered_json(nullptr);
    j["tg_tokens_per_s"] = o.gen > 0 ? sample_json(tgs, tg) : nlohmann::ordered_json(nullptr);
    if (Status s = write_file_atomic(o.json, j.dump(2) + "\n"); !s.is_ok()) return report_error(s.with_context("--json"));
  }
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Prefill and decode speed of a model (llama-bench-like table)");
  cmd->add_option("model", o->model.path, "Model: HF directory, .safetensors, packed file, GGUF, llama2.c .bin")
      ->required();
  add_model_options(cmd, &o->model);
  cmd->add_option("-p,--n-prompt", o->prompt, "Prompt tokens for the prefill test (0: skip)")->capture_default_str();
  cmd->add_option("-n,--n-gen", o->gen, "Tokens for the decode test (0: skip)")->capture_default_str();
  cmd->add_option("-r,--repetitions", o->reps, "Repetitions of each test (after one warm-up)")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "Threads for OpenMP and BLAS (default: all)");
  cmd->add_option("--act-precision", o->act_precision,
                  "Activations of the integer kernels: int8 (llama.cpp's Q8_0/Q8_K scheme) or int8x2 (default, "
                  "about 16-bit; twice the integer work)");
  cmd->add_option("--json", o->json, "Write the results as JSON to this file");
  cmd->callback([o, exit_code] { *exit_code = run_bench(*o); });
}

}  // namespace qforge::cli
