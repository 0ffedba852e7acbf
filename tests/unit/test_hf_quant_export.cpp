// HF GPTQ / AWQ export: the packed words against the layouts written out independently here
// (AutoGPTQ's per-word loop, AutoAWQ's interleaved nibbles), exact round trips through
// pack/unpack and through a model directory, rejection of malformed inputs, and a real model
// exported and reloaded with bit-identical weights and logits.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <unistd.h>

#include "qforge/act_quant.h"
#include "qforge/atomic_file.h"
#include "qforge/hf_quant.h"
#include "qforge/model.h"
#include "qforge/safetensors.h"
#include "qforge/tensor_roles.h"
#include "test_support.h"

namespace qforge {
namespace {

namespace fs = std::filesystem;

std::vector<float> random_weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& x : w) x = dist(rng);
  // A few all-positive groups so that zero-point 0 (GPTQ v1's wrapped case) occurs.
  for (int64_t c = 0; c < std::min<int64_t>(cols, 32); ++c) w[static_cast<size_t>(c)] = std::fabs(w[static_cast<size_t>(c)]);
  return w;
}

QuantizedTensor make_q(const std::string& scheme_name, int64_t rows, int64_t cols, uint32_t seed) {
  auto scheme = Scheme::parse(scheme_name);
  EXPECT_TRUE(scheme.has_value()) << scheme_name;
  auto w = random_weights(rows, cols, seed);
  auto q = quantize(*scheme, w.data(), rows, cols);
  EXPECT_TRUE(q.has_value()) << q.status().message();
  return *q;
}

// code(o, i) and zero(o, g) of a qforge int tensor, read the slow way.
int code_at(const QuantizedTensor& q, int64_t o, int64_t i) {
  std::vector<uint8_t> codes(static_cast<size_t>(q.cols));
  unpack_bits(q.codes.data() + o * q.packed_row_bytes(), q.cols, q.scheme.bits, codes.data());
  return codes[static_cast<size_t>(i)];
}
int zero_at(const QuantizedTensor& q, int64_t o, int64_t g) {
  if (q.scheme.format == FormatId::int_sym) return 1 << (q.scheme.bits - 1);
  return q.zeros[static_cast<size_t>(o * q.groups_per_row() + g)];
}

// AutoGPTQ's pack loop for one column, transcribed: 32 / bits codes per word for 2/4/8 bits; for
// 3 bits 10 codes per word plus the codes straddling words 0/1 and 1/2.
std::vector<uint32_t> autogptq_pack_column(const std::vector<uint32_t>& v, int bits) {
  std::vector<uint32_t> out(v.size() * bits / 32, 0);
  size_t i = 0, row = 0;
  while (row < out.size()) {
    if (bits != 3) {
      for (size_t j = i; j < i + 32 / bits; ++j) out[row] |= v[j] << (bits * (j - i));
      i += 32 / bits;
      row += 1;
    } else {
      for (size_t j = i; j < i + 10; ++j) out[row] |= v[j] << (3 * (j - i));
      i += 10;
      out[row] |= v[i] << 30;
      row += 1;
      out[row] |= (v[i] >> 2) & 1;
      i += 1;
      for (size_t j = i; j < i + 10; ++j) out[row] |= v[j] << (3 * (j - i) + 1);
      i += 10;
      out[row] |= v[i] << 31;
      row += 1;
      out[row] |= (v[i] >> 1) & 3;
      i += 1;
      for (size_t j = i; j < i + 10; ++j) out[row] |= v[j] << (3 * (j - i) + 2);
      i += 10;
      row += 1;
    }
  }
  return out;
}

void expect_same(const QuantizedTensor& a, const QuantizedTensor& b, const std::string& what) {
  EXPECT_EQ(a.scheme.name(), b.scheme.name()) << what;
  EXPECT_EQ(a.rows, b.rows) << what;
  EXPECT_EQ(a.cols, b.cols) << what;
  EXPECT_TRUE(a.codes == b.codes) << what << ": codes differ";
  EXPECT_TRUE(a.scales == b.scales) << what << ": scales differ";
  EXPECT_TRUE(a.zeros == b.zeros) << what << ": zeros differ";
}

