// The GGUF quantization presets and their per-role rules: the one place that says which ggml type
// each tensor of a llama-family model gets under Q4_K_M, Q6_K, ... (llama.cpp's
// llama_tensor_get_type in src/llama-quant.cpp, restated over qforge tensor roles), plus
// llama.cpp's fallback table, the weight types qforge writes, and --tensor-type parsing.
#include <algorithm>
#include <array>
#include <cctype>
#include <fstream>

#include "qforge/format.h"
#include "qforge/gguf_quantize.h"

namespace qforge {
namespace {

using P = GgufPresetId;
using T = GgmlType;
using R = TensorRole;
using L = GgufLayerSet;
using C = GgufRuleCondition;

// clang-format off
// Columns: id, name, llama.cpp LLAMA_FTYPE, default type, description.
constexpr std::array kPresets = std::to_array<GgufPreset>({
  {P::F32,    "F32",    0,  T::F32,    "all 2-D weights f32"},
  {P::F16,    "F16",    1,  T::F16,    "all 2-D weights f16"},
  {P::BF16,   "BF16",   32, T::BF16,   "all 2-D weights bf16"},
  {P::Q8_0,   "Q8_0",   7,  T::Q8_0,   "8.50 bpw blocks of 32"},
  {P::Q6_K,   "Q6_K",   18, T::Q6_K,   "6.56 bpw K-quant"},
  {P::Q5_K_M, "Q5_K_M", 17, T::Q5_K,   "Q5_K, Q6_K for attn_v / ffn_down in use_more_bits layers"},
  {P::Q5_K_S, "Q5_K_S", 16, T::Q5_K,   "Q5_K throughout"},
  {P::Q4_K_M, "Q4_K_M", 15, T::Q4_K,   "Q4_K, Q6_K for attn_v / ffn_down in use_more_bits layers"},
  {P::Q4_K_S, "Q4_K_S", 14, T::Q4_K,   "Q4_K, Q5_K for the first attn_v / ffn_down layers"},
  {P::Q4_0,   "Q4_0",   2,  T::Q4_0,   "4.50 bpw blocks of 32, symmetric"},
  {P::Q4_1,   "Q4_1",   3,  T::Q4_1,   "5.00 bpw blocks of 32, with minimum"},
  {P::Q5_0,   "Q5_0",   8,  T::Q5_0,   "5.50 bpw blocks of 32, symmetric"},
  {P::Q5_1,   "Q5_1",   9,  T::Q5_1,   "6.00 bpw blocks of 32, with minimum"},
  {P::Q3_K_S, "Q3_K_S", 11, T::Q3_K,   "Q3_K throughout"},
  {P::Q3_K_M, "Q3_K_M", 12, T::Q3_K,   "Q3_K; Q4_K/Q5_K for attn_v, attn_output, ffn_down"},
  {P::Q3_K_L, "Q3_K_L", 13, T::Q3_K,   "Q3_K; Q5_K for attn_v, attn_output, ffn_down"},
  {P::Q2_K,   "Q2_K",   10, T::Q2_K,   "Q2_K; Q3_K/Q4_K for attn_v, attn_output, ffn_down"},
  {P::IQ4_NL, "IQ4_NL", 25, T::IQ4_NL, "4.50 bpw non-linear blocks of 32"},
  {P::TQ1_0,  "TQ1_0",  36, T::TQ1_0,  "1.69 bpw ternary (for ternary-trained models)"},
  {P::TQ2_0,  "TQ2_0",  37, T::TQ2_0,  "2.06 bpw ternary (for ternary-trained models)"},
});

constexpr uint32_t bit(P p) { return 1u << static_cast<unsigned>(p); }
constexpr uint32_t kQuantized = ~(bit(P::F32) | bit(P::F16) | bit(P::BF16));
constexpr std::optional<T> kAny = std::nullopt;

// llama_tensor_get_type's rules for the presets above on llama-family models (no experts, not
// Falcon). Applied in order; a later match overrides an earlier one. Role `output` = the output
// head (output.weight, or token_embd.weight when tied); `token_embedding` = an untied token_embd.
constexpr std::array kRules = std::to_array<GgufPresetRule>({
  // Output head: Q6_K (Q8_0 stays Q8_0); Q8_0 when its rows do not fit the preset's block.
  {kQuantized & ~bit(P::Q8_0),            R::output,          L::all,             C::always,          kAny,    T::Q6_K},
  {kQuantized,                            R::output,          L::all,             C::row_not_multiple_of_default_block, kAny, T::Q8_0},
  // Untied token embedding.
  {bit(P::TQ1_0) | bit(P::TQ2_0),         R::token_embedding, L::all,             C::always,          kAny,    T::Q4_K},
  // attn_v.
  {bit(P::Q2_K),                          R::attn_v,          L::all,             C::gqa_below_4,     kAny,    T::Q3_K},
  {bit(P::Q2_K),                          R::attn_v,          L::all,             C::gqa_at_least_4,  kAny,    T::Q4_K},
  {bit(P::Q3_K_M),                        R::attn_v,          L::all,             C::always,          kAny,    T::Q4_K},
  {bit(P::Q3_K_M),                        R::attn_v,          L::first_two,       C::always,          kAny,    T::Q5_K},
  {bit(P::Q3_K_L),                        R::attn_v,          L::all,             C::always,          kAny,    T::Q5_K},
  {bit(P::IQ4_NL),                        R::attn_v,          L::all,             C::gqa_at_least_4,  kAny,    T::Q5_K},
  {bit(P::Q4_K_M) | bit(P::Q5_K_M),       R::attn_v,          L::more_bits,       C::always,          kAny,    T::Q6_K},
  {bit(P::Q4_K_S),                        R::attn_v,          L::first_four,      C::always,          kAny,    T::Q5_K},
  // 70B: eight query heads share each attn_v, so more bits there cost little.
  {kQuantized,                            R::attn_v,          L::all,             C::model_70b,       T::Q3_K, T::Q5_K},
  {kQuantized,                            R::attn_v,          L::all,             C::model_70b,       T::Q4_K, T::Q5_K},
  // ffn_down.
  {bit(P::Q2_K),                          R::mlp_down,        L::all,             C::always,          kAny,    T::Q3_K},
  {bit(P::Q3_K_M),                        R::mlp_down,        L::all,             C::always,          kAny,    T::Q4_K},
  {bit(P::Q3_K_M),                        R::mlp_down,        L::first_sixteenth, C::always,          kAny,    T::Q5_K},
  {bit(P::Q3_K_L),                        R::mlp_down,        L::all,             C::always,          kAny,    T::Q5_K},
  {bit(P::Q4_K_M) | bit(P::Q5_K_M),       R::mlp_down,        L::more_bits,       C::always,          kAny,    T::Q6_K},
  {bit(P::IQ4_NL),                        R::mlp_down,        L::first_eighth,    C::without_imatrix, kAny,    T::Q5_K},
  {bit(P::Q4_K_S),                        R::mlp_down,        L::first_eighth,    C::always,          kAny,    T::Q5_K},
  {bit(P::Q4_0),                          R::mlp_down,        L::first_eighth,    C::with_imatrix,    kAny,    T::Q4_1},
  {bit(P::Q5_0),                          R::mlp_down,        L::first_eighth,    C::with_imatrix,    kAny,    T::Q5_1},
  // attn_output.
  {bit(P::Q2_K),                          R::attn_output,     L::all,             C::always,          kAny,    T::Q3_K},
  {bit(P::Q3_K_M),                        R::attn_output,     L::all,             C::always,          kAny,    T::Q4_K},
  {bit(P::Q3_K_L),                        R::attn_output,     L::all,             C::always,          kAny,    T::Q5_K},
  // Fused attn_qkv (not in the llama family; kept so the table is complete for the role).
  {bit(P::Q3_K_M) | bit(P::Q3_K_L),       R::attn_qkv,        L::all,             C::always,          kAny,    T::Q4_K},
  {bit(P::Q4_K_M),                        R::attn_qkv,        L::all,             C::always,          kAny,    T::Q5_K},
  {bit(P::Q5_K_M),                        R::attn_qkv,        L::all,             C::always,          kAny,    T::Q6_K},
});
// clang-format on

bool layer_matches(GgufLayerSet set, int64_t i, int64_t n) {
  switch (set) {
    case L::all: return true;
    case L::more_bits: return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
    case L::first_eighth: return i < n / 8;
    case L::first_sixteenth: return i < n / 16;
    case L::first_two: return i < 2;
    case L::first_four: return i < 4;
  }
  return false;
}

bool condition_holds(GgufRuleCondition c, const GgufPreset& preset, const GgufTensorContext& t) {
  const int64_t gqa = t.n_head_kv > 0 ? t.n_head / t.n_head_kv : 1;
  switch (c) {
    case C::always: return true;
    case C::gqa_at_least_4: return gqa >= 4;
    case C::gqa_below_4: return gqa < 4;
    case C::with_imatrix: return t.has_imatrix;
    case C::without_imatrix: return !t.has_imatrix;
    case C::model_70b: return t.n_layers == 80;
    case C::row_not_multiple_of_default_block:
      return t.row_length % ggml_type_info(preset.default_type).block_size != 0;
  }
  return false;
}

std::string upper(std::string_view s) {
  std::string u(s);
  for (char& c : u) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return u;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

}  // namespace

bool GgufPreset::quantized() const { return (kQuantized & bit(id)) != 0; }

std::span<const GgufPreset> gguf_presets() { return kPresets; }

const GgufPreset& gguf_preset(GgufPresetId id) {
  for (const GgufPreset& p : kPresets)
    if (p.id == id) return p;
  QFORGE_CHECK_MSG(false, "preset id not in the table");
  return kPresets[0];
}

Expected<const GgufPreset*> find_gguf_preset(std::string_view name) {
  const std::string u = upper(name);
  for (const GgufPreset& p : kPresets)
    if (u == p.name) return &p;
  std::string list;
  for (const GgufPreset& p : kPresets) list += (list.empty() ? "" : ", ") + std::string(p.name);
  return invalid_argument("unknown GGUF preset '" + std::string(name) + "' (presets: " + list + ")");
}

std::span<const GgufPresetRule> gguf_preset_rules() { return kRules; }

const char* gguf_layer_set_description(GgufLayerSet layers) {
  switch (layers) {
    case L::all: return "all layers";
    case L::more_bits: return "use_more_bits layers (first 1/8, last 1/8, every third between)";
    case L::first_eighth: return "layers i < n/8";
    case L::first_sixteenth: return "layers i < n/16";
    case L::first_two: return "layers 0-1";
    case L::first_four: return "layers 0-3";
  }
  return "?";
}

const char* gguf_rule_condition_description(GgufRuleCondition condition) {
  switch (condition) {
    case C::always: return "";
    case C::gqa_at_least_4: return "n_head/n_head_kv >= 4";
    case C::gqa_below_4: return "n_head/n_head_kv < 4";
    case C::with_imatrix: return "with an imatrix";
    case C::without_imatrix: return "without an imatrix";
    case C::model_70b: return "80-layer (70B) model";
    case C::row_not_multiple_of_default_block: return "row length not a multiple of the preset type's block";
  }
  return "?";
}

GgmlType gguf_preset_type(const GgufPreset& preset, const GgufTensorContext& t, bool pure, int* rule_index) {
  GgmlType type = preset.default_type;
  if (rule_index) *rule_index = -1;
  if (pure || !preset.quantized()) return type;
  for (size_t i = 0; i < kRules.size(); ++i) {
    const GgufPresetRule& r = kRules[i];
    if ((r.presets & bit(preset.id)) == 0 || r.role != t.role) continue;
    if (t.layer >= 0 ? !layer_matches(r.layers, t.layer, t.n_layers) : r.layers != L::all) continue;
    if (!condition_holds(r.condition, preset, t)) continue;
    if (r.when_type && *r.when_type != type) continue;
    type = r.type;
    if (rule_index) *rule_index = static_cast<int>(i);
  }
  return type;
}

std::vector<GgmlType> gguf_weight_types() {
  std::vector<GgmlType> out;
  for (const GgmlTypeInfo& info : all_ggml_types()) {
    const FormatTraits* f = find_format_by_gguf_type(static_cast<int>(info.type));
    if (f == nullptr || f->id == FormatId::gguf_q8_k) continue;  // Q8_K: activations only
    out.push_back(info.type);
  }
  return out;
}

Expected<GgmlType> parse_gguf_weight_type(std::string_view name, const std::string& what) {
  const std::optional<GgmlType> t = ggml_type_from_name(name);
  const std::vector<GgmlType> ok = gguf_weight_types();
  if (t && std::find(ok.begin(), ok.end(), *t) != ok.end()) return *t;
  std::string list;
  for (GgmlType x : ok) list += (list.empty() ? "" : ", ") + std::string(ggml_type_name(x));
  if (t && *t == GgmlType::Q8_K)
    return invalid_argument(what + ": Q8_K is ggml's activation type, not a weight type (types: " + list + ")");
  return invalid_argument(what + ": unknown or unsupported tensor type '" + std::string(name) + "' (types: " + list +
                          ")");
}

GgmlType gguf_fallback_type(GgmlType type) {
  switch (type) {
    case T::TQ1_0:
    case T::TQ2_0: return T::Q4_0;
    case T::Q2_K:
    case T::Q3_K: return T::IQ4_NL;
    case T::Q4_K: return T::Q5_0;
    case T::Q5_K: return T::Q5_1;
    case T::Q6_K: return T::Q8_0;
    default: return T::F16;
  }
}

GgufBackendSupport gguf_backend_support(GgmlType type) {
  GgufBackendSupport s;
  if (type == T::TQ1_0 || type == T::TQ2_0) {
    // ggml-cuda has no TQ1_0/TQ2_0 kernels (supports_op rejects the type), so the scheduler runs
    // those matmuls on the CPU; upstream TQ2_0 CUDA PRs (#11183, #28769) were not merged.
    s.cuda = false;
    s.note = "no ggml-cuda kernels: llama.cpp runs these matmuls on the CPU";
  }
  return s;
}

Expected<GgufTypeOverride> parse_gguf_type_override(const std::string& spec, const std::string& origin) {
  const size_t eq = spec.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    return invalid_argument(origin + ": '" + spec + "' is not REGEX=TYPE");
  GgufTypeOverride o;
  o.pattern = spec.substr(0, eq);
  o.origin = origin;
  try {
    o.regex = std::regex(o.pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return invalid_argument(origin + ": '" + o.pattern + "' is not a valid regular expression: " + e.what());
  }
  QFORGE_ASSIGN_OR_RETURN(o.type, parse_gguf_weight_type(spec.substr(eq + 1), origin));
  return o;
}

Expected<std::vector<GgufTypeOverride>> read_gguf_type_override_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return io_error(path + ": cannot open the tensor type file");
  std::vector<GgufTypeOverride> out;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    QFORGE_ASSIGN_OR_RETURN(GgufTypeOverride o, parse_gguf_type_override(t, path + ":" + std::to_string(number)));
    out.push_back(std::move(o));
  }
  if (in.bad()) return io_error(path + ": read error");
  return out;
}

}  // namespace qforge
