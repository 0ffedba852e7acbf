// GGUF conversion and quantization: block formats through files, the presets' role rules, the
// preflight (fallbacks, re-quantization), overrides, imatrix, metadata, the Q/K permutation, and
// the CLI on the shared models (convert + quantize + inspect).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "qforge/format.h"
#include "qforge/gguf.h"
#include "qforge/gguf_convert.h"
#include "qforge/gguf_quantize.h"
#include "qforge/imatrix.h"
#include "qforge/model.h"
#include "qforge/parallel.h"
#include "qforge/progress.h"
#include "qforge/safetensors.h"
#include "qforge/sha256.h"
#include "model_test_support.h"
#include "test_support.h"

namespace qforge {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::cli_path;
using test::run_command;
using test::shared_dir;
using test::temp_dir;

std::string quote(const std::string& s) { return "'" + s + "'"; }

Scheme scheme_of(const FormatTraits& f) {
  Scheme s;
  s.format = f.id;
  s.bits = f.min_bits;
  s.granularity = f.default_granularity;
  s.group_size = f.default_granularity == Granularity::group ? f.default_group : 0;
  return s;
}

// Weight-like values: Gaussian with a per-row scale and a few outliers.
std::vector<float> weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.02f, 0.2f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = u(rng);
    for (int64_t c = 0; c < cols; ++c) w[static_cast<size_t>(r * cols + c)] = scale * g(rng);
  }
  for (size_t i = 0; i < w.size(); i += 97) w[i] *= 8.0f;
  return w;
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// ---- block formats through a GGUF file ---------------------------------------------------------

// For every format-table row with a GGUF type: quantize, write into one GGUF file with other
// tensors (so offsets and padding are exercised), read back and dequantize: the values must equal
// the in-memory dequantization bit for bit.
TEST(GgufConvert, EveryBlockFormatRoundTripsThroughAFileBitForBit) {
  const std::string path = temp_dir() + "/blocks.gguf";
  struct Case {
    std::string name;
    const FormatTraits* format;
    int64_t rows, cols;
    std::vector<float> dequantized;
    QuantizedTensor q;
  };
  std::vector<Case> cases;
  std::mt19937 rng(11);
  uint32_t seed = 1;
  for (const FormatTraits& f : all_formats()) {
    if (f.gguf_type < 0) continue;
    const int64_t block = ggml_type_info(static_cast<GgmlType>(f.gguf_type)).block_size;
    // Random shapes: rows 1..40, columns k blocks and (for every format) rows of 256 * k.
    std::uniform_int_distribution<int64_t> rows_d(1, 40), k_d(1, 6);
    const std::vector<int64_t> col_choices = {block * k_d(rng), 256 * k_d(rng), block == 1 ? 7 : block};
    for (int64_t cols : col_choices) {
      Case c;
      c.format = &f;
      c.rows = rows_d(rng);
      c.cols = cols;
      c.name = std::string(f.name) + "." + std::to_string(c.rows) + "x" + std::to_string(cols);
      const std::vector<float> w = weights(c.rows, cols, seed++);
      Expected<QuantizedTensor> q = quantize(scheme_of(f), w.data(), c.rows, cols);
      ASSERT_TRUE(q.has_value()) << c.name << ": " << q.status().message();
      c.q = std::move(*q);
      c.dequantized.resize(w.size());
      ASSERT_TRUE(dequantize(c.q, c.dequantized.data()).is_ok());
      cases.push_back(std::move(c));
    }
    // A row with a tail (not a whole number of blocks) has no block encoding: rejected, never
    // padded. The GGUF planner's fallback handles such tensors (tests below).
    if (block > 1) {
      const int64_t cols = block * k_d(rng) + block / 2;
      const std::vector<float> w = weights(2, cols, seed++);
      EXPECT_FALSE(quantize(scheme_of(f), w.data(), 2, cols).has_value()) << f.name << " with " << cols << " columns";
    }
  }
  GgufWriter writer(path);
  ASSERT_TRUE(writer.set_string("general.architecture", "test").is_ok());
  for (const Case& c : cases)
    ASSERT_TRUE(writer
                    .add_tensor(c.name, static_cast<GgmlType>(c.format->gguf_type), {c.rows, c.cols}, c.q.codes.data(),
                                c.q.codes.size())
                    .is_ok())
        << c.name;
  ASSERT_TRUE(writer.finish().is_ok());

  Expected<GgufFile> file = GgufFile::open(path);
  ASSERT_TRUE(file.has_value()) << file.status().message();
  ASSERT_EQ(file->tensors().size(), cases.size());
  for (const Case& c : cases) {
    const GgufTensorInfo* info = file->find_tensor(c.name);
    ASSERT_NE(info, nullptr) << c.name;
    EXPECT_EQ(info->shape, (Shape{c.rows, c.cols}));
    QuantizedTensor back;
    back.scheme = c.q.scheme;
    back.rows = c.rows;
    back.cols = c.cols;
    const auto bytes = file->tensor_bytes(*info);
    back.codes.assign(bytes.begin(), bytes.end());
    ASSERT_EQ(back.codes, c.q.codes) << c.name;
    std::vector<float> out(c.dequantized.size());
    ASSERT_TRUE(dequantize(back, out.data()).is_ok());
    EXPECT_EQ(std::memcmp(out.data(), c.dequantized.data(), out.size() * sizeof(float)), 0) << c.name;
  }
}

// ---- the Q/K permutation ------------------------------------------------------------------------

TEST(GgufConvert, PermutationMatchesLlamaCppsReshapeSwapaxes) {
  // permute(w, n=2) for 8 rows (head_dim 4): reshape(2, 2, 2, cols).swapaxes(1, 2) reads rows
  // [0, 2, 1, 3, 4, 6, 5, 7].
  const int64_t rows = 8, cols = 3;
  std::vector<float> in(rows * cols), out(rows * cols), back(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) in[static_cast<size_t>(i)] = static_cast<float>(i);
  permute_qk_rows(in.data(), rows, cols, 2, out.data());
  const int64_t expect[rows] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(out[r * cols + c], in[expect[r] * cols + c]) << "row " << r;
  unpermute_qk_rows(out.data(), rows, cols, 2, back.data());
  EXPECT_EQ(back, in);
}

// ---- preset rules -------------------------------------------------------------------------------

GgmlType preset_type(const char* preset, TensorRole role, int layer, int64_t n_layers, int64_t row = 4096,
                     int64_t heads = 32, int64_t kv_heads = 32, bool imatrix = false, bool pure = false) {
  GgufTensorContext t;
  t.role = role;
  t.layer = layer;
  t.n_layers = n_layers;
  t.n_head = heads;
  t.n_head_kv = kv_heads;
  t.row_length = row;
  t.has_imatrix = imatrix;
  return gguf_preset_type(**find_gguf_preset(preset), t, pure, nullptr);
}

TEST(GgufPresets, Q4KMUsesQ6KForAttnVAndFfnDownInUseMoreBitsLayers) {
  // use_more_bits for n = 12: i < 1, i >= 10, (i - 1) % 3 == 2 -> {0, 3, 6, 9, 10, 11}; for
  // n = 32 (a 7B llama): 0-3, 28-31 and 6, 9, ..., 27.
  const std::set<int> more12 = {0, 3, 6, 9, 10, 11};
  std::set<int> more32 = {0, 1, 2, 3, 28, 29, 30, 31};
  for (int i = 6; i < 28; i += 3) more32.insert(i);
  for (auto [n, more] : {std::pair{12, more12}, std::pair{32, more32}}) {
    for (int i = 0; i < n; ++i) {
      const GgmlType want = more.count(i) ? GgmlType::Q6_K : GgmlType::Q4_K;
      EXPECT_EQ(preset_type("Q4_K_M", TensorRole::attn_v, i, n), want) << "attn_v layer " << i << " of " << n;
      EXPECT_EQ(preset_type("Q4_K_M", TensorRole::mlp_down, i, n), want) << "ffn_down layer " << i << " of " << n;
      EXPECT_EQ(preset_type("Q4_K_M", TensorRole::attn_q, i, n), GgmlType::Q4_K);
      EXPECT_EQ(preset_type("Q4_K_M", TensorRole::mlp_gate, i, n), GgmlType::Q4_K);
      EXPECT_EQ(preset_type("Q5_K_M", TensorRole::attn_v, i, n), more.count(i) ? GgmlType::Q6_K : GgmlType::Q5_K);
      EXPECT_EQ(preset_type("Q5_K_S", TensorRole::attn_v, i, n), GgmlType::Q5_K);
    }
  }
}