TEST(HfQuantPack, GptqWordsMatchAutoGptqLoop) {
  for (const char* name : {"int2-g64-asym", "int3-g128-asym", "int4-g128-asym", "int4-g32-sym", "int8-ch-sym",
                           "int3-ch-sym", "int8-g64-asym"}) {
    const QuantizedTensor q = make_q(name, 64, 256, 7);
    auto t = pack_hf_quant(HfQuantFormat::gptq, q);
    ASSERT_TRUE(t.has_value()) << name << ": " << t.status().message();
    const int bits = q.scheme.bits;
    const int64_t groups = q.groups_per_row();
    ASSERT_EQ(t->qweight_shape(), (Shape{256 * bits / 32, 64})) << name;
    ASSERT_EQ(t->qzeros_shape(), (Shape{groups, 64 * bits / 32})) << name;
    for (int64_t o = 0; o < q.rows; ++o) {
      std::vector<uint32_t> col(static_cast<size_t>(q.cols));
      for (int64_t i = 0; i < q.cols; ++i) col[static_cast<size_t>(i)] = static_cast<uint32_t>(code_at(q, o, i));
      const auto words = autogptq_pack_column(col, bits);
      for (size_t r = 0; r < words.size(); ++r)
        ASSERT_EQ(static_cast<uint32_t>(t->qweight[r * q.rows + static_cast<size_t>(o)]), words[r])
            << name << ": qweight[" << r << ", " << o << "]";
    }
    // qzeros: AutoGPTQ packs (zero - 1) along out with the same loop; wrapped to the width.
    const uint32_t mask = (1u << bits) - 1;
    for (int64_t g = 0; g < groups; ++g) {
      std::vector<uint32_t> z(static_cast<size_t>(q.rows));
      for (int64_t o = 0; o < q.rows; ++o) z[static_cast<size_t>(o)] = static_cast<uint32_t>(zero_at(q, o, g) - 1) & mask;
      const auto words = autogptq_pack_column(z, bits);
      for (size_t w = 0; w < words.size(); ++w)
        ASSERT_EQ(static_cast<uint32_t>(t->qzeros[static_cast<size_t>(g) * words.size() + w]), words[w])
            << name << ": qzeros[" << g << ", " << w << "]";
    }
    for (int64_t i = 0; i < q.cols; ++i)
      ASSERT_EQ(t->g_idx[static_cast<size_t>(i)], i / t->group_size) << name << ": g_idx[" << i << "]";
    // The GPTQ dequantization formula, scale * (q - (stored_zero + 1)), gives qforge's weights
    // (zero-point 0 groups need the wrap: stored 2^bits - 1).
    std::vector<float> ref(static_cast<size_t>(q.rows * q.cols));
    ASSERT_TRUE(dequantize(q, ref.data()).is_ok());
    for (int64_t o = 0; o < q.rows; o += 7)
      for (int64_t i = 0; i < q.cols; i += 5) {
        const int64_t g = t->g_idx[static_cast<size_t>(i)];
        const float s = f16_to_f32(t->scales[static_cast<size_t>(g * q.rows + o)]);
        const int stored = static_cast<int>(static_cast<uint32_t>(zero_at(q, o, g) - 1) & mask);
        const int z = (stored + 1) & static_cast<int>(mask);
        const float w = static_cast<float>(code_at(q, o, i) - z) * s;
        ASSERT_EQ(w, ref[static_cast<size_t>(o * q.cols + i)]) << name << " at (" << o << ", " << i << ")";
      }
  }
}

