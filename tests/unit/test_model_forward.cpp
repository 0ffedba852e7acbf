// The forward pass against HF transformers goldens (fp32), KV-cache and batching equivalences,
// and llama2.c greedy generation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>

#include "qforge/model.h"
#include "qforge/safetensors.h"
#include "model_test_support.h"
#include "test_support.h"

namespace qforge {
namespace {

// ||out - ref|| / ||ref||
using test::relative_l2_error;

std::vector<float> read_f32(const SafetensorsFile& f, const std::string& name) {
  auto t = f.tensor(name);
  EXPECT_TRUE(t.has_value()) << t.status().to_string();
  if (!t.has_value()) return {};
  auto c = t->to_f32();
  EXPECT_TRUE(c.has_value()) << c.status().to_string();
  const float* p = c->data_as<float>();
  return std::vector<float>(p, p + c->numel());
}

std::vector<int32_t> read_i32(const SafetensorsFile& f, const std::string& name, Shape* shape = nullptr) {
  auto t = f.tensor(name);
  EXPECT_TRUE(t.has_value()) << t.status().to_string();
  if (!t.has_value()) return {};
  EXPECT_EQ(t->dtype(), DType::i32) << name;
  Tensor c = t->contiguous();
  if (shape) *shape = c.shape();
  std::vector<int32_t> out(static_cast<size_t>(c.numel()));
  std::memcpy(out.data(), c.data(), out.size() * sizeof(int32_t));
  return out;
}

const char* const kDecoderGoldens[] = {"llama-gqa-untied", "llama-tied", "qwen2-bias", "mistral", "gpt2"};

TEST(ModelForward, HfGoldensMatchTransformers) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens");
  const double allowed = 1e-5;
  for (const char* arch : kDecoderGoldens) {
    SCOPED_TRACE(arch);
    const std::string dir = test::shared_dir() + "/models/hf-goldens/" + arch;
    auto model = Model::load(dir);
    ASSERT_TRUE(model.has_value()) << model.status().to_string();
    auto golden = SafetensorsFile::open(dir + "/golden.safetensors");
    ASSERT_TRUE(golden.has_value()) << golden.status().to_string();
    Shape shape;
    std::vector<int32_t> ids = read_i32(*golden, "input_ids", &shape);
    ASSERT_EQ(shape.size(), 2u);
    std::vector<float> ref = read_f32(*golden, "logits");
    auto logits = model->forward_batch(ids.data(), shape[0], shape[1]);
    ASSERT_TRUE(logits.has_value()) << logits.status().to_string();
    ASSERT_EQ(logits->numel(), static_cast<int64_t>(ref.size()));
    const double err = relative_l2_error(logits->data_as<float>(), ref.data(), logits->numel());
    std::printf("  %-18s relative error %.3g (allowed %.0e)\n", arch, err, allowed);
    EXPECT_LE(err, allowed) << arch << ": relative error " << err << ", allowed " << allowed;
  }
}

TEST(ModelForward, BertGoldenLastHiddenState) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens/bert");
  const std::string dir = test::shared_dir() + "/models/hf-goldens/bert";
  auto model = Model::load(dir);
  ASSERT_TRUE(model.has_value()) << model.status().to_string();
  auto golden = SafetensorsFile::open(dir + "/golden.safetensors");
  ASSERT_TRUE(golden.has_value()) << golden.status().to_string();
  Shape shape;
  std::vector<int32_t> ids = read_i32(*golden, "input_ids", &shape);
  std::vector<int32_t> mask = read_i32(*golden, "attention_mask");
  std::vector<float> ref = read_f32(*golden, "last_hidden_state");
  auto out = model->encode(ids.data(), mask.data(), nullptr, shape[0], shape[1]);
  ASSERT_TRUE(out.has_value()) << out.status().to_string();
  ASSERT_EQ(out->last_hidden_state.numel(), static_cast<int64_t>(ref.size()));
  const double allowed = 1e-5;
  const double err = relative_l2_error(out->last_hidden_state.data_as<float>(), ref.data(), out->last_hidden_state.numel());
  std::printf("  bert last_hidden_state relative error %.3g (allowed %.0e)\n", err, allowed);
  EXPECT_LE(err, allowed) << "relative error " << err << ", allowed " << allowed;

