// Loading llama.cpp GGUF models (architectures llama and qwen2): the engine config from the
// metadata, tensors by their GGUF names (tensor_roles.h), block-quantized tensors dequantized to f32
// at load through the format table.
//
// RoPE: llama.cpp's converter permutes the rows of llama's Q and K projections (per head, row
// 2i <- i and 2i+1 <- i + head_dim/2) so that its "normal" RoPE, which rotates adjacent pairs,
// reproduces HF's rotate_half. The engine therefore runs llama GGUF files with interleaved RoPE on
// the weights as stored. qwen2 files are not permuted (llama.cpp runs them with NEOX RoPE, HF's
// half split).
#include <cmath>
#include <cstring>

#include "model/model_impl.h"
#include "qforge/format.h"
#include "qforge/gguf.h"

namespace qforge {
namespace {

// A tensor as a QuantizedTensor of the format table: block formats (the tensor's bytes are the
// `codes` plane of the table's row for that ggml type) and, when `half_too`, F16/BF16 (the plain
// casts). Rows run along ne[0].
Expected<QuantizedTensor> gguf_quantized_tensor(const GgufFile& file, const GgufTensorInfo& info, bool half_too = false) {
  const std::string what = file.path() + ": tensor '" + info.name + "' of type " + ggml_type_name(info.type);
  const FormatTraits* f = find_format_by_gguf_type(static_cast<int>(info.type));
  const bool half = f != nullptr && (f->id == FormatId::f16 || f->id == FormatId::bf16);
  if (f == nullptr || !(f->blocks_in_codes || (half_too && half)))
    return unsupported(what + ": qforge cannot dequantize this GGML type");
  if (info.ne.empty()) return parse_error(what + ": a quantized tensor needs at least one dimension");
  const int64_t cols = info.ne[0];
  const int64_t rows = cols > 0 ? info.numel() / cols : 0;
  if (rows <= 0 || cols <= 0) return parse_error(what + ": empty tensor");
  QuantizedTensor q;
  q.scheme.format = f->id;
  q.scheme.bits = f->min_bits;
  q.scheme.granularity = f->default_granularity;
  q.scheme.group_size = f->default_granularity == Granularity::group ? (f->block > 0 ? f->block : f->default_group) : 0;
  q.rows = rows;
  q.cols = cols;
  QFORGE_RETURN_IF_ERROR(validate_scheme(q.scheme, rows, cols).with_context(what));
  const std::span<const uint8_t> bytes = file.tensor_bytes(info);
  if (bytes.size() != scheme_plane_sizes(q.scheme, rows, cols).codes)
    return parse_error(what + ": " + std::to_string(bytes.size()) + " bytes do not match its shape");
  q.codes.assign(bytes.begin(), bytes.end());
  return q;
}

class GgufSource final : public TensorSource {
 public:
  explicit GgufSource(const GgufFile& file) : file_(file) {}
  std::vector<std::string> tensor_names() const override {
    std::vector<std::string> names;
    for (const GgufTensorInfo& t : file_.tensors()) names.push_back(t.name);
    return names;
  }
  Expected<Tensor> tensor(const std::string& name) const override {
    const GgufTensorInfo* info = file_.find_tensor(name);
    if (info == nullptr) return parse_error(label() + ": no tensor '" + name + "'");
    if (ggml_type_to_dtype(info->type).has_value()) return file_.tensor(*info);
    return dequantize_tensor(*info);
  }
  std::string label() const override { return file_.path(); }

 private:
  Expected<Tensor> dequantize_tensor(const GgufTensorInfo& info) const {
    const std::string what = label() + ": tensor '" + info.name + "' of type " + ggml_type_name(info.type);
    QFORGE_ASSIGN_OR_RETURN(QuantizedTensor q, gguf_quantized_tensor(file_, info));
    Tensor out = Tensor::zeros(DType::f32, info.shape);
    QFORGE_RETURN_IF_ERROR(dequantize(q, out.data_as<float>()).with_context(what));
    return out;
  }