TEST(HfQuantPack, AwqNibblesInterleaved) {
  for (const char* name : {"int4-g128-asym", "int4-g64-sym", "int4-ch-asym"}) {
    const QuantizedTensor q = make_q(name, 48, 256, 11);
    auto t = pack_hf_quant(HfQuantFormat::awq, q);
    ASSERT_TRUE(t.has_value()) << name << ": " << t.status().message();
    ASSERT_EQ(t->qweight_shape(), (Shape{256, 6})) << name;
    const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};  // AutoAWQ's AWQ_ORDER
    for (int64_t i = 0; i < q.cols; ++i)
      for (int64_t j = 0; j < q.rows / 8; ++j)
        for (int k = 0; k < 8; ++k) {
          const uint32_t word = static_cast<uint32_t>(t->qweight[static_cast<size_t>(i * (q.rows / 8) + j)]);
          ASSERT_EQ(static_cast<int>((word >> (4 * k)) & 0xF), code_at(q, 8 * j + order[k], i))
              << name << ": qweight[" << i << ", " << j << "] nibble " << k;
        }
    for (int64_t g = 0; g < q.groups_per_row(); ++g)
      for (int64_t j = 0; j < q.rows / 8; ++j)
        for (int k = 0; k < 8; ++k) {
          const uint32_t word = static_cast<uint32_t>(t->qzeros[static_cast<size_t>(g * (q.rows / 8) + j)]);
          ASSERT_EQ(static_cast<int>((word >> (4 * k)) & 0xF), zero_at(q, 8 * j + order[k], g))
              << name << ": qzeros[" << g << ", " << j << "] nibble " << k;
        }
    EXPECT_TRUE(t->g_idx.empty());
  }
}

TEST(HfQuantPack, RoundTripIsExact) {
  struct Case {
    HfQuantFormat f;
    const char* scheme;
  };
  for (const Case& c : {Case{HfQuantFormat::gptq, "int2-g32-asym"}, Case{HfQuantFormat::gptq, "int3-g128-asym"},
                        Case{HfQuantFormat::gptq, "int4-g128-sym"}, Case{HfQuantFormat::gptq, "int8-ch-asym"},
                        Case{HfQuantFormat::gptq, "int3-g64-sym"}, Case{HfQuantFormat::awq, "int4-g128-asym"},
                        Case{HfQuantFormat::awq, "int4-g32-sym"}, Case{HfQuantFormat::awq, "int4-ch-sym"}}) {
    const QuantizedTensor q = make_q(c.scheme, 96, 384, 3);
    auto t = pack_hf_quant(c.f, q);
    ASSERT_TRUE(t.has_value()) << c.scheme << ": " << t.status().message();
    const bool sym = q.scheme.format == FormatId::int_sym;
    auto back = unpack_hf_quant(*t, sym, q.scheme.granularity == Granularity::channel, "test");
    ASSERT_TRUE(back.has_value()) << c.scheme << ": " << back.status().message();
    expect_same(q, *back, std::string(hf_quant_format_name(c.f)) + " " + c.scheme);
  }
}

TEST(HfQuantPack, RejectsWhatTheLayoutsCannotHold) {
  const QuantizedTensor q5 = make_q("int5-g128-asym", 32, 256, 1);
  EXPECT_EQ(pack_hf_quant(HfQuantFormat::gptq, q5).status().code(), ErrorCode::unsupported);
  const QuantizedTensor q3 = make_q("int3-g128-asym", 32, 256, 1);
  EXPECT_EQ(pack_hf_quant(HfQuantFormat::awq, q3).status().code(), ErrorCode::unsupported);
  const QuantizedTensor qt = make_q("int4-tensor-sym", 32, 256, 1);
  EXPECT_EQ(pack_hf_quant(HfQuantFormat::gptq, qt).status().code(), ErrorCode::unsupported);
  const QuantizedTensor odd = make_q("int4-g16-asym", 12, 48, 1);  // out 12: not whole AWQ words
  EXPECT_FALSE(pack_hf_quant(HfQuantFormat::awq, odd).has_value());
  const QuantizedTensor odd3 = make_q("int3-g16-asym", 32, 48, 1);  // 48 * 3 bits: not whole words
  EXPECT_FALSE(pack_hf_quant(HfQuantFormat::gptq, odd3).has_value());

  // Malformed packed tensors.
  const QuantizedTensor q = make_q("int4-g64-asym", 32, 128, 2);
  auto t = pack_hf_quant(HfQuantFormat::gptq, q);
  ASSERT_TRUE(t.has_value());
  HfQuantLinear bad = *t;
  bad.qweight.pop_back();
  EXPECT_FALSE(unpack_hf_quant(bad, false, false, "w").has_value());
  bad = *t;
  bad.g_idx[3] = 1;  // act-order without static groups
  EXPECT_EQ(unpack_hf_quant(bad, false, false, "w").status().code(), ErrorCode::unsupported);
  bad = *t;
  bad.scales[0] = 0x7C00;  // +Inf
  EXPECT_FALSE(unpack_hf_quant(bad, false, false, "w").has_value());
  bad = *t;
  bad.group_size = 48;  // does not divide in
  EXPECT_FALSE(unpack_hf_quant(bad, false, false, "w").has_value());
}