TEST(GgufPresets, OutputHeadTokenEmbeddingAndSmallPresetsFollowLlamaCpp) {
  using R = TensorRole;
  // Output head (also a tied token embedding): Q6_K, Q8_0 stays Q8_0, rows not fitting the
  // preset's block: Q8_0.
  EXPECT_EQ(preset_type("Q4_K_M", R::output, -1, 32), GgmlType::Q6_K);
  EXPECT_EQ(preset_type("Q4_0", R::output, -1, 32), GgmlType::Q6_K);
  EXPECT_EQ(preset_type("Q8_0", R::output, -1, 32), GgmlType::Q8_0);
  EXPECT_EQ(preset_type("Q4_K_M", R::output, -1, 32, 384), GgmlType::Q8_0);
  EXPECT_EQ(preset_type("Q4_0", R::output, -1, 32, 384), GgmlType::Q6_K);  // 384 % 32 == 0
  EXPECT_EQ(preset_type("F16", R::output, -1, 32), GgmlType::F16);
  // Untied token embedding: the preset type, Q4_K for the ternary presets.
  EXPECT_EQ(preset_type("Q4_K_M", R::token_embedding, -1, 32), GgmlType::Q4_K);
  EXPECT_EQ(preset_type("TQ2_0", R::token_embedding, -1, 32), GgmlType::Q4_K);
  EXPECT_EQ(preset_type("TQ1_0", R::attn_q, 0, 32), GgmlType::TQ1_0);
  // Q2_K: attn_v by GQA ratio, ffn_down and attn_output Q3_K.
  EXPECT_EQ(preset_type("Q2_K", R::attn_v, 5, 32, 4096, 32, 8), GgmlType::Q4_K);
  EXPECT_EQ(preset_type("Q2_K", R::attn_v, 5, 32, 4096, 32, 16), GgmlType::Q3_K);
  EXPECT_EQ(preset_type("Q2_K", R::mlp_down, 5, 32), GgmlType::Q3_K);
  EXPECT_EQ(preset_type("Q2_K", R::attn_output, 5, 32), GgmlType::Q3_K);
  EXPECT_EQ(preset_type("Q2_K", R::mlp_up, 5, 32), GgmlType::Q2_K);
  // Q3_K_M: attn_v Q5_K in layers 0-1 then Q4_K; ffn_down Q5_K below n/16 then Q4_K.
  EXPECT_EQ(preset_type("Q3_K_M", R::attn_v, 1, 32), GgmlType::Q5_K);
  EXPECT_EQ(preset_type("Q3_K_M", R::attn_v, 2, 32), GgmlType::Q4_K);
  EXPECT_EQ(preset_type("Q3_K_M", R::mlp_down, 1, 32), GgmlType::Q5_K);
  EXPECT_EQ(preset_type("Q3_K_M", R::mlp_down, 2, 32), GgmlType::Q4_K);
  EXPECT_EQ(preset_type("Q3_K_M", R::attn_output, 9, 32), GgmlType::Q4_K);
  EXPECT_EQ(preset_type("Q3_K_L", R::attn_output, 9, 32), GgmlType::Q5_K);
  EXPECT_EQ(preset_type("Q3_K_S", R::attn_v, 0, 32), GgmlType::Q3_K);
  // Q4_K_S: attn_v Q5_K in layers 0-3, ffn_down below n/8.
  EXPECT_EQ(preset_type("Q4_K_S", R::attn_v, 3, 32), GgmlType::Q5_K);
  EXPECT_EQ(preset_type("Q4_K_S", R::attn_v, 4, 32), GgmlType::Q4_K);
  EXPECT_EQ(preset_type("Q4_K_S", R::mlp_down, 3, 32), GgmlType::Q5_K);
  EXPECT_EQ(preset_type("Q4_K_S", R::mlp_down, 4, 32), GgmlType::Q4_K);
  // IQ4_NL: ffn_down Q5_K in the first eighth without an imatrix; attn_v Q5_K with GQA >= 4.
  EXPECT_EQ(preset_type("IQ4_NL", R::mlp_down, 0, 32), GgmlType::Q5_K);
  EXPECT_EQ(preset_type("IQ4_NL", R::mlp_down, 0, 32, 4096, 32, 32, true), GgmlType::IQ4_NL);
  EXPECT_EQ(preset_type("IQ4_NL", R::attn_v, 9, 32, 4096, 32, 8), GgmlType::Q5_K);
  // Q4_0 / Q5_0 with an imatrix: the first eighth of ffn_down gets Q4_1 / Q5_1.
  EXPECT_EQ(preset_type("Q4_0", R::mlp_down, 0, 32, 4096, 32, 32, true), GgmlType::Q4_1);
  EXPECT_EQ(preset_type("Q4_0", R::mlp_down, 0, 32), GgmlType::Q4_0);
  EXPECT_EQ(preset_type("Q5_0", R::mlp_down, 3, 32, 4096, 32, 32, true), GgmlType::Q5_1);
  // 70B (80 layers): attn_v Q3_K / Q4_K become Q5_K; Q6_K stays.
  EXPECT_EQ(preset_type("Q4_K_M", R::attn_v, 40, 80, 8192, 64, 8), GgmlType::Q5_K);
  EXPECT_EQ(preset_type("Q4_K_M", R::attn_v, 0, 80, 8192, 64, 8), GgmlType::Q6_K);
  EXPECT_EQ(preset_type("Q3_K_S", R::attn_v, 40, 80, 8192, 64, 8), GgmlType::Q5_K);
  // --pure: the preset type everywhere.
  EXPECT_EQ(preset_type("Q4_K_M", R::attn_v, 0, 32, 4096, 32, 32, false, true), GgmlType::Q4_K);
  EXPECT_EQ(preset_type("Q4_K_M", R::output, -1, 32, 4096, 32, 32, false, true), GgmlType::Q4_K);
}

TEST(GgufPresets, EveryPresetIsFoundAndHasItsLlamaFileType) {
  const std::pair<const char*, uint32_t> want[] = {
      {"F32", 0},     {"F16", 1},     {"Q4_0", 2},    {"Q4_1", 3},    {"Q8_0", 7},    {"Q5_0", 8},   {"Q5_1", 9},
      {"Q2_K", 10},   {"Q3_K_S", 11}, {"Q3_K_M", 12}, {"Q3_K_L", 13}, {"Q4_K_S", 14}, {"Q4_K_M", 15},
      {"Q5_K_S", 16}, {"Q5_K_M", 17}, {"Q6_K", 18},   {"IQ4_NL", 25}, {"BF16", 32},   {"TQ1_0", 36}, {"TQ2_0", 37}};
  EXPECT_EQ(gguf_presets().size(), std::size(want));
  for (auto [name, ftype] : want) {
    Expected<const GgufPreset*> p = find_gguf_preset(name);
    ASSERT_TRUE(p.has_value()) << name;
    EXPECT_EQ((*p)->file_type, ftype) << name;
  }
  EXPECT_TRUE(find_gguf_preset("q4_k_m").has_value());
  Expected<const GgufPreset*> bad = find_gguf_preset("Q9_K");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.status().message().find("Q4_K_M"), std::string::npos) << bad.status().message();
}

TEST(GgufPresets, FallbackTableAndWeightTypes) {
  EXPECT_EQ(gguf_fallback_type(GgmlType::Q4_K), GgmlType::Q5_0);
  EXPECT_EQ(gguf_fallback_type(GgmlType::Q5_K), GgmlType::Q5_1);
  EXPECT_EQ(gguf_fallback_type(GgmlType::Q6_K), GgmlType::Q8_0);
  EXPECT_EQ(gguf_fallback_type(GgmlType::Q2_K), GgmlType::IQ4_NL);
  EXPECT_EQ(gguf_fallback_type(GgmlType::Q3_K), GgmlType::IQ4_NL);
  EXPECT_EQ(gguf_fallback_type(GgmlType::TQ1_0), GgmlType::Q4_0);
  EXPECT_EQ(gguf_fallback_type(GgmlType::TQ2_0), GgmlType::Q4_0);
  EXPECT_EQ(gguf_fallback_type(GgmlType::Q4_0), GgmlType::F16);
  EXPECT_FALSE(parse_gguf_weight_type("Q8_K", "x").has_value());
  EXPECT_FALSE(parse_gguf_weight_type("IQ2_XXS", "x").has_value());
  EXPECT_EQ(*parse_gguf_weight_type("q6_k", "x"), GgmlType::Q6_K);
  EXPECT_EQ(*parse_gguf_weight_type("bf16", "x"), GgmlType::BF16);
  EXPECT_FALSE(gguf_backend_support(GgmlType::TQ2_0).cuda);
  EXPECT_TRUE(gguf_backend_support(GgmlType::Q4_K).cuda);
}

