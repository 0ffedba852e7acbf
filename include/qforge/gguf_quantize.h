// GGUF quantization presets (llama.cpp's Q4_K_M, Q6_K, ...), the per-tensor type plan with its
// strict preflight, and the streaming writer behind `qforge convert` and `qforge quantize
// --format gguf`.
//
// A preset is a default ggml type plus rules over tensor roles (never name substrings) that
// reproduce llama.cpp's llama_tensor_get_type (src/llama-quant.cpp) for the llama family:
// e.g. Q4_K_M stores attn_v and ffn_down as Q6_K in the layers llama.cpp's use_more_bits picks
// and the output head as Q6_K. The rules are data (gguf_preset_rules()), defined once in
// src/algorithms/gguf_presets.cpp and listed in docs/gguf.md.
//
// Type choice for a quantizable tensor (2-D weights: token embedding, output head, attention and
// MLP projections), in order:
//   1. the preset's default type, then its rules (skipped for F16/BF16/F32 presets and --pure);
//   2. --tensor-type REGEX=TYPE overrides, matched against the GGUF name, last match wins;
//   3. --output-tensor-type (output head), then --token-embedding-type (token_embd);
//   4. the shape check: a row length (ne[0]) that is not a multiple of the type's block falls
//      back like llama.cpp (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> IQ4_NL,
//      TQ1_0/TQ2_0 -> Q4_0, then F16 when even that does not fit). A fallback is a preflight
//      error unless allow_fallback is set.
// Other tensors (norms, biases) are written F32 (GGUF input: copied unchanged).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/format.h"
#include "qforge/gguf.h"
#include "qforge/gguf_convert.h"
#include "qforge/imatrix.h"
#include "qforge/progress.h"
#include "qforge/status.h"
#include "qforge/tensor_roles.h"