  // The mean-pooled embedding averages the golden's unmasked rows.
  const int64_t T = shape[1], H = model->config().hidden_size;
  for (int64_t b = 0; b < shape[0]; ++b) {
    std::vector<float> mean(static_cast<size_t>(H), 0.0f);
    double count = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (!mask[static_cast<size_t>(b * T + t)]) continue;
      ++count;
      for (int64_t d = 0; d < H; ++d) mean[static_cast<size_t>(d)] += ref[static_cast<size_t>((b * T + t) * H + d)];
    }
    for (auto& v : mean) v = static_cast<float>(v / count);
    const double e = relative_l2_error(out->mean_pooled.data_as<float>() + b * H, mean.data(), H);
    EXPECT_LE(e, allowed) << "mean pooled row " << b << ": relative error " << e << ", allowed " << allowed;
  }
  EXPECT_EQ(out->pooler_output.shape(), (Shape{shape[0], H}));

  // Decoder entry points refuse an encoder and vice versa.
  EXPECT_FALSE(model->forward_batch(ids.data(), shape[0], shape[1]).has_value());
  std::vector<int32_t> no_tokens(static_cast<size_t>(T), 0);
  EXPECT_FALSE(model->encode(ids.data(), no_tokens.data(), nullptr, 1, T).has_value());
}

struct RefLlama {
  Model model;
  std::vector<int32_t> ids;  // [2, 24]
  Shape shape;
  std::vector<float> logits;
};

RefLlama* ref_llama() {
  static std::unique_ptr<RefLlama> cached;
  if (cached) return cached.get();
  const std::string dir = test::shared_dir() + "/models/ref-llama-25m";
  auto model = Model::load(dir);
  EXPECT_TRUE(model.has_value()) << model.status().to_string();
  if (!model.has_value()) return nullptr;
  auto golden = SafetensorsFile::open(dir + "/golden_logits.safetensors");
  EXPECT_TRUE(golden.has_value()) << golden.status().to_string();
  if (!golden.has_value()) return nullptr;
  Shape shape;
  auto ids = read_i32(*golden, "input_ids", &shape);
  auto logits = read_f32(*golden, "logits");
  cached.reset(new RefLlama{std::move(model).value(), std::move(ids), shape, std::move(logits)});
  return cached.get();
}

TEST(ModelForward, RefLlama25mGoldenLogits) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m");
  RefLlama* r = ref_llama();
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->shape, (Shape{2, 24}));
  auto logits = r->model.forward_batch(r->ids.data(), r->shape[0], r->shape[1]);
  ASSERT_TRUE(logits.has_value()) << logits.status().to_string();
  ASSERT_EQ(logits->numel(), static_cast<int64_t>(r->logits.size()));
  const double allowed = 1e-4;
  const double err = relative_l2_error(logits->data_as<float>(), r->logits.data(), logits->numel());
  std::printf("  ref-llama-25m relative error %.3g (allowed %.0e)\n", err, allowed);
  EXPECT_LE(err, allowed) << "relative error " << err << ", allowed " << allowed;
}

