// The block-sequential calibration pipeline: block-wise forward equals the full forward, the
// statistics equal those computed from a full-model capture, calibration windows are sampled as
// documented, and an RTN run through the pipeline equals RTN applied directly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "qforge/model.h"
#include "qforge/ptq.h"
#include "qforge/tokenizer.h"
#include "test_support.h"

namespace qforge {
namespace {

std::string stories_path() { return test::shared_dir() + "/models/stories260K/stories260K.bin"; }

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

CalibrationSet synthetic_set(int64_t windows, int64_t ctx, int64_t vocab, uint32_t seed) {
  CalibrationSet s;
  s.path = "synthetic";
  s.windows = windows;
  s.ctx = ctx;
  s.tokens = random_tokens(windows * ctx, vocab, seed);
  return s;
}

// Inputs of `site` captured by a hook during a full forward of [batch, seq] tokens.
std::vector<float> capture_full(Model& m, const LinearSite& site, const std::vector<int32_t>& tokens, int64_t batch,
                                int64_t seq) {
  std::vector<float> got;
  int id = m.add_hook(site, [&](const LinearActivations& a) { got.assign(a.x, a.x + a.n_tokens * a.in_features); });
  auto logits = m.forward_batch(tokens.data(), batch, seq);
  m.remove_hook(id);
  EXPECT_TRUE(logits.has_value()) << logits.status().message();
  return got;
}

double max_abs_diff(const float* a, const float* b, size_t n, double* scale) {
  double d = 0, s = 0;
  for (size_t i = 0; i < n; ++i) {
    d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
    s = std::max(s, std::fabs(static_cast<double>(a[i])));
  }
  if (scale) *scale = s;
  return d;
}

TEST(PtqPipeline, ForwardLayerMatchesFullForward) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  auto m = Model::load_llama2c(stories_path());
  ASSERT_TRUE(m.has_value()) << m.status().message();
  const ModelConfig& c = m->config();
  const int64_t batch = 3, seq = 24;
  auto tokens = random_tokens(batch * seq, c.vocab_size, 7);
  std::vector<float> hidden(static_cast<size_t>(batch * seq * c.hidden_size));
  ASSERT_TRUE(m->embed_tokens(tokens.data(), batch, seq, hidden));
  for (int L = 0; L < c.num_layers; ++L) {
    for (TensorRole role : {TensorRole::attn_q, TensorRole::attn_output, TensorRole::mlp_down}) {
      const LinearSite site{L, role};
      std::vector<float> full = capture_full(*m, site, tokens, batch, seq);
      std::vector<float> block;
      int id = m->add_hook(site, [&](const LinearActivations& a) { block.assign(a.x, a.x + a.n_tokens * a.in_features); });
      std::vector<float> h = hidden;
      ASSERT_TRUE(m->forward_layer(L, h, batch, seq));
      m->remove_hook(id);
      ASSERT_EQ(full.size(), block.size()) << linear_site_name(site);
      double scale = 0;
      const double d = max_abs_diff(full.data(), block.data(), full.size(), &scale);
      // Same kernels on the same rows: only summation order could differ, so allow a few f32 ulps.
      EXPECT_LE(d, 1e-5 * std::max(1.0, scale)) << linear_site_name(site) << ": max |full - block-wise| = " << d;
    }
    ASSERT_TRUE(m->forward_layer(L, hidden, batch, seq));
  }
}

TEST(PtqPipeline, ForwardLayerRejectsBadArguments) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  auto m = Model::load_llama2c(stories_path());
  ASSERT_TRUE(m.has_value());
  std::vector<float> h(static_cast<size_t>(2 * 4 * m->config().hidden_size));
  EXPECT_FALSE(m->forward_layer(-1, h, 2, 4));
  EXPECT_FALSE(m->forward_layer(static_cast<int>(m->config().num_layers), h, 2, 4));
  EXPECT_FALSE(m->forward_layer(0, h, 2, 5));  // buffer size mismatch
  std::vector<int32_t> bad(8, static_cast<int32_t>(m->config().vocab_size));
  EXPECT_FALSE(m->embed_tokens(bad.data(), 2, 4, h));
}

