// The perplexity protocol (qforge-ppl-v1) and the evaluation loop: windows are run through the
// engine in batches of whole windows, each row of logits is reduced to its NLL (and, with a
// reference, its KL divergence, top-1 agreement and top-token probability shift) in parallel, and
// the per-position values are summarised in window order, so results do not depend on the thread
// count or the batch size.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "eval/softmax_rows.h"
#include "qforge/eval.h"
#include "qforge/model.h"
#include "qforge/parallel.h"

namespace qforge {

std::string perplexity_protocol_description() {
  return std::string(kPerplexityProtocol) +
         ": whole-file, BOS-prefixed, non-overlapping windows, first position of each window unscored";
}

Expected<EvalWindows> make_eval_windows(std::span<const int32_t> text_tokens, int64_t bos_token_id, int64_t ctx,
                                        const std::string& label) {
  if (ctx < 2)
    return invalid_argument("context length " + std::to_string(ctx) +
                            ": a window needs at least 2 tokens (one scored)");
  if (text_tokens.empty())
    return invalid_argument(label + ": the text has no tokens (empty file?)");
  EvalWindows w;
  w.ctx = ctx;
  w.label = label;
  w.stream.reserve(text_tokens.size() + 1);
  if (bos_token_id >= 0) {
    if (bos_token_id > INT32_MAX) return invalid_argument("BOS token id " + std::to_string(bos_token_id) + " is too large");
    w.stream.push_back(static_cast<int32_t>(bos_token_id));
  }
  w.stream.insert(w.stream.end(), text_tokens.begin(), text_tokens.end());
  const int64_t n = static_cast<int64_t>(w.stream.size());
  if (n < ctx)
    return invalid_argument(label + ": " + std::to_string(n) + " tokens" + (bos_token_id >= 0 ? " (BOS included)" : "") +
                            " are fewer than one window of " + std::to_string(ctx) +
                            " tokens; use a shorter context or a longer text");
  w.count = n / ctx;
  w.dropped = n - w.count * ctx;
  return w;
}

namespace {

PerplexityStats perplexity_stats(const std::vector<double>& nll) {
  PerplexityStats p;
  p.tokens_scored = static_cast<int64_t>(nll.size());
  if (nll.empty()) return p;
  double sum = 0;
  for (double v : nll) sum += v;
  const double n = static_cast<double>(nll.size());
  p.nll_mean = sum / n;
  if (nll.size() > 1) {
    double ss = 0;
    for (double v : nll) ss += (v - p.nll_mean) * (v - p.nll_mean);
    p.nll_stderr = std::sqrt(ss / (n - 1) / n);
  }
  p.ppl = std::exp(p.nll_mean);
  p.ppl_stderr = p.ppl * p.nll_stderr;
  p.ppl_low95 = std::exp(p.nll_mean - 1.96 * p.nll_stderr);
  p.ppl_high95 = std::exp(p.nll_mean + 1.96 * p.nll_stderr);
  return p;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Expected<EvalReport> evaluate(Model& model, const EvalWindows& windows, const EvalOptions& options,
                              const EvalReference& reference, LogitsCacheWriter* save) {
  using namespace eval_detail;
  const ModelConfig& cfg = model.config();
  if (!cfg.causal)
    return invalid_argument(std::string(architecture_name(cfg.arch)) + " is an encoder: perplexity needs a causal LM");
  const int64_t ctx = windows.ctx;
  if (ctx < 2 || windows.count < 1 || static_cast<int64_t>(windows.stream.size()) < windows.count * ctx)
    return invalid_argument(windows.label + ": no evaluation windows");
  if (reference.model != nullptr && reference.cache != nullptr)
    return invalid_argument("evaluate: give either a reference model or a reference logits file, not both");
  if (options.max_windows < 0) return invalid_argument("max windows must be >= 0, got " + std::to_string(options.max_windows));
  const int64_t V = cfg.vocab_size;
  const int64_t n_windows = options.max_windows > 0 ? std::min(options.max_windows, windows.count) : windows.count;
  for (int32_t t : windows.stream)
    if (t < 0 || t >= V)
      return out_of_range(windows.label + ": token id " + std::to_string(t) + " is outside the model's vocabulary [0, " +
                          std::to_string(V) + ")");
  if (cfg.learned_positions && ctx > cfg.max_positions)
    return out_of_range("context length " + std::to_string(ctx) + " exceeds the model's " +
                        std::to_string(cfg.max_positions) + " positions");
  Model* ref_model = reference.model;
  if (ref_model != nullptr) {
    const ModelConfig& rc = ref_model->config();
    if (!rc.causal) return invalid_argument("the reference model is an encoder");
    if (rc.vocab_size != V)
      return invalid_argument("the reference model's vocabulary (" + std::to_string(rc.vocab_size) +
                              ") differs from the model's (" + std::to_string(V) + ")");
    if (rc.learned_positions && ctx > rc.max_positions)
      return out_of_range("context length " + std::to_string(ctx) + " exceeds the reference model's " +
                          std::to_string(rc.max_positions) + " positions");
  }
  if (reference.cache != nullptr) QFORGE_RETURN_IF_ERROR(reference.cache->check_compatible(windows, n_windows, V));
  if (save != nullptr) {
    const LogitsCacheInfo& si = save->info();
    if (si.ctx != ctx || si.windows != n_windows || si.vocab != V || save->next_window() != 0)
      return invalid_argument(save->path() + ": logits file was set up for " + std::to_string(si.windows) +
                              " windows of " + std::to_string(si.ctx) + " tokens, vocabulary " +
                              std::to_string(si.vocab) + "; this evaluation has " + std::to_string(n_windows) +
                              " windows of " + std::to_string(ctx) + ", vocabulary " + std::to_string(V));
  }

  const int64_t per_batch = std::clamp<int64_t>(options.batch_tokens / ctx, 1, n_windows);
  QFORGE_ASSIGN_OR_RETURN(KVCache cache, model.make_cache(per_batch, ctx));
  KVCache ref_cache;
  if (ref_model != nullptr) {
    QFORGE_ASSIGN_OR_RETURN(ref_cache, ref_model->make_cache(per_batch, ctx));
  }
  const bool with_ref = ref_model != nullptr || reference.cache != nullptr;
  const int64_t S = ctx - 1;  // scored positions per window
  const size_t total_scored = static_cast<size_t>(n_windows * S);
  std::vector<double> nll(total_scored), ref_nll, kl, dp;
  std::vector<uint8_t> top1;
  if (with_ref) {
    ref_nll.resize(total_scored);
    kl.resize(total_scored);
    dp.resize(total_scored);
    top1.resize(total_scored);
  }

  const auto t0 = std::chrono::steady_clock::now();
  // Logits buffers reused by every batch: [per_batch * ctx, V].
  std::vector<float> logits(static_cast<size_t>(per_batch * ctx * V));
  std::vector<float> ref_logits(ref_model != nullptr ? logits.size() : 0);
  for (int64_t w0 = 0; w0 < n_windows; w0 += per_batch) {
    if (options.should_stop) QFORGE_RETURN_IF_ERROR(options.should_stop());
    const int64_t nb = std::min(per_batch, n_windows - w0);
    std::vector<TokenChunk> chunks;
    for (int64_t i = 0; i < nb; ++i) chunks.push_back({i, windows.window(w0 + i)});
    cache.clear();
    const size_t used = static_cast<size_t>(nb * ctx * V);
    QFORGE_RETURN_IF_ERROR(model.forward(chunks, cache, LogitsMode::all, std::span<float>(logits.data(), used)));
    if (ref_model != nullptr) {
      ref_cache.clear();
      QFORGE_RETURN_IF_ERROR(
          ref_model->forward(chunks, ref_cache, LogitsMode::all, std::span<float>(ref_logits.data(), used)));
    }
    float* lg = logits.data();
    const float* rl = ref_model != nullptr ? ref_logits.data() : nullptr;
    const LogitsCacheReader* rc = reference.cache;

    // One scored position per item: row p of window i predicts token p + 1.
    parallel_for(nb * S, 16, [&](int64_t, int64_t begin, int64_t end) {
      std::vector<float> cached;
      if (rc != nullptr) cached.resize(static_cast<size_t>(V));
      for (int64_t j = begin; j < end; ++j) {
        const int64_t i = j / S, p = j % S;
        const size_t g = static_cast<size_t>((w0 + i) * S + p);
        float* x = lg + (i * ctx + p) * V;
        const int32_t target = windows.window(w0 + i)[static_cast<size_t>(p + 1)];
        const SoftmaxRow sm = softmax_row(x, V);
        const double lse = sm.lse();
        nll[g] = lse - static_cast<double>(x[target]);
        if (with_ref) {
          const float* r = nullptr;
          if (rl != nullptr) {
            r = rl + (i * ctx + p) * V;
          } else {
            rc->row(w0 + i, p, cached.data());
            r = cached.data();
          }
          const KlRow kr = kl_row(r, x, V);
          const double lse_r = kr.sm.lse();
          ref_nll[g] = lse_r - static_cast<double>(r[target]);
          kl[g] = kl_from_rows(kr, sm);
          top1[g] = kr.sm.argmax == sm.argmax ? 1 : 0;
          const int64_t t = kr.sm.argmax;
          dp[g] = std::exp(static_cast<double>(x[t]) - lse) - std::exp(static_cast<double>(r[t]) - lse_r);
        }
        // The row is not needed any more: turn it into log-probabilities for the cache.
        if (save != nullptr)
          for (int64_t v = 0; v < V; ++v) x[v] = static_cast<float>(static_cast<double>(x[v]) - lse);
      }
    });
    for (int64_t i = 0; i < nb; ++i) {
      for (int64_t p = 0; p < S; ++p) {
        const size_t g = static_cast<size_t>((w0 + i) * S + p);
        if (!std::isfinite(nll[g]) || (with_ref && (!std::isfinite(kl[g]) || !std::isfinite(ref_nll[g]))))
          return invalid_argument(windows.label + ": non-finite " +
                                  (std::isfinite(nll[g]) ? std::string("reference ") : std::string()) +
                                  "log-probability at window " + std::to_string(w0 + i) + ", position " +
                                  std::to_string(p + 1) + " (NaN or infinite logits)");
      }
      if (save != nullptr) QFORGE_RETURN_IF_ERROR(save->write_window(lg + i * ctx * V));
    }
    if (options.on_progress) options.on_progress(w0 + nb, (w0 + nb) * ctx);
  }

  EvalReport report;
  report.ctx = ctx;
  report.windows = n_windows;
  report.windows_total = windows.count;
  report.tokens_in_text = static_cast<int64_t>(windows.stream.size());
  report.seconds = seconds_since(t0);
  report.tokens_per_second = report.seconds > 0 ? static_cast<double>(n_windows * ctx) / report.seconds : 0;
  report.ppl = perplexity_stats(nll);
  if (with_ref) {
    KldStats k;
    k.reference = perplexity_stats(ref_nll);
    k.ln_ppl_ratio = report.ppl.nll_mean - k.reference.nll_mean;
    int64_t agree = 0;
    double dp_sum = 0, dp_sq = 0;
    for (size_t g = 0; g < total_scored; ++g) {
      agree += top1[g];
      dp_sum += dp[g];
      dp_sq += dp[g] * dp[g];
    }
    const double n = static_cast<double>(total_scored);
    k.top1_agreement = static_cast<double>(agree) / n;
    k.delta_p_mean = dp_sum / n;
    k.delta_p_rms = std::sqrt(dp_sq / n);
    k.kld = sample_stats(kl);
    report.kld = k;
  }
  return report;
}

}  // namespace qforge
