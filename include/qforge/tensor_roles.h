// Tensor roles: an explicit per-architecture map from checkpoint tensor names to what each tensor
// is (which layer, which projection, weight or bias). Names are matched against exact templates
// such as "model.layers.{L}.self_attn.q_proj.weight"; nothing is guessed from substrings, so an
// unknown tensor is an error rather than a silently mis-quantized weight.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/status.h"

namespace qforge {

// Model families the engine runs. Append-only (persisted in manifests).
enum class Architecture : uint8_t {
  llama = 0,    // LlamaForCausalLM (also the family shape of mistral and qwen2)
  mistral = 1,  // MistralForCausalLM
  qwen2 = 2,    // Qwen2ForCausalLM: q/k/v biases
  gpt2 = 3,     // GPT2LMHeadModel: fused qkv, Conv1D weights stored [in, out]
  bert = 4,     // BertModel (encoder)
  llama2c = 5,  // Karpathy llama2.c v0 checkpoints, mapped onto the llama forward
};

const char* architecture_name(Architecture arch);  // "llama", "mistral", ...
std::span<const Architecture> all_architectures();
// Inverse of architecture_name; also accepts HF model_type spellings. Errors list the known names.
Expected<Architecture> architecture_from_name(std::string_view name);
// From a parsed HF config.json: `model_type` first, then `architectures[0]` (e.g. "LlamaForCausalLM").
// `source` (e.g. the file path) is named in errors.
Expected<Architecture> architecture_from_config(const nlohmann::json& config, const std::string& source);
// Reads and parses `config_path` (a config.json) and calls architecture_from_config.
Expected<Architecture> architecture_from_config_file(const std::string& config_path);

// How tensors are named in a file.
enum class TensorNaming : uint8_t {
  hf = 0,    // HF transformers safetensors names ("model.layers.3.mlp.up_proj.weight")
  gguf = 1,  // llama.cpp GGUF names ("blk.3.ffn_up.weight")
};
const char* tensor_naming_name(TensorNaming naming);

// What a tensor is. Append-only.
enum class TensorRole : uint8_t {
  token_embedding = 0,       // [vocab, hidden]
  position_embedding = 1,    // learned positions (gpt2, bert) [max_positions, hidden]
  token_type_embedding = 2,  // bert segment embeddings [type_vocab, hidden]
  embedding_norm = 3,        // bert LayerNorm after the embedding sum
  attn_norm = 4,             // norm of the attention block (pre-norm; bert: post-attention LayerNorm)
  attn_q = 5,
  attn_k = 6,
  attn_v = 7,
  attn_qkv = 8,              // fused q|k|v (gpt2 c_attn)
  attn_output = 9,           // attention output projection (o_proj, c_proj, attention.output.dense)
  mlp_norm = 10,             // norm of the MLP block (pre-norm; bert: output LayerNorm)
  mlp_gate = 11,
  mlp_up = 12,               // up projection (gpt2 c_fc, bert intermediate.dense)
  mlp_down = 13,             // down projection (gpt2 mlp.c_proj, bert output.dense)
  final_norm = 14,
  output = 15,               // lm_head / classifier [vocab, hidden]
  pooler = 16,               // bert pooler.dense
  buffer = 17,               // a non-parameter buffer some exporters save (rotary inv_freq, gpt2
                             // causal-mask "attn.bias", bert position_ids): recognised, not loaded
};

const char* tensor_role_name(TensorRole role);  // "attn_q", "mlp_down", ...
// True for the projections of attention and MLP blocks: the weights quantized by default.
// Embeddings, the output head, norms and the bert pooler are not "linear" here.
bool is_linear_weight(TensorRole role);
// True when the architecture's linear weights are stored [in_features, out_features] in `naming`
// (gpt2 Conv1D in HF files) rather than the usual [out_features, in_features].
bool linear_weights_transposed(Architecture arch, TensorNaming naming);

struct ResolvedTensor {
  TensorRole role = TensorRole::buffer;
  int layer = -1;        // block index for per-layer tensors, -1 for global ones
  bool is_bias = false;  // the ".bias" of a linear or norm

  bool operator==(const ResolvedTensor&) const = default;
};

// One name template: "{L}" stands for the decimal layer index.
struct RoleTemplate {
  const char* pattern;
  TensorRole role;
  bool is_bias;
};

// The templates of an architecture under a naming (empty when that naming does not exist for it).
std::span<const RoleTemplate> role_templates(Architecture arch, TensorNaming naming);

// Resolves `name` against the architecture's templates. The layer number must be canonical
// decimal (no sign, no leading zeros). Unknown names give an error naming the tensor and the
// architecture.
Expected<ResolvedTensor> resolve_tensor_role(Architecture arch, std::string_view name,
                                             TensorNaming naming = TensorNaming::hf);

// The canonical name of (role, layer, bias) under `naming`: the first template with that role and
// bias flag. Per-layer roles need layer >= 0, global roles layer < 0. Error when none exists.
Expected<std::string> tensor_name_for_role(Architecture arch, TensorRole role, int layer, bool is_bias,
                                           TensorNaming naming = TensorNaming::hf);

}  // namespace qforge