// ---- a tiny synthetic llama GGUF -----------------------------------------------------------------

struct TinyModel {
  int64_t hidden = 64, ffn = 96, layers = 3, heads = 4, kv_heads = 2, vocab = 80;
  bool tied = true;
  GgmlType type = GgmlType::F32;  // of the 2-D weights
};

// Writes an F32/F16 llama GGUF with random weights; returns the path.
std::string write_tiny_model(const std::string& path, const TinyModel& m) {
  GgufWriter w(path);
  EXPECT_TRUE(w.set_string("general.architecture", "llama").is_ok());
  EXPECT_TRUE(w.set_string("general.name", "tiny").is_ok());
  EXPECT_TRUE(w.set_u32("llama.block_count", static_cast<uint32_t>(m.layers)).is_ok());
  EXPECT_TRUE(w.set_u32("llama.embedding_length", static_cast<uint32_t>(m.hidden)).is_ok());
  EXPECT_TRUE(w.set_u32("llama.feed_forward_length", static_cast<uint32_t>(m.ffn)).is_ok());
  EXPECT_TRUE(w.set_u32("llama.attention.head_count", static_cast<uint32_t>(m.heads)).is_ok());
  EXPECT_TRUE(w.set_u32("llama.attention.head_count_kv", static_cast<uint32_t>(m.kv_heads)).is_ok());
  struct T {
    std::string name;
    Shape shape;
  };
  const int64_t hd = m.hidden / m.heads;
  std::vector<T> ts = {{"token_embd.weight", {m.vocab, m.hidden}}};
  for (int l = 0; l < m.layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    ts.push_back({b + "attn_norm.weight", {m.hidden}});
    ts.push_back({b + "attn_q.weight", {m.hidden, m.hidden}});
    ts.push_back({b + "attn_k.weight", {m.kv_heads * hd, m.hidden}});
    ts.push_back({b + "attn_v.weight", {m.kv_heads * hd, m.hidden}});
    ts.push_back({b + "attn_output.weight", {m.hidden, m.hidden}});
    ts.push_back({b + "ffn_norm.weight", {m.hidden}});
    ts.push_back({b + "ffn_gate.weight", {m.ffn, m.hidden}});
    ts.push_back({b + "ffn_up.weight", {m.ffn, m.hidden}});
    ts.push_back({b + "ffn_down.weight", {m.hidden, m.ffn}});
  }
  ts.push_back({"output_norm.weight", {m.hidden}});
  if (!m.tied) ts.push_back({"output.weight", {m.vocab, m.hidden}});
  uint32_t seed = 100;
  for (const T& t : ts) {
    const int64_t cols = t.shape.back(), rows = shape_numel(t.shape) / cols;
    const std::vector<float> values = weights(rows, cols, seed++);
    const GgmlType type = t.shape.size() == 1 ? GgmlType::F32 : m.type;
    const FormatTraits* f = find_format_by_gguf_type(static_cast<int>(type));
    Expected<QuantizedTensor> q = quantize(scheme_of(*f), values.data(), rows, cols);
    EXPECT_TRUE(q.has_value());
    auto bytes = std::make_shared<std::vector<uint8_t>>(q->codes);
    EXPECT_TRUE(w.add_tensor_lazy(t.name, type, t.shape, [bytes](uint8_t* out, size_t n) {
                   std::memcpy(out, bytes->data(), n);
                   return Status::ok();
                 }).is_ok());
  }
  EXPECT_TRUE(w.finish().is_ok());
  return path;
}

const GgufTensorPlan* find_plan(const GgufQuantizePlan& p, const std::string& name) {
  for (const auto& t : p.tensors)
    if (t.name == name) return &t;
  return nullptr;
}

GgufQuantizeOptions options_for(const char* preset) {
  GgufQuantizeOptions o;
  o.preset = *find_gguf_preset(preset);
  return o;
}

// Writes the plan and checks the file: exact predicted size, types, metadata.
GgufFile write_and_open(const GgufModelInput& in, const GgufQuantizePlan& plan, const GgufQuantizeOptions& o,
                        const std::string& out) {
  Progress::Options quiet;
  quiet.quiet = true;
  Expected<GgufWriteResult> r = write_gguf_model(in, plan, o, out, quiet);
  EXPECT_TRUE(r.has_value()) << r.status().message();
  EXPECT_EQ(r->file_bytes, plan.file_bytes) << "the plan's exact size must match the file";
  Expected<GgufFile> f = GgufFile::open(out);
  EXPECT_TRUE(f.has_value()) << f.status().message();
  for (const auto& t : plan.tensors) {
    const GgufTensorInfo* info = f->find_tensor(t.name);
    EXPECT_NE(info, nullptr) << t.name;
    if (info) {
      EXPECT_EQ(info->type, t.type) << t.name;
    }
  }
  return std::move(*f);
}

