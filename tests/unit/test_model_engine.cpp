// The engine on small synthetic models: an independent naive reference of the llama-family math
// (both RoPE styles, GQA, biases, sliding window), loader errors, hooks and linear replacement.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "qforge/model.h"
#include "model_test_support.h"
#include "test_support.h"

namespace qforge {
namespace {

using MapSource = test::MapTensorSource;

ModelConfig tiny_llama(Architecture arch = Architecture::llama) {
  ModelConfig c;
  c.arch = arch;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 48;
  c.vocab_size = 50;
  c.max_positions = 64;
  c.norm_eps = 1e-5;
  c.rope_theta = 10000;
  c.source = "synthetic config";
  return c;
}

Tensor random_tensor(Shape shape, std::mt19937& rng, float scale, float offset = 0) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (auto& x : v) x = offset + scale * d(rng);
  return Tensor::from_f32(std::move(shape), v);
}

// Random weights under the HF llama names for `c`.
MapSource random_llama_weights(const ModelConfig& c, uint32_t seed) {
  std::mt19937 rng(seed);
  MapSource s;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, qd = c.q_dim(), kd = c.kv_dim();
  auto put = [&](TensorRole r, int layer, bool bias, Shape shape, float scale, float offset = 0) {
    s.tensors[tensor_name_for_role(c.arch, r, layer, bias).value()] = random_tensor(shape, rng, scale, offset);
  };
  put(TensorRole::token_embedding, -1, false, {V, H}, 1.0f);
  for (int l = 0; l < c.num_layers; ++l) {
    put(TensorRole::attn_norm, l, false, {H}, 0.1f, 1.0f);
    put(TensorRole::attn_q, l, false, {qd, H}, 0.3f);
    put(TensorRole::attn_k, l, false, {kd, H}, 0.3f);
    put(TensorRole::attn_v, l, false, {kd, H}, 0.3f);
    if (c.qkv_bias) {
      put(TensorRole::attn_q, l, true, {qd}, 0.1f);
      put(TensorRole::attn_k, l, true, {kd}, 0.1f);
      put(TensorRole::attn_v, l, true, {kd}, 0.1f);
    }
    put(TensorRole::attn_output, l, false, {H, qd}, 0.2f);
    put(TensorRole::mlp_norm, l, false, {H}, 0.1f, 1.0f);
    put(TensorRole::mlp_gate, l, false, {I, H}, 0.2f);
    put(TensorRole::mlp_up, l, false, {I, H}, 0.2f);
    put(TensorRole::mlp_down, l, false, {H, I}, 0.2f);
  }
  put(TensorRole::final_norm, -1, false, {H}, 0.1f, 1.0f);
  if (!c.tie_word_embeddings) put(TensorRole::output, -1, false, {V, H}, 0.2f);
  return s;
}

// Straightforward double-precision llama forward for one sequence, written from the HF modeling
// code independently of the engine.
std::vector<double> naive_llama(const ModelConfig& c, const MapSource& s, const std::vector<int32_t>& ids) {
  const int64_t T = static_cast<int64_t>(ids.size()), H = c.hidden_size, hd = c.head_dim;
  auto W = [&](TensorRole r, int l, bool bias = false) -> const float* {
    auto name = tensor_name_for_role(c.arch, r, l, bias);
    if (!name.has_value()) return nullptr;
    auto it = s.tensors.find(*name);
    return it == s.tensors.end() ? nullptr : it->second.data_as<float>();
  };
  auto matvec = [](const float* w, const float* b, const std::vector<double>& x, int64_t out) {
    std::vector<double> y(static_cast<size_t>(out));
    const int64_t in = static_cast<int64_t>(x.size());
    for (int64_t o = 0; o < out; ++o) {
      double acc = b ? b[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += static_cast<double>(w[o * in + i]) * x[static_cast<size_t>(i)];
      y[static_cast<size_t>(o)] = acc;
    }
    return y;
  };
  auto rms = [&](const std::vector<double>& x, const float* w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + c.norm_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
    return y;
  };
  auto rope = [&](std::vector<double>& v, int64_t heads, int64_t pos) {
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double angle = static_cast<double>(pos) * std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
        const size_t a = static_cast<size_t>(h * hd + (c.rope == RopeStyle::interleaved ? 2 * i : i));
        const size_t b = static_cast<size_t>(h * hd + (c.rope == RopeStyle::interleaved ? 2 * i + 1 : i + hd / 2));
        const double x0 = v[a], x1 = v[b];
        v[a] = x0 * std::cos(angle) - x1 * std::sin(angle);
        v[b] = x1 * std::cos(angle) + x0 * std::sin(angle);
      }
  };
  std::vector<std::vector<double>> x(static_cast<size_t>(T));
  const float* emb = W(TensorRole::token_embedding, -1);
  for (int64_t t = 0; t < T; ++t) x[static_cast<size_t>(t)].assign(emb + ids[static_cast<size_t>(t)] * H, emb + (ids[static_cast<size_t>(t)] + 1) * H);
  for (int l = 0; l < c.num_layers; ++l) {
    std::vector<std::vector<double>> q(static_cast<size_t>(T)), k(static_cast<size_t>(T)), v(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      auto h = rms(x[static_cast<size_t>(t)], W(TensorRole::attn_norm, l));
      q[static_cast<size_t>(t)] = matvec(W(TensorRole::attn_q, l), W(TensorRole::attn_q, l, true), h, c.q_dim());
      k[static_cast<size_t>(t)] = matvec(W(TensorRole::attn_k, l), W(TensorRole::attn_k, l, true), h, c.kv_dim());
      v[static_cast<size_t>(t)] = matvec(W(TensorRole::attn_v, l), W(TensorRole::attn_v, l, true), h, c.kv_dim());
      rope(q[static_cast<size_t>(t)], c.num_heads, t);
      rope(k[static_cast<size_t>(t)], c.num_kv_heads, t);
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> attn(static_cast<size_t>(c.q_dim()), 0.0);
      for (int64_t h = 0; h < c.num_heads; ++h) {
        const int64_t kvh = h / (c.num_heads / c.num_kv_heads);
        std::vector<double> sc;
        std::vector<int64_t> js;
        for (int64_t j = 0; j <= t; ++j) {
          if (c.sliding_window > 0 && t - j >= c.sliding_window) continue;
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += q[static_cast<size_t>(t)][static_cast<size_t>(h * hd + i)] * k[static_cast<size_t>(j)][static_cast<size_t>(kvh * hd + i)];
          sc.push_back(d / std::sqrt(static_cast<double>(hd)));
          js.push_back(j);
        }
        double mx = -1e300, sum = 0;
        for (double s2 : sc) mx = std::max(mx, s2);
        for (double& s2 : sc) sum += (s2 = std::exp(s2 - mx));
        for (size_t n = 0; n < js.size(); ++n)
          for (int64_t i = 0; i < hd; ++i)
            attn[static_cast<size_t>(h * hd + i)] += sc[n] / sum * v[static_cast<size_t>(js[n])][static_cast<size_t>(kvh * hd + i)];
      }
      auto o = matvec(W(TensorRole::attn_output, l), nullptr, attn, H);
      for (int64_t i = 0; i < H; ++i) x[static_cast<size_t>(t)][static_cast<size_t>(i)] += o[static_cast<size_t>(i)];
      auto h = rms(x[static_cast<size_t>(t)], W(TensorRole::mlp_norm, l));
      auto g = matvec(W(TensorRole::mlp_gate, l), nullptr, h, c.intermediate_size);
      auto u = matvec(W(TensorRole::mlp_up, l), nullptr, h, c.intermediate_size);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      auto d = matvec(W(TensorRole::mlp_down, l), nullptr, g, H);
      for (int64_t i = 0; i < H; ++i) x[static_cast<size_t>(t)][static_cast<size_t>(i)] += d[static_cast<size_t>(i)];
    }
  }
  std::vector<double> logits;
  const float* head = c.tie_word_embeddings ? emb : W(TensorRole::output, -1);
  for (int64_t t = 0; t < T; ++t) {
    auto h = rms(x[static_cast<size_t>(t)], W(TensorRole::final_norm, -1));
    auto l = matvec(head, nullptr, h, c.vocab_size);
    logits.insert(logits.end(), l.begin(), l.end());
  }
  return logits;
}

double rel_error(const float* out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

std::vector<int32_t> some_tokens(int n, int vocab) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back((i * 17 + 3) % vocab);
  return ids;
}

struct Variant {
  const char* name;
  Architecture arch;
  RopeStyle rope;
  bool qkv_bias;
  bool tied;
  int64_t sliding_window;
};

TEST(ModelEngine, MatchesNaiveReference) {
  const Variant variants[] = {
      {"llama half_split", Architecture::llama, RopeStyle::half_split, false, false, 0},
      {"llama interleaved tied", Architecture::llama, RopeStyle::interleaved, false, true, 0},
      {"qwen2 biases", Architecture::qwen2, RopeStyle::half_split, true, true, 0},
      {"mistral sliding window", Architecture::mistral, RopeStyle::half_split, false, false, 5},
  };
  // fp32 engine vs double reference on O(1) activations: a few fp32 ulps accumulated over ~10 ops.
  const double allowed = 2e-5;
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.name);
    ModelConfig c = tiny_llama(v.arch);
    c.rope = v.rope;
    c.qkv_bias = v.qkv_bias;
    c.tie_word_embeddings = v.tied;
    c.sliding_window = v.sliding_window;
    MapSource s = random_llama_weights(c, 42);
    auto m = Model::from_tensors(c, s);
    ASSERT_TRUE(m.has_value()) << m.status().to_string();
    auto ids = some_tokens(13, static_cast<int>(c.vocab_size));
    auto logits = m->forward_batch(ids.data(), 1, static_cast<int64_t>(ids.size()));
    ASSERT_TRUE(logits.has_value()) << logits.status().to_string();
    const double err = rel_error(logits->data_as<float>(), naive_llama(c, s, ids));
    EXPECT_LE(err, allowed) << "relative error " << err << ", allowed " << allowed;
  }
}