// A tiny llama directory: random weights, config.json, a fake tokenizer file that must be copied.
std::string write_tiny_llama(const std::string& dir, std::map<std::string, Tensor>* tensors) {
  fs::create_directories(dir);
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                           {"hidden_size", 64},  {"intermediate_size", 128},
                           {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                           {"num_hidden_layers", 2}, {"vocab_size", 96},
                           {"rms_norm_eps", 1e-5}, {"max_position_embeddings", 64},
                           {"hidden_act", "silu"}, {"tie_word_embeddings", false},
                           {"rope_theta", 10000.0}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  EXPECT_TRUE(write_file_atomic(dir + "/config.json", config.dump()).is_ok());
  EXPECT_TRUE(write_file_atomic(dir + "/tokenizer_config.json", "{\"fake\": true}").is_ok());
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 0.1f);
  auto add = [&](const std::string& name, Shape shape, bool ones) {
    std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
    for (auto& x : v) x = ones ? 1.0f + 0.1f * dist(rng) : dist(rng);
    (*tensors)[name] = Tensor::from_f32(shape, v);
  };
  add("model.embed_tokens.weight", {96, 64}, false);
  add("model.norm.weight", {64}, true);
  add("lm_head.weight", {96, 64}, false);
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {64}, true);
    add(p + "post_attention_layernorm.weight", {64}, true);
    add(p + "self_attn.q_proj.weight", {64, 64}, false);
    add(p + "self_attn.k_proj.weight", {32, 64}, false);
    add(p + "self_attn.v_proj.weight", {32, 64}, false);
    add(p + "self_attn.o_proj.weight", {64, 64}, false);
    add(p + "mlp.gate_proj.weight", {128, 64}, false);
    add(p + "mlp.up_proj.weight", {128, 64}, false);
    add(p + "mlp.down_proj.weight", {64, 128}, false);
  }
  SafetensorsWriter w(dir + "/model.safetensors");
  w.set_metadata("format", "pt");
  for (auto& [n, t] : *tensors) EXPECT_TRUE(w.add(n, t).is_ok());
  EXPECT_TRUE(w.finish().is_ok());
  return dir;
}

bool is_block_linear(const std::string& name) {
  return name.find("_proj.weight") != std::string::npos;
}

// Quantizes the block linears of `tensors`; the rest stay plain.
void split(const std::map<std::string, Tensor>& tensors, const Scheme& scheme, std::map<std::string, QuantizedTensor>* q,
           std::map<std::string, Tensor>* plain) {
  for (const auto& [n, t] : tensors) {
    if (is_block_linear(n)) {
      auto qt = quantize(scheme, t.data_as<float>(), t.dim(0), t.dim(1));
      ASSERT_TRUE(qt.has_value()) << n;
      (*q)[n] = *qt;
    } else {
      (*plain)[n] = t;
    }
  }
}