TEST(GgufQuantize, RowsNotFittingTheBlockFallBackOnlyWhenAllowed) {
  // hidden 64 / ffn 96: K-quants (256) do not fit; Q5_0 (32) does. ffn 40 does not even fit 32.
  TinyModel m;
  const std::string in_path = write_tiny_model(temp_dir() + "/tiny_fb.gguf", m);
  Expected<GgufModelInput> in = GgufModelInput::open(in_path);
  ASSERT_TRUE(in.has_value()) << in.status().message();
  GgufQuantizeOptions o = options_for("Q4_K_M");
  Expected<GgufQuantizePlan> plan = plan_gguf_quantization(*in, o);
  ASSERT_TRUE(plan.has_value()) << plan.status().message();
  // Every 2-D weight falls back (Q4_K -> Q5_0, Q6_K -> Q8_0) except the tied token embedding,
  // which the output-head rule sends to Q8_0 directly.
  EXPECT_EQ(plan->fallbacks.size(), static_cast<size_t>(7 * m.layers));
  const GgufTensorPlan* q = find_plan(*plan, "blk.1.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_TRUE(q->fallback);
  EXPECT_EQ(q->wanted, GgmlType::Q4_K);
  EXPECT_EQ(q->type, GgmlType::Q5_0);
  // use_more_bits for n = 3 picks layer 2 only (i >= 7n/8 = 2).
  const GgufTensorPlan* v0 = find_plan(*plan, "blk.2.attn_v.weight");
  EXPECT_EQ(v0->wanted, GgmlType::Q6_K);
  EXPECT_EQ(v0->type, GgmlType::Q8_0);
  const GgufTensorPlan* emb = find_plan(*plan, "token_embd.weight");
  EXPECT_FALSE(emb->fallback);
  EXPECT_EQ(emb->type, GgmlType::Q8_0);
  EXPECT_EQ(find_plan(*plan, "blk.0.attn_norm.weight")->type, GgmlType::F32);

  Status verdict = check_gguf_plan(*plan, o);
  ASSERT_FALSE(verdict.is_ok());
  EXPECT_NE(verdict.message().find("blk.1.attn_q.weight: Q4_K -> Q5_0"), std::string::npos) << verdict.message();
  // write_gguf_model refuses too and leaves nothing behind.
  const std::string out = temp_dir() + "/tiny_fb_q4km.gguf";
  Progress::Options quiet;
  quiet.quiet = true;
  EXPECT_FALSE(write_gguf_model(*in, *plan, o, out, quiet).has_value());
  EXPECT_FALSE(fs::exists(out));

  o.allow_fallback = true;
  ASSERT_TRUE(check_gguf_plan(*plan, o).is_ok());
  GgufFile f = write_and_open(*in, *plan, o, out);
  Expected<std::span<const std::string>> recorded = f.get_array<std::string>("qforge.fallbacks");
  ASSERT_TRUE(recorded.has_value());
  EXPECT_EQ(recorded->size(), plan->fallbacks.size());

  // A row length that not even the fallback's 32-block divides ends at F16.
  TinyModel odd = m;
  odd.ffn = 40;
  const std::string odd_path = write_tiny_model(temp_dir() + "/tiny_odd.gguf", odd);
  Expected<GgufModelInput> in2 = GgufModelInput::open(odd_path);
  ASSERT_TRUE(in2.has_value());
  Expected<GgufQuantizePlan> plan2 = plan_gguf_quantization(*in2, options_for("Q4_K_M"));
  ASSERT_TRUE(plan2.has_value());
  EXPECT_EQ(find_plan(*plan2, "blk.1.ffn_down.weight")->type, GgmlType::F16);
}

TEST(GgufQuantize, OverridesApplyInOrderAndTheirTypesAreShapeChecked) {
  TinyModel m;
  m.hidden = 256;
  m.ffn = 512;
  m.tied = false;
  const std::string in_path = write_tiny_model(temp_dir() + "/tiny_ov.gguf", m);
  Expected<GgufModelInput> in = GgufModelInput::open(in_path);
  ASSERT_TRUE(in.has_value()) << in.status().message();
  GgufQuantizeOptions o = options_for("Q4_K_M");
  o.overrides.push_back(*parse_gguf_type_override("attn_(q|k)=Q8_0", "--tensor-type 1"));
  o.overrides.push_back(*parse_gguf_type_override("blk\\.2\\.attn_k=Q5_K", "--tensor-type 2"));
  o.output_tensor_type = GgmlType::Q5_K;
  o.token_embedding_type = GgmlType::Q8_0;
  Expected<GgufQuantizePlan> plan = plan_gguf_quantization(*in, o);
  ASSERT_TRUE(plan.has_value()) << plan.status().message();
  EXPECT_TRUE(plan->fallbacks.empty());
  EXPECT_EQ(find_plan(*plan, "blk.0.attn_q.weight")->type, GgmlType::Q8_0);
  EXPECT_EQ(find_plan(*plan, "blk.0.attn_k.weight")->type, GgmlType::Q8_0);
  EXPECT_EQ(find_plan(*plan, "blk.2.attn_k.weight")->type, GgmlType::Q5_K);  // last match wins
  EXPECT_EQ(find_plan(*plan, "blk.2.attn_k.weight")->reason, "--tensor-type 2");
  EXPECT_EQ(find_plan(*plan, "blk.0.ffn_up.weight")->type, GgmlType::Q4_K);
  EXPECT_EQ(find_plan(*plan, "output.weight")->type, GgmlType::Q5_K);
  EXPECT_EQ(find_plan(*plan, "token_embd.weight")->type, GgmlType::Q8_0);
  GgufFile f = write_and_open(*in, *plan, o, temp_dir() + "/tiny_ov_out.gguf");
  Expected<std::span<const std::string>> ov = f.get_array<std::string>("qforge.tensor_type_overrides");
  ASSERT_TRUE(ov.has_value());
  ASSERT_EQ(ov->size(), 2u);
  EXPECT_EQ((*ov)[0], "attn_(q|k)=Q8_0");
  EXPECT_EQ(*f.get_string("qforge.output_tensor_type"), "Q5_K");

  // An override whose type does not fit the rows is a fallback like any other.
  TinyModel narrow = m;
  narrow.hidden = 96;
  narrow.ffn = 128;
  const std::string n_path = write_tiny_model(temp_dir() + "/tiny_narrow.gguf", narrow);
  Expected<GgufModelInput> in2 = GgufModelInput::open(n_path);
  ASSERT_TRUE(in2.has_value());
  GgufQuantizeOptions o2 = options_for("Q8_0");
  o2.overrides.push_back(*parse_gguf_type_override("ffn_up=Q6_K", "x"));
  Expected<GgufQuantizePlan> plan2 = plan_gguf_quantization(*in2, o2);
  ASSERT_TRUE(plan2.has_value());
  const GgufTensorPlan* up = find_plan(*plan2, "blk.0.ffn_up.weight");
  EXPECT_TRUE(up->fallback);
  EXPECT_EQ(up->type, GgmlType::Q8_0);
  EXPECT_FALSE(check_gguf_plan(*plan2, o2).is_ok());
}

TEST(GgufQuantize, RequantizingNeedsPermissionAndKeptTypesAreCopied) {
  TinyModel m;
  m.hidden = 256;
  m.ffn = 256;
  const std::string f32_path = write_tiny_model(temp_dir() + "/tiny_rq.gguf", m);
  Expected<GgufModelInput> in = GgufModelInput::open(f32_path);
  ASSERT_TRUE(in.has_value());
  GgufQuantizeOptions o = options_for("Q4_K_M");
  Expected<GgufQuantizePlan> plan = plan_gguf_quantization(*in, o);
  ASSERT_TRUE(plan.has_value());
  const std::string q4_path = temp_dir() + "/tiny_rq_q4km.gguf";
  write_and_open(*in, *plan, o, q4_path);

  Expected<GgufModelInput> q4 = GgufModelInput::open(q4_path);
  ASSERT_TRUE(q4.has_value()) << q4.status().message();
  // The same preset again: every tensor keeps its type and is copied byte for byte.
  Expected<GgufQuantizePlan> same = plan_gguf_quantization(*q4, o);
  ASSERT_TRUE(same.has_value());
  EXPECT_TRUE(same->requantized.empty());
  for (const auto& t : same->tensors) EXPECT_TRUE(t.copy) << t.name;
  const std::string again = temp_dir() + "/tiny_rq_again.gguf";
  write_and_open(*q4, *same, o, again);
  EXPECT_EQ(file_bytes(again), file_bytes(q4_path));

  GgufQuantizeOptions o2 = options_for("Q4_0");
  Expected<GgufQuantizePlan> re = plan_gguf_quantization(*q4, o2);
  ASSERT_TRUE(re.has_value());
  EXPECT_FALSE(re->requantized.empty());
  Status verdict = check_gguf_plan(*re, o2);
  ASSERT_FALSE(verdict.is_ok());
  EXPECT_NE(verdict.message().find("already quantized"), std::string::npos) << verdict.message();
  o2.allow_requantize = true;
  GgufFile f = write_and_open(*q4, *re, o2, temp_dir() + "/tiny_rq_q40.gguf");
  EXPECT_EQ(f.find_tensor("blk.0.attn_q.weight")->type, GgmlType::Q4_0);
  EXPECT_EQ(*f.get_u32("general.file_type"), 2u);
}

TEST(GgufQuantize, ImatrixWeightsTheBlockSearchAndIsRecorded) {
  TinyModel m;
  m.hidden = 256;
  m.ffn = 256;
  m.layers = 2;
  const std::string in_path = write_tiny_model(temp_dir() + "/tiny_im.gguf", m);
  Expected<GgufModelInput> in = GgufModelInput::open(in_path);
  ASSERT_TRUE(in.has_value());
  // A GGUF imatrix as llama-imatrix writes it: in_sum2 {cols, 1}, counts {1, 1}.
  const std::string im_path = temp_dir() + "/tiny.imatrix.gguf";
  {
    GgufWriter w(im_path);
    ASSERT_TRUE(w.set_string("general.type", "imatrix").is_ok());
    ASSERT_TRUE(w.set_string_array("imatrix.datasets", {"calibration.txt"}).is_ok());
    ASSERT_TRUE(w.set_u32("imatrix.chunk_count", 7).is_ok());
    ASSERT_TRUE(w.set_u32("imatrix.chunk_size", 512).is_ok());
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(0.0f, 40.0f);
    std::vector<std::vector<float>> keep;  // add_tensor's buffers must outlive finish()
    const float count = 7.0f * 512;
    for (const GgufInputTensor& t : in->tensors()) {
      if (t.shape.size() != 2 || t.role.role == TensorRole::token_embedding) continue;
      std::vector<float> sums(static_cast<size_t>(t.cols()));
      for (float& v : sums) v = u(rng) * u(rng);
      keep.push_back(std::move(sums));
      ASSERT_TRUE(w.add_tensor(t.name + ".in_sum2", GgmlType::F32, {1, t.cols()}, keep.back().data(), keep.back().size() * 4).is_ok());
      ASSERT_TRUE(w.add_tensor(t.name + ".counts", GgmlType::F32, {1, 1}, &count, 4).is_ok());
    }
    ASSERT_TRUE(w.finish().is_ok());
  }
  Expected<Imatrix> im = Imatrix::load(im_path);
  ASSERT_TRUE(im.has_value()) << im.status().message();
  EXPECT_EQ(im->chunk_count(), 7);
  EXPECT_EQ(im->entries().size(), static_cast<size_t>(7 * m.layers));
  GgufQuantizeOptions o = options_for("Q4_K_M");
  o.imatrix = &*im;
  Expected<GgufQuantizePlan> plan = plan_gguf_quantization(*in, o);
  ASSERT_TRUE(plan.has_value()) << plan.status().message();
  const GgufTensorPlan* q = find_plan(*plan, "blk.1.attn_q.weight");
  EXPECT_TRUE(q->imatrix);
  EXPECT_EQ(plan->imatrix_missing, std::vector<std::string>{"token_embd.weight"});
  GgufFile f = write_and_open(*in, *plan, o, temp_dir() + "/tiny_im_q4km.gguf");
  EXPECT_EQ(*f.get_string("qforge.imatrix.file_sha256"), *sha256_file(im_path));
  EXPECT_EQ(*f.get_u32("qforge.imatrix.entries"), 7u * m.layers);
  EXPECT_EQ(*f.get_u32("qforge.imatrix.chunks"), 7u);
  EXPECT_EQ(*f.get_string("quantize.imatrix.dataset"), "calibration.txt");

  // The bytes are the block search weighted by in_sum2 / counts.
  const size_t idx = q->input_index;
  Expected<std::vector<float>> w = in->load_f32(idx);
  ASSERT_TRUE(w.has_value());
  const ImatrixEntry* e = im->find("blk.1.attn_q.weight");
  QuantizeOptions qo;
  qo.importance = e->importance.data();
  qo.importance_size = e->importance.size();
  Scheme s = scheme_of(*find_format_by_gguf_type(static_cast<int>(GgmlType::Q4_K)));
  Expected<QuantizedTensor> direct = quantize(s, w->data(), m.hidden, m.hidden, qo);
  ASSERT_TRUE(direct.has_value());
  const auto bytes = f.tensor_bytes(*f.find_tensor("blk.1.attn_q.weight"));
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), direct->codes.begin(), direct->codes.end()));
  Expected<QuantizedTensor> plain = quantize(s, w->data(), m.hidden, m.hidden);
  EXPECT_NE(plain->codes, direct->codes) << "the importance weights should change some blocks";

  // An imatrix for another model (wrong width) is an error naming the entry.
  TinyModel wide = m;
  wide.hidden = 512;
  wide.heads = 8;
  wide.kv_heads = 4;
  Expected<GgufModelInput> in2 = GgufModelInput::open(write_tiny_model(temp_dir() + "/tiny_wide.gguf", wide));
  ASSERT_TRUE(in2.has_value());
  Expected<GgufQuantizePlan> bad = plan_gguf_quantization(*in2, o);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.status().message().find("blk.0.attn_q.weight"), std::string::npos) << bad.status().message();
}