TEST(ModelEngine, LoaderNamesMissingUnexpectedAndMisshapenTensors) {
  ModelConfig c = tiny_llama();
  {
    MapSource s = random_llama_weights(c, 1);
    s.tensors.erase("model.layers.1.mlp.up_proj.weight");
    auto m = Model::from_tensors(c, s);
    ASSERT_FALSE(m.has_value());
    EXPECT_NE(m.status().message().find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << m.status().message();
    EXPECT_NE(m.status().message().find("missing"), std::string::npos) << m.status().message();
  }
  {
    MapSource s = random_llama_weights(c, 1);
    s.tensors["model.layers.0.self_attn.q_proj.bias"] = Tensor::zeros(DType::f32, {32});  // config has no biases
    auto m = Model::from_tensors(c, s);
    ASSERT_FALSE(m.has_value());
    EXPECT_NE(m.status().message().find("q_proj.bias"), std::string::npos) << m.status().message();
  }
  {
    MapSource s = random_llama_weights(c, 1);
    s.tensors["model.layers.2.mlp.up_proj.weight"] = Tensor::zeros(DType::f32, {48, 32});  // layer 2 of 2
    auto m = Model::from_tensors(c, s);
    ASSERT_FALSE(m.has_value());
    EXPECT_NE(m.status().message().find("model.layers.2.mlp.up_proj.weight"), std::string::npos) << m.status().message();
  }
  {
    MapSource s = random_llama_weights(c, 1);
    s.tensors["model.vision_tower.weight"] = Tensor::zeros(DType::f32, {4});
    auto m = Model::from_tensors(c, s);
    ASSERT_FALSE(m.has_value());
    EXPECT_NE(m.status().message().find("model.vision_tower.weight"), std::string::npos) << m.status().message();
  }
  {
    MapSource s = random_llama_weights(c, 1);
    s.tensors["model.layers.0.self_attn.k_proj.weight"] = Tensor::zeros(DType::f32, {32, 32});  // GQA wants [16, 32]
    auto m = Model::from_tensors(c, s);
    ASSERT_FALSE(m.has_value());
    EXPECT_NE(m.status().message().find("k_proj.weight"), std::string::npos) << m.status().message();
    EXPECT_NE(m.status().message().find("[16, 32]"), std::string::npos) << m.status().message();
  }
  {
    MapSource s = random_llama_weights(c, 1);
    s.tensors["model.norm.weight"] = Tensor::zeros(DType::i32, {32});
    EXPECT_FALSE(Model::from_tensors(c, s).has_value());
  }
  {
    // A rotary inv_freq buffer is recognised and ignored.
    MapSource s = random_llama_weights(c, 1);
    s.tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = Tensor::zeros(DType::f32, {4});
    EXPECT_TRUE(Model::from_tensors(c, s).has_value());
  }
  {
    // bf16 and f16 weights convert at load.
    MapSource s = random_llama_weights(c, 1);
    s.tensors["model.embed_tokens.weight"] = s.tensors["model.embed_tokens.weight"].to(DType::bf16).value();
    s.tensors["model.layers.0.mlp.up_proj.weight"] = s.tensors["model.layers.0.mlp.up_proj.weight"].to(DType::f16).value();
    auto m = Model::from_tensors(c, s);
    ASSERT_TRUE(m.has_value()) << m.status().to_string();
    EXPECT_EQ(m->token_embedding().dtype(), DType::f32);
  }
}

TEST(ModelEngine, TiedHeadMayBeSavedOnlyIfEqual) {
  ModelConfig c = tiny_llama();
  c.tie_word_embeddings = true;
  MapSource s = random_llama_weights(c, 3);
  s.tensors["lm_head.weight"] = s.tensors["model.embed_tokens.weight"];
  EXPECT_TRUE(Model::from_tensors(c, s).has_value());
  s.tensors["lm_head.weight"] = Tensor::zeros(DType::f32, {50, 32});
  auto m = Model::from_tensors(c, s);
  ASSERT_FALSE(m.has_value());
  EXPECT_NE(m.status().message().find("tie_word_embeddings"), std::string::npos) << m.status().message();
}

TEST(ModelEngine, ForwardRejectsBadInput) {
  ModelConfig c = tiny_llama();
  auto m = Model::from_tensors(c, random_llama_weights(c, 5));
  ASSERT_TRUE(m.has_value());
  auto cache = m->make_cache(2, 8);
  ASSERT_TRUE(cache.has_value());
  Tensor logits;
  std::vector<int32_t> good = {1, 2, 3}, bad = {1, 50, 3}, neg = {-1};
  TokenChunk c_bad{0, bad};
  Status s = m->forward({&c_bad, 1}, *cache, LogitsMode::all, &logits);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("50"), std::string::npos) << s.message();
  TokenChunk c_neg{0, neg};
  EXPECT_FALSE(m->forward({&c_neg, 1}, *cache, LogitsMode::all, &logits).is_ok());
  TokenChunk dup[] = {{0, good}, {0, good}};
  EXPECT_FALSE(m->forward(dup, *cache, LogitsMode::all, &logits).is_ok());
  TokenChunk out_of_cache{2, good};
  EXPECT_FALSE(m->forward({&out_of_cache, 1}, *cache, LogitsMode::all, &logits).is_ok());
  std::vector<int32_t> nine(9, 1);
  TokenChunk too_long{1, nine};
  EXPECT_FALSE(m->forward({&too_long, 1}, *cache, LogitsMode::all, &logits).is_ok());
  EXPECT_EQ(cache->length(0), 0);  // failed calls leave the cache alone
  EXPECT_EQ(cache->length(1), 0);
  EXPECT_FALSE(m->make_cache(0, 8).has_value());
  EXPECT_FALSE(m->make_cache(int64_t{1} << 30, int64_t{1} << 30).has_value());
  EXPECT_FALSE(m->encode(good.data(), nullptr, nullptr, 1, 3).has_value());
}