TEST(PtqPipeline, ReleasedEmbeddingLeavesBlockForwardIntact) {
  // quantize --calib drops the embedding table and the head once the windows are embedded (peak
  // memory): block forwards must be unchanged, whole-model forwards must fail cleanly.
  QFORGE_REQUIRE_SHARED("models/stories260K");
  auto m = Model::load_llama2c(stories_path());
  ASSERT_TRUE(m.has_value());
  const ModelConfig& c = m->config();
  const int64_t batch = 2, seq = 16;
  auto tokens = random_tokens(batch * seq, c.vocab_size, 3);
  std::vector<float> before(static_cast<size_t>(batch * seq * c.hidden_size));
  ASSERT_TRUE(m->embed_tokens(tokens.data(), batch, seq, before));
  std::vector<float> after = before;
  ASSERT_TRUE(m->forward_layer(0, before, batch, seq));
  m->release_embedding_and_head();
  EXPECT_TRUE(m->token_embedding().empty());
  EXPECT_EQ(m->linear({-1, TensorRole::output}), nullptr);
  ASSERT_TRUE(m->forward_layer(0, after, batch, seq));
  EXPECT_EQ(before, after);
  EXPECT_FALSE(m->embed_tokens(tokens.data(), batch, seq, after));
  EXPECT_FALSE(m->forward_batch(tokens.data(), batch, seq).has_value());
}

TEST(PtqPipeline, StatisticsEqualFullModelCapture) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  auto m = Model::load_llama2c(stories_path());
  ASSERT_TRUE(m.has_value());
  const ModelConfig& c = m->config();
  const CalibrationSet set = synthetic_set(5, 16, c.vocab_size, 3);
  PipelineOptions po;
  po.batch_windows = 2;  // uneven sub-batches: 2 + 2 + 1
  auto p = CalibrationPipeline::create(*m, set, po);
  ASSERT_TRUE(p.has_value()) << p.status().message();
  StatsRequest req;
  req.hessian = true;
  req.moments = true;
  req.sample_tokens = 30;
  for (int L : {0, 1}) {
    if (L == 1) {
      ASSERT_TRUE((*p)->advance(0));
    }
    auto groups = (*p)->collect(L, req);
    ASSERT_TRUE(groups.has_value()) << groups.status().message();
    ASSERT_EQ(groups->size(), 4u);  // {q,k,v}, {o}, {gate,up}, {down}
    EXPECT_EQ((*groups)[0].sites.size(), 3u);
    for (const InputGroup& g : *groups) {
      std::vector<float> x = capture_full(*m, g.sites.front(), set.tokens, set.windows, set.ctx);
      const int64_t in = g.stats.in_features, n = set.windows * set.ctx;
      ASSERT_EQ(static_cast<int64_t>(x.size()), n * in);
      EXPECT_EQ(g.stats.tokens, n);
      double hmax = 0, herr = 0;
      for (int64_t i = 0; i < in; ++i)
        for (int64_t j = 0; j < in; ++j) {
          double ref = 0;
          for (int64_t r = 0; r < n; ++r) ref += static_cast<double>(x[r * in + i]) * x[r * in + j];
          hmax = std::max(hmax, std::fabs(ref));
          herr = std::max(herr, std::fabs(ref - g.stats.hessian[static_cast<size_t>(i * in + j)]));
        }
      // f32 partial sums of <= 32 products per sub-batch: relative error well below 1e-5.
      EXPECT_LE(herr, 1e-5 * hmax) << linear_site_name(g.sites.front()) << " Hessian";
      for (int64_t col = 0; col < in; ++col) {
        double sa = 0, sq = 0, mx = 0;
        for (int64_t r = 0; r < n; ++r) {
          const double v = x[r * in + col];
          sa += std::fabs(v);
          sq += v * v;
          mx = std::max(mx, std::fabs(v));
        }
        EXPECT_NEAR(g.stats.sum_abs[static_cast<size_t>(col)], sa, 1e-4 * std::max(1.0, sa));
        EXPECT_NEAR(g.stats.sum_sq[static_cast<size_t>(col)], sq, 1e-4 * std::max(1.0, sq));
        EXPECT_NEAR(g.stats.absmax[static_cast<size_t>(col)], mx, 1e-5 * std::max(1.0, mx));
      }
      // Every ceil(80 / 30) = 3rd token: rows 0, 3, ..., 78 -> 27 rows.
      ASSERT_EQ(g.stats.sample_rows, 27);
      for (int64_t s = 0; s < g.stats.sample_rows; ++s) {
        double scale = 0;
        EXPECT_LE(max_abs_diff(x.data() + s * 3 * in, g.stats.sample.data() + s * in, static_cast<size_t>(in), &scale),
                  1e-5 * std::max(1.0, scale));
      }
    }
  }
}