TEST(GgufQuantize, LegacyImatrixIsReadAndAveragedByCallCount) {
  const std::string path = temp_dir() + "/legacy.dat";
  {
    std::ofstream out(path, std::ios::binary);
    auto i32 = [&](int32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
    i32(1);
    const std::string name = "blk.0.attn_q.weight";
    i32(static_cast<int32_t>(name.size()));
    out.write(name.data(), static_cast<std::streamsize>(name.size()));
    i32(4);  // ncall
    i32(3);  // nval
    const float v[3] = {4.0f, 8.0f, 0.0f};
    out.write(reinterpret_cast<const char*>(v), sizeof v);
    i32(12);  // chunks
    const std::string ds = "wiki.txt";
    i32(static_cast<int32_t>(ds.size()));
    out.write(ds.data(), static_cast<std::streamsize>(ds.size()));
  }
  Expected<Imatrix> im = Imatrix::load(path);
  ASSERT_TRUE(im.has_value()) << im.status().message();
  EXPECT_TRUE(im->legacy());
  EXPECT_EQ(im->chunk_count(), 12);
  ASSERT_EQ(im->datasets().size(), 1u);
  const ImatrixEntry* e = im->find("blk.0.attn_q.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->importance, (std::vector<float>{1.0f, 2.0f, 0.0f}));
}

// The fuzz seeds (fuzz/corpus/imatrix) are valid inputs of the readers they exercise, and the
// regression inputs kept there are rejected.
TEST(GgufQuantize, FuzzSeedsParse) {
  const fs::path dir = fs::path(QFORGE_SOURCE_DIR) / "fuzz" / "corpus" / "imatrix";
  if (!fs::exists(dir)) GTEST_SKIP() << dir << " not found";
  Expected<Imatrix> g = Imatrix::load((dir / "imatrix.gguf").string());
  ASSERT_TRUE(g.has_value()) << g.status().message();
  EXPECT_FALSE(g->legacy());
  EXPECT_EQ(g->chunk_count(), 2);
  const ImatrixEntry* e = g->find("blk.0.attn_q.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->importance, (std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f}));  // in_sum2 / counts
  // A fuzz finding: in_sum2 {huge, 0} with no counts was accepted as an entry with 0 matrices.
  Expected<Imatrix> zero = Imatrix::load((dir / "regress-zero-matrices.gguf").string());
  ASSERT_FALSE(zero.has_value());
  EXPECT_NE(zero.status().message().find("no matrices"), std::string::npos) << zero.status().message();
  Expected<Imatrix> l = Imatrix::load((dir / "legacy.dat").string());
  ASSERT_TRUE(l.has_value()) << l.status().message();
  Expected<GgufVocab> v = read_llama2c_vocab((dir / "tok4.bin").string(), 4);
  ASSERT_TRUE(v.has_value()) << v.status().message();
  EXPECT_EQ(v->tokens, (std::vector<std::string>{"<unk>", "<s>", "</s>", "\xe2\x96\x81" "a"}));
  EXPECT_EQ(v->token_types, (std::vector<int32_t>{2, 3, 3, 1}));
  EXPECT_EQ(v->scores[3], -1.5f);
  EXPECT_FALSE(read_llama2c_vocab((dir / "tok4.bin").string(), 5).has_value());  // too few tokens
  EXPECT_FALSE(read_llama2c_vocab((dir / "tok4.bin").string(), 3).has_value());  // trailing bytes
}

TEST(GgufQuantize, OutputIsIdenticalForAnyThreadCountAndInterruptsLeaveNoFile) {
  TinyModel m;
  m.hidden = 256;
  m.ffn = 512;
  const std::string in_path = write_tiny_model(temp_dir() + "/tiny_det.gguf", m);
  Expected<GgufModelInput> in = GgufModelInput::open(in_path);
  ASSERT_TRUE(in.has_value());
  GgufQuantizeOptions o = options_for("Q3_K_M");
  Expected<GgufQuantizePlan> plan = plan_gguf_quantization(*in, o);
  ASSERT_TRUE(plan.has_value());
  std::vector<std::vector<uint8_t>> outputs;
  for (int threads : {1, 2, 3}) {
    ScopedThreadLimit limit(threads);
    const std::string out = temp_dir() + "/tiny_det_" + std::to_string(threads) + ".gguf";
    write_and_open(*in, *plan, o, out);
    outputs.push_back(file_bytes(out));
  }
  EXPECT_EQ(outputs[0], outputs[1]);
  EXPECT_EQ(outputs[0], outputs[2]);

  install_interrupt_handler();
  std::raise(SIGINT);
  ASSERT_TRUE(interrupted());
  const std::string out = temp_dir() + "/tiny_cancelled.gguf";
  Progress::Options quiet;
  quiet.quiet = true;
  Expected<GgufWriteResult> r = write_gguf_model(*in, *plan, o, out, quiet);
  reset_interrupted();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.status().code(), ErrorCode::cancelled);
  EXPECT_FALSE(fs::exists(out));
  for (const auto& e : fs::directory_iterator(temp_dir()))
    EXPECT_EQ(e.path().filename().string().find("tiny_cancelled.gguf.tmp"), std::string::npos) << e.path();
}

// ---- HF architectures (hf-goldens): llama untied, mistral, qwen2 with biases -----------------------

// Converts an hf-golden to F32 without a vocabulary and checks names, metadata and which rows were
// permuted: llama and mistral q/k are, qwen2 (NEOX RoPE in llama.cpp) is not.
TEST(GgufConvert, HfGoldenArchitecturesConvertWithTheirNamesKeysAndPermutation) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens");
  struct Case {
    const char* dir;
    const char* arch;
    bool permuted;
    bool output;
    bool biases;
  };
  for (const Case& c : {Case{"llama-gqa-untied", "llama", true, true, false}, Case{"llama-tied", "llama", true, false, false},
                        Case{"mistral", "llama", true, true, false}, Case{"qwen2-bias", "qwen2", false, false, true}}) {
    SCOPED_TRACE(c.dir);
    const std::string model = shared_dir() + "/models/hf-goldens/" + c.dir;
    Expected<GgufModelInput> missing = GgufModelInput::open(model);
    ASSERT_FALSE(missing.has_value());  // no tokenizer.model: asks for --tokenizer or --no-vocab
    EXPECT_NE(missing.status().message().find("--no-vocab"), std::string::npos) << missing.status().message();
    GgufModelInputOptions io;
    io.no_vocab = true;
    Expected<GgufModelInput> in = GgufModelInput::open(model, io);
    ASSERT_TRUE(in.has_value()) << in.status().message();
    EXPECT_EQ(in->gguf_architecture(), c.arch);
    EXPECT_EQ(in->tied_embeddings(), !c.output);
    GgufQuantizeOptions o = options_for("F32");
    Expected<GgufQuantizePlan> plan = plan_gguf_quantization(*in, o);
    ASSERT_TRUE(plan.has_value()) << plan.status().message();
    GgufFile f = write_and_open(*in, *plan, o, temp_dir() + "/" + c.dir + ".gguf");
    const std::string a = std::string(c.arch) + ".";
    EXPECT_EQ(*f.get_string("general.architecture"), c.arch);
    EXPECT_EQ(*f.get_u32(a + "block_count"), 2u);
    EXPECT_EQ(*f.get_u32(a + "embedding_length"), 64u);
    EXPECT_EQ(*f.get_u32(a + "context_length"), 128u);
    EXPECT_EQ(*f.get_string("tokenizer.ggml.model"), "none");
    EXPECT_EQ(f.find_tensor("output.weight") != nullptr, c.output);
    EXPECT_EQ(f.find_tensor("blk.1.attn_q.bias") != nullptr, c.biases);
    EXPECT_EQ(f.find_tensor("blk.1.attn_k.bias") != nullptr, c.biases);
    EXPECT_EQ(f.find_tensor("blk.1.attn_v.bias") != nullptr, c.biases);
    Expected<SafetensorsCheckpoint> ck = SafetensorsCheckpoint::open(model);
    ASSERT_TRUE(ck.has_value());
    for (const char* hf_name : {"model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight"}) {
      Expected<Tensor> hf = ck->tensor(hf_name)->to_f32();
      const std::string g = std::string("blk.1.attn_") + (std::strstr(hf_name, "q_proj") ? "q" : "k") + ".weight";
      Expected<Tensor> gt = f.tensor(g);
      ASSERT_TRUE(gt.has_value()) << g;
      const bool same = std::memcmp(gt->data(), hf->data(), hf->nbytes()) == 0;
      EXPECT_EQ(same, !c.permuted) << g;
    }
    if (c.biases) {  // qwen2 biases are copied as they are
      Expected<Tensor> hf = ck->tensor("model.layers.1.self_attn.q_proj.bias")->to_f32();
      Expected<Tensor> gt = f.tensor("blk.1.attn_q.bias");
      ASSERT_TRUE(gt.has_value());
      EXPECT_EQ(std::memcmp(gt->data(), hf->data(), hf->nbytes()), 0);
    }
  }
}

// ---- CLI on the shared models ------------------------------------------------------------------

// Whole-model quantization of ref-llama-18m/25m takes tens of seconds per preset in a Release
// build; under ASan/UBSan it would dominate the CI budget, so those tests run in Release only
// (QFORGE_SKIP_UNDER_SANITIZERS, test_support.h).
json inspect_json(const std::string& path) {
  std::string out;
  const int rc = run_command(quote(cli_path()) + " inspect --json " + quote(path) + " 2>/dev/null", &out);
  EXPECT_EQ(rc, 0) << out;
  json j = json::parse(out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << out.substr(0, 2000);
  return j;
}

std::map<std::string, std::string> tensor_types(const json& report) {
  std::map<std::string, std::string> m;
  for (const auto& t : report["tensors"]) m[t["name"].get<std::string>()] = t["dtype"].get<std::string>();
  return m;
}

// The llama.cpp names of a llama model with `layers` blocks (tied: no output.weight).
std::set<std::string> llama_tensor_names(int layers, bool tied) {
  std::set<std::string> s = {"token_embd.weight", "output_norm.weight"};
  if (!tied) s.insert("output.weight");
  for (int l = 0; l < layers; ++l)
    for (const char* t : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                          "ffn_down"})
      s.insert("blk." + std::to_string(l) + "." + t + ".weight");
  return s;
}

void expect_llama_metadata(const json& md, int64_t layers, int64_t ctx, int64_t embd, int64_t ffn, int64_t heads,
                           int64_t kv_heads, int64_t vocab, uint32_t file_type) {
  const char* keys[] = {"general.architecture",
                        "general.name",
                        "general.file_type",
                        "general.quantization_version",
                        "general.quantized_by",
                        "llama.block_count",
                        "llama.context_length",
                        "llama.embedding_length",
                        "llama.feed_forward_length",
                        "llama.attention.head_count",
                        "llama.attention.head_count_kv",
                        "llama.rope.freq_base",
                        "llama.attention.layer_norm_rms_epsilon",
                        "llama.rope.dimension_count",
                        "llama.vocab_size",
                        "tokenizer.ggml.model",
                        "tokenizer.ggml.tokens",
                        "tokenizer.ggml.scores",
                        "tokenizer.ggml.token_type",
                        "tokenizer.ggml.bos_token_id",
                        "tokenizer.ggml.eos_token_id",
                        "tokenizer.ggml.unknown_token_id",
                        "tokenizer.ggml.add_bos_token",
                        "qforge.version",
                        "qforge.preset",
                        "qforge.tensor_type_overrides",
                        "qforge.fallbacks"};
  for (const char* k : keys) EXPECT_TRUE(md.contains(k)) << "missing metadata key " << k;
  EXPECT_EQ(md.value("general.architecture", ""), "llama");
  EXPECT_EQ(md.value("general.file_type", int64_t{-1}), static_cast<int64_t>(file_type));
  EXPECT_EQ(md.value("general.quantized_by", ""), "qforge");
  EXPECT_EQ(md.value("llama.block_count", -1), layers);
  EXPECT_EQ(md.value("llama.context_length", -1), ctx);
  EXPECT_EQ(md.value("llama.embedding_length", -1), embd);
  EXPECT_EQ(md.value("llama.feed_forward_length", -1), ffn);
  EXPECT_EQ(md.value("llama.attention.head_count", -1), heads);
  EXPECT_EQ(md.value("llama.attention.head_count_kv", -1), kv_heads);
  EXPECT_EQ(md.value("llama.rope.dimension_count", -1), embd / heads);
  EXPECT_EQ(md.value("llama.vocab_size", -1), vocab);
  EXPECT_EQ(md.value("llama.rope.freq_base", 0.0), 10000.0);
  EXPECT_NEAR(md.value("llama.attention.layer_norm_rms_epsilon", 0.0), 1e-5, 1e-12);
  EXPECT_EQ(md.value("tokenizer.ggml.model", ""), "llama");
  EXPECT_EQ(md["tokenizer.ggml.tokens"].value("count", 0), vocab);
  EXPECT_EQ(md["tokenizer.ggml.scores"].value("count", 0), vocab);
  EXPECT_EQ(md["tokenizer.ggml.token_type"].value("count", 0), vocab);
  EXPECT_EQ(md.value("tokenizer.ggml.bos_token_id", -1), 1);
  EXPECT_EQ(md.value("tokenizer.ggml.eos_token_id", -1), 2);
  EXPECT_EQ(md.value("tokenizer.ggml.unknown_token_id", -1), 0);
  EXPECT_EQ(md.value("tokenizer.ggml.add_bos_token", false), true);
}

TEST(GgufCli, ConvertAndQuantizeRefLlama18mQ4KM) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-18m");
  QFORGE_SKIP_UNDER_SANITIZERS("quantizes a whole model");
  const std::string model = shared_dir() + "/models/ref-llama-18m";
  const std::string dir = temp_dir();
  const std::string f16 = dir + "/18m-f16.gguf", q4 = dir + "/18m-q4km.gguf";
  std::string out;
  ASSERT_EQ(run_command(quote(cli_path()) + " convert " + quote(model) + " --out " + quote(f16) + " 2>&1", &out), 0)
      << out;
  EXPECT_NE(out.find("preflight"), std::string::npos) << out;
  ASSERT_EQ(run_command(quote(cli_path()) + " quantize " + quote(f16) + " --format gguf --type Q4_K_M --out " +
                            quote(q4) + " 2>&1",
                        &out),
            0)
      << out;
  EXPECT_NE(out.find("fallbacks: none"), std::string::npos) << out;

  const std::set<std::string> names = llama_tensor_names(12, /*tied=*/true);
  for (const auto& [path, ftype] : {std::pair{f16, 1u}, std::pair{q4, 15u}}) {
    const json r = inspect_json(path);
    expect_llama_metadata(r["gguf_metadata"], 12, 1024, 256, 768, 4, 2, 32000, ftype);
    const auto types = tensor_types(r);
    std::set<std::string> got;
    for (const auto& [n, t] : types) got.insert(n);
    EXPECT_EQ(got, names);
  }
  // Q4_K_M on 12 layers: attn_v and ffn_down Q6_K in use_more_bits layers {0, 3, 6, 9, 10, 11},
  // the tied token embedding Q6_K (output head), other weights Q4_K, norms F32.
  const auto types = tensor_types(inspect_json(q4));
  const std::set<int> more = {0, 3, 6, 9, 10, 11};
  for (const auto& [n, t] : types) {
    std::string want = "Q4_K";
    if (n.find("_norm.") != std::string::npos) want = "F32";
    if (n == "token_embd.weight") want = "Q6_K";
    for (int l = 0; l < 12; ++l)
      if (more.count(l) && (n == "blk." + std::to_string(l) + ".attn_v.weight" ||
                            n == "blk." + std::to_string(l) + ".ffn_down.weight"))
        want = "Q6_K";
    EXPECT_EQ(t, want) << n;
  }
  // inspect's text output prints the metadata and the tensor table.
  ASSERT_EQ(run_command(quote(cli_path()) + " inspect " + quote(q4) + " 2>&1", &out), 0) << out;
  for (const char* s : {"general.file_type = 15", "qforge.preset = \"Q4_K_M\"", "blk.11.ffn_down.weight", "Q6_K",
                        "tokenizer.ggml.tokens = [string x 32000"})
    EXPECT_NE(out.find(s), std::string::npos) << "inspect output lacks '" << s << "':\n" << out.substr(0, 3000);
}