TEST(ModelEngine, HooksObserveAndReplaceLinearInputs) {
  ModelConfig c = tiny_llama();
  MapSource s = random_llama_weights(c, 7);
  auto m = Model::from_tensors(c, s);
  ASSERT_TRUE(m.has_value());
  auto ids = some_tokens(6, 50);
  auto base = m->forward_batch(ids.data(), 1, 6);
  ASSERT_TRUE(base.has_value());

  // q, k and v see the same normalised input; every site is reached once per call.
  std::map<LinearSite, int> calls;
  std::vector<float> q_in, k_in;
  for (const LinearSite& site : m->linear_sites())
    m->add_hook(site, [&calls, &q_in, &k_in](const LinearActivations& a) {
      ++calls[a.site];
      EXPECT_EQ(a.n_tokens, 6);
      if (a.site == LinearSite{1, TensorRole::attn_q}) q_in.assign(a.x, a.x + a.n_tokens * a.in_features);
      if (a.site == LinearSite{1, TensorRole::attn_k}) k_in.assign(a.x, a.x + a.n_tokens * a.in_features);
    });
  auto observed = m->forward_batch(ids.data(), 1, 6);
  ASSERT_TRUE(observed.has_value());
  EXPECT_EQ(calls.size(), m->linear_sites().size());
  EXPECT_EQ(m->linear_sites().size(), 2u * 7u + 1u);
  for (const auto& [site, n] : calls) EXPECT_EQ(n, 1) << linear_site_name(site);
  EXPECT_EQ(q_in, k_in);
  EXPECT_EQ(std::memcmp(observed->data(), base->data(), base->nbytes()), 0) << "observing changed the output";
  m->clear_hooks();

  // Doubling o_proj's input equals doubling its weight; other layers sharing no input are unaffected.
  int id = m->add_hook({0, TensorRole::attn_output}, [](const LinearActivations& a) {
    for (int64_t i = 0; i < a.n_tokens * a.in_features; ++i) a.x[i] *= 2.0f;
  });
  auto hooked = m->forward_batch(ids.data(), 1, 6);
  ASSERT_TRUE(hooked.has_value());
  m->remove_hook(id);
  MapSource s2 = s;
  Tensor w = s.tensors["model.layers.0.self_attn.o_proj.weight"].contiguous();
  for (int64_t i = 0; i < w.numel(); ++i) w.data_as<float>()[i] *= 2.0f;
  s2.tensors["model.layers.0.self_attn.o_proj.weight"] = w;
  auto m2 = Model::from_tensors(c, s2);
  ASSERT_TRUE(m2.has_value());
  auto doubled = m2->forward_batch(ids.data(), 1, 6);
  ASSERT_TRUE(doubled.has_value());
  std::vector<double> ref(doubled->data_as<float>(), doubled->data_as<float>() + doubled->numel());
  EXPECT_LE(rel_error(hooked->data_as<float>(), ref), 1e-6);
  // Removing the hook restores the original output.
  auto again = m->forward_batch(ids.data(), 1, 6);
  EXPECT_EQ(std::memcmp(again->data(), base->data(), base->nbytes()), 0);
}