namespace qforge {

// ---------------------------------------------------------------------------------------------
// Presets and their rules

enum class GgufPresetId : uint8_t {
  F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, Q4_0, Q4_1, Q5_0, Q5_1,
  Q3_K_S, Q3_K_M, Q3_K_L, Q2_K, IQ4_NL, TQ1_0, TQ2_0,
};

struct GgufPreset {
  GgufPresetId id;
  const char* name;        // "Q4_K_M"
  uint32_t file_type;      // llama.cpp's LLAMA_FTYPE (general.file_type)
  GgmlType default_type;
  const char* description;
  bool quantized() const;  // false for F32 / F16 / BF16 (rules do not apply)
};

std::span<const GgufPreset> gguf_presets();
const GgufPreset& gguf_preset(GgufPresetId id);
// Case-insensitive ("q4_k_m" works); the error lists every preset.
Expected<const GgufPreset*> find_gguf_preset(std::string_view name);

// Layers a rule applies to; i = layer index, n = layer count (llama.cpp's predicates).
enum class GgufLayerSet : uint8_t {
  all = 0,
  more_bits = 1,        // use_more_bits: i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2
  first_eighth = 2,     // i < n/8
  first_sixteenth = 3,  // i < n/16
  first_two = 4,        // i < 2
  first_four = 5,       // i < 4
};
enum class GgufRuleCondition : uint8_t {
  always = 0,
  gqa_at_least_4 = 1,   // n_head / n_head_kv >= 4
  gqa_below_4 = 2,
  with_imatrix = 3,
  without_imatrix = 4,
  model_70b = 5,        // 80 layers: llama.cpp's LLM_TYPE_70B for llama and qwen2
  row_not_multiple_of_default_block = 6,  // ne[0] % block(preset default type) != 0
};

// One rule: for the listed presets, a tensor of `role` in `layers` meeting `condition` (and, when
// `when_type` is set, whose type so far is that type) gets `type`. Rules are applied in table
// order and a later match overrides an earlier one. Role TensorRole::output means the output
// head: output.weight, or token_embd.weight when the embeddings are tied (llama.cpp quantizes the
// shared tensor as the output); TensorRole::token_embedding means an untied token_embd.
struct GgufPresetRule {
  uint32_t presets;  // bit (1 << GgufPresetId) per preset
  TensorRole role;
  GgufLayerSet layers;
  GgufRuleCondition condition;
  std::optional<GgmlType> when_type;
  GgmlType type;
};
std::span<const GgufPresetRule> gguf_preset_rules();
const char* gguf_layer_set_description(GgufLayerSet layers);
const char* gguf_rule_condition_description(GgufRuleCondition condition);

// What the rules need to know about a tensor and the model.
struct GgufTensorContext {
  TensorRole role = TensorRole::attn_q;  // TensorRole::output for a tied token embedding
  int layer = -1;
  int64_t n_layers = 0;
  int64_t n_head = 0, n_head_kv = 0;
  int64_t row_length = 0;  // ne[0]
  bool has_imatrix = false;
};
// The preset's type for the tensor (default type, then the rules unless `pure`), and the index of
// the last rule that applied (-1: the default).
GgmlType gguf_preset_type(const GgufPreset& preset, const GgufTensorContext& tensor, bool pure, int* rule_index);

// Types a weight may be stored as: F32, F16, BF16 and every GGUF block format of the format
// table except Q8_K (ggml's activation type). Case-insensitive; errors name `what`.
Expected<GgmlType> parse_gguf_weight_type(std::string_view name, const std::string& what);
// The GGUF storage types qforge can write, in ggml id order.
std::vector<GgmlType> gguf_weight_types();
// llama.cpp's fallback for a row length the type's block does not divide (llama-quant.cpp):
// TQ1_0/TQ2_0 -> Q4_0, Q2_K/Q3_K -> IQ4_NL, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; the legacy
// 32-blocks and IQ4_NL have none in llama.cpp (it aborts): qforge uses F16.
GgmlType gguf_fallback_type(GgmlType type);
// The format-table scheme that stores `type`'s blocks (a GGUF block format, or f16/bf16/f32).
Scheme gguf_type_scheme(GgmlType type);

// Which llama.cpp backends run matrix multiplications with this weight type.
struct GgufBackendSupport {
  bool cpu = true;
  bool cuda = true;
  const char* note = "";  // why not, where a backend cannot
};
GgufBackendSupport gguf_backend_support(GgmlType type);

// ---------------------------------------------------------------------------------------------
// Overrides

struct GgufTypeOverride {
  std::string pattern;  // ECMAScript regex, searched in the GGUF tensor name
  std::regex regex;
  GgmlType type = GgmlType::F16;
  std::string origin;   // "--tensor-type 'attn_v=Q8_0'" or "types.txt:3"
};
// "REGEX=TYPE" (the last '=' separates them); errors name `origin`.
Expected<GgufTypeOverride> parse_gguf_type_override(const std::string& spec, const std::string& origin);
// One REGEX=TYPE per line; blank lines and lines starting with '#' are skipped. Errors name
// file:line.
Expected<std::vector<GgufTypeOverride>> read_gguf_type_override_file(const std::string& path);

// ---------------------------------------------------------------------------------------------
// Plan (preflight)

struct GgufQuantizeOptions {
  const GgufPreset* preset = nullptr;
  std::vector<GgufTypeOverride> overrides;
  std::optional<GgmlType> output_tensor_type;
  std::optional<GgmlType> token_embedding_type;
  bool pure = false;
  bool allow_requantize = false;
  bool allow_fallback = false;
  const Imatrix* imatrix = nullptr;
  // Tensors computed elsewhere, by GGUF name (calibrated quantization, `qforge quantize --calib
  // --format gguf`): `prequantized` holds finished blocks of the planned type, written as they are;
  // `replaced_f32` holds values (rows in GGUF order) that replace the input's before the planned
  // type is applied (weights and norms a calibrated method rewrote).
  const std::map<std::string, QuantizedTensor>* prequantized = nullptr;
  const std::map<std::string, std::vector<float>>* replaced_f32 = nullptr;
};

struct GgufTensorPlan {
  size_t input_index = 0;
  std::string name;
  Shape shape;
  GgmlType source_type = GgmlType::F32;
  GgmlType type = GgmlType::F32;    // written type
  GgmlType wanted = GgmlType::F32;  // before a fallback (== type without one)
  bool quantizable = false;         // a 2-D weight the preset applies to
  bool fallback = false;
  bool requantize = false;          // the input is quantized and is re-quantized (dequantize first)
  bool copy = false;                // input bytes copied unchanged
  bool imatrix = false;             // importance weights from the imatrix are used
  std::string reason;               // why this type ("Q4_K_M rule: attn_v, use_more_bits layer", ...)
  std::string fallback_reason;      // "384 columns are not a multiple of Q4_K's 256"
  uint64_t nbytes = 0;
  double bits_per_weight() const;
  int64_t numel() const { return shape_numel(shape); }
};

struct GgufQuantizePlan {
  const GgufPreset* preset = nullptr;
  std::vector<GgufTensorPlan> tensors;
  std::vector<GgufKeyValue> metadata;  // everything written, in order
  uint64_t file_bytes = 0;             // exact size of the file to write
  uint64_t tensor_bytes = 0;
  int64_t parameters = 0;
  int64_t quantized_parameters = 0;    // in quantizable tensors
  uint64_t quantized_bytes = 0;
  std::vector<std::string> fallbacks;     // "name: Q4_K -> Q5_0 (...)"
  std::vector<std::string> requantized;   // names of quantized input tensors re-quantized
  std::vector<std::string> imatrix_missing;  // quantized tensors without an imatrix entry
  std::vector<std::string> warnings;
  double bits_per_weight() const;            // whole tensor data
  double quantized_bits_per_weight() const;  // quantizable tensors only
};

// Chooses every tensor's type and builds the metadata. Errors: an imatrix entry of the wrong
// size, a type the writer cannot produce. Fallbacks and re-quantization are recorded, not
// errors: check_gguf_plan decides.
Expected<GgufQuantizePlan> plan_gguf_quantization(const GgufModelInput& input, const GgufQuantizeOptions& options);
// The preflight verdict: an error listing the tensors that would fall back (without
// allow_fallback) or be re-quantized (without allow_requantize).
Status check_gguf_plan(const GgufQuantizePlan& plan, const GgufQuantizeOptions& options);

// ---------------------------------------------------------------------------------------------
// Writing

struct GgufWriteResult {
  uint64_t file_bytes = 0;
  int64_t tensors = 0;
  double seconds = 0;
};
// Streams the plan into `output` tensor by tensor (each produced when the writer reaches it, so
// memory stays at about one tensor), quantizing rows in parallel (byte-identical output for any
// thread count), checking for interrupts between tensors, and renaming the temp file into place
// only when everything was written. `label` names the job in progress lines and interrupts.
Expected<GgufWriteResult> write_gguf_model(const GgufModelInput& input, const GgufQuantizePlan& plan,
                                           const GgufQuantizeOptions& options, const std::string& output,
                                           const Progress::Options& progress = {},
                                           const std::string& label = "quantize");

}  // namespace qforge