TEST(GgufCli, QuantizingTheHfDirectoryEqualsQuantizingItsF32ConversionForAnyThreadCount) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-18m");
  QFORGE_SKIP_UNDER_SANITIZERS("quantizes a whole model");
  const std::string model = shared_dir() + "/models/ref-llama-18m";
  const std::string dir = temp_dir();
  const std::string f32 = dir + "/18m-f32.gguf", a = dir + "/18m-a.gguf", b = dir + "/18m-b.gguf";
  std::string out;
  ASSERT_EQ(run_command(quote(cli_path()) + " convert " + quote(model) + " --type f32 --out " + quote(f32) + " 2>&1", &out), 0)
      << out;
  ASSERT_EQ(run_command(quote(cli_path()) + " quantize " + quote(model) + " --format gguf --type Q8_0 -j 1 --out " +
                            quote(a) + " 2>&1",
                        &out),
            0)
      << out;
  ASSERT_EQ(run_command(quote(cli_path()) + " quantize " + quote(f32) + " --format gguf --type Q8_0 -j 2 --out " +
                            quote(b) + " 2>&1",
                        &out),
            0)
      << out;
  EXPECT_EQ(*sha256_file(a), *sha256_file(b));
}

// Dequantizing the F32 GGUF and undoing the permutation gives back the HF weights exactly.
TEST(GgufCli, F32ConversionOfRefLlama18mReproducesTheHfWeightsExactly) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-18m");
  const std::string model = shared_dir() + "/models/ref-llama-18m";
  const std::string f32 = temp_dir() + "/18m-exact.gguf";
  std::string out;
  ASSERT_EQ(run_command(quote(cli_path()) + " convert " + quote(model) + " --type f32 --out " + quote(f32) + " 2>&1", &out), 0)
      << out;
  Expected<GgufFile> g = GgufFile::open(f32);
  ASSERT_TRUE(g.has_value()) << g.status().message();
  Expected<SafetensorsCheckpoint> ck = SafetensorsCheckpoint::open(model);
  ASSERT_TRUE(ck.has_value());
  Expected<ModelConfig> cfg = load_model_config(model);
  ASSERT_TRUE(cfg.has_value());
  int compared = 0;
  for (const std::string& name : ck->tensor_names()) {
    Expected<ResolvedTensor> r = resolve_tensor_role(Architecture::llama, name);
    ASSERT_TRUE(r.has_value());
    Expected<std::string> gname = tensor_name_for_role(Architecture::llama, r->role, r->layer, r->is_bias, TensorNaming::gguf);
    ASSERT_TRUE(gname.has_value());
    Expected<Tensor> gt = g->tensor(*gname);
    ASSERT_TRUE(gt.has_value()) << *gname;
    ASSERT_EQ(gt->dtype(), DType::f32) << *gname;
    Expected<Tensor> hf = ck->tensor(name)->to_f32();
    ASSERT_EQ(gt->shape(), hf->shape()) << *gname;
    const int64_t rows = hf->dim(0), cols = hf->ndim() == 2 ? hf->dim(1) : 1;
    std::vector<float> back(static_cast<size_t>(hf->numel()));
    const int64_t heads = r->role == TensorRole::attn_q ? cfg->num_heads : r->role == TensorRole::attn_k ? cfg->num_kv_heads : 0;
    if (heads > 0)
      unpermute_qk_rows(gt->data_as<float>(), rows, cols, heads, back.data());
    else
      std::memcpy(back.data(), gt->data(), back.size() * 4);
    EXPECT_EQ(std::memcmp(back.data(), hf->data(), back.size() * 4), 0) << *gname;
    if (heads > 0) {  // and the permutation did move rows
      EXPECT_NE(std::memcmp(gt->data(), hf->data(), back.size() * 4), 0) << *gname;
    }
    ++compared;
  }
  EXPECT_EQ(compared, 2 + 9 * 12);
}