TEST(ModelEngine, ReplaceLinear) {
  ModelConfig c = tiny_llama();
  MapSource s = random_llama_weights(c, 9);
  auto m = Model::from_tensors(c, s);
  ASSERT_TRUE(m.has_value());
  auto ids = some_tokens(5, 50);
  auto base = m->forward_batch(ids.data(), 1, 5);
  ASSERT_TRUE(base.has_value());

  const LinearSite site{1, TensorRole::mlp_up};
  Linear* old = m->linear(site);
  ASSERT_NE(old, nullptr);
  EXPECT_EQ(old->describe(), "f32");
  std::vector<float> w(static_cast<size_t>(old->out_features() * old->in_features()));
  old->dense_weight(w.data());
  auto same = DenseLinear::create(Tensor::from_f32({old->out_features(), old->in_features()}, w));
  ASSERT_TRUE(same.has_value());
  ASSERT_TRUE(m->replace_linear(site, std::move(same).value()).is_ok());
  auto after = m->forward_batch(ids.data(), 1, 5);
  EXPECT_EQ(std::memcmp(after->data(), base->data(), base->nbytes()), 0);

  auto wrong = DenseLinear::create(Tensor::zeros(DType::f32, {4, 4}));
  ASSERT_TRUE(wrong.has_value());
  EXPECT_FALSE(m->replace_linear(site, std::move(wrong).value()).is_ok());
  EXPECT_FALSE(m->replace_linear({0, TensorRole::attn_qkv}, nullptr).is_ok());
  EXPECT_EQ(m->linear({0, TensorRole::pooler}), nullptr);
  EXPECT_NE(m->linear({-1, TensorRole::output}), nullptr);
}

}  // namespace
}  // namespace qforge