TEST(HfQuantExport, DirectoryRoundTripAndModelLoad) {
  const std::string base = test::temp_dir();
  std::map<std::string, Tensor> tensors;
  const std::string src = write_tiny_llama(base + "/src", &tensors);
  for (HfQuantFormat f : {HfQuantFormat::gptq, HfQuantFormat::awq}) {
    for (const char* scheme_name : {"int4-g32-asym", "int4-g32-sym"}) {
      const std::string what = std::string(hf_quant_format_name(f)) + " " + scheme_name;
      auto scheme = Scheme::parse(scheme_name);
      ASSERT_TRUE(scheme.has_value());
      std::map<std::string, QuantizedTensor> q;
      std::map<std::string, Tensor> plain;
      split(tensors, *scheme, &q, &plain);
      HfQuantExportOptions opt;
      opt.format = f;
      opt.source_dir = src;
      opt.qforge_metadata_json = R"({"method": "rtn"})";
      const std::string out = base + "/out-" + hf_quant_format_name(f) + "-" + scheme_name;
      auto summary = export_hf_quantized(out, q, plain, opt);
      ASSERT_TRUE(summary.has_value()) << what << ": " << summary.status().message();
      EXPECT_EQ(summary->quantized, 14) << what;
      EXPECT_TRUE(fs::exists(out + "/tokenizer_config.json")) << what;
      EXPECT_FALSE(fs::exists(out + ".tmp." + std::to_string(::getpid()))) << what;

      // config.json carries the quantization_config the tools read.
      auto text = read_file(out + "/config.json");
      ASSERT_TRUE(text.has_value());
      const auto config = nlohmann::json::parse(*text);
      const auto& qc = config.at("quantization_config");
      EXPECT_EQ(qc.at("quant_method"), hf_quant_format_name(f)) << what;
      EXPECT_EQ(qc.at("bits"), 4) << what;
      EXPECT_EQ(qc.at("group_size"), 32) << what;
      if (f == HfQuantFormat::gptq) {
        EXPECT_EQ(qc.at("checkpoint_format"), "gptq");
        EXPECT_EQ(qc.at("desc_act"), false);
        EXPECT_EQ(qc.at("sym"), scheme->format == FormatId::int_sym);
      } else {
        EXPECT_EQ(qc.at("version"), "gemm");
        EXPECT_EQ(qc.at("zero_point"), true);
      }
      EXPECT_EQ(qc.at("qforge").at("method"), "rtn");

      auto st = SafetensorsFile::open(out + "/model.safetensors");
      ASSERT_TRUE(st.has_value());
      const auto* qw = st->find("model.layers.1.mlp.down_proj.qweight");
      ASSERT_NE(qw, nullptr) << what;
      EXPECT_EQ(qw->dtype, DType::i32);
      EXPECT_EQ(qw->shape, f == HfQuantFormat::gptq ? (Shape{16, 64}) : (Shape{128, 8})) << what;
      ASSERT_NE(st->find("model.layers.1.mlp.down_proj.scales"), nullptr);
      EXPECT_EQ(st->find("model.layers.1.mlp.down_proj.scales")->dtype, DType::f16);
      EXPECT_EQ(st->find("model.layers.1.mlp.down_proj.g_idx") != nullptr, f == HfQuantFormat::gptq) << what;
      EXPECT_EQ(st->find("model.layers.1.mlp.down_proj.weight"), nullptr) << what;
      EXPECT_NE(st->find("model.norm.weight"), nullptr) << what;

      // Read back: identical tensors, scheme included.
      auto ck = read_hf_quantized(out);
      ASSERT_TRUE(ck.has_value()) << what << ": " << ck.status().message();
      ASSERT_EQ(ck->quantized.size(), q.size());
      for (const auto& [n, t] : q) expect_same(t, ck->quantized.at(n), what + " " + n);
      EXPECT_EQ(ck->plain.size(), plain.size());

      // Model::load: QuantizedLinear layers with the same weights and logits equal to a model
      // built in memory from the same quantized tensors.
      auto loaded = Model::load(out);
      ASSERT_TRUE(loaded.has_value()) << what << ": " << loaded.status().message();
      auto mem = Model::load(src);
      ASSERT_TRUE(mem.has_value());
      for (const LinearSite& site : mem->linear_sites()) {
        auto name = tensor_name_for_role(Architecture::llama, site.role, site.layer, false);
        ASSERT_TRUE(name.has_value());
        if (!q.count(*name)) continue;
        auto layer = QuantizedLinear::create(q.at(*name));
        ASSERT_TRUE(layer.has_value());
        ASSERT_TRUE(mem->replace_linear(site, std::move(*layer)).is_ok());
        const Linear* l = loaded->linear(site);
        ASSERT_NE(l, nullptr);
        EXPECT_EQ(l->describe(), scheme->name()) << what << " " << *name;
        std::vector<float> a(static_cast<size_t>(l->out_features() * l->in_features())), b(a.size());
        l->dense_weight(a.data());
        mem->linear(site)->dense_weight(b.data());
        ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << what << " " << *name << ": weights differ";
      }
      const int32_t ids[12] = {1, 5, 9, 17, 33, 65, 2, 44, 90, 12, 7, 3};
      auto la = loaded->forward_batch(ids, 2, 6);
      auto lb = mem->forward_batch(ids, 2, 6);
      ASSERT_TRUE(la.has_value() && lb.has_value());
      ASSERT_EQ(std::memcmp(la->data(), lb->data(), la->nbytes()), 0) << what << ": logits differ";

      // A second export into the existing non-empty directory is refused, the directory untouched.
      auto again = export_hf_quantized(out, q, plain, opt);
      EXPECT_FALSE(again.has_value());
      EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
    }
  }
}

