// The per-architecture tensor name tables. Each table lists every tensor name an architecture's
// checkpoints may contain; resolve_tensor_role matches names exactly against them.
#include "qforge/tensor_roles.h"

#include <nlohmann/json.hpp>

#include <array>
#include <fstream>
#include <sstream>

namespace qforge {
namespace {

using R = TensorRole;
constexpr bool W = false;  // weight
constexpr bool B = true;   // bias

// Llama family in HF layout. Llama may carry attention/MLP biases (attention_bias, mlp_bias);
// qwen2 has q/k/v biases. Which are *expected* is the config's business; the map only says
// what each name means. The first template of a (role, bias) pair is the canonical name.
#define QFORGE_LLAMA_HF_COMMON                                              \
  {"model.embed_tokens.weight", R::token_embedding, W},                     \
  {"model.layers.{L}.input_layernorm.weight", R::attn_norm, W},             \
  {"model.layers.{L}.self_attn.q_proj.weight", R::attn_q, W},               \
  {"model.layers.{L}.self_attn.k_proj.weight", R::attn_k, W},               \
  {"model.layers.{L}.self_attn.v_proj.weight", R::attn_v, W},               \
  {"model.layers.{L}.self_attn.o_proj.weight", R::attn_output, W},          \
  {"model.layers.{L}.post_attention_layernorm.weight", R::mlp_norm, W},     \
  {"model.layers.{L}.mlp.gate_proj.weight", R::mlp_gate, W},                \
  {"model.layers.{L}.mlp.up_proj.weight", R::mlp_up, W},                    \
  {"model.layers.{L}.mlp.down_proj.weight", R::mlp_down, W},                \
  {"model.norm.weight", R::final_norm, W},                                  \
  {"lm_head.weight", R::output, W},                                         \
  {"model.layers.{L}.self_attn.rotary_emb.inv_freq", R::buffer, W}

constexpr RoleTemplate kLlamaHf[] = {
    QFORGE_LLAMA_HF_COMMON,
    {"model.layers.{L}.self_attn.q_proj.bias", R::attn_q, B},
    {"model.layers.{L}.self_attn.k_proj.bias", R::attn_k, B},
    {"model.layers.{L}.self_attn.v_proj.bias", R::attn_v, B},
    {"model.layers.{L}.self_attn.o_proj.bias", R::attn_output, B},
    {"model.layers.{L}.mlp.gate_proj.bias", R::mlp_gate, B},
    {"model.layers.{L}.mlp.up_proj.bias", R::mlp_up, B},
    {"model.layers.{L}.mlp.down_proj.bias", R::mlp_down, B},
};

constexpr RoleTemplate kMistralHf[] = {QFORGE_LLAMA_HF_COMMON};

constexpr RoleTemplate kQwen2Hf[] = {
    QFORGE_LLAMA_HF_COMMON,
    {"model.layers.{L}.self_attn.q_proj.bias", R::attn_q, B},
    {"model.layers.{L}.self_attn.k_proj.bias", R::attn_k, B},
    {"model.layers.{L}.self_attn.v_proj.bias", R::attn_v, B},
};
#undef QFORGE_LLAMA_HF_COMMON

// llama.cpp's names (llama-arch.cpp LLM_TENSOR_NAMES), shared by llama, mistral and qwen2.
constexpr RoleTemplate kLlamaGguf[] = {
    {"token_embd.weight", R::token_embedding, W},
    {"blk.{L}.attn_norm.weight", R::attn_norm, W},
    {"blk.{L}.attn_q.weight", R::attn_q, W},
    {"blk.{L}.attn_k.weight", R::attn_k, W},
    {"blk.{L}.attn_v.weight", R::attn_v, W},
    {"blk.{L}.attn_output.weight", R::attn_output, W},
    {"blk.{L}.ffn_norm.weight", R::mlp_norm, W},
    {"blk.{L}.ffn_gate.weight", R::mlp_gate, W},
    {"blk.{L}.ffn_up.weight", R::mlp_up, W},
    {"blk.{L}.ffn_down.weight", R::mlp_down, W},
    {"output_norm.weight", R::final_norm, W},
    {"output.weight", R::output, W},
    {"rope_freqs.weight", R::buffer, W},
    {"blk.{L}.attn_q.bias", R::attn_q, B},
    {"blk.{L}.attn_k.bias", R::attn_k, B},
    {"blk.{L}.attn_v.bias", R::attn_v, B},
    {"blk.{L}.attn_output.bias", R::attn_output, B},
    {"blk.{L}.ffn_gate.bias", R::mlp_gate, B},
    {"blk.{L}.ffn_up.bias", R::mlp_up, B},
    {"blk.{L}.ffn_down.bias", R::mlp_down, B},
};

// GPT-2: HF GPT2LMHeadModel saves under "transformer."; the original OpenAI-converted files
// (GPT2Model) have no prefix. Both spellings are listed; the prefixed one is canonical.
#define QFORGE_GPT2_HF(P)                                              \
  {P "wte.weight", R::token_embedding, W},                             \
  {P "wpe.weight", R::position_embedding, W},                          \
  {P "h.{L}.ln_1.weight", R::attn_norm, W},                            \
  {P "h.{L}.ln_1.bias", R::attn_norm, B},                              \
  {P "h.{L}.attn.c_attn.weight", R::attn_qkv, W},                      \
  {P "h.{L}.attn.c_attn.bias", R::attn_qkv, B},                        \
  {P "h.{L}.attn.c_proj.weight", R::attn_output, W},                   \
  {P "h.{L}.attn.c_proj.bias", R::attn_output, B},                     \
  {P "h.{L}.ln_2.weight", R::mlp_norm, W},                             \
  {P "h.{L}.ln_2.bias", R::mlp_norm, B},                               \
  {P "h.{L}.mlp.c_fc.weight", R::mlp_up, W},                           \
  {P "h.{L}.mlp.c_fc.bias", R::mlp_up, B},                             \
  {P "h.{L}.mlp.c_proj.weight", R::mlp_down, W},                       \
  {P "h.{L}.mlp.c_proj.bias", R::mlp_down, B},                         \
  {P "ln_f.weight", R::final_norm, W},                                 \
  {P "ln_f.bias", R::final_norm, B},                                   \
  {P "h.{L}.attn.bias", R::buffer, W}, /* causal mask buffer */        \
  {P "h.{L}.attn.masked_bias", R::buffer, W}

constexpr RoleTemplate kGpt2Hf[] = {
    QFORGE_GPT2_HF("transformer."),
    {"lm_head.weight", R::output, W},
    QFORGE_GPT2_HF(""),
};
#undef QFORGE_GPT2_HF

constexpr RoleTemplate kGpt2Gguf[] = {
    {"token_embd.weight", R::token_embedding, W},
    {"position_embd.weight", R::position_embedding, W},
    {"blk.{L}.attn_norm.weight", R::attn_norm, W},
    {"blk.{L}.attn_norm.bias", R::attn_norm, B},
    {"blk.{L}.attn_qkv.weight", R::attn_qkv, W},
    {"blk.{L}.attn_qkv.bias", R::attn_qkv, B},
    {"blk.{L}.attn_output.weight", R::attn_output, W},
    {"blk.{L}.attn_output.bias", R::attn_output, B},
    {"blk.{L}.ffn_norm.weight", R::mlp_norm, W},
    {"blk.{L}.ffn_norm.bias", R::mlp_norm, B},
    {"blk.{L}.ffn_up.weight", R::mlp_up, W},
    {"blk.{L}.ffn_up.bias", R::mlp_up, B},
    {"blk.{L}.ffn_down.weight", R::mlp_down, W},
    {"blk.{L}.ffn_down.bias", R::mlp_down, B},
    {"output_norm.weight", R::final_norm, W},
    {"output_norm.bias", R::final_norm, B},
    {"output.weight", R::output, W},
};

// BERT: BertModel saves without a prefix; task models (BertForMaskedLM, ...) nest it under "bert.".
#define QFORGE_BERT_HF(P)                                                                  \
  {P "embeddings.word_embeddings.weight", R::token_embedding, W},                          \
  {P "embeddings.position_embeddings.weight", R::position_embedding, W},                   \
  {P "embeddings.token_type_embeddings.weight", R::token_type_embedding, W},               \
  {P "embeddings.LayerNorm.weight", R::embedding_norm, W},                                 \
  {P "embeddings.LayerNorm.bias", R::embedding_norm, B},                                   \
  {P "encoder.layer.{L}.attention.self.query.weight", R::attn_q, W},                       \
  {P "encoder.layer.{L}.attention.self.query.bias", R::attn_q, B},                         \
  {P "encoder.layer.{L}.attention.self.key.weight", R::attn_k, W},                         \
  {P "encoder.layer.{L}.attention.self.key.bias", R::attn_k, B},                           \
  {P "encoder.layer.{L}.attention.self.value.weight", R::attn_v, W},                       \
  {P "encoder.layer.{L}.attention.self.value.bias", R::attn_v, B},                         \
  {P "encoder.layer.{L}.attention.output.dense.weight", R::attn_output, W},                \
  {P "encoder.layer.{L}.attention.output.dense.bias", R::attn_output, B},                  \
  {P "encoder.layer.{L}.attention.output.LayerNorm.weight", R::attn_norm, W},              \
  {P "encoder.layer.{L}.attention.output.LayerNorm.bias", R::attn_norm, B},                \
  {P "encoder.layer.{L}.intermediate.dense.weight", R::mlp_up, W},                         \
  {P "encoder.layer.{L}.intermediate.dense.bias", R::mlp_up, B},                           \
  {P "encoder.layer.{L}.output.dense.weight", R::mlp_down, W},                              \
  {P "encoder.layer.{L}.output.dense.bias", R::mlp_down, B},                                \
  {P "encoder.layer.{L}.output.LayerNorm.weight", R::mlp_norm, W},                         \
  {P "encoder.layer.{L}.output.LayerNorm.bias", R::mlp_norm, B},                           \
  {P "pooler.dense.weight", R::pooler, W},                                                 \
  {P "pooler.dense.bias", R::pooler, B},                                                   \
  {P "embeddings.position_ids", R::buffer, W}

constexpr RoleTemplate kBertHf[] = {
    QFORGE_BERT_HF(""),
    QFORGE_BERT_HF("bert."),
};
#undef QFORGE_BERT_HF

constexpr RoleTemplate kBertGguf[] = {
    {"token_embd.weight", R::token_embedding, W},
    {"position_embd.weight", R::position_embedding, W},
    {"token_types.weight", R::token_type_embedding, W},
    {"token_embd_norm.weight", R::embedding_norm, W},
    {"token_embd_norm.bias", R::embedding_norm, B},
    {"blk.{L}.attn_q.weight", R::attn_q, W},
    {"blk.{L}.attn_q.bias", R::attn_q, B},
    {"blk.{L}.attn_k.weight", R::attn_k, W},
    {"blk.{L}.attn_k.bias", R::attn_k, B},
    {"blk.{L}.attn_v.weight", R::attn_v, W},
    {"blk.{L}.attn_v.bias", R::attn_v, B},
    {"blk.{L}.attn_output.weight", R::attn_output, W},
    {"blk.{L}.attn_output.bias", R::attn_output, B},
    {"blk.{L}.attn_output_norm.weight", R::attn_norm, W},
    {"blk.{L}.attn_output_norm.bias", R::attn_norm, B},
    {"blk.{L}.ffn_up.weight", R::mlp_up, W},
    {"blk.{L}.ffn_up.bias", R::mlp_up, B},
    {"blk.{L}.ffn_down.weight", R::mlp_down, W},
    {"blk.{L}.ffn_down.bias", R::mlp_down, B},
    {"blk.{L}.layer_output_norm.weight", R::mlp_norm, W},
    {"blk.{L}.layer_output_norm.bias", R::mlp_norm, B},
};

struct ArchInfo {
  Architecture arch;
  const char* name;
  std::span<const RoleTemplate> hf;
  std::span<const RoleTemplate> gguf;
};

// llama2.c files carry no names: the loader places its tensors under the llama names.
const std::array<ArchInfo, 6> kArchs = {{
    {Architecture::llama, "llama", kLlamaHf, kLlamaGguf},
    {Architecture::mistral, "mistral", kMistralHf, kLlamaGguf},
    {Architecture::qwen2, "qwen2", kQwen2Hf, kLlamaGguf},
    {Architecture::gpt2, "gpt2", kGpt2Hf, kGpt2Gguf},
    {Architecture::bert, "bert", kBertHf, kBertGguf},
    {Architecture::llama2c, "llama2c", kLlamaHf, kLlamaGguf},
}};

constexpr std::array<Architecture, 6> kAllArchs = {Architecture::llama, Architecture::mistral,
                                                   Architecture::qwen2, Architecture::gpt2,
                                                   Architecture::bert,  Architecture::llama2c};

const ArchInfo& arch_info(Architecture arch) {
  auto i = static_cast<size_t>(arch);
  QFORGE_CHECK(i < kArchs.size() && kArchs[i].arch == arch);
  return kArchs[i];
}

constexpr std::array<const char*, 18> kRoleNames = {
    "token_embedding", "position_embedding", "token_type_embedding", "embedding_norm",
    "attn_norm",       "attn_q",             "attn_k",               "attn_v",
    "attn_qkv",        "attn_output",        "mlp_norm",             "mlp_gate",
    "mlp_up",          "mlp_down",           "final_norm",           "output",
    "pooler",          "buffer"};

// HF `architectures` class names of the supported families.
struct ClassName {
  const char* cls;
  Architecture arch;
};
constexpr ClassName kClassNames[] = {
    {"LlamaForCausalLM", Architecture::llama},     {"LlamaModel", Architecture::llama},
    {"MistralForCausalLM", Architecture::mistral}, {"MistralModel", Architecture::mistral},
    {"Qwen2ForCausalLM", Architecture::qwen2},     {"Qwen2Model", Architecture::qwen2},
    {"GPT2LMHeadModel", Architecture::gpt2},       {"GPT2Model", Architecture::gpt2},
    {"BertModel", Architecture::bert},
};

std::string known_architecture_names() {
  std::string s;
  for (const auto& a : kArchs) s += (s.empty() ? "" : ", ") + std::string(a.name);
  return s;
}

// Matches `name` against `pattern` with at most one "{L}"; sets *layer (or -1).
bool match_template(std::string_view pattern, std::string_view name, int* layer) {
  size_t hole = pattern.find("{L}");
  if (hole == std::string_view::npos) {
    *layer = -1;
    return pattern == name;
  }
  std::string_view prefix = pattern.substr(0, hole), suffix = pattern.substr(hole + 3);
  if (name.size() <= prefix.size() + suffix.size()) return false;
  if (name.substr(0, prefix.size()) != prefix) return false;
  if (name.substr(name.size() - suffix.size()) != suffix) return false;
  std::string_view digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 6) return false;  // no real model has a million layers; keeps int exact
  if (digits.size() > 1 && digits[0] == '0') return false;
  int value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  *layer = value;
  return true;
}

}  // namespace