// Incremental decoding (prefill, then one token per call) gives the full forward's logits.
void check_incremental_decode(Model& model, const std::vector<int32_t>& ids, int64_t prefill, double allowed) {
  const int64_t T = static_cast<int64_t>(ids.size()), V = model.config().vocab_size;
  auto full = model.forward_batch(ids.data(), 1, T);
  ASSERT_TRUE(full.has_value()) << full.status().to_string();
  auto cache = model.make_cache(1, T);
  ASSERT_TRUE(cache.has_value());
  Tensor logits;
  TokenChunk first{0, std::span<const int32_t>(ids.data(), static_cast<size_t>(prefill))};
  ASSERT_TRUE(model.forward({&first, 1}, *cache, LogitsMode::all, &logits).is_ok());
  double worst = relative_l2_error(logits.data_as<float>(), full->data_as<float>(), prefill * V);
  for (int64_t t = prefill; t < T; ++t) {
    TokenChunk step{0, std::span<const int32_t>(ids.data() + t, 1)};
    Status s = model.forward({&step, 1}, *cache, LogitsMode::last, &logits);
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    ASSERT_EQ(logits.shape(), (Shape{1, V}));
    worst = std::max(worst, relative_l2_error(logits.data_as<float>(), full->data_as<float>() + t * V, V));
  }
  EXPECT_EQ(cache->length(0), T);
  std::printf("  incremental decode: worst relative error %.3g (allowed %.0e)\n", worst, allowed);
  EXPECT_LE(worst, allowed) << "worst relative error " << worst << ", allowed " << allowed;
  // The cache is full now.
  TokenChunk more{0, std::span<const int32_t>(ids.data(), 1)};
  EXPECT_FALSE(model.forward({&more, 1}, *cache, LogitsMode::last, &logits).is_ok());
}

// fp32 with a different summation order (gemv vs gemm, other batch shapes): a few ulps per op.
constexpr double kReorderTolerance = 1e-5;

TEST(ModelForward, KvCacheIncrementalDecodeEqualsFullForward) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m");
  RefLlama* r = ref_llama();
  ASSERT_NE(r, nullptr);
  std::vector<int32_t> seq(r->ids.begin(), r->ids.begin() + 24);
  check_incremental_decode(r->model, seq, 7, kReorderTolerance);
}

TEST(ModelForward, KvCacheIncrementalDecodeOnGoldenArchitectures) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens");
  for (const char* arch : kDecoderGoldens) {
    SCOPED_TRACE(arch);
    auto model = Model::load(test::shared_dir() + "/models/hf-goldens/" + arch);
    ASSERT_TRUE(model.has_value()) << model.status().to_string();
    std::vector<int32_t> ids;
    for (int i = 0; i < 20; ++i) ids.push_back((i * 37 + 11) % 512);
    check_incremental_decode(*model, ids, 5, kReorderTolerance);
  }
}

TEST(ModelForward, BatchOfSequencesEqualsEachAlone) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m");
  RefLlama* r = ref_llama();
  ASSERT_NE(r, nullptr);
  Model& m = r->model;
  const int64_t V = m.config().vocab_size;
  std::vector<int32_t> a(r->ids.begin(), r->ids.begin() + 24);
  std::vector<int32_t> b(r->ids.begin() + 24, r->ids.begin() + 24 + 13);  // a different length

  auto alone_a = m.forward_batch(a.data(), 1, 24);
  auto alone_b = m.forward_batch(b.data(), 1, 13);
  ASSERT_TRUE(alone_a.has_value() && alone_b.has_value());

  auto cache = m.make_cache(2, 32);
  ASSERT_TRUE(cache.has_value());
  TokenChunk chunks[] = {{0, a}, {1, b}};
  Tensor logits;
  ASSERT_TRUE(m.forward(chunks, *cache, LogitsMode::all, &logits).is_ok());
  ASSERT_EQ(logits.shape(), (Shape{24 + 13, V}));
  const double ea = relative_l2_error(logits.data_as<float>(), alone_a->data_as<float>(), 24 * V);
  const double eb = relative_l2_error(logits.data_as<float>() + 24 * V, alone_b->data_as<float>(), 13 * V);
  std::printf("  batch vs alone: relative errors %.3g, %.3g (allowed %.0e)\n", ea, eb, kReorderTolerance);
  EXPECT_LE(ea, kReorderTolerance) << "sequence a: relative error " << ea << ", allowed " << kReorderTolerance;
  EXPECT_LE(eb, kReorderTolerance) << "sequence b: relative error " << eb << ", allowed " << kReorderTolerance;

  // Mixed step: sequence 1 restarts with a 10-token prefill while sequence 0 decodes on; each
  // keeps its own positions.
  cache->clear(1);
  cache->clear(0);
  TokenChunk prefix{0, std::span<const int32_t>(a.data(), 20)};
  ASSERT_TRUE(m.forward({&prefix, 1}, *cache, LogitsMode::none, nullptr).is_ok());
  TokenChunk mixed[] = {{1, std::span<const int32_t>(b.data(), 10)}, {0, std::span<const int32_t>(a.data() + 20, 1)}};
  ASSERT_TRUE(m.forward(mixed, *cache, LogitsMode::last, &logits).is_ok());
  ASSERT_EQ(logits.shape(), (Shape{2, V}));
  const double e1 = relative_l2_error(logits.data_as<float>(), alone_b->data_as<float>() + 9 * V, V);
  const double e0 = relative_l2_error(logits.data_as<float>() + V, alone_a->data_as<float>() + 20 * V, V);
  EXPECT_LE(e1, kReorderTolerance) << "prefilled sequence: relative error " << e1;
  EXPECT_LE(e0, kReorderTolerance) << "decoding sequence: relative error " << e0;
  EXPECT_EQ(cache->length(0), 21);
  EXPECT_EQ(cache->length(1), 10);
}