TEST(HfQuantExport, RejectsMixedSchemesAndBadConfigs) {
  const std::string base = test::temp_dir();
  std::map<std::string, Tensor> tensors;
  const std::string src = write_tiny_llama(base + "/src", &tensors);
  std::map<std::string, QuantizedTensor> q;
  std::map<std::string, Tensor> plain;
  split(tensors, *Scheme::parse("int4-g32-asym"), &q, &plain);
  q["model.layers.0.mlp.up_proj.weight"] = make_q("int4-g64-asym", 128, 64, 1);
  HfQuantExportOptions opt;
  opt.source_dir = src;
  EXPECT_FALSE(export_hf_quantized(base + "/mixed", q, plain, opt).has_value());
  EXPECT_FALSE(fs::exists(base + "/mixed"));

  // Unsupported quantization_config variants are errors naming the field.
  const std::string dir = base + "/cfg";
  fs::create_directories(dir);
  auto config_with = [&](const std::string& qc) {
    EXPECT_TRUE(write_file_atomic(dir + "/config.json", "{\"quantization_config\": " + qc + "}").is_ok());
    HfQuantConfig c;
    return read_hf_quant_config(dir, &c);
  };
  auto r = config_with(R"({"quant_method": "gptq", "bits": 4, "group_size": 128, "checkpoint_format": "gptq_v2"})");
  EXPECT_EQ(r.status().code(), ErrorCode::unsupported);
  EXPECT_NE(r.status().message().find("checkpoint_format"), std::string::npos) << r.status().message();
  r = config_with(R"({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"})");
  EXPECT_EQ(r.status().code(), ErrorCode::unsupported);
  r = config_with(R"({"quant_method": "bitsandbytes"})");
  EXPECT_EQ(r.status().code(), ErrorCode::unsupported);
  r = config_with(R"({"quant_method": "gptq", "bits": "4", "group_size": 128})");
  EXPECT_FALSE(r.has_value());
  r = config_with(R"({"quant_method": "gptq", "bits": 4, "group_size": 0})");
  EXPECT_FALSE(r.has_value());
  r = config_with(R"({"quant_method": "gptq", "bits": 4, "group_size": -1})");
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(*r);
}

// An activation-quantization record travels in the safetensors metadata and wraps the reloaded
// linears again, static scales included.
TEST(HfQuantExport, ActQuantRecordReloads) {
  const std::string base = test::temp_dir();
  std::map<std::string, Tensor> tensors;
  const std::string src = write_tiny_llama(base + "/src", &tensors);
  std::map<std::string, QuantizedTensor> q;
  std::map<std::string, Tensor> plain;
  split(tensors, *Scheme::parse("int8-ch-sym"), &q, &plain);
  ActQuantRecord rec;
  rec.scheme = ActScheme::int8_tensor_static;
  rec.observer = "minmax";
  float v = 0.01f;
  for (const auto& [n, t] : q) rec.scales[n] = (v += 0.001f);
  HfQuantExportOptions opt;
  opt.format = HfQuantFormat::gptq;
  opt.source_dir = src;
  opt.metadata[kActQuantMetadataKey] = act_quant_record_to_json(rec);
  const std::string out = base + "/w8a8";
  ASSERT_TRUE(export_hf_quantized(out, q, plain, opt).has_value());
  auto loaded = Model::load(out);
  ASSERT_TRUE(loaded.has_value()) << loaded.status().message();
  int wrapped = 0;
  for (const LinearSite& site : loaded->linear_sites()) {
    if (site.layer < 0) continue;
    const auto* l = dynamic_cast<const ActQuantLinear*>(loaded->linear(site));
    ASSERT_NE(l, nullptr) << linear_site_name(site);
    auto name = tensor_name_for_role(Architecture::llama, site.role, site.layer, false);
    EXPECT_EQ(l->static_scale(), rec.scales.at(*name)) << *name;
    EXPECT_TRUE(l->integer_path()) << *name;
    ++wrapped;
  }
  EXPECT_EQ(wrapped, 14);
  // A record naming a tensor the model lacks is an error, not silently ignored.
  rec.scales["model.layers.9.mlp.up_proj.weight"] = 1.0f;
  opt.metadata[kActQuantMetadataKey] = act_quant_record_to_json(rec);
  ASSERT_TRUE(export_hf_quantized(base + "/w8a8-bad", q, plain, opt).has_value());
  EXPECT_FALSE(Model::load(base + "/w8a8-bad").has_value());
}