TEST(PtqPipeline, RtnThroughPipelineEqualsDirectRtn) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  auto m = Model::load_llama2c(stories_path());
  auto direct = Model::load_llama2c(stories_path());
  ASSERT_TRUE(m.has_value() && direct.has_value());
  const ModelConfig& c = m->config();
  const Scheme scheme = Scheme::parse("int4-ch-asym").value();
  auto scheme_for = [&](const LinearSite& site, int64_t rows, int64_t cols) -> std::optional<Scheme> {
    if (site.layer < 0 || !validate_scheme(scheme, rows, cols)) return std::nullopt;
    return scheme;
  };
  RtnProcessor rtn(scheme_for);
  const CalibrationSet set = synthetic_set(3, 12, c.vocab_size, 5);
  std::vector<int> done;
  PipelineOptions po;
  po.on_block_done = [&](int layer, std::span<const uint8_t>) {
    done.push_back(layer);
    return Status::ok();
  };
  auto p = CalibrationPipeline::create(*m, set, po);
  ASSERT_TRUE(p.has_value());
  ASSERT_TRUE((*p)->run(rtn));
  EXPECT_EQ(static_cast<int64_t>(done.size()), c.num_layers);
  EXPECT_EQ(static_cast<int64_t>(rtn.results().size()), c.num_layers * 7);
  for (const LinearSite& site : direct->linear_sites()) {
    if (site.layer < 0) continue;
    const Linear* lin = direct->linear(site);
    std::vector<float> w(static_cast<size_t>(lin->out_features() * lin->in_features()));
    lin->dense_weight(w.data());
    auto q = quantize(scheme, w.data(), lin->out_features(), lin->in_features());
    ASSERT_TRUE(q.has_value());
    ASSERT_TRUE(rtn.results().count(site)) << linear_site_name(site);
    EXPECT_EQ(rtn.results().at(site).codes, q->codes) << linear_site_name(site);
    EXPECT_EQ(rtn.results().at(site).scales, q->scales) << linear_site_name(site);
    ASSERT_TRUE(install_quantized(*direct, site, *q));
  }
  // The pipeline's final hidden states are the quantized model's last-layer outputs.
  std::vector<float> h(static_cast<size_t>(set.windows * set.ctx * c.hidden_size));
  ASSERT_TRUE(direct->embed_tokens(set.tokens.data(), set.windows, set.ctx, h));
  for (int L = 0; L < c.num_layers; ++L) ASSERT_TRUE(direct->forward_layer(L, h, set.windows, set.ctx));
  std::vector<float> piped(h.size());
  ASSERT_TRUE((*p)->read_hidden(0, set.windows, piped.data()));
  double scale = 0;
  const double d = max_abs_diff(h.data(), piped.data(), h.size(), &scale);
  EXPECT_LE(d, 1e-5 * std::max(1.0, scale));
}

TEST(PtqPipeline, Bf16HiddenStorageStaysClose) {
  // bf16 storage rounds the residual stream between blocks (relative 2^-9 per element); after all
  // blocks the states must still agree with f32 storage to well under 1% of their scale.
  QFORGE_REQUIRE_SHARED("models/stories260K");
  auto m = Model::load_llama2c(stories_path());
  ASSERT_TRUE(m.has_value());
  const CalibrationSet set = synthetic_set(3, 20, m->config().vocab_size, 11);
  PipelineOptions f32o, bf16o;
  bf16o.hidden_dtype = DType::bf16;
  auto a = CalibrationPipeline::create(*m, set, f32o);
  auto b = CalibrationPipeline::create(*m, set, bf16o);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ((*b)->hidden_bytes().size() * 2, (*a)->hidden_bytes().size());
  for (int L = 0; L < m->config().num_layers; ++L) {
    ASSERT_TRUE((*a)->advance(L));
    ASSERT_TRUE((*b)->advance(L));
  }
  std::vector<float> ha(static_cast<size_t>(set.windows * set.ctx * m->config().hidden_size)), hb(ha.size());
  ASSERT_TRUE((*a)->read_hidden(0, set.windows, ha.data()));
  ASSERT_TRUE((*b)->read_hidden(0, set.windows, hb.data()));
  double num = 0, den = 0;
  for (size_t i = 0; i < ha.size(); ++i) {
    num += (ha[i] - hb[i]) * (ha[i] - hb[i]);
    den += ha[i] * ha[i];
  }
  EXPECT_LT(std::sqrt(num / den), 1e-2);
  EXPECT_GT(num, 0.0);  // it did round
  PipelineOptions bad;
  bad.hidden_dtype = DType::f16;
  EXPECT_FALSE(CalibrationPipeline::create(*m, set, bad).has_value());
}