  const GgufFile& file_;
};

}  // namespace

Expected<ModelConfig> gguf_model_config(const GgufFile& file) {
  const std::string& path = file.path();
  QFORGE_ASSIGN_OR_RETURN(std::string arch_name, file.get_string("general.architecture"));
  ModelConfig c;
  c.source = path;
  if (arch_name == "llama") {
    c.arch = Architecture::llama;
    c.rope = RopeStyle::interleaved;
  } else if (arch_name == "qwen2") {
    c.arch = Architecture::qwen2;
    c.rope = RopeStyle::half_split;
    c.qkv_bias = true;
  } else {
    return unsupported(path + ": general.architecture '" + arch_name +
                       "' is not supported for GGUF models (llama, qwen2)");
  }
  const std::string a = arch_name + ".";
  auto req = [&](const std::string& key) -> Expected<int64_t> {
    QFORGE_ASSIGN_OR_RETURN(uint64_t v, file.get_uint(a + key));
    if (v > (uint64_t{1} << 40)) return parse_error(path + ": key '" + a + key + "' = " + std::to_string(v) + " is too large");
    return static_cast<int64_t>(v);
  };
  auto opt = [&](const std::string& key, int64_t fallback) -> Expected<int64_t> {
    if (!file.contains(a + key)) return fallback;
    return req(key);
  };
  QFORGE_ASSIGN_OR_RETURN(c.num_layers, req("block_count"));
  QFORGE_ASSIGN_OR_RETURN(c.hidden_size, req("embedding_length"));
  QFORGE_ASSIGN_OR_RETURN(c.intermediate_size, req("feed_forward_length"));
  QFORGE_ASSIGN_OR_RETURN(c.num_heads, req("attention.head_count"));
  if (c.num_heads <= 0) return parse_error(path + ": " + a + "attention.head_count must be positive");
  QFORGE_ASSIGN_OR_RETURN(c.num_kv_heads, opt("attention.head_count_kv", c.num_heads));
  QFORGE_ASSIGN_OR_RETURN(c.head_dim, opt("attention.key_length", c.hidden_size / c.num_heads));
  QFORGE_ASSIGN_OR_RETURN(int64_t value_length, opt("attention.value_length", c.head_dim));
  if (value_length != c.head_dim)
    return unsupported(path + ": " + a + "attention.value_length " + std::to_string(value_length) +
                       " differs from the key length " + std::to_string(c.head_dim));
  QFORGE_ASSIGN_OR_RETURN(int64_t rope_dims, opt("rope.dimension_count", c.head_dim));
  if (rope_dims != c.head_dim)
    return unsupported(path + ": " + a + "rope.dimension_count " + std::to_string(rope_dims) +
                       " < head_dim " + std::to_string(c.head_dim) + " (partial rotary) is not supported");
  QFORGE_ASSIGN_OR_RETURN(c.max_positions, opt("context_length", 0));
  QFORGE_ASSIGN_OR_RETURN(int64_t experts, opt("expert_count", 0));
  if (experts > 0) return unsupported(path + ": mixture-of-experts models (" + a + "expert_count) are not supported");
  QFORGE_ASSIGN_OR_RETURN(c.norm_eps, file.get_float(a + "attention.layer_norm_rms_epsilon"));
  c.rope_theta = 10000.0;
  if (file.contains(a + "rope.freq_base")) {
    QFORGE_ASSIGN_OR_RETURN(c.rope_theta, file.get_float(a + "rope.freq_base"));
  }
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta))
    return parse_error(path + ": " + a + "rope.freq_base must be positive");
  if (file.contains(a + "rope.scaling.type")) {
    QFORGE_ASSIGN_OR_RETURN(std::string scaling, file.get_string(a + "rope.scaling.type"));
    if (scaling != "none")
      return unsupported(path + ": " + a + "rope.scaling.type '" + scaling + "' (scaled RoPE) is not supported");
  }
  if (file.find_tensor("rope_freqs.weight") != nullptr)
    return unsupported(path + ": tensor 'rope_freqs.weight' (llama3-style RoPE frequency factors) is not supported");
  if (file.contains(a + "attention.sliding_window"))
    return unsupported(path + ": " + a + "attention.sliding_window is not supported for GGUF models");

  // Vocabulary: the embedding's rows; the tokenizer's list and {arch}.vocab_size must agree.
  const GgufTensorInfo* emb = file.find_tensor("token_embd.weight");
  if (emb == nullptr || emb->shape.size() != 2) return parse_error(path + ": tensor 'token_embd.weight' is missing or not 2-D");
  c.vocab_size = emb->shape[0];
  if (file.contains(a + "vocab_size")) {
    QFORGE_ASSIGN_OR_RETURN(int64_t v, req("vocab_size"));
    if (v != c.vocab_size)
      return parse_error(path + ": " + a + "vocab_size " + std::to_string(v) + " differs from token_embd.weight's " +
                         std::to_string(c.vocab_size) + " rows");
  }
  if (const GgufValue* tokens = file.find("tokenizer.ggml.tokens"); tokens != nullptr && tokens->is_array()) {
    if (static_cast<int64_t>(tokens->size()) != c.vocab_size)
      return parse_error(path + ": tokenizer.ggml.tokens has " + std::to_string(tokens->size()) +
                         " entries, token_embd.weight has " + std::to_string(c.vocab_size) + " rows");
  }
  c.tie_word_embeddings = file.find_tensor("output.weight") == nullptr;
  // Optional llama biases (attention_bias / mlp_bias in HF terms), judged from layer 0.
  if (c.arch == Architecture::llama) {
    c.qkv_bias = file.find_tensor("blk.0.attn_q.bias") != nullptr;
    c.attn_output_bias = file.find_tensor("blk.0.attn_output.bias") != nullptr;
    c.mlp_bias = file.find_tensor("blk.0.ffn_up.bias") != nullptr;
  }
  c.norm = NormType::rms_norm;
  c.mlp = MlpType::gated_silu;
  c.pre_norm = true;
  c.causal = true;
  if (file.contains("tokenizer.ggml.bos_token_id")) {
    QFORGE_ASSIGN_OR_RETURN(uint32_t bos, file.get_u32("tokenizer.ggml.bos_token_id"));
    c.bos_token_id = bos;  // whether text starts with it is the tokenizer's add_bos_token
  }
  if (file.contains("tokenizer.ggml.eos_token_id")) {
    QFORGE_ASSIGN_OR_RETURN(uint32_t eos, file.get_u32("tokenizer.ggml.eos_token_id"));
    c.eos_token_ids = {eos};
  }
  if (file.contains("tokenizer.ggml.padding_token_id")) {
    QFORGE_ASSIGN_OR_RETURN(uint32_t pad, file.get_u32("tokenizer.ggml.padding_token_id"));
    c.pad_token_id = pad;
  }
  QFORGE_RETURN_IF_ERROR(validate_model_config(c));
  return c;
}

