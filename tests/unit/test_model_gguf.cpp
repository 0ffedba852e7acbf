// Loading models from GGUF: HF goldens written as GGUF the way llama.cpp's converter writes them
// (llama Q/K rows permuted for its RoPE, qwen2 not), run against the transformers logits; block-
// quantized tensors dequantized at load; and the errors for unsupported files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "qforge/format.h"
#include "qforge/gguf.h"
#include "qforge/model.h"
#include "qforge/safetensors.h"
#include "model_test_support.h"
#include "test_support.h"

namespace qforge {
namespace {

using test::relative_l2_error;

// llama.cpp convert_hf_to_gguf.py LlamaModel.permute: within each head, row 2i <- row i and
// row 2i+1 <- row i + head_dim/2 (weights [heads * head_dim, in], biases [heads * head_dim]).
std::vector<float> permute_rows(const float* w, int64_t heads, int64_t head_dim, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(heads * head_dim * cols));
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const float* src = w + (h * head_dim + j * half + i) * cols;
        std::copy(src, src + cols, out.begin() + (h * head_dim + 2 * i + j) * cols);
      }
  return out;
}

struct GgufBuild {
  std::vector<std::vector<uint8_t>> buffers;  // kept alive until finish()
};

// Writes an HF checkpoint as GGUF (F32 tensors, or `block` for 2-D linear weights whose width
// allows it). Returns the written path.
std::string hf_to_gguf(const std::string& dir, const std::string& out, const FormatTraits* block = nullptr,
                       std::map<std::string, std::vector<float>>* dequantized = nullptr) {
  ModelConfig c = load_model_config(dir + "/config.json").value();
  SafetensorsCheckpoint ck = SafetensorsCheckpoint::open(dir).value();
  const bool llama = c.arch == Architecture::llama;
  const std::string a = llama ? "llama" : "qwen2";
  GgufWriter w(out);
  EXPECT_TRUE(w.set_string("general.architecture", a).is_ok());
  EXPECT_TRUE(w.set_u32(a + ".block_count", static_cast<uint32_t>(c.num_layers)).is_ok());
  EXPECT_TRUE(w.set_u32(a + ".context_length", static_cast<uint32_t>(c.max_positions)).is_ok());
  EXPECT_TRUE(w.set_u32(a + ".embedding_length", static_cast<uint32_t>(c.hidden_size)).is_ok());
  EXPECT_TRUE(w.set_u32(a + ".feed_forward_length", static_cast<uint32_t>(c.intermediate_size)).is_ok());
  EXPECT_TRUE(w.set_u32(a + ".attention.head_count", static_cast<uint32_t>(c.num_heads)).is_ok());
  EXPECT_TRUE(w.set_u32(a + ".attention.head_count_kv", static_cast<uint32_t>(c.num_kv_heads)).is_ok());
  EXPECT_TRUE(w.set_u32(a + ".attention.key_length", static_cast<uint32_t>(c.head_dim)).is_ok());
  EXPECT_TRUE(w.set_u32(a + ".rope.dimension_count", static_cast<uint32_t>(c.head_dim)).is_ok());
  EXPECT_TRUE(w.set_f32(a + ".rope.freq_base", static_cast<float>(c.rope_theta)).is_ok());
  EXPECT_TRUE(w.set_f32(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(c.norm_eps)).is_ok());
  EXPECT_TRUE(w.set_u32("tokenizer.ggml.bos_token_id", 1).is_ok());
  EXPECT_TRUE(w.set_u32("tokenizer.ggml.eos_token_id", 2).is_ok());
  static GgufBuild keep;  // the writer references the bytes until finish()
  keep.buffers.clear();
  for (const std::string& name : ck.tensor_names()) {
    ResolvedTensor r = resolve_tensor_role(c.arch, name).value();
    if (r.role == TensorRole::buffer) continue;
    if (r.role == TensorRole::output && c.tie_word_embeddings) continue;
    const std::string gname = tensor_name_for_role(c.arch, r.role, r.layer, r.is_bias, TensorNaming::gguf).value();
    Tensor t = ck.tensor(name).value().to_f32().value();
    std::vector<float> v(t.data_as<float>(), t.data_as<float>() + t.numel());
    const int64_t cols = t.ndim() == 2 ? t.dim(1) : 1;
    if (llama && (r.role == TensorRole::attn_q || r.role == TensorRole::attn_k)) {
      const int64_t heads = r.role == TensorRole::attn_q ? c.num_heads : c.num_kv_heads;
      v = permute_rows(v.data(), heads, c.head_dim, cols);
    }
    const bool quantize = block != nullptr && !r.is_bias && is_linear_weight(r.role) && cols % block->block == 0;
    if (quantize) {
      Scheme s;
      s.format = block->id;
      s.bits = block->min_bits;
      s.granularity = block->default_granularity;
      s.group_size = block->block;
      QuantizedTensor q = qforge::quantize(s, v.data(), t.dim(0), cols).value();
      std::vector<float> back(v.size());
      EXPECT_TRUE(dequantize(q, back.data()).is_ok());
      if (dequantized) (*dequantized)[gname] = back;
      keep.buffers.push_back(q.codes);
      EXPECT_TRUE(w.add_tensor(gname, static_cast<GgmlType>(block->gguf_type), t.shape(), keep.buffers.back().data(),
                               keep.buffers.back().size())
                      .is_ok());
    } else {
      if (dequantized) (*dequantized)[gname] = v;
      std::vector<uint8_t> bytes(v.size() * sizeof(float));
      std::memcpy(bytes.data(), v.data(), bytes.size());
      keep.buffers.push_back(std::move(bytes));
      EXPECT_TRUE(w.add_tensor(gname, GgmlType::F32, t.shape(), keep.buffers.back().data(), keep.buffers.back().size())
                      .is_ok());
    }
  }
  Status st = w.finish();
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  return out;
}