TEST(GgufCli, Stories260kConvertsWithItsTokenizerAndQuantizesWithAllowedFallbacks) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const std::string dir = shared_dir() + "/models/stories260K";
  const std::string f16 = temp_dir() + "/stories-f16.gguf", q4 = temp_dir() + "/stories-q4km.gguf";
  const std::string f32 = temp_dir() + "/stories-f32.gguf";
  std::string out;
  ASSERT_EQ(run_command(quote(cli_path()) + " convert " + quote(dir + "/stories260K.bin") + " --tokenizer " +
                            quote(dir + "/tok512.bin") + " --out " + quote(f16) + " 2>&1",
                        &out),
            0)
      << out;
  // dim 64 and hidden 172 fit no K-quant block: Q4_K_M stops at the preflight ...
  EXPECT_NE(run_command(quote(cli_path()) + " quantize " + quote(f16) + " --format gguf --type Q4_K_M --out " +
                            quote(q4) + " 2>&1",
                        &out),
            0);
  EXPECT_NE(out.find("would fall back"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(q4));
  // ... and goes through with --allow-fallback, recording what fell back.
  ASSERT_EQ(run_command(quote(cli_path()) + " quantize " + quote(f16) + " --format gguf --type Q4_K_M --allow-fallback --out " +
                            quote(q4) + " 2>&1",
                        &out),
            0)
      << out;
  for (const auto& [path, ftype] : {std::pair{f16, 1u}, std::pair{q4, 15u}}) {
    const json r = inspect_json(path);
    const json& md = r["gguf_metadata"];
    expect_llama_metadata(md, 5, 512, 64, 172, 8, 4, 512, ftype);
    EXPECT_EQ(md["tokenizer.ggml.tokens"]["first"][1].get<std::string>(), "<s>");
    std::set<std::string> got;
    for (const auto& [n, t] : tensor_types(r)) got.insert(n);
    EXPECT_EQ(got, llama_tensor_names(5, /*tied=*/true));
  }
  const json r = inspect_json(q4);
  const auto types = tensor_types(r);
  EXPECT_EQ(types.at("blk.0.attn_q.weight"), "Q5_0");      // Q4_K -> Q5_0 (64 columns)
  EXPECT_EQ(types.at("blk.0.ffn_down.weight"), "F16");     // 172 columns: not even Q5_0's 32
  EXPECT_EQ(types.at("token_embd.weight"), "Q8_0");        // output-head rule for 64 columns
  EXPECT_EQ(r["gguf_metadata"]["qforge.fallbacks"].size(), 7u * 5);

  // llama2.c weights are stored as they are (no permutation): the F32 file holds them exactly.
  ASSERT_EQ(run_command(quote(cli_path()) + " convert " + quote(dir + "/stories260K.bin") + " --tokenizer " +
                            quote(dir + "/tok512.bin") + " --type f32 --out " + quote(f32) + " 2>&1",
                        &out),
            0)
      << out;
  Expected<Llama2cCheckpoint> ck = read_llama2c(dir + "/stories260K.bin");
  ASSERT_TRUE(ck.has_value());
  Expected<GgufFile> g = GgufFile::open(f32);
  ASSERT_TRUE(g.has_value());
  for (const std::string& name : ck->tensors->tensor_names()) {
    Expected<ResolvedTensor> rr = resolve_tensor_role(Architecture::llama2c, name);
    Expected<std::string> gname = tensor_name_for_role(Architecture::llama2c, rr->role, rr->layer, rr->is_bias, TensorNaming::gguf);
    Expected<Tensor> a = ck->tensors->tensor(name);
    Expected<Tensor> b = g->tensor(*gname);
    ASSERT_TRUE(b.has_value()) << *gname;
    ASSERT_EQ(a->shape(), b->shape());
    EXPECT_EQ(std::memcmp(a->data(), b->data(), a->nbytes()), 0) << *gname;
  }
}

