// Evaluation: the qforge-ppl-v1 windows, NLL against a hand computation on tiny synthetic models,
// the KL/softmax row kernels (AVX2 against the scalar reference, known distributions), self-KLD,
// the logits cache (round trip and every refusal), and loader errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "eval/softmax_rows.h"
#include "qforge/eval.h"
#include "qforge/model.h"
#include "model_test_support.h"
#include "test_support.h"

namespace qforge {
namespace {

using MapSource = test::MapTensorSource;

ModelConfig tiny_config() {
  ModelConfig c;
  c.arch = Architecture::llama;
  c.hidden_size = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 8;
  c.intermediate_size = 24;
  c.vocab_size = 37;
  c.max_positions = 64;
  c.norm_eps = 1e-5;
  c.bos_token_id = 1;
  c.source = "synthetic config";
  return c;
}

// Random weights (scale 0 gives an all-zero model whose logits are all 0: uniform predictions).
Model tiny_model(uint32_t seed, float scale = 1.0f) {
  const ModelConfig c = tiny_config();
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  MapSource s;
  auto put = [&](TensorRole r, int layer, Shape shape, float sc, float offset = 0) {
    std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
    for (auto& x : v) x = offset + scale * sc * d(rng);
    s.tensors[tensor_name_for_role(c.arch, r, layer, false).value()] = Tensor::from_f32(std::move(shape), v);
  };
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  put(TensorRole::token_embedding, -1, {V, H}, 1.0f);
  for (int l = 0; l < c.num_layers; ++l) {
    put(TensorRole::attn_norm, l, {H}, 0.1f, 1.0f);
    put(TensorRole::attn_q, l, {c.q_dim(), H}, 0.4f);
    put(TensorRole::attn_k, l, {c.kv_dim(), H}, 0.4f);
    put(TensorRole::attn_v, l, {c.kv_dim(), H}, 0.4f);
    put(TensorRole::attn_output, l, {H, c.q_dim()}, 0.3f);
    put(TensorRole::mlp_norm, l, {H}, 0.1f, 1.0f);
    put(TensorRole::mlp_gate, l, {I, H}, 0.3f);
    put(TensorRole::mlp_up, l, {I, H}, 0.3f);
    put(TensorRole::mlp_down, l, {H, I}, 0.3f);
  }
  put(TensorRole::final_norm, -1, {H}, 0.1f, 1.0f);
  put(TensorRole::output, -1, {V, H}, 0.5f);
  return Model::from_tensors(c, s).value();
}

std::vector<int32_t> random_tokens(size_t n, uint32_t seed, int32_t vocab) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(3, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

// NLL of every scored position, by hand: each window alone through forward_batch, then
// log(sum exp) - logit in long double.
std::vector<double> hand_nll(Model& m, const EvalWindows& w, int64_t windows) {
  std::vector<double> out;
  const int64_t V = m.config().vocab_size;
  for (int64_t i = 0; i < windows; ++i) {
    auto win = w.window(i);
    Tensor logits = m.forward_batch(win.data(), 1, w.ctx).value();
    const float* lg = logits.data_as<float>();
    for (int64_t p = 0; p + 1 < w.ctx; ++p) {
      const float* x = lg + p * V;
      long double mx = x[0], sum = 0;
      for (int64_t v = 1; v < V; ++v) mx = std::max<long double>(mx, x[v]);
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<long double>(x[v]) - mx);
      out.push_back(static_cast<double>(mx + std::log(sum) - x[win[static_cast<size_t>(p + 1)]]));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Protocol

TEST(EvalWindows, BosOnceThenNonOverlappingWindowsDroppingTheRemainder) {
  std::vector<int32_t> text = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
  auto w = make_eval_windows(text, 1, 4, "t.txt").value();
  ASSERT_EQ(w.stream.size(), 11u);
  EXPECT_EQ(w.stream[0], 1);
  EXPECT_EQ(w.count, 2);
  EXPECT_EQ(w.dropped, 3);
  EXPECT_EQ(std::vector<int32_t>(w.window(0).begin(), w.window(0).end()), (std::vector<int32_t>{1, 10, 11, 12}));
  // The second window does not start with BOS: BOS is prepended once to the whole stream.
  EXPECT_EQ(std::vector<int32_t>(w.window(1).begin(), w.window(1).end()), (std::vector<int32_t>{13, 14, 15, 16}));
  EXPECT_EQ(w.scored_per_window(), 3);

  auto nobos = make_eval_windows(text, -1, 5, "t.txt").value();
  EXPECT_EQ(nobos.count, 2);
  EXPECT_EQ(nobos.dropped, 0);
  EXPECT_EQ(nobos.window(1)[0], 15);
  EXPECT_NE(perplexity_protocol_description().find("qforge-ppl-v1"), std::string::npos);
}

TEST(EvalWindows, ClearErrors) {
  std::vector<int32_t> text = {5, 6, 7};
  auto empty = make_eval_windows({}, 1, 4, "empty.txt");
  ASSERT_FALSE(empty.has_value());
  EXPECT_NE(empty.status().message().find("empty.txt"), std::string::npos) << empty.status().message();
  auto short_text = make_eval_windows(text, 1, 8, "short.txt");
  ASSERT_FALSE(short_text.has_value());
  EXPECT_NE(short_text.status().message().find("short.txt"), std::string::npos);
  EXPECT_NE(short_text.status().message().find("4 tokens"), std::string::npos) << short_text.status().message();
  EXPECT_FALSE(make_eval_windows(text, 1, 1, "x").has_value());
  // Exactly one window fits.
  EXPECT_EQ(make_eval_windows(text, 1, 4, "x").value().count, 1);
}

// ---------------------------------------------------------------------------------------------
// Row kernels and distribution math

TEST(EvalMath, KlOfKnownDistributions) {
  const double lp[2] = {std::log(0.5), std::log(0.5)};
  const double lq[2] = {std::log(0.9), std::log(0.1)};
  const double expect = 0.5 * std::log(0.5 / 0.9) + 0.5 * std::log(0.5 / 0.1);
  EXPECT_NEAR(kl_divergence(lp, lq, 2), expect, 1e-15);
  EXPECT_EQ(kl_divergence(lp, lp, 2), 0.0);
  // p_i = 0 contributes nothing even where q_i = 0.
  const double lp0[3] = {0.0, -INFINITY, -INFINITY};
  const double lq0[3] = {std::log(0.5), std::log(0.5), -INFINITY};
  EXPECT_NEAR(kl_divergence(lp0, lq0, 3), std::log(2.0), 1e-15);

  // The row kernels: KL from logits shifted by arbitrary constants equals the formula.
  const float r[2] = {3.0f, 3.0f};
  const float x[2] = {static_cast<float>(std::log(0.9) + 7), static_cast<float>(std::log(0.1) + 7)};
  using namespace eval_detail;
  const double k = kl_from_rows(kl_row_ref(r, x, 2), softmax_row_ref(x, 2));
  EXPECT_NEAR(k, expect, 1e-7);  // the logits are rounded to f32
  const float uniform[4] = {0, 0, 0, 0};
  EXPECT_NEAR(log_sum_exp(uniform, 4), std::log(4.0), 1e-15);
}

TEST(EvalMath, Avx2RowsMatchTheReference) {
  using namespace eval_detail;
  if (!have_avx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 4.0f);
  for (int64_t n : {1, 3, 7, 8, 9, 15, 16, 17, 33, 1000, 32000}) {
    std::vector<float> r(static_cast<size_t>(n) + 1), x(static_cast<size_t>(n) + 1);
    for (auto& v : r) v = d(rng);
    for (auto& v : x) v = d(rng);
    if (n > 5) {
      r[2] = -INFINITY;  // masked logits: zero probability
      x[4] = -1000.0f;   // far below the max: exp underflows to 0
    }
    for (int off = 0; off < 2; ++off) {  // misaligned starts
      const SoftmaxRow a = softmax_row_ref(x.data() + off, n), b = softmax_row_avx2(x.data() + off, n);
      EXPECT_EQ(a.max, b.max);
      EXPECT_EQ(a.argmax, b.argmax);
      EXPECT_NEAR(a.sum, b.sum, 1e-14 * a.sum) << "n=" << n;
      const KlRow ka = kl_row_ref(r.data() + off, x.data() + off, n), kb = kl_row_avx2(r.data() + off, x.data() + off, n);
      EXPECT_NEAR(ka.sm.sum, kb.sm.sum, 1e-14 * ka.sm.sum);
      EXPECT_NEAR(ka.cross, kb.cross, 1e-12 * (std::abs(ka.cross) + ka.sm.sum)) << "n=" << n;
      EXPECT_EQ(ka.sm.argmax, kb.sm.argmax);
    }
  }
  // NaN anywhere gives a NaN sum in both.
  std::vector<float> bad(40, 1.0f);
  bad[37] = NAN;
  EXPECT_TRUE(std::isnan(softmax_row_ref(bad.data(), 40).sum));
  EXPECT_TRUE(std::isnan(softmax_row_avx2(bad.data(), 40).sum));
}

TEST(EvalMath, KlRowAgreesWithTheDirectFormula) {
  using namespace eval_detail;
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 2.0f);
  const int64_t n = 517;
  std::vector<float> r(n), x(n);
  for (int64_t i = 0; i < n; ++i) {
    r[static_cast<size_t>(i)] = d(rng);
    x[static_cast<size_t>(i)] = r[static_cast<size_t>(i)] + 0.3f * d(rng);
  }
  std::vector<double> lr(n), lx(n);
  const double lse_r = log_sum_exp(r.data(), n), lse_x = log_sum_exp(x.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    lr[static_cast<size_t>(i)] = r[static_cast<size_t>(i)] - lse_r;
    lx[static_cast<size_t>(i)] = x[static_cast<size_t>(i)] - lse_x;
  }
  const double direct = kl_divergence(lr.data(), lx.data(), n);
  const double rows = kl_from_rows(kl_row(r.data(), x.data(), n), softmax_row(x.data(), n));
  EXPECT_GT(direct, 0.01);
  EXPECT_NEAR(rows, direct, 1e-12);
}

TEST(EvalMath, SampleStatsPercentiles) {
  std::vector<double> v;
  for (int i = 100; i >= 0; --i) v.push_back(i);  // 0..100 reversed
  SampleStats s = sample_stats(v);
  EXPECT_EQ(s.count, 101);
  EXPECT_DOUBLE_EQ(s.mean, 50.0);
  EXPECT_DOUBLE_EQ(s.median, 50.0);
  EXPECT_DOUBLE_EQ(s.p99, 99.0);
  EXPECT_DOUBLE_EQ(s.p90, 90.0);
  EXPECT_DOUBLE_EQ(s.max, 100.0);
  EXPECT_DOUBLE_EQ(s.min, 0.0);
  // sample sd of 0..100 is sqrt(101 * 102 / 12 * 100/100)... computed directly:
  double ss = 0;
  for (int i = 0; i <= 100; ++i) ss += (i - 50.0) * (i - 50.0);
  EXPECT_NEAR(s.stderr_mean, std::sqrt(ss / 100.0 / 101.0), 1e-12);
  std::vector<double> two = {1.0, 2.0};
  EXPECT_DOUBLE_EQ(sample_stats(two).median, 1.5);
}

// ---------------------------------------------------------------------------------------------
// Evaluation on synthetic models

TEST(Evaluate, UniformModelHasPerplexityEqualToTheVocabulary) {
  Model m = tiny_model(1, 0.0f);
  auto w = make_eval_windows(random_tokens(100, 5, 37), 1, 16, "uniform").value();
  EvalReport r = evaluate(m, w, {}).value();
  EXPECT_EQ(r.windows, 6);
  EXPECT_EQ(r.ppl.tokens_scored, 6 * 15);
  EXPECT_NEAR(r.ppl.nll_mean, std::log(37.0), 1e-12);
  EXPECT_NEAR(r.ppl.ppl, 37.0, 1e-9);
  EXPECT_NEAR(r.ppl.nll_stderr, 0.0, 1e-12);
  EXPECT_EQ(r.protocol, "qforge-ppl-v1");
}

TEST(Evaluate, NllMatchesAHandComputationWhateverTheBatch) {
  Model m = tiny_model(2);
  auto w = make_eval_windows(random_tokens(200, 6, 37), 1, 12, "random").value();
  const std::vector<double> hand = hand_nll(m, w, w.count);
  double sum = 0;
  for (double v : hand) sum += v;
  const double mean = sum / static_cast<double>(hand.size());
  for (int64_t batch_tokens : {12, 36, 100000}) {
    EvalOptions o;
    o.batch_tokens = batch_tokens;
    int64_t calls = 0, last_tokens = 0;
    o.on_progress = [&](int64_t, int64_t tokens) {
      ++calls;
      last_tokens = tokens;
    };
    EvalReport r = evaluate(m, w, o).value();
    EXPECT_EQ(r.windows, 16);
    EXPECT_EQ(r.ppl.tokens_scored, 16 * 11);
    // Batched and single-window forwards differ by f32 rounding only.
    EXPECT_NEAR(r.ppl.nll_mean, mean, 1e-5) << "batch_tokens " << batch_tokens;
    EXPECT_NEAR(r.ppl.ppl, std::exp(mean), 1e-5 * std::exp(mean));
    EXPECT_EQ(last_tokens, 16 * 12);
    EXPECT_EQ(calls, (16 + std::max<int64_t>(1, batch_tokens / 12) - 1) / std::max<int64_t>(1, batch_tokens / 12));
  }
  // One window per batch computes exactly what forward_batch does.
  EvalOptions one;
  one.batch_tokens = 1;
  one.max_windows = 3;
  EvalReport r = evaluate(m, w, one).value();
  double s3 = 0;
  for (size_t i = 0; i < 33; ++i) s3 += hand[i];
  EXPECT_NEAR(r.ppl.nll_mean, s3 / 33.0, 1e-12);
  EXPECT_EQ(r.windows, 3);
  EXPECT_EQ(r.windows_total, 16);
}

TEST(Evaluate, SelfReferenceGivesZeroKldAndFullAgreement) {
  Model m = tiny_model(4), same = tiny_model(4);
  auto w = make_eval_windows(random_tokens(120, 8, 37), 1, 10, "self").value();
  EvalOptions o;
  o.batch_tokens = 30;
  EvalReport r = evaluate(m, w, o, {.model = &same}).value();
  ASSERT_TRUE(r.kld.has_value());
  EXPECT_EQ(r.kld->kld.max, 0.0);
  EXPECT_EQ(r.kld->kld.mean, 0.0);
  EXPECT_EQ(r.kld->top1_agreement, 1.0);
  EXPECT_EQ(r.kld->delta_p_rms, 0.0);
  EXPECT_EQ(r.kld->reference.ppl, r.ppl.ppl);
  EXPECT_EQ(r.kld->ln_ppl_ratio, 0.0);
  EXPECT_EQ(r.kld->kld.count, r.ppl.tokens_scored);
}

TEST(Evaluate, KldAgainstAnotherModelMatchesTheDirectFormula) {
  Model m = tiny_model(4), other = tiny_model(9);
  auto w = make_eval_windows(random_tokens(60, 8, 37), 1, 10, "pair").value();
  EvalOptions o;
  o.batch_tokens = 1;  // each window alone, as forward_batch below
  o.max_windows = 2;
  EvalReport r = evaluate(m, w, o, {.model = &other}).value();
  ASSERT_TRUE(r.kld.has_value());
  const int64_t V = 37;
  std::vector<double> kls;
  int agree = 0;
  double dp2 = 0;
  for (int64_t i = 0; i < 2; ++i) {
    Tensor a = m.forward_batch(w.window(i).data(), 1, 10).value();
    Tensor b = other.forward_batch(w.window(i).data(), 1, 10).value();
    for (int64_t p = 0; p < 9; ++p) {
      const float* x = a.data_as<float>() + p * V;
      const float* y = b.data_as<float>() + p * V;
      std::vector<double> lx(V), ly(V);
      const double sx = log_sum_exp(x, V), sy = log_sum_exp(y, V);
      int64_t ax = 0, ay = 0;
      for (int64_t v = 0; v < V; ++v) {
        lx[static_cast<size_t>(v)] = x[v] - sx;
        ly[static_cast<size_t>(v)] = y[v] - sy;
        if (x[v] > x[ax]) ax = v;
        if (y[v] > y[ay]) ay = v;
      }
      kls.push_back(kl_divergence(ly.data(), lx.data(), V));  // KL(P_ref || P_model)
      agree += ax == ay;
      const double d = std::exp(lx[static_cast<size_t>(ay)]) - std::exp(ly[static_cast<size_t>(ay)]);
      dp2 += d * d;
    }
  }
  double mean = 0;
  for (double k : kls) mean += k;
  mean /= static_cast<double>(kls.size());
  EXPECT_GT(mean, 0.01);
  EXPECT_NEAR(r.kld->kld.mean, mean, 1e-9 * mean);
  std::sort(kls.begin(), kls.end());
  EXPECT_NEAR(r.kld->kld.max, kls.back(), 1e-9 * kls.back());
  EXPECT_NEAR(r.kld->top1_agreement, agree / 18.0, 1e-12);
  EXPECT_NEAR(r.kld->delta_p_rms, std::sqrt(dp2 / 18.0), 1e-9);
}

TEST(Evaluate, RejectsBadInputs) {
  Model m = tiny_model(4);
  auto w = make_eval_windows(random_tokens(60, 8, 37), 1, 10, "bad").value();
  auto out_of_vocab = w;
  out_of_vocab.stream[7] = 99;
  auto e = evaluate(m, out_of_vocab, {});
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.status().message().find("99"), std::string::npos) << e.status().message();
  EvalOptions neg;
  neg.max_windows = -1;
  EXPECT_FALSE(evaluate(m, w, neg).has_value());
}

// ---------------------------------------------------------------------------------------------
// Logits cache

struct CacheFixture {
  Model model = tiny_model(11);
  EvalWindows windows;
  std::string dir = test::temp_dir();
  CacheFixture() {
    windows = make_eval_windows(random_tokens(90, 12, 37), 1, 10, "cache.txt").value();
    windows.text_sha256 = std::string(64, 'a');
  }
  std::string save(DType dtype, int64_t n_windows, const std::string& name, std::string protocol = "qforge-ppl-v1") {
    LogitsCacheInfo info;
    info.protocol = protocol;
    info.ctx = windows.ctx;
    info.windows = n_windows;
    info.vocab = 37;
    info.dtype = dtype;
    info.text_sha256 = windows.text_sha256;
    info.text = "cache.txt";
    info.model = "tiny";
    const std::string path = dir + "/" + name;
    auto writer = LogitsCacheWriter::create(path, info, windows).value();
    EvalOptions o;
    o.max_windows = n_windows;
    o.batch_tokens = 20;
    EXPECT_TRUE(evaluate(model, windows, o, {}, writer.get()).has_value());
    EXPECT_TRUE(writer->commit().is_ok());
    return path;
  }
};

TEST(LogitsCache, RoundTripGivesNearZeroKld) {
  CacheFixture f;
  for (DType dt : {DType::f32, DType::f16}) {
    const std::string path = f.save(dt, 5, std::string("ref-") + dtype_name(dt) + ".safetensors");
    EXPECT_EQ(std::filesystem::file_size(path) > logits_cache_data_bytes(5, 10, 37, dt), true);
    LogitsCacheReader cache = LogitsCacheReader::open(path).value();
    EXPECT_EQ(cache.info().windows, 5);
    EXPECT_EQ(cache.info().dtype, dt);
    EXPECT_EQ(cache.info().model, "tiny");
    EvalOptions o;
    o.max_windows = 5;
    EvalReport r = evaluate(f.model, f.windows, o, {.cache = &cache}).value();
    ASSERT_TRUE(r.kld.has_value());
    // f32 log-probabilities reproduce the distribution to rounding; f16 keeps 11 bits of each
    // log-probability (|log p| < 16 here: error < 2^-7 absolute, far less where p matters).
    const double bound = dt == DType::f32 ? 1e-12 : 1e-4;
    EXPECT_LT(r.kld->kld.max, bound) << dtype_name(dt);
    EXPECT_EQ(r.kld->top1_agreement, 1.0);
    EXPECT_NEAR(r.kld->reference.nll_mean, r.ppl.nll_mean, dt == DType::f32 ? 1e-6 : 1e-2);
    // Fewer windows than saved is fine.
    o.max_windows = 2;
    EXPECT_TRUE(evaluate(f.model, f.windows, o, {.cache = &cache}).has_value());
  }
}

TEST(LogitsCache, RefusesMismatches) {
  CacheFixture f;
  const std::string path = f.save(DType::f16, 3, "ref.safetensors");
  LogitsCacheReader cache = LogitsCacheReader::open(path).value();
  auto expect_refused = [&](const EvalWindows& w, int64_t max_windows, const std::string& needle) {
    EvalOptions o;
    o.max_windows = max_windows;
    auto r = evaluate(f.model, w, o, {.cache = &cache});
    ASSERT_FALSE(r.has_value()) << needle;
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
  };
  expect_refused(f.windows, 4, "holds 3 windows");  // more windows than saved
  expect_refused(f.windows, 0, "holds 3 windows");
  EvalWindows other_text = f.windows;
  other_text.text_sha256 = std::string(64, 'b');
  expect_refused(other_text, 3, "another text");
  EvalWindows other_ctx = make_eval_windows(random_tokens(90, 12, 37), 1, 9, "cache.txt").value();
  other_ctx.text_sha256 = f.windows.text_sha256;
  expect_refused(other_ctx, 3, "context length 10");
  EvalWindows other_tokens = f.windows;
  other_tokens.stream[5] = other_tokens.stream[5] == 3 ? 4 : 3;
  expect_refused(other_tokens, 3, "first difference at token 5");

  const std::string wrong_protocol = f.save(DType::f16, 3, "old.safetensors", "qforge-ppl-v0");
  LogitsCacheReader old = LogitsCacheReader::open(wrong_protocol).value();
  EvalOptions o;
  o.max_windows = 3;
  auto r = evaluate(f.model, f.windows, o, {.cache = &old});
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("qforge-ppl-v0"), std::string::npos) << r.status().message();

  // Not a logits file at all.
  const std::string junk = f.dir + "/junk.safetensors";
  std::ofstream(junk) << "not safetensors";
  EXPECT_FALSE(LogitsCacheReader::open(junk).has_value());
}

TEST(LogitsCache, UnfinishedWriterLeavesNothing) {
  CacheFixture f;
  const std::string path = f.dir + "/partial.safetensors";
  {
    LogitsCacheInfo info;
    info.ctx = 10;
    info.windows = 3;
    info.vocab = 37;
    info.text_sha256 = f.windows.text_sha256;
    auto writer = LogitsCacheWriter::create(path, info, f.windows).value();
    EXPECT_FALSE(writer->commit().is_ok());  // nothing written yet
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}


// ---------------------------------------------------------------------------------------------
// The CLI: qforge eval / qforge run

std::string quote(const std::string& s) { return "'" + s + "'"; }

std::string models() { return test::shared_dir() + "/models"; }

int qforge(const std::string& args, std::string* out) {
  return test::run_command(quote(test::cli_path()) + " " + args, out);
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string write_text(const std::string& name, const std::string& text) {
  const std::string path = test::temp_dir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

std::string story_text() {
  std::string t;
  for (int i = 0; i < 12; ++i)
    t += "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
         "friends. One day, she saw a big red ball under a tree and ran to get it.\n\n";
  return t;
}

TEST(EvalCli, RunStories260KGreedyZoo) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const std::string dir = models() + "/stories260K";
  std::string out;
  const int rc = qforge("run " + quote(dir + "/stories260K.bin") + " --tokenizer " + quote(dir + "/tok512.bin") +
                            " -p Zoo -n 60 --temp 0 --threads 1",
                        &out);
  ASSERT_EQ(rc, 0) << out;
  // ../shared/README.md: greedy generation from "Zoo" (60 steps) gives this text.
  EXPECT_NE(out.find("Zoo was a little girl named Lily. She loved to play outside in the park."), std::string::npos)
      << out;
  EXPECT_NE(out.find("prefill:"), std::string::npos) << out;
  EXPECT_NE(out.find("tokens/s"), std::string::npos) << out;
}

TEST(EvalCli, RunSamplingIsDeterministicForASeed) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const std::string dir = models() + "/stories260K";
  auto gen = [&](int seed) {
    std::string out;
    EXPECT_EQ(qforge("run " + quote(dir + "/stories260K.bin") + " --tokenizer " + quote(dir + "/tok512.bin") +
                         " -p 'Once upon' -n 40 --temp 1.0 --top-k 20 --top-p 0.9 --seed " + std::to_string(seed) +
                         " --threads 1",
                     &out),
              0)
        << out;
    return out.substr(0, out.find("\nprefill:"));  // the timing line differs between runs
  };
  const std::string a = gen(7), b = gen(7), c = gen(8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(a.rfind("Once upon", 0), 0u) << a;
}

TEST(EvalCli, SelfReferenceAndLogitsCacheOnStories260K) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const std::string dir = models() + "/stories260K";
  const std::string model = quote(dir + "/stories260K.bin") + " --tokenizer " + quote(dir + "/tok512.bin");
  const std::string text = write_text("story.txt", story_text());
  const std::string tmp = test::temp_dir();
  std::string out;
  // Against itself: KLD exactly 0, 100% top-1 agreement.
  ASSERT_EQ(qforge("eval " + model + " --text " + quote(text) + " --ctx 64 --ref " + quote(dir + "/stories260K.bin") +
                       " --json " + quote(tmp + "/self.json"),
                   &out),
            0)
      << out;
  nlohmann::json self = read_json(tmp + "/self.json");
  EXPECT_EQ(self["protocol"], "qforge-ppl-v1");
  EXPECT_EQ(self["kld_max"].get<double>(), 0.0);
  EXPECT_EQ(self["kld_mean"].get<double>(), 0.0);
  EXPECT_EQ(self["top1_agreement"].get<double>(), 100.0);
  EXPECT_EQ(self["ppl"].get<double>(), self["ref_ppl"].get<double>());
  EXPECT_EQ(self["tokens_scored"].get<int64_t>(), self["windows"].get<int64_t>() * 63);
  for (const char* key : {"ppl", "ppl_stderr", "tokens_scored", "windows", "ctx", "kld_median", "kld_p99", "delta_p_rms"})
    EXPECT_TRUE(self.contains(key)) << key;

  // Save the log-probabilities, then use them as the reference.
  const std::string cache = tmp + "/ref.safetensors";
  ASSERT_EQ(qforge("eval " + model + " --text " + quote(text) + " --ctx 64 --max-windows 3 --save-logits " +
                       quote(cache) + " --json " + quote(tmp + "/save.json"),
                   &out),
            0)
      << out;
  ASSERT_EQ(qforge("eval " + model + " --text " + quote(text) + " --ctx 64 --max-windows 3 --ref-logits " +
                       quote(cache) + " --json " + quote(tmp + "/cached.json"),
                   &out),
            0)
      << out;
  nlohmann::json cached = read_json(tmp + "/cached.json");
  EXPECT_LT(cached["kld_max"].get<double>(), 1e-4);  // f16 log-probabilities (docs/evaluation.md)
  EXPECT_EQ(cached["top1_agreement"].get<double>(), 100.0);
  EXPECT_NEAR(cached["ref_ppl"].get<double>(), read_json(tmp + "/save.json")["ppl"].get<double>(), 1e-2);
  // A cache made with another context length or over fewer windows is refused, naming the file.
  EXPECT_NE(qforge("eval " + model + " --text " + quote(text) + " --ctx 32 --max-windows 3 --ref-logits " + quote(cache),
                   &out),
            0);
  EXPECT_NE(out.find("context length 64"), std::string::npos) << out;
  EXPECT_NE(out.find(cache), std::string::npos) << out;
  EXPECT_NE(qforge("eval " + model + " --text " + quote(text) + " --ctx 64 --max-windows 5 --ref-logits " + quote(cache),
                   &out),
            0);
  EXPECT_NE(out.find("holds 3 windows"), std::string::npos) << out;
  const std::string other = write_text("other.txt", story_text() + "The end.");
  EXPECT_NE(qforge("eval " + model + " --text " + quote(other) + " --ctx 64 --max-windows 3 --ref-logits " + quote(cache),
                   &out),
            0);
  EXPECT_NE(out.find("another text"), std::string::npos) << out;
}

TEST(EvalCli, RefLlama25mFirstWindowsArePlausible) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m");
  const std::string dir = models() + "/ref-llama-25m";
  const std::string json = test::temp_dir() + "/r.json";
  std::string out;
  ASSERT_EQ(qforge("eval " + quote(dir) + " --text " + quote(dir + "/heldout.txt") +
                       " --ctx 512 --max-windows 8 --json " + quote(json),
                   &out),
            0)
      << out;
  nlohmann::json r = read_json(json);
  EXPECT_EQ(r["windows"], 8);
  EXPECT_EQ(r["windows_total"], 410);  // 210084 tokens with BOS (reference_metrics.json) / 512
  EXPECT_EQ(r["tokens_in_text"], 210084);
  EXPECT_EQ(r["tokens_scored"], 8 * 511);
  EXPECT_EQ(r["bos"], 1);
  // The whole file gives 11.79; its first windows are easier text for this partly memorising model.
  const double ppl = r["ppl"].get<double>();
  EXPECT_GT(ppl, 2.0);
  EXPECT_LT(ppl, 40.0);
}


TEST(EvalCli, PackedModelAgainstItsReference) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m");
  namespace fs = std::filesystem;
  const std::string ref = models() + "/ref-llama-25m";
  const std::string dir = test::temp_dir() + "/int4";
  fs::create_directories(dir);
  std::string out;
  ASSERT_EQ(qforge("quantize " + quote(ref) + " --scheme int4-g128-asym -o " + quote(dir + "/model.safetensors"), &out), 0)
      << out;
  for (const char* f : {"config.json", "tokenizer.model"}) fs::create_symlink(ref + "/" + f, dir + "/" + f);
  const std::string args = " --text " + quote(ref + "/heldout.txt") + " --ctx 128 --max-windows 2 --ref " + quote(ref);
  ASSERT_EQ(qforge("eval " + quote(dir + "/model.safetensors") + args + " --dequantize-at-load --json " +
                       quote(dir + "/a.json"),
                   &out),
            0)
      << out;
  ASSERT_EQ(qforge("eval " + quote(dir + "/model.safetensors") + args + " --quantized-linear --json " +
                       quote(dir + "/b.json"),
                   &out),
            0)
      << out;
  EXPECT_NE(out.find("quantized linears"), std::string::npos) << out;
  nlohmann::json a = read_json(dir + "/a.json"), b = read_json(dir + "/b.json");
  EXPECT_EQ(a["model_kind"], "packed");
  // 4-bit weights cost something, but the model still mostly agrees with its fp32 self.
  EXPECT_GT(a["kld_mean"].get<double>(), 1e-4);
  EXPECT_LT(a["kld_mean"].get<double>(), 0.5);
  EXPECT_GT(a["top1_agreement"].get<double>(), 70.0);
  EXPECT_LT(a["top1_agreement"].get<double>(), 100.0);
  // Dequantized once at load or on every call through QuantizedLinear: the same weights, the same
  // GEMMs.
  EXPECT_EQ(a["ppl"].get<double>(), b["ppl"].get<double>());
  EXPECT_EQ(a["kld_mean"].get<double>(), b["kld_mean"].get<double>());
}

// qforge bench: the JSON fields the issue names, and the activation-precision option.
TEST(EvalCli, BenchWritesJsonAndRejectsUnknownActPrecision) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const std::string s260 = quote(models() + "/stories260K/stories260K.bin") + " --tokenizer " +
                           quote(models() + "/stories260K/tok512.bin");
  const std::string json = test::temp_dir() + "/bench.json";
  std::string out;
  ASSERT_EQ(0, qforge("bench " + s260 + " -p 16 -n 4 -r 2 -t 1 --act-precision int8 --json " + quote(json), &out)) << out;
  EXPECT_NE(out.find("tg4"), std::string::npos) << out;
  const nlohmann::json j = read_json(json);
  for (const char* key : {"pp_tokens_per_s", "tg_tokens_per_s"}) {
    ASSERT_TRUE(j.contains(key)) << key;
    EXPECT_GT(j[key]["mean"].get<double>(), 0.0) << key;
    EXPECT_GE(j[key]["sd"].get<double>(), 0.0) << key;
    EXPECT_EQ(j[key]["samples"].size(), 2u) << key;
  }
  EXPECT_GT(j["model_bytes"].get<uint64_t>(), 0u);
  EXPECT_GT(j["peak_rss_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["threads"].get<int>(), 1);
  EXPECT_FALSE(j["isa"].get<std::string>().empty());
  EXPECT_EQ(j["act_precision"].get<std::string>(), "int8");
  const int rc = qforge("bench " + s260 + " -p 16 -n 4 -r 1 --act-precision int4", &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("--act-precision int4"), std::string::npos) << out;
}

TEST(EvalCli, ClearErrorsForBadInputs) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m");
  QFORGE_REQUIRE_SHARED("models/stories260K");
  namespace fs = std::filesystem;
  const std::string ref = models() + "/ref-llama-25m";
  const std::string stories = models() + "/stories260K";
  const std::string story = write_text("s.txt", story_text());
  std::string out;
  auto expect_failure = [&](const std::string& args, const std::vector<std::string>& needles) {
    const int rc = qforge(args, &out);
    EXPECT_NE(rc, 0) << args << "\n" << out;
    EXPECT_NE(out.find("error"), std::string::npos) << out;
    for (const std::string& n : needles) EXPECT_NE(out.find(n), std::string::npos) << "'" << n << "' missing in: " << out;
  };
  auto hf_copy = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const std::string d = test::temp_dir() + "/" + name;
    fs::create_directories(d);
    nlohmann::json cfg = read_json(ref + "/config.json");
    edit(cfg);
    std::ofstream(d + "/config.json") << cfg.dump(2);
    for (const char* f : {"model.safetensors.index.json", "tokenizer.model", "model-00001-of-00003.safetensors",
                          "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"})
      fs::create_symlink(ref + "/" + f, d + "/" + f);
    return d;
  };
  const std::string text = " --text " + quote(story) + " --ctx 16";
  // config.json missing a field: names the field and the file.
  const std::string no_field = hf_copy("nofield", [](nlohmann::json& c) { c.erase("num_hidden_layers"); });
  expect_failure("eval " + quote(no_field) + text, {"num_hidden_layers", no_field + "/config.json"});
  // Unknown architecture.
  const std::string mamba = hf_copy("mamba", [](nlohmann::json& c) {
    c["model_type"] = "mamba";
    c["architectures"] = {"MambaForCausalLM"};
  });
  expect_failure("eval " + quote(mamba) + text, {"mamba"});
  // A shard listed in the index is missing.
  const std::string shardless = hf_copy("shardless", [](nlohmann::json&) {});
  fs::remove(shardless + "/model-00003-of-00003.safetensors");
  expect_failure("eval " + quote(shardless) + text, {"model-00003-of-00003.safetensors"});
  // A corrupt tokenizer file, given with --tokenizer.
  const std::string junk = write_text("junk.model", "this is not a tokenizer");
  expect_failure("eval " + quote(ref) + text + " --tokenizer " + quote(junk), {"--tokenizer", junk});
  // llama2.c needs --tokenizer.
  expect_failure("eval " + quote(stories + "/stories260K.bin") + text, {"--tokenizer"});
  const std::string s260 = quote(stories + "/stories260K.bin") + " --tokenizer " + quote(stories + "/tok512.bin");
  // Empty text file; text shorter than one window; missing text file.
  const std::string empty = write_text("empty.txt", "");
  expect_failure("eval " + s260 + " --text " + quote(empty), {"--text", empty, "empty"});
  const std::string tiny = write_text("tiny.txt", "Hello there.");
  expect_failure("eval " + s260 + " --text " + quote(tiny) + " --ctx 512", {tiny, "fewer than one window of 512"});
  expect_failure("eval " + s260 + " --text " + quote(test::temp_dir() + "/absent.txt"), {"--text", "absent.txt"});
  // Bad options.
  expect_failure("eval " + s260 + " --text " + quote(story) + " --ctx 1", {"--ctx"});
  expect_failure("eval " + s260 + " --text " + quote(story) + " --ref x --ref-logits y", {"--ref"});
  expect_failure("run " + s260 + " -p Hi --top-p 0", {"--top-p"});
  expect_failure("run " + s260 + " -p Hi --temp -1", {"--temp"});
  // A missing model path.
  expect_failure("eval " + quote(test::temp_dir() + "/nothing") + text, {"nothing"});
}

}  // namespace
}  // namespace qforge