TEST(ModelGguf, HfGoldensThroughGgufMatchTransformers) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens");
  const std::string tmp = test::temp_dir();
  for (const char* arch : {"llama-gqa-untied", "llama-tied", "qwen2-bias"}) {
    SCOPED_TRACE(arch);
    const std::string dir = test::shared_dir() + "/models/hf-goldens/" + arch;
    const std::string path = hf_to_gguf(dir, tmp + "/" + arch + ".gguf");
    EXPECT_EQ(detect_model_file(path).value(), ModelFileKind::gguf);
    auto model = Model::load(path);
    ASSERT_TRUE(model.has_value()) << model.status().to_string();
    const ModelConfig& c = model->config();
    EXPECT_EQ(c.rope, std::string(arch).rfind("llama", 0) == 0 ? RopeStyle::interleaved : RopeStyle::half_split);
    // Tied exactly when the HF checkpoint is (the converter then writes no output.weight).
    EXPECT_EQ(c.tie_word_embeddings, load_model_config(dir + "/config.json").value().tie_word_embeddings);
    EXPECT_EQ(c.bos_token_id, 1);
    SafetensorsFile golden = SafetensorsFile::open(dir + "/golden.safetensors").value();
    Tensor ids = golden.tensor("input_ids").value().contiguous();
    Tensor ref = golden.tensor("logits").value().to_f32().value();
    auto logits = model->forward_batch(ids.data_as<int32_t>(), ids.dim(0), ids.dim(1));
    ASSERT_TRUE(logits.has_value()) << logits.status().to_string();
    ASSERT_EQ(logits->numel(), ref.numel());
    const double err = relative_l2_error(logits->data_as<float>(), ref.data_as<float>(), ref.numel());
    std::printf("  %-18s GGUF relative error %.3g (allowed 1e-5)\n", arch, err);
    EXPECT_LE(err, 1e-5);
  }
}

// A GGUF block format from the format table, when one can be applied to the golden's widths.
const FormatTraits* gguf_block_format(int64_t width) {
  for (const FormatTraits& f : all_formats())
    if (f.blocks_in_codes && f.gguf_type >= 0 && f.block > 0 && width % f.block == 0 && f.min_bits == 8) return &f;
  for (const FormatTraits& f : all_formats())
    if (f.blocks_in_codes && f.gguf_type >= 0 && f.block > 0 && width % f.block == 0) return &f;
  return nullptr;
}