Expected<Model> Model::load_gguf(const std::string& path, QuantizedWeights weights) {
  QFORGE_ASSIGN_OR_RETURN(GgufFile file, GgufFile::open(path));
  QFORGE_ASSIGN_OR_RETURN(ModelConfig config, gguf_model_config(file));
  QFORGE_ASSIGN_OR_RETURN(Model model, from_tensors(config, GgufSource(file), TensorNaming::gguf));
  if (weights == QuantizedWeights::dequantize_at_load) return model;
  // Quantized linear weights (and f16/bf16 ones for the kernels) replace their f32 copies; a tied
  // head runs on the quantized token embedding.
  for (const GgufTensorInfo& info : file.tensors()) {
    const FormatTraits* f = find_format_by_gguf_type(static_cast<int>(info.type));
    const bool half = f != nullptr && (f->id == FormatId::f16 || f->id == FormatId::bf16);
    if (f == nullptr || !(f->blocks_in_codes || (half && weights == QuantizedWeights::kernels))) continue;
    auto r = resolve_tensor_role(config.arch, info.name, TensorNaming::gguf);
    if (!r.has_value() || r->is_bias) continue;
    LinearSite site{r->layer, r->role};
    if (r->role == TensorRole::token_embedding && config.tie_word_embeddings)
      site = LinearSite{-1, TensorRole::output};
    else if (!(is_linear_weight(r->role) || r->role == TensorRole::output))
      continue;
    Linear* dense = model.linear(site);
    if (dense == nullptr) continue;
    QFORGE_ASSIGN_OR_RETURN(QuantizedTensor q, gguf_quantized_tensor(file, info, true));
    QFORGE_ASSIGN_OR_RETURN(std::unique_ptr<Linear> layer, make_quantized_linear(std::move(q), dense->bias(), weights));
    if (layer == nullptr) continue;
    QFORGE_RETURN_IF_ERROR(model.replace_linear(site, std::move(layer)).with_context(path + ": tensor '" + info.name + "'"));
  }
  return model;
}

}  // namespace qforge