const char* architecture_name(Architecture arch) { return arch_info(arch).name; }
std::span<const Architecture> all_architectures() { return kAllArchs; }

Expected<Architecture> architecture_from_name(std::string_view name) {
  for (const auto& a : kArchs)
    if (name == a.name) return a.arch;
  if (name == "llama2.c") return Architecture::llama2c;
  return unsupported("unknown architecture '" + std::string(name) + "' (known: " + known_architecture_names() + ")");
}

Expected<Architecture> architecture_from_config(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object()) return parse_error(source + ": config is not a JSON object");
  std::string model_type;
  if (auto it = config.find("model_type"); it != config.end() && it->is_string()) model_type = it->get<std::string>();
  if (!model_type.empty()) {
    for (const auto& a : kArchs)
      if (model_type == a.name && a.arch != Architecture::llama2c) return a.arch;
  }
  std::string cls;
  if (auto it = config.find("architectures"); it != config.end() && it->is_array() && !it->empty() &&
                                               (*it)[0].is_string()) {
    cls = (*it)[0].get<std::string>();
    if (model_type.empty())
      for (const auto& c : kClassNames)
        if (cls == c.cls) return c.arch;
  }
  if (model_type.empty() && cls.empty())
    return parse_error(source + ": neither 'model_type' nor 'architectures' is given");
  return unsupported(source + ": unsupported architecture (model_type '" + model_type + "', architectures[0] '" +
                     cls + "'); supported model_type values: llama, mistral, qwen2, gpt2, bert");
}

