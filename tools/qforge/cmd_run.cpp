// qforge run MODEL -p PROMPT -n N: generates text, streaming it token by token, and reports the
// prefill and decode speeds.
#include <cstdio>
#include <set>

#include "cli_common.h"
#include "cli_model.h"
#include "commands.h"
#include "qforge/sampler.h"

namespace qforge::cli {
namespace {

struct RunCommandOptions {
  ModelSpec model;
  std::string prompt;
  int64_t tokens = 64;
  SamplerOptions sampler;
  bool ignore_eos = false;
  int threads = 0;
};

int run_generate(const RunCommandOptions& o) {
  if (o.tokens < 0) return report_error(invalid_argument("-n " + std::to_string(o.tokens) + ": must be >= 0"));
  auto sampler = Sampler::create(o.sampler);
  if (!sampler) return report_error(sampler.status());
  ThreadSetting threads(o.threads);
  auto loaded = load_cli_model(o.model);
  if (!loaded) return report_error(loaded.status());
  Model& model = loaded->model;
  const ModelConfig& cfg = model.config();
  if (!cfg.causal) return report_error(invalid_argument(o.model.path + " is an encoder model: it cannot generate text"));
  auto tok = load_cli_tokenizer(o.model, *loaded);
  if (!tok) return report_error(tok.status());
  const Tokenizer& tokenizer = **tok;

  EncodeOptions enc;
  enc.add_special = true;  // BOS as the model's tokenizer adds it
  std::vector<int32_t> prompt = tokenizer.encode(o.prompt, enc);
  if (prompt.empty()) {
    if (!tokenizer.bos_id())
      return report_error(invalid_argument("-p: the prompt is empty and the tokenizer has no BOS token to start from"));
    prompt.push_back(*tokenizer.bos_id());
  }
  const int64_t total = static_cast<int64_t>(prompt.size()) + o.tokens;
  if (cfg.learned_positions && total > cfg.max_positions)
    return report_error(invalid_argument("prompt (" + std::to_string(prompt.size()) + " tokens) + -n " +
                                         std::to_string(o.tokens) + " exceed the model's " +
                                         std::to_string(cfg.max_positions) + " positions"));
  auto cache = model.make_cache(1, total);
  if (!cache) return report_error(cache.status());
  // Generation ends at EOS or a new BOS (a document boundary, as llama2.c's run.c does).
  std::set<int32_t> stop;
  if (!o.ignore_eos) {
    for (int64_t e : cfg.eos_token_ids) stop.insert(static_cast<int32_t>(e));
    if (tokenizer.eos_id()) stop.insert(*tokenizer.eos_id());
    if (tokenizer.bos_id()) stop.insert(*tokenizer.bos_id());
  }

  TokenStreamDecoder decoder(tokenizer);
  for (int32_t id : prompt) std::fputs(decoder.push(id).c_str(), stdout);
  std::fflush(stdout);

  Tensor logits;
  const double t0 = now_seconds();
  TokenChunk chunk{0, prompt};
  if (Status s = model.forward({&chunk, 1}, *cache, LogitsMode::last, &logits); !s.is_ok()) return report_error(s);
  const double prefill_s = now_seconds() - t0;
  const int64_t V = cfg.vocab_size;
  int64_t generated = 0;
  const double t1 = now_seconds();
  int32_t next = sampler->sample({logits.data_as<float>(), static_cast<size_t>(V)});
  while (generated < o.tokens) {
    if (stop.count(next)) break;
    ++generated;
    std::fputs(decoder.push(next).c_str(), stdout);
    std::fflush(stdout);
    if (generated == o.tokens) break;
    if (Status s = check_interrupted("run"); !s.is_ok()) return report_error(s);
    TokenChunk step{0, {&next, 1}};
    if (Status s = model.forward({&step, 1}, *cache, LogitsMode::last, &logits); !s.is_ok()) return report_error(s);
    next = sampler->sample({logits.data_as<float>(), static_cast<size_t>(V)});
  }
  const double decode_s = now_seconds() - t1;
  std::fputs(decoder.finish().c_str(), stdout);
  std::fputs("\n", stdout);
  std::fflush(stdout);
  // Decode time covers the forward passes after the prefill and sampling; the first token came
  // from the prefill's logits.
  const int64_t decode_steps = generated > 0 ? generated - 1 : 0;
  std::fprintf(stderr, "\nprefill: %zu tokens in %s (%s tokens/s); decode: %lld tokens in %s (%s tokens/s); %d threads\n",
               prompt.size(), format_seconds(prefill_s).c_str(),
               format_rate(prefill_s > 0 ? static_cast<double>(prompt.size()) / prefill_s : 0).c_str(),
               static_cast<long long>(decode_steps), format_seconds(decode_s).c_str(),
               format_rate(decode_s > 0 && decode_steps > 0 ? static_cast<double>(decode_steps) / decode_s : 0).c_str(),
               threads.threads());
  return 0;
}

}  // namespace

void add_run_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<RunCommandOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt, streaming it, and report tokens/s");
  cmd->add_option("model", o->model.path, "Model: HF directory, .safetensors, qforge packed file, GGUF, llama2.c .bin")
      ->required();
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text (the tokenizer adds BOS as the model expects)");
  cmd->add_option("-n,--tokens", o->tokens, "Tokens to generate (at most)")->capture_default_str();
  cmd->add_option("--temp", o->sampler.temperature, "Sampling temperature; 0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", o->sampler.top_k, "Keep the K most likely tokens (0: all)")->capture_default_str();
  cmd->add_option("--top-p", o->sampler.top_p, "Keep the smallest set of tokens with probability >= P")
      ->capture_default_str();
  cmd->add_option("--seed", o->sampler.seed, "PRNG seed: the same seed gives the same text")->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past EOS / BOS");
  cmd->add_option("-j,--threads", o->threads, "Threads for BLAS and OpenMP (default: all)");
  add_model_options(cmd, &o->model);
  cmd->callback([o, exit_code] { *exit_code = run_generate(*o); });
}

}  // namespace qforge::cli