TEST(GgufCli, RefLlama25mQ4KMStopsAtThePreflightUnlessFallbacksAreAllowed) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m");
  QFORGE_SKIP_UNDER_SANITIZERS("quantizes a whole model");
  const std::string model = shared_dir() + "/models/ref-llama-25m";
  const std::string q4 = temp_dir() + "/25m-q4km.gguf";
  std::string out;
  const std::string base = quote(cli_path()) + " quantize " + quote(model) + " --format gguf --type Q4_K_M --out " + quote(q4);
  EXPECT_EQ(run_command(base + " 2>&1", &out), 1);
  EXPECT_NE(out.find("stopped at the preflight"), std::string::npos) << out;
  EXPECT_NE(out.find("blk.0.attn_q.weight: Q4_K -> Q5_0 (384 columns are not a multiple of Q4_K's 256)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("blk.0.attn_v.weight: Q6_K -> Q8_0"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(q4));
  ASSERT_EQ(run_command(base + " --allow-fallback 2>&1", &out), 0) << out;
  EXPECT_NE(out.find("fallbacks: "), std::string::npos);
  EXPECT_NE(out.find("allowed by --allow-fallback"), std::string::npos) << out;
  const json r = inspect_json(q4);
  const json& fb = r["gguf_metadata"]["qforge.fallbacks"];
  // Every 2-D weight of the 8 layers has 384 input columns except ffn_down (1024, fits Q4_K);
  // ffn_down of use_more_bits layers wants Q6_K, which fits too.
  EXPECT_EQ(fb.size(), 6u * 8) << fb.dump();
  const auto types = tensor_types(r);
  EXPECT_EQ(types.at("blk.0.attn_q.weight"), "Q5_0");
  EXPECT_EQ(types.at("blk.0.attn_v.weight"), "Q8_0");  // Q6_K (use_more_bits layer 0) -> Q8_0
  EXPECT_EQ(types.at("blk.1.attn_v.weight"), "Q5_0");
  EXPECT_EQ(types.at("blk.1.ffn_down.weight"), "Q4_K");
  EXPECT_EQ(types.at("token_embd.weight"), "Q8_0");
}

TEST(GgufCli, BadInputsFailWithMessagesNamingTheProblem) {
  TinyModel m;
  m.hidden = 256;
  m.ffn = 256;
  const std::string in = write_tiny_model(temp_dir() + "/tiny_cli.gguf", m);
  const std::string out_path = temp_dir() + "/tiny_cli_out.gguf";
  const std::string base = quote(cli_path()) + " quantize " + quote(in) + " --format gguf --out " + quote(out_path);
  const std::string types_file = temp_dir() + "/types.txt";
  {
    std::ofstream f(types_file);
    f << "# overrides\n\nattn_v=Q8_0\nffn_up Q4_K\n";
  }
  const std::string quantized = temp_dir() + "/tiny_cli_q4.gguf";
  std::string out;
  ASSERT_EQ(run_command(quote(cli_path()) + " quantize " + quote(in) + " --format gguf --type Q4_K_M --out " +
                            quote(quantized) + " 2>&1",
                        &out),
            0)
      << out;
  struct Case {
    std::string args, expect;
  };
  const Case cases[] = {
      {"--type Q9_K", "unknown GGUF preset 'Q9_K'"},
      {"--type Q4_K_M --tensor-type '([=Q8_0'", "not a valid regular expression"},
      {"--type Q4_K_M --tensor-type attn_v=Q9_9", "unknown or unsupported tensor type 'Q9_9'"},
      {"--type Q4_K_M --tensor-type attn_v", "is not REGEX=TYPE"},
      {"--type Q4_K_M --tensor-type-file " + quote(types_file), types_file + ":4"},
      {"--type Q4_K_M --output-tensor-type Q8_K", "activation type"},
      {"--type Q4_K_M --scheme int4-g128-asym", "--scheme applies to --format packed"},
      {"", "--format gguf needs --type"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(run_command(base + " " + c.args + " 2>&1", &out), 1) << c.args << "\n" << out;
    EXPECT_NE(out.find(c.expect), std::string::npos) << c.args << "\n" << out;
    EXPECT_FALSE(fs::exists(out_path)) << c.args;
  }
  // Requantizing a quantized file needs --allow-requantize (then warns).
  const std::string rq = quote(cli_path()) + " quantize " + quote(quantized) + " --format gguf --type Q4_0 --out " +
                         quote(out_path);
  EXPECT_EQ(run_command(rq + " 2>&1", &out), 1) << out;
  EXPECT_NE(out.find("already quantized"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(out_path));
  EXPECT_EQ(run_command(rq + " --allow-requantize 2>&1", &out), 0) << out;
  EXPECT_NE(out.find("warning"), std::string::npos) << out;
  // packed-format options stay where they were.
  EXPECT_EQ(run_command(quote(cli_path()) + " quantize " + quote(in) + " --out x.safetensors --type Q4_K_M 2>&1", &out), 1);
  EXPECT_NE(out.find("--type applies to --format gguf"), std::string::npos) << out;
}


// End to end: `qforge convert` output runs in qforge's engine (which undoes nothing by name: it
// applies interleaved RoPE to the permuted rows, as llama.cpp does) and reproduces the PyTorch
// golden logits of ref-llama-25m, so the permutation, the metadata-derived config and the
// tensor names all agree with the HF model.
TEST(GgufCli, ConvertedRefLlama25mReproducesTheGoldenLogits) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m");
  const std::string model = shared_dir() + "/models/ref-llama-25m";
  const std::string f32 = temp_dir() + "/25m-golden.gguf";
  std::string out;
  ASSERT_EQ(run_command(quote(cli_path()) + " convert " + quote(model) + " --type f32 --out " + quote(f32) + " 2>&1", &out), 0)
      << out;
  Expected<Model> m = Model::load(f32);
  ASSERT_TRUE(m.has_value()) << m.status().message();
  Expected<SafetensorsFile> golden = SafetensorsFile::open(model + "/golden_logits.safetensors");
  ASSERT_TRUE(golden.has_value()) << golden.status().message();
  Expected<Tensor> ids_t = golden->tensor("input_ids");
  ASSERT_TRUE(ids_t.has_value());
  ASSERT_EQ(ids_t->dtype(), DType::i32);
  Tensor ids32 = ids_t->contiguous();
  Expected<Tensor> ref = golden->tensor("logits");
  ASSERT_TRUE(ref.has_value());
  Expected<Tensor> ref32 = ref->contiguous().to_f32();
  ASSERT_TRUE(ref32.has_value());
  Expected<Tensor> logits = m->forward_batch(ids32.data_as<int32_t>(), ids32.dim(0), ids32.dim(1));
  ASSERT_TRUE(logits.has_value()) << logits.status().message();
  ASSERT_EQ(logits->numel(), ref32->numel());
  const double err = test::relative_l2_error(logits->data_as<float>(), ref32->data_as<float>(), logits->numel());
  const double allowed = 1e-4;
  EXPECT_LE(err, allowed) << "relative error of the converted GGUF's logits " << err << ", allowed " << allowed;
}

}  // namespace
}  // namespace qforge
