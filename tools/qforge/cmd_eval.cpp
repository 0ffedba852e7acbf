// qforge eval MODEL --text FILE: perplexity under the qforge-ppl-v1 protocol and, against a
// reference model or a saved reference logits file, the KL divergence of the model's next-token
// distributions (docs/evaluation.md).
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <optional>

#include "cli_common.h"
#include "cli_model.h"
#include "commands.h"
#include "qforge/atomic_file.h"
#include "qforge/eval.h"
#include "qforge/sha256.h"

namespace qforge::cli {
namespace {

struct EvalCommandOptions {
  ModelSpec model;
  std::string text;
  int64_t ctx = 512;
  std::string ref;
  std::string ref_logits;
  std::string save_logits;
  std::string logits_dtype = "f16";
  int64_t max_windows = 0;
  int64_t batch_tokens = 2048;
  std::string json;
  int threads = 0;
};

nlohmann::ordered_json ppl_json(const PerplexityStats& p) {
  return {{"ppl", p.ppl},           {"ppl_stderr", p.ppl_stderr}, {"ppl_low95", p.ppl_low95},
          {"ppl_high95", p.ppl_high95}, {"nll_mean", p.nll_mean},  {"nll_stderr", p.nll_stderr},
          {"tokens_scored", p.tokens_scored}};
}

int run_eval(const EvalCommandOptions& o) {
  if (!o.ref.empty() && !o.ref_logits.empty())
    return report_error(invalid_argument("--ref and --ref-logits are exclusive: give one reference"));
  if (o.ctx < 2) return report_error(invalid_argument("--ctx " + std::to_string(o.ctx) + ": must be at least 2"));
  if (o.max_windows < 0) return report_error(invalid_argument("--max-windows must be >= 0"));
  if (o.batch_tokens < 1) return report_error(invalid_argument("--batch-tokens must be >= 1"));
  if (!o.json.empty()) {
    if (Status s = check_output_path(o.json, "--json"); !s.is_ok()) return report_error(s);
  }
  if (!o.save_logits.empty()) {
    if (Status s = check_output_path(o.save_logits, "--save-logits"); !s.is_ok()) return report_error(s);
  }
  ThreadSetting threads(o.threads);

  // The text first: cheap errors before loading models.
  auto text = read_file(o.text);
  if (!text.has_value()) return report_error(text.status().with_context("--text"));
  if (text->empty()) return report_error(invalid_argument("--text " + o.text + ": the file is empty"));
  const std::string text_sha = sha256_hex(*text);

  auto loaded = load_cli_model(o.model);
  if (!loaded) return report_error(loaded.status());
  LoadedModel& m = *loaded;
  auto tok = load_cli_tokenizer(o.model, m);
  if (!tok) return report_error(tok.status());
  const Tokenizer& tokenizer = **tok;

  const double t_tok = now_seconds();
  EncodeOptions enc;  // no special tokens; BOS is added once below
  const std::vector<int32_t> ids = tokenizer.encode(*text, enc);
  const double tokenize_seconds = now_seconds() - t_tok;
  const int64_t bos = tokenizer.adds_bos() && tokenizer.bos_id() ? *tokenizer.bos_id() : -1;
  auto windows = make_eval_windows(ids, bos, o.ctx, o.text);
  if (!windows) return report_error(windows.status().with_context("--text / --ctx"));
  windows->text_sha256 = text_sha;
  const int64_t n_windows = o.max_windows > 0 ? std::min(o.max_windows, windows->count) : windows->count;

  std::printf("model:    %s, loaded in %s\n", describe_model(m).c_str(), format_seconds(m.load_seconds).c_str());
  std::printf("text:     %s: %s bytes, %zu tokens (%s tokenizer %s%s), %lld windows of %lld, %lld tokens dropped\n",
              o.text.c_str(), format_count(text->size()).c_str(), windows->stream.size(),
              std::string(tokenizer.type_name()).c_str(), tokenizer.source().c_str(),
              bos >= 0 ? (", BOS " + std::to_string(bos) + " prepended").c_str() : ", no BOS",
              static_cast<long long>(windows->count), static_cast<long long>(o.ctx),
              static_cast<long long>(windows->dropped));
  std::printf("protocol: %s\n", perplexity_protocol_description().c_str());
  if (n_windows < windows->count)
    std::printf("          evaluating the first %lld of %lld windows (--max-windows)\n",
                static_cast<long long>(n_windows), static_cast<long long>(windows->count));

  std::optional<LoadedModel> ref_model;
  std::optional<LogitsCacheReader> ref_cache;
  EvalReference reference;
  if (!o.ref.empty()) {
    ModelSpec spec;
    spec.path = o.ref;
    auto r = load_cli_model(spec, "reference model");
    if (!r) return report_error(r.status().with_context("--ref"));
    ref_model.emplace(std::move(r).value());
    reference.model = &ref_model->model;
    std::printf("ref:      %s\n", describe_model(*ref_model).c_str());
  } else if (!o.ref_logits.empty()) {
    auto c = LogitsCacheReader::open(o.ref_logits);
    if (!c) return report_error(c.status().with_context("--ref-logits"));
    ref_cache.emplace(std::move(c).value());
    reference.cache = &*ref_cache;
    std::printf("ref:      %s (logits of %s, %lld windows, %s)\n", o.ref_logits.c_str(), ref_cache->info().model.c_str(),
                static_cast<long long>(ref_cache->info().windows), dtype_name(ref_cache->info().dtype));
  }

  std::unique_ptr<LogitsCacheWriter> writer;
  if (!o.save_logits.empty()) {
    LogitsCacheInfo info;
    info.ctx = o.ctx;
    info.windows = n_windows;
    info.vocab = m.model.config().vocab_size;
    info.dtype = o.logits_dtype == "f32" ? DType::f32 : DType::f16;
    info.text_sha256 = text_sha;
    info.text = std::filesystem::path(o.text).filename().string();
    info.model = o.model.path;
    auto fp = model_fingerprint(o.model.path);
    if (!fp) return report_error(fp.status().with_context("--save-logits"));
    info.model_sha256 = *fp;
    const uint64_t bytes = logits_cache_data_bytes(n_windows, o.ctx, info.vocab, info.dtype);
    std::error_code ec;
    const auto parent = std::filesystem::absolute(o.save_logits, ec).parent_path();
    const auto space = std::filesystem::space(parent, ec);
    if (!ec && space.available < bytes + (uint64_t{64} << 20))
      return report_error(io_error("--save-logits " + o.save_logits + ": needs " + format_bytes(bytes) + " but only " +
                                   format_bytes(space.available) + " are free there (use --max-windows)"));
    auto w = LogitsCacheWriter::create(o.save_logits, info, *windows);
    if (!w) return report_error(w.status().with_context("--save-logits"));
    writer = std::move(w).value();
    std::printf("saving:   log-probabilities to %s (%s, %s)\n", o.save_logits.c_str(), format_bytes(bytes).c_str(),
                dtype_name(info.dtype));
  }
  std::fflush(stdout);

  Progress progress("eval", n_windows * o.ctx, "tokens", progress_options());
  int64_t reported = 0;
  EvalOptions eo;
  eo.max_windows = n_windows;
  eo.batch_tokens = o.batch_tokens;
  eo.on_progress = [&](int64_t, int64_t tokens) {
    progress.tick(tokens - reported);
    reported = tokens;
  };
  eo.should_stop = [] { return check_interrupted("eval"); };
  auto report = evaluate(m.model, *windows, eo, reference, writer.get());
  progress.finish();
  if (!report) return report_error(report.status());
  if (writer) {
    if (Status s = writer->commit(); !s.is_ok()) return report_error(s.with_context("--save-logits"));
  }
  const EvalReport& r = *report;
  const PerplexityStats& p = r.ppl;
  std::printf("\nppl %.4f +/- %.4f (95%% CI %.4f .. %.4f), mean NLL %.5f +/- %.5f nats, %lld tokens scored in %lld windows\n",
              p.ppl, p.ppl_stderr, p.ppl_low95, p.ppl_high95, p.nll_mean, p.nll_stderr,
              static_cast<long long>(p.tokens_scored), static_cast<long long>(r.windows));
  if (r.kld) {
    const KldStats& k = *r.kld;
    std::printf("reference ppl %.4f, ln(ppl / ppl_ref) %+.5f\n", k.reference.ppl, k.ln_ppl_ratio);
    std::printf("KLD mean %.6f +/- %.6f, median %.6f, p90 %.6f, p99 %.6f, max %.6f nats\n", k.kld.mean,
                k.kld.stderr_mean, k.kld.median, k.kld.p90, k.kld.p99, k.kld.max);
    std::printf("top-1 agreement %.3f%%, RMS dp %.4f%% (mean dp %+.4f%%)\n", 100.0 * k.top1_agreement,
                100.0 * k.delta_p_rms, 100.0 * k.delta_p_mean);
  }
  std::printf("time %s: %s tokens/s (%lld tokens, %d threads), tokenizing %s\n", format_seconds(r.seconds).c_str(),
              format_rate(r.tokens_per_second).c_str(), static_cast<long long>(r.windows * r.ctx), threads.threads(),
              format_seconds(tokenize_seconds).c_str());

  if (!o.json.empty()) {
    nlohmann::ordered_json j;
    j["protocol"] = r.protocol;
    j["protocol_description"] = perplexity_protocol_description();
    j["model"] = o.model.path;
    j["model_kind"] = model_file_kind_name(m.kind);
    j["text"] = o.text;
    j["text_sha256"] = text_sha;
    j["ctx"] = r.ctx;
    j["bos"] = bos;
    j["tokens_in_text"] = r.tokens_in_text;
    j["windows"] = r.windows;
    j["windows_total"] = r.windows_total;
    const nlohmann::ordered_json pj = ppl_json(p);
    for (const auto& [key, value] : pj.items()) j[key] = value;
    if (r.kld) {
      const KldStats& k = *r.kld;
      j["reference"] = !o.ref.empty() ? o.ref : o.ref_logits;
      j["kld_mean"] = k.kld.mean;
      j["kld_stderr"] = k.kld.stderr_mean;
      j["kld_median"] = k.kld.median;
      j["kld_p90"] = k.kld.p90;
      j["kld_p95"] = k.kld.p95;
      j["kld_p99"] = k.kld.p99;
      j["kld_max"] = k.kld.max;
      j["top1_agreement"] = 100.0 * k.top1_agreement;  // percent
      j["delta_p_rms"] = k.delta_p_rms;                // probability (0..1)
      j["delta_p_mean"] = k.delta_p_mean;
      j["ref_ppl"] = k.reference.ppl;
      j["ref_ppl_stderr"] = k.reference.ppl_stderr;
      j["ln_ppl_ratio"] = k.ln_ppl_ratio;
    }
    j["seconds"] = r.seconds;
    j["tokens_per_second"] = r.tokens_per_second;
    j["threads"] = threads.threads();
    j["batch_tokens"] = o.batch_tokens;
    j["command"] = command_line();
    j["qforge_version"] = QFORGE_VERSION;
    if (Status s = write_file_atomic(o.json, j.dump(2) + "\n"); !s.is_ok()) return report_error(s.with_context("--json"));
  }
  return 0;
}

}  // namespace

void add_eval_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<EvalCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Perplexity of a model on a text (qforge-ppl-v1), and KL divergence against a reference");
  cmd->add_option("model", o->model.path, "Model: HF directory, .safetensors, qforge packed file, GGUF, llama2.c .bin")
      ->required();
  cmd->add_option("--text", o->text, "Evaluation text file (read whole, UTF-8)")->required();
  cmd->add_option("--ctx", o->ctx, "Window length in tokens")->capture_default_str();
  cmd->add_option("--ref", o->ref, "Reference model for KL divergence (same vocabulary), run alongside");
  cmd->add_option("--ref-logits", o->ref_logits, "Reference log-probabilities saved with --save-logits");
  cmd->add_option("--save-logits", o->save_logits,
                  "Save this model's log-probabilities for later --ref-logits runs (vocab x 2 bytes per token)");
  cmd->add_option("--logits-dtype", o->logits_dtype, "dtype of --save-logits")
      ->check(CLI::IsMember({"f16", "f32"}))
      ->capture_default_str();
  cmd->add_option("--max-windows", o->max_windows, "Evaluate only the first N windows (0: all)")->capture_default_str();
  cmd->add_option("--batch-tokens", o->batch_tokens, "Tokens per forward pass (whole windows; bounds memory)")
      ->capture_default_str();
  cmd->add_option("--json", o->json, "Write the results as JSON to this file");
  cmd->add_option("-j,--threads", o->threads, "Threads for BLAS and OpenMP (default: all)");
  add_model_options(cmd, &o->model);
  cmd->callback([o, exit_code] { *exit_code = run_eval(*o); });
}

}  // namespace qforge::cli