// A byte-level tokenizer with BOS, enough to exercise window sampling.
class ByteTokenizer final : public Tokenizer {
 public:
  explicit ByteTokenizer(bool with_bos) {
    if (with_bos) bos_ = 256;
    source_ = "bytes";
  }
  std::string_view type_name() const override { return "bytes"; }
  int32_t vocab_size() const override { return 257; }
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions&) const override {
    std::vector<int32_t> ids;
    for (unsigned char ch : text) ids.push_back(ch);
    return ids;
  }
  std::string token_to_piece(int32_t id, bool) const override { return id < 256 ? std::string(1, static_cast<char>(id)) : ""; }
  std::string_view token_text(int32_t) const override { return ""; }
  TokenKind token_kind(int32_t id) const override { return id == 256 ? TokenKind::control : TokenKind::normal; }
  std::optional<int32_t> find_token(std::string_view) const override { return std::nullopt; }
};

TEST(PtqCalibration, WindowsAreSeededDistinctSlots) {
  std::string text;
  for (int i = 0; i < 1000; ++i) text += static_cast<char>('a' + (i * 7) % 26);
  ByteTokenizer tok(true);
  CalibrationOptions o;
  o.windows = 10;
  o.ctx = 51;  // 50 text tokens per window: 20 slots
  auto a = make_calibration_set(text, "text", tok, o);
  ASSERT_TRUE(a.has_value()) << a.status().message();
  EXPECT_EQ(a->file_tokens, 1000);
  EXPECT_EQ(a->tokens.size(), 510u);
  EXPECT_TRUE(a->bos);
  std::set<int64_t> distinct(a->slots.begin(), a->slots.end());
  EXPECT_EQ(distinct.size(), 10u);
  EXPECT_TRUE(std::is_sorted(a->slots.begin(), a->slots.end()));
  for (int64_t w = 0; w < 10; ++w) {
    EXPECT_EQ(a->tokens[static_cast<size_t>(w * 51)], 256);
    const int64_t slot = a->slots[static_cast<size_t>(w)];
    ASSERT_LT(slot, 20);
    for (int64_t i = 0; i < 50; ++i)
      ASSERT_EQ(a->tokens[static_cast<size_t>(w * 51 + 1 + i)], static_cast<unsigned char>(text[static_cast<size_t>(slot * 50 + i)]));
  }
  auto again = make_calibration_set(text, "text", tok, o);
  EXPECT_EQ(again->slots, a->slots);
  o.seed = 1;
  auto other = make_calibration_set(text, "text", tok, o);
  EXPECT_NE(other->slots, a->slots);
  EXPECT_EQ(a->sha256, other->sha256);
  EXPECT_EQ(a->metadata().at("calibration.windows"), "10");
  o.windows = 21;  // only 20 slots
  auto too_many = make_calibration_set(text, "text", tok, o);
  ASSERT_FALSE(too_many.has_value());
  EXPECT_NE(too_many.status().message().find("20 non-overlapping windows"), std::string::npos)
      << too_many.status().message();
  ByteTokenizer no_bos(false);
  o.windows = 4;
  o.ctx = 100;
  auto nb = make_calibration_set(text, "text", no_bos, o);
  ASSERT_TRUE(nb.has_value());
  EXPECT_FALSE(nb->bos);
  EXPECT_EQ(nb->tokens.size(), 400u);
}

}  // namespace
}  // namespace qforge