// ref-llama-25m quantized int4-g128-asym, exported in both layouts and reloaded: every linear is
// bit-identical, and so are the logits of a batch.
TEST(HfQuantExport, RefLlamaExportReloadsBitIdentical) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m");
  const std::string src = test::shared_dir() + "/models/ref-llama-25m";
  auto ck = SafetensorsCheckpoint::open(src);
  ASSERT_TRUE(ck.has_value());
  auto mem = Model::load(src);
  ASSERT_TRUE(mem.has_value());
  const Scheme scheme = *Scheme::parse("int4-g128-asym");
  std::map<std::string, QuantizedTensor> q;
  std::map<std::string, Tensor> plain;
  for (const LinearSite& site : mem->linear_sites()) {
    if (site.layer < 0) continue;  // the tied output head stays as it is
    auto name = tensor_name_for_role(Architecture::llama, site.role, site.layer, false);
    ASSERT_TRUE(name.has_value());
    Linear* l = mem->linear(site);
    std::vector<float> w(static_cast<size_t>(l->out_features() * l->in_features()));
    l->dense_weight(w.data());
    auto qt = quantize(scheme, w.data(), l->out_features(), l->in_features());
    ASSERT_TRUE(qt.has_value());
    q[*name] = *qt;
    auto layer = QuantizedLinear::create(*qt);
    ASSERT_TRUE(layer.has_value());
    ASSERT_TRUE(mem->replace_linear(site, std::move(*layer)).is_ok());
  }
  for (const auto& n : ck->tensor_names())
    if (!q.count(n)) plain[n] = *ck->tensor(n);
  const int32_t ids[16] = {1, 450, 3017, 310, 278, 1024, 29889, 13, 1, 822, 7537, 29898, 1583, 29901, 13, 1678};
  auto ref = mem->forward_batch(ids, 2, 8);
  ASSERT_TRUE(ref.has_value());
  for (HfQuantFormat f : {HfQuantFormat::gptq, HfQuantFormat::awq}) {
    HfQuantExportOptions opt;
    opt.format = f;
    opt.source_dir = src;
    const std::string out = test::temp_dir() + "/ref-" + hf_quant_format_name(f);
    auto s = export_hf_quantized(out, q, plain, opt);
    ASSERT_TRUE(s.has_value()) << s.status().message();
    EXPECT_TRUE(fs::exists(out + "/tokenizer.model"));
    auto loaded = Model::load(out);
    ASSERT_TRUE(loaded.has_value()) << loaded.status().message();
    for (const LinearSite& site : mem->linear_sites()) {
      const Linear* a = loaded->linear(site);
      const Linear* b = mem->linear(site);
      EXPECT_EQ(a->describe(), b->describe()) << linear_site_name(site);
      std::vector<float> wa(static_cast<size_t>(a->out_features() * a->in_features())), wb(wa.size());
      a->dense_weight(wa.data());
      b->dense_weight(wb.data());
      ASSERT_EQ(std::memcmp(wa.data(), wb.data(), wa.size() * 4), 0) << linear_site_name(site);
    }
    auto logits = loaded->forward_batch(ids, 2, 8);
    ASSERT_TRUE(logits.has_value());
    ASSERT_EQ(std::memcmp(logits->data(), ref->data(), ref->nbytes()), 0) << hf_quant_format_name(f) << ": logits differ";
  }
}

}  // namespace
}  // namespace qforge