// --- llama2.c ------------------------------------------------------------------------------

// Test-only stand-in for the llama2.c tokenizer (run.c's encode/decode), enough to feed the
// prompt "Zoo" and read back the generated text.
struct Llama2cVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::map<std::string, int> index;

  bool load(const std::string& path, int vocab_size) {
    std::ifstream in(path, std::ios::binary);
    int32_t max_len = 0;
    if (!in.read(reinterpret_cast<char*>(&max_len), 4)) return false;
    for (int i = 0; i < vocab_size; ++i) {
      float score = 0;
      int32_t len = 0;
      if (!in.read(reinterpret_cast<char*>(&score), 4) || !in.read(reinterpret_cast<char*>(&len), 4)) return false;
      if (len < 0 || len > 64) return false;
      std::string piece(static_cast<size_t>(len), '\0');
      if (!in.read(piece.data(), len)) return false;
      pieces.push_back(piece);
      scores.push_back(score);
      index.emplace(piece, i);
    }
    return true;
  }
  // BOS, the dummy " " prefix, one token per (ASCII) character, then best-score merges.
  std::vector<int32_t> encode(const std::string& text) const {
    std::vector<int32_t> t = {1, index.at(" ")};
    for (char c : text) t.push_back(index.at(std::string(1, c)));
    for (;;) {
      float best = -1e10f;
      int best_id = -1;
      size_t best_i = 0;
      for (size_t i = 1; i + 1 < t.size(); ++i) {
        auto it = index.find(pieces[static_cast<size_t>(t[i])] + pieces[static_cast<size_t>(t[i + 1])]);
        if (it != index.end() && scores[static_cast<size_t>(it->second)] > best) {
          best = scores[static_cast<size_t>(it->second)];
          best_id = it->second;
          best_i = i;
        }
      }
      if (best_id < 0) return t;
      t[best_i] = best_id;
      t.erase(t.begin() + static_cast<std::ptrdiff_t>(best_i) + 1);
    }
  }
  std::string decode(int32_t prev, int32_t token) const {
    std::string p = pieces[static_cast<size_t>(token)];
    if (prev == 1 && !p.empty() && p[0] == ' ') p.erase(0, 1);
    unsigned byte = 0;
    if (p.size() == 6 && std::sscanf(p.c_str(), "<0x%02X>", &byte) == 1) p = std::string(1, static_cast<char>(byte));
    return p;
  }
};

