// Model evaluation: perplexity under one fixed, named protocol, and the KL divergence of a model's
// next-token distributions from a reference's (an fp32 model run alongside, or its log-probabilities
// cached in a file). docs/evaluation.md describes the protocol and the cache format.
//
//   QFORGE_ASSIGN_OR_RETURN(EvalWindows w, make_eval_windows(tokens, bos_id, 512, "heldout.txt"));
//   QFORGE_ASSIGN_OR_RETURN(EvalReport r, evaluate(model, w, options, {.model = &reference}));
//   r.ppl.ppl, r.kld->mean, r.kld->top1_agreement ...
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/dtype.h"
#include "qforge/status.h"
#include "qforge/tensor.h"

namespace qforge {

class Model;

// ---------------------------------------------------------------------------------------------
// The perplexity protocol

// qforge-ppl-v1: the whole text is one string, tokenized without special tokens; BOS is prepended
// once to the whole token stream (when the model defines one); the stream is cut into
// non-overlapping windows of ctx tokens (the remainder is dropped); each window is evaluated from an
// empty cache and every position but its first is scored. ppl = exp(total NLL / scored tokens).
inline constexpr std::string_view kPerplexityProtocol = "qforge-ppl-v1";
// "qforge-ppl-v1: whole-file, BOS-prefixed, non-overlapping windows, first position of each window unscored"
std::string perplexity_protocol_description();

// The token stream cut into windows.
struct EvalWindows {
  std::vector<int32_t> stream;  // BOS (if any) followed by the text's tokens
  int64_t ctx = 0;
  int64_t count = 0;    // full windows in the stream
  int64_t dropped = 0;  // tokens after the last full window (never evaluated)
  std::string label;    // the text's name (file path) for messages
  std::string text_sha256;  // SHA-256 of the text bytes (identifies it in logits caches); may be empty

  std::span<const int32_t> window(int64_t i) const {
    return std::span<const int32_t>(stream).subspan(static_cast<size_t>(i * ctx), static_cast<size_t>(ctx));
  }
  int64_t scored_per_window() const { return ctx - 1; }
};

// Builds the windows from the text's tokens (no special tokens) and the model's BOS id (-1: none).
// Errors name `label`: an empty token list, ctx < 2, or a stream shorter than one window.
Expected<EvalWindows> make_eval_windows(std::span<const int32_t> text_tokens, int64_t bos_token_id, int64_t ctx,
                                        const std::string& label);

// ---------------------------------------------------------------------------------------------
// Per-position math (exposed for tests). All accumulate in double.

// log(sum(exp(x))) of n logits; -inf when n == 0. A +inf logit gives +inf; NaN propagates.
double log_sum_exp(const float* x, int64_t n);
// KL(P || Q) = sum_i p_i (log p_i - log q_i) for two log-probability vectors of length n
// (terms with p_i == 0 contribute 0). Rounding can make it slightly negative for nearly
// identical inputs; it is clamped at 0.
double kl_divergence(const double* log_p, const double* log_q, int64_t n);

// Mean, spread and order statistics of a sample (percentiles interpolate linearly between order
// statistics, as numpy's default does).
struct SampleStats {
  int64_t count = 0;
  double mean = 0;
  double stderr_mean = 0;  // sample standard deviation / sqrt(count); 0 when count < 2
  double min = 0, median = 0, p90 = 0, p95 = 0, p99 = 0, max = 0;
};
// `values` is sorted in place. Any NaN makes the order statistics NaN.
SampleStats sample_stats(std::vector<double>& values);
// The q-quantile (q in [0, 1]) of values sorted ascending.
double sorted_quantile(std::span<const double> sorted, double q);

// ---------------------------------------------------------------------------------------------
// Reference log-probability cache (--save-logits / --ref-logits)

// A safetensors file holding a model's full log-softmax at every scored position, so a quantized
// model can be compared with its fp32 reference without running the reference again:
//   tokens    i32        [windows, ctx]              the evaluated windows (checked on reuse)
//   logprobs  f16 or f32 [windows, ctx - 1, vocab]   log-softmax of the logits at positions 0..ctx-2
// __metadata__ (strings): format = "qforge-ref-logits-v1", protocol, ctx, windows, vocab, dtype,
// text_sha256, text, model, model_sha256, qforge_version.
inline constexpr std::string_view kLogitsCacheFormat = "qforge-ref-logits-v1";

struct LogitsCacheInfo {
  std::string protocol = std::string(kPerplexityProtocol);
  int64_t ctx = 0;
  int64_t windows = 0;
  int64_t vocab = 0;
  DType dtype = DType::f16;  // f16 or f32
  std::string text_sha256;
  std::string text;          // the text's name, informational
  std::string model;         // the model's name, informational
  std::string model_sha256;  // fingerprint of the model's files (model_fingerprint), informational
};

// Bytes a cache of `windows` windows takes (header excluded); 0 on overflow.
uint64_t logits_cache_data_bytes(int64_t windows, int64_t ctx, int64_t vocab, DType dtype);

// Writes windows in order, streaming (memory stays bounded by one window), to a temporary file
// renamed over `path` by commit(): an interrupted run leaves nothing at `path`.
class LogitsCacheWriter {
 public:
  static Expected<std::unique_ptr<LogitsCacheWriter>> create(const std::string& path, const LogitsCacheInfo& info,
                                                             const EvalWindows& windows);
  ~LogitsCacheWriter();
  // Log-probabilities of window `next_window()`: (ctx - 1) rows of vocab values.
  Status write_window(const float* logprobs);
  int64_t next_window() const { return written_; }
  const LogitsCacheInfo& info() const;
  const std::string& path() const;
  Status commit();  // all info.windows windows must have been written