namespace qforge {
namespace {

TEST(ModelEngine, QuantizedLinearDequantizesOnTheFly) {
  std::mt19937 rng(11);
  const int64_t out = 24, in = 64, n = 5;
  Tensor w = random_tensor({out, in}, rng, 0.5f);
  Tensor x = random_tensor({n, in}, rng, 1.0f);
  std::vector<float> bias(static_cast<size_t>(out));
  for (int64_t i = 0; i < out; ++i) bias[static_cast<size_t>(i)] = 0.1f * static_cast<float>(i);
  for (const char* name : {"int8-ch-sym", "int4-g32-asym", "nf4"}) {
    SCOPED_TRACE(name);
    auto scheme = Scheme::parse(name);
    ASSERT_TRUE(scheme.has_value()) << scheme.status().to_string();
    auto q = quantize(*scheme, w.data_as<float>(), out, in);
    ASSERT_TRUE(q.has_value()) << q.status().to_string();
    auto lin = QuantizedLinear::create(*q, bias);
    ASSERT_TRUE(lin.has_value()) << lin.status().to_string();
    EXPECT_EQ((*lin)->describe(), scheme->name());
    EXPECT_EQ((*lin)->weight_bytes(), q->nbytes());
    // Same result as a dense layer holding the dequantized weight.
    std::vector<float> deq(static_cast<size_t>(out * in));
    ASSERT_TRUE(dequantize(*q, deq.data()).is_ok());
    auto dense = DenseLinear::create(Tensor::from_f32({out, in}, deq), bias);
    ASSERT_TRUE(dense.has_value());
    std::vector<float> yq(static_cast<size_t>(n * out)), yd(yq.size());
    (*lin)->forward(x.data_as<float>(), n, yq.data());
    (*dense)->forward(x.data_as<float>(), n, yd.data());
    EXPECT_EQ(yq, yd);
    std::vector<float> back(deq.size());
    (*lin)->dense_weight(back.data());
    EXPECT_EQ(back, deq);
  }
  // Planes that do not match the shape are refused up front.
  auto q = quantize(Scheme::parse("int8-ch-sym").value(), w.data_as<float>(), out, in);
  ASSERT_TRUE(q.has_value());
  QuantizedTensor broken = *q;
  broken.codes.resize(broken.codes.size() / 2);
  EXPECT_FALSE(QuantizedLinear::create(broken).has_value());
  EXPECT_FALSE(QuantizedLinear::create(*q, std::vector<float>(3)).has_value());
}

TEST(ModelEngine, QuantizedLinearInsideTheModel) {
  ModelConfig c = tiny_llama();
  auto m = Model::from_tensors(c, random_llama_weights(c, 13));
  ASSERT_TRUE(m.has_value());
  auto ids = some_tokens(7, 50);
  auto base = m->forward_batch(ids.data(), 1, 7);
  ASSERT_TRUE(base.has_value());
  for (const LinearSite& site : m->linear_sites()) {
    if (site.layer < 0) continue;
    Linear* lin = m->linear(site);
    std::vector<float> w(static_cast<size_t>(lin->out_features() * lin->in_features()));
    lin->dense_weight(w.data());
    auto q = quantize(Scheme::parse("int8-ch-sym").value(), w.data(), lin->out_features(), lin->in_features());
    ASSERT_TRUE(q.has_value());
    auto ql = QuantizedLinear::create(std::move(q).value(), lin->bias());
    ASSERT_TRUE(ql.has_value());
    ASSERT_TRUE(m->replace_linear(site, std::move(ql).value()).is_ok());
  }
  auto quant = m->forward_batch(ids.data(), 1, 7);
  ASSERT_TRUE(quant.has_value());
  std::vector<double> ref(base->data_as<float>(), base->data_as<float>() + base->numel());
  const double err = rel_error(quant->data_as<float>(), ref);
  // int8 per-channel weights carry ~0.3% relative error each (uniform rounding of absmax/127 steps);
  // through 14 layers the logits move by a few times that, and must move at all.
  EXPECT_GT(err, 0.0);
  EXPECT_LT(err, 0.05) << "relative logits error " << err;
}

}  // namespace
}  // namespace qforge