Expected<Architecture> architecture_from_config_file(const std::string& config_path) {
  std::ifstream in(config_path, std::ios::binary);
  if (!in) return io_error(config_path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json config = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return parse_error(config_path + ": not valid JSON");
  return architecture_from_config(config, config_path);
}

const char* tensor_naming_name(TensorNaming naming) {
  return naming == TensorNaming::hf ? "hf" : "gguf";
}

const char* tensor_role_name(TensorRole role) {
  auto i = static_cast<size_t>(role);
  QFORGE_CHECK(i < kRoleNames.size());
  return kRoleNames[i];
}

bool is_linear_weight(TensorRole role) {
  switch (role) {
    case R::attn_q: case R::attn_k: case R::attn_v: case R::attn_qkv: case R::attn_output:
    case R::mlp_gate: case R::mlp_up: case R::mlp_down:
      return true;
    default:
      return false;
  }
}

bool linear_weights_transposed(Architecture arch, TensorNaming naming) {
  // convert_hf_to_gguf.py transposes GPT-2's Conv1D weights, so only the HF files are [in, out].
  return arch == Architecture::gpt2 && naming == TensorNaming::hf;
}

std::span<const RoleTemplate> role_templates(Architecture arch, TensorNaming naming) {
  const ArchInfo& a = arch_info(arch);
  return naming == TensorNaming::hf ? a.hf : a.gguf;
}

Expected<ResolvedTensor> resolve_tensor_role(Architecture arch, std::string_view name, TensorNaming naming) {
  for (const RoleTemplate& t : role_templates(arch, naming)) {
    int layer = -1;
    if (match_template(t.pattern, name, &layer)) return ResolvedTensor{t.role, layer, t.is_bias};
  }
  return unsupported("tensor '" + std::string(name) + "' is not a known " + tensor_naming_name(naming) +
                     " tensor name of architecture " + architecture_name(arch));
}

Expected<std::string> tensor_name_for_role(Architecture arch, TensorRole role, int layer, bool is_bias,
                                           TensorNaming naming) {
  for (const RoleTemplate& t : role_templates(arch, naming)) {
    if (t.role != role || t.is_bias != is_bias) continue;
    std::string pattern = t.pattern;
    size_t hole = pattern.find("{L}");
    if ((hole != std::string::npos) != (layer >= 0)) continue;
    if (hole != std::string::npos) pattern.replace(hole, 3, std::to_string(layer));
    return pattern;
  }
  return unsupported(std::string("architecture ") + architecture_name(arch) + " has no " +
                     tensor_naming_name(naming) + " tensor for role " + tensor_role_name(role) +
                     (is_bias ? " (bias)" : "") + (layer >= 0 ? " in layer " + std::to_string(layer) : ""));
}

}  // namespace qforge