 private:
  struct State;
  explicit LogitsCacheWriter(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
  int64_t written_ = 0;
};

class LogitsCacheReader {
 public:
  static Expected<LogitsCacheReader> open(const std::string& path);
  LogitsCacheReader(LogitsCacheReader&&) noexcept;
  LogitsCacheReader& operator=(LogitsCacheReader&&) noexcept;
  ~LogitsCacheReader();

  const LogitsCacheInfo& info() const { return info_; }
  const std::string& path() const { return path_; }
  // Refuses a cache made under another protocol, context length or text (SHA-256), or for another
  // vocabulary size, or holding fewer than `windows_needed` windows, or whose windows' tokens differ
  // from `windows` (another tokenizer). Errors name the file and both values.
  Status check_compatible(const EvalWindows& windows, int64_t windows_needed, int64_t vocab) const;
  // Row `pos` (0 .. ctx-2) of window `w` as f32 (exact for f16 caches): vocab values.
  void row(int64_t w, int64_t pos, float* out) const;

 private:
  LogitsCacheReader() = default;
  std::string path_;
  LogitsCacheInfo info_;
  Tensor tokens_tensor_, logprobs_tensor_;  // views that keep the mapping alive
  const uint8_t* logprobs_ = nullptr;
  const int32_t* tokens_ = nullptr;
};

// A fingerprint of a model on disk: SHA-256 over the names, sizes and bytes of its files (an HF
// directory's config.json, index and safetensors shards; otherwise the file itself).
Expected<std::string> model_fingerprint(const std::string& path);

// ---------------------------------------------------------------------------------------------
// Evaluation

struct EvalOptions {
  int64_t max_windows = 0;      // 0: every window
  int64_t batch_tokens = 1024;  // tokens per forward call, rounded down to whole windows (at least one)
  // Called after each batch with the windows and tokens finished so far.
  std::function<void(int64_t windows_done, int64_t tokens_done)> on_progress;
  // Checked between batches; an error (e.g. check_interrupted) stops the evaluation.
  std::function<Status()> should_stop;
};

// Where the reference distributions come from. At most one may be set.
struct EvalReference {
  Model* model = nullptr;                     // run on the same windows, in the same batches
  const LogitsCacheReader* cache = nullptr;   // read from a --save-logits file
};

struct PerplexityStats {
  double ppl = 0;
  double nll_mean = 0;     // mean negative log-likelihood (nats per token)
  double nll_stderr = 0;   // standard error of the mean NLL (positions treated as independent)
  double ppl_stderr = 0;   // ppl * nll_stderr (first-order propagation, as llama.cpp reports it)
  double ppl_low95 = 0;    // exp(nll_mean -/+ 1.96 nll_stderr)
  double ppl_high95 = 0;
  int64_t tokens_scored = 0;
};

struct KldStats {
  SampleStats kld;              // KL(P_ref || P_model) per scored position, nats
  double top1_agreement = 0;    // fraction of positions whose argmax agrees (0..1)
  double delta_p_rms = 0;       // RMS over positions of p_model(t) - p_ref(t), t = the reference's top token
  double delta_p_mean = 0;
  PerplexityStats reference;    // the reference's perplexity on the same windows
  double ln_ppl_ratio = 0;      // ln(ppl / ppl_ref) = nll_mean - nll_mean_ref
};

struct EvalReport {
  std::string protocol = std::string(kPerplexityProtocol);
  int64_t ctx = 0;
  int64_t windows = 0;        // windows evaluated
  int64_t windows_total = 0;  // windows in the text
  int64_t tokens_in_text = 0; // stream length (BOS included)
  PerplexityStats ppl;
  std::optional<KldStats> kld;
  double seconds = 0;         // wall time of the evaluation loop
  double tokens_per_second = 0;  // evaluated tokens (windows * ctx) per second, model (+ reference) forward included
};

// Evaluates `model` on the windows (the first max_windows of them), in batches of whole windows.
// With a reference, also KL statistics; with `save`, writes the model's log-probabilities (the
// writer must have been created for the same windows). Memory: two [batch_tokens, vocab] logits
// buffers per model plus one KL value per scored position.
Expected<EvalReport> evaluate(Model& model, const EvalWindows& windows, const EvalOptions& options,
                              const EvalReference& reference = {}, LogitsCacheWriter* save = nullptr);

}  // namespace qforge