TEST(ModelGguf, BlockQuantizedTensorsAreDequantizedAtLoad) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens/llama-gqa-untied");
  const std::string dir = test::shared_dir() + "/models/hf-goldens/llama-gqa-untied";
  const FormatTraits* block = gguf_block_format(64);
  if (block == nullptr) GTEST_SKIP() << "the format table has no GGUF block format yet (GGUF block formats land with the K-quants)";
  std::map<std::string, std::vector<float>> expected;
  const std::string path = hf_to_gguf(dir, test::temp_dir() + "/q.gguf", block, &expected);
  auto model = Model::load(path);
  ASSERT_TRUE(model.has_value()) << model.status().to_string();
  // The same weights, dequantized here and loaded as plain tensors.
  GgufFile file = GgufFile::open(path).value();
  ModelConfig c = gguf_model_config(file).value();
  test::MapTensorSource src("dequantized");
  for (const GgufTensorInfo& info : file.tensors()) src.tensors[info.name] = Tensor::from_f32(info.shape, expected.at(info.name));
  Model plain = Model::from_tensors(c, src, TensorNaming::gguf).value();
  const int32_t ids[6] = {1, 17, 300, 5, 99, 411};
  Tensor a = model->forward_batch(ids, 1, 6).value(), b = plain.forward_batch(ids, 1, 6).value();
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << block->name;
  int quantized = 0;
  for (const GgufTensorInfo& info : file.tensors()) quantized += info.type == static_cast<GgmlType>(block->gguf_type);
  EXPECT_GT(quantized, 0);
}

// A minimal llama GGUF (hidden 256 so block types fit). attn_q gets `q_type` with zero bytes, or,
// with `block`, every linear weight is quantized with that format-table row (`dequantized` then
// receives each tensor's f32 values as the loader should see them).
std::vector<uint8_t> tiny_gguf(const std::string& arch, GgmlType q_type, bool with_block_count = true,
                               const FormatTraits* block = nullptr,
                               std::map<std::string, std::vector<float>>* dequantized = nullptr) {
  GgufWriter w("unused");
  EXPECT_TRUE(w.set_string("general.architecture", arch).is_ok());
  if (with_block_count) {
    EXPECT_TRUE(w.set_u32(arch + ".block_count", 1).is_ok());
  }
  EXPECT_TRUE(w.set_u32(arch + ".embedding_length", 256).is_ok());
  EXPECT_TRUE(w.set_u32(arch + ".feed_forward_length", 256).is_ok());
  EXPECT_TRUE(w.set_u32(arch + ".attention.head_count", 2).is_ok());
  EXPECT_TRUE(w.set_f32(arch + ".attention.layer_norm_rms_epsilon", 1e-5f).is_ok());
  static std::vector<std::vector<uint8_t>> keep;
  keep.clear();
  keep.reserve(16);
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 0.05f);
  auto add = [&](const std::string& name, Shape shape, GgmlType type) {
    const bool linear = shape.size() == 2 && name != "token_embd.weight";
    std::vector<float> values(static_cast<size_t>(shape_numel(shape)));
    for (auto& v : values) v = name.find("norm") != std::string::npos ? 1.0f : d(rng);
    if (block != nullptr && linear) {
      Scheme s;
      s.format = block->id;
      s.bits = block->min_bits;
      s.granularity = block->default_granularity;
      s.group_size = block->block;
      auto q = qforge::quantize(s, values.data(), shape[0], shape[1]);
      EXPECT_TRUE(q.has_value()) << block->name << ": " << q.status().to_string();
      if (!q.has_value()) return;
      EXPECT_TRUE(dequantize(*q, values.data()).is_ok());
      keep.push_back(q->codes);
      type = static_cast<GgmlType>(block->gguf_type);
    } else {
      std::vector<int64_t> ne(shape.rbegin(), shape.rend());
      const uint64_t bytes = ggml_tensor_nbytes(type, ne).value();
      std::vector<uint8_t> data(bytes, 0);
      if (type == GgmlType::F32) std::memcpy(data.data(), values.data(), bytes);
      keep.push_back(std::move(data));
    }
    if (dequantized) (*dequantized)[name] = values;
    EXPECT_TRUE(w.add_tensor(name, type, shape, keep.back().data(), keep.back().size()).is_ok());
  };
  add("token_embd.weight", {8, 256}, GgmlType::F32);
  add("blk.0.attn_norm.weight", {256}, GgmlType::F32);
  add("blk.0.attn_q.weight", {256, 256}, q_type);
  add("blk.0.attn_k.weight", {256, 256}, GgmlType::F32);
  add("blk.0.attn_v.weight", {256, 256}, GgmlType::F32);
  add("blk.0.attn_output.weight", {256, 256}, GgmlType::F32);
  add("blk.0.ffn_norm.weight", {256}, GgmlType::F32);
  add("blk.0.ffn_gate.weight", {256, 256}, GgmlType::F32);
  add("blk.0.ffn_up.weight", {256, 256}, GgmlType::F32);
  add("blk.0.ffn_down.weight", {256, 256}, GgmlType::F32);
  add("output_norm.weight", {256}, GgmlType::F32);
  return w.to_bytes().value();
}