TEST(ModelForward, Llama2cStories260KGreedyZoo) {
  QFORGE_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const std::string dir = test::shared_dir() + "/models/stories260K";
  auto model = Model::load(dir + "/stories260K.bin");
  ASSERT_TRUE(model.has_value()) << model.status().to_string();
  const ModelConfig& c = model->config();
  EXPECT_EQ(c.arch, Architecture::llama2c);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope, RopeStyle::interleaved);

  Llama2cVocab vocab;
  ASSERT_TRUE(vocab.load(dir + "/tok512.bin", 512));
  std::vector<int32_t> tokens = vocab.encode("Zoo");
  // run.c: feed the prompt token by token, then greedy argmax until position 60.
  auto cache = model->make_cache(1, 64);
  ASSERT_TRUE(cache.has_value());
  Tensor logits;
  std::string text;
  int32_t token = tokens[0];
  for (int64_t pos = 0; pos < 60; ++pos) {
    TokenChunk step{0, std::span<const int32_t>(&token, 1)};
    ASSERT_TRUE(model->forward({&step, 1}, *cache, LogitsMode::last, &logits).is_ok());
    int32_t next;
    if (pos + 1 < static_cast<int64_t>(tokens.size())) {
      next = tokens[static_cast<size_t>(pos + 1)];
    } else {
      const float* l = logits.data_as<float>();
      next = 0;
      for (int32_t i = 1; i < 512; ++i)
        if (l[i] > l[next]) next = i;
    }
    if (next == 1) break;
    text += vocab.decode(token, next);
    token = next;
  }
  std::printf("  stories260K: %s\n", text.c_str());
  const std::string expected = "Zoo was a little girl named Lily. She loved to play outside in the park.";
  EXPECT_EQ(text.substr(0, expected.size()), expected) << "generated: " << text;
}

TEST(ModelForward, Llama2cRejectsBadFiles) {
  const std::string dir = test::temp_dir();
  auto write = [&](const std::string& name, const std::vector<int32_t>& header, size_t extra_floats) {
    std::ofstream out(dir + "/" + name, std::ios::binary);
    out.write(reinterpret_cast<const char*>(header.data()), static_cast<std::streamsize>(header.size() * 4));
    std::vector<float> zeros(extra_floats, 0.0f);
    out.write(reinterpret_cast<const char*>(zeros.data()), static_cast<std::streamsize>(zeros.size() * 4));
    return dir + "/" + name;
  };
  auto short_header = Model::load_llama2c(write("short.bin", {8, 16}, 0));
  ASSERT_FALSE(short_header.has_value());
  auto zero_layers = Model::load_llama2c(write("zero.bin", {8, 16, 0, 2, 2, 10, 4}, 100));
  ASSERT_FALSE(zero_layers.has_value());
  EXPECT_NE(zero_layers.status().message().find("n_layers"), std::string::npos) << zero_layers.status().message();
  auto truncated = Model::load_llama2c(write("trunc.bin", {8, 16, 1, 2, 2, 10, 4}, 50));
  ASSERT_FALSE(truncated.has_value());
  EXPECT_NE(truncated.status().message().find("truncated"), std::string::npos) << truncated.status().message();
  // Exactly sized: 80 emb + 8 + 4 * 64 attention + 8 + 3 * 128 mlp + 8 + 2 * 4 * 2 freq_cis = 760 floats.
  auto exact = Model::load_llama2c(write("ok.bin", {8, 16, 1, 2, 2, 10, 4}, 760));
  EXPECT_TRUE(exact.has_value()) << exact.status().to_string();
  auto trailing = Model::load_llama2c(write("trail.bin", {8, 16, 1, 2, 2, 10, 4}, 761));
  EXPECT_FALSE(trailing.has_value());
  auto huge = Model::load_llama2c(write("huge.bin", {1 << 20, 1 << 20, 1 << 20, 1, 1, 1 << 20, 4}, 10));
  EXPECT_FALSE(huge.has_value());
}

}  // namespace
}  // namespace qforge