std::string write_bytes(const std::vector<uint8_t>& bytes, const std::string& name) {
  const std::string path = test::temp_dir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  return path;
}

TEST(ModelGguf, TinyF32ModelLoadsAndRuns) {
  const std::string path = write_bytes(tiny_gguf("llama", GgmlType::F32), "tiny.gguf");
  auto model = Model::load(path);
  ASSERT_TRUE(model.has_value()) << model.status().to_string();
  EXPECT_EQ(model->config().vocab_size, 8);
  EXPECT_EQ(model->config().head_dim, 128);
  EXPECT_TRUE(model->config().tie_word_embeddings);
  const int32_t ids[3] = {1, 2, 3};
  EXPECT_TRUE(model->forward_batch(ids, 1, 3).has_value());
}


TEST(ModelGguf, EveryGgufBlockFormatOfTheTableLoads) {
  int tried = 0;
  for (const FormatTraits& f : all_formats()) {
    if (!f.blocks_in_codes || f.gguf_type < 0 || f.block <= 0 || 256 % f.block != 0) continue;
    SCOPED_TRACE(f.name);
    std::map<std::string, std::vector<float>> expected;
    const std::string path =
        write_bytes(tiny_gguf("llama", GgmlType::F32, true, &f, &expected), std::string("tiny-") + f.name + ".gguf");
    auto model = Model::load(path);
    ASSERT_TRUE(model.has_value()) << model.status().to_string();
    GgufFile file = GgufFile::open(path).value();
    EXPECT_EQ(file.find_tensor("blk.0.ffn_down.weight")->type, static_cast<GgmlType>(f.gguf_type));
    test::MapTensorSource src("dequantized");
    for (const GgufTensorInfo& info : file.tensors()) src.tensors[info.name] = Tensor::from_f32(info.shape, expected.at(info.name));
    Model plain = Model::from_tensors(gguf_model_config(file).value(), src, TensorNaming::gguf).value();
    const int32_t ids[4] = {1, 7, 3, 5};
    Tensor a = model->forward_batch(ids, 1, 4).value(), b = plain.forward_batch(ids, 1, 4).value();
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
    ++tried;
  }
  std::printf("  %d GGUF block formats loaded\n", tried);
  if (tried == 0) GTEST_SKIP() << "the format table has no GGUF block formats";
}

TEST(ModelGguf, ClearErrors) {
  auto expect_error = [](const std::string& path, const std::vector<std::string>& needles) {
    auto m = Model::load(path);
    ASSERT_FALSE(m.has_value()) << path;
    for (const std::string& n : needles)
      EXPECT_NE(m.status().message().find(n), std::string::npos) << m.status().message() << " lacks " << n;
  };
  // A GGML type the format table cannot dequantize: the error names the tensor and the type.
  expect_error(write_bytes(tiny_gguf("llama", GgmlType::IQ2_XXS), "iq2.gguf"), {"blk.0.attn_q.weight", "IQ2_XXS"});
  expect_error(write_bytes(tiny_gguf("gpt2", GgmlType::F32), "gpt2.gguf"), {"general.architecture", "gpt2"});
  expect_error(write_bytes(tiny_gguf("llama", GgmlType::F32, false), "nokey.gguf"), {"llama.block_count"});
}

}  // namespace
}  // namespace qforge
