// HF config.json parsing into ModelConfig, per architecture family.
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "qforge/model.h"

namespace qforge {
namespace {

using json = nlohmann::json;

// Field readers: null counts as absent (HF writes e.g. "head_dim": null, "n_inner": null).
class Fields {
 public:
  Fields(const json& j, const std::string& source) : j_(j), source_(source) {}

  const json* find(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  Status missing(const char* key) const {
    return parse_error(source_ + ": required field '" + key + "' is missing");
  }
  Status wrong(const char* key, const char* what) const {
    return parse_error(source_ + ": field '" + key + "' must be " + what);
  }

  Expected<std::optional<int64_t>> opt_int(const char* key) const {
    const json* v = find(key);
    if (!v) return std::optional<int64_t>();
    if (v->is_number_integer()) return std::optional<int64_t>(v->get<int64_t>());
    if (v->is_number_float()) {  // some exporters write 4096.0
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15)
        return std::optional<int64_t>(static_cast<int64_t>(d));
    }
    return wrong(key, "an integer");
  }
  Expected<int64_t> req_int(const char* key) const {
    QFORGE_ASSIGN_OR_RETURN(auto v, opt_int(key));
    if (!v) return missing(key);
    return *v;
  }
  Expected<int64_t> int_or(const char* key, int64_t fallback) const {
    QFORGE_ASSIGN_OR_RETURN(auto v, opt_int(key));
    return v ? *v : fallback;
  }
  Expected<std::optional<double>> opt_number(const char* key) const {
    const json* v = find(key);
    if (!v) return std::optional<double>();
    if (!v->is_number()) return wrong(key, "a number");
    return std::optional<double>(v->get<double>());
  }
  Expected<double> req_number(const char* key) const {
    QFORGE_ASSIGN_OR_RETURN(auto v, opt_number(key));
    if (!v) return missing(key);
    return *v;
  }
  Expected<bool> bool_or(const char* key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) return wrong(key, "true or false");
    return v->get<bool>();
  }
  Expected<std::string> string_or(const char* key, const std::string& fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_string()) return wrong(key, "a string");
    return v->get<std::string>();
  }
  // bos/eos/pad: an integer, a list of integers, or absent.
  Expected<std::vector<int64_t>> token_ids(const char* key) const {
    const json* v = find(key);
    std::vector<int64_t> out;
    if (!v) return out;
    if (v->is_number_integer()) {
      out.push_back(v->get<int64_t>());
    } else if (v->is_array()) {
      for (const auto& e : *v) {
        if (!e.is_number_integer()) return wrong(key, "an integer or a list of integers");
        out.push_back(e.get<int64_t>());
      }
    } else {
      return wrong(key, "an integer or a list of integers");
    }
    return out;
  }
  const std::string& source() const { return source_; }

 private:
  const json& j_;
  const std::string& source_;
};

// RoPE theta: transformers < 5 writes `rope_theta`; transformers 5 nests it in `rope_parameters`.
// Only the default (unscaled) RoPE is implemented; scaled variants are refused, not approximated.
Status parse_rope(const Fields& f, ModelConfig* c) {
  QFORGE_ASSIGN_OR_RETURN(auto theta, f.opt_number("rope_theta"));
  if (const json* rp = f.find("rope_parameters")) {
    if (!rp->is_object()) return f.wrong("rope_parameters", "an object");
    Fields rf(*rp, f.source());
    QFORGE_ASSIGN_OR_RETURN(auto nested, rf.opt_number("rope_theta"));
    if (nested) theta = nested;
    QFORGE_ASSIGN_OR_RETURN(std::string type, rf.string_or("rope_type", "default"));
    if (type != "default")
      return unsupported(f.source() + ": rope_parameters.rope_type '" + type + "' is not supported (only 'default')");
    QFORGE_ASSIGN_OR_RETURN(auto partial, rf.opt_number("partial_rotary_factor"));
    if (partial && *partial != 1.0)
      return unsupported(f.source() + ": partial_rotary_factor " + std::to_string(*partial) + " is not supported");
  }
  if (const json* rs = f.find("rope_scaling")) {
    std::string type = "?";
    if (rs->is_object()) {
      auto it = rs->find("rope_type");
      if (it == rs->end()) it = rs->find("type");
      if (it != rs->end() && it->is_string()) type = it->get<std::string>();
    }
    if (type != "default")
      return unsupported(f.source() + ": rope_scaling of type '" + type + "' is not supported");
  }
  c->rope_theta = theta.value_or(10000.0);
  if (!(c->rope_theta > 1.0) || !std::isfinite(c->rope_theta))
    return parse_error(f.source() + ": rope theta " + std::to_string(c->rope_theta) + " must be > 1");
  return Status::ok();
}

Status parse_common_tokens(const Fields& f, ModelConfig* c) {
  QFORGE_ASSIGN_OR_RETURN(auto bos, f.token_ids("bos_token_id"));
  QFORGE_ASSIGN_OR_RETURN(auto eos, f.token_ids("eos_token_id"));
  QFORGE_ASSIGN_OR_RETURN(auto pad, f.token_ids("pad_token_id"));
  c->bos_token_id = bos.empty() ? -1 : bos[0];
  c->eos_token_ids = eos;
  c->pad_token_id = pad.empty() ? -1 : pad[0];
  return Status::ok();
}

Status parse_llama_family(const Fields& f, ModelConfig* c) {
  QFORGE_ASSIGN_OR_RETURN(c->hidden_size, f.req_int("hidden_size"));
  QFORGE_ASSIGN_OR_RETURN(c->num_layers, f.req_int("num_hidden_layers"));
  QFORGE_ASSIGN_OR_RETURN(c->num_heads, f.req_int("num_attention_heads"));
  QFORGE_ASSIGN_OR_RETURN(c->num_kv_heads, f.int_or("num_key_value_heads", c->num_heads));
  if (c->num_heads <= 0) return parse_error(f.source() + ": num_attention_heads must be positive");
  QFORGE_ASSIGN_OR_RETURN(c->head_dim, f.int_or("head_dim", c->hidden_size / c->num_heads));
  QFORGE_ASSIGN_OR_RETURN(c->intermediate_size, f.req_int("intermediate_size"));
  QFORGE_ASSIGN_OR_RETURN(c->vocab_size, f.req_int("vocab_size"));
  QFORGE_ASSIGN_OR_RETURN(c->norm_eps, f.req_number("rms_norm_eps"));
  QFORGE_ASSIGN_OR_RETURN(c->max_positions, f.int_or("max_position_embeddings", 0));
  QFORGE_ASSIGN_OR_RETURN(c->tie_word_embeddings, f.bool_or("tie_word_embeddings", false));
  QFORGE_ASSIGN_OR_RETURN(std::string act, f.string_or("hidden_act", "silu"));
  if (act != "silu" && act != "swish")
    return unsupported(f.source() + ": hidden_act '" + act + "' is not supported for " +
                       architecture_name(c->arch) + " (only 'silu')");
  QFORGE_ASSIGN_OR_RETURN(int64_t tp, f.int_or("pretraining_tp", 1));
  (void)tp;  // HF only uses it to split matmuls; the math is the same
  QFORGE_RETURN_IF_ERROR(parse_rope(f, c));
  c->norm = NormType::rms_norm;
  c->mlp = MlpType::gated_silu;
  c->rope = RopeStyle::half_split;
  c->pre_norm = true;
  c->causal = true;

  switch (c->arch) {
    case Architecture::llama: {
      QFORGE_ASSIGN_OR_RETURN(bool attention_bias, f.bool_or("attention_bias", false));
      QFORGE_ASSIGN_OR_RETURN(c->mlp_bias, f.bool_or("mlp_bias", false));
      c->qkv_bias = c->attn_output_bias = attention_bias;
      break;
    }
    case Architecture::qwen2: {
      c->qkv_bias = true;
      QFORGE_ASSIGN_OR_RETURN(bool sliding, f.bool_or("use_sliding_window", false));
      if (sliding)
        return unsupported(f.source() + ": use_sliding_window true (per-layer sliding windows) is not supported");
      break;
    }
    case Architecture::mistral: {
      QFORGE_ASSIGN_OR_RETURN(c->sliding_window, f.int_or("sliding_window", 0));
      if (c->sliding_window < 0) return parse_error(f.source() + ": sliding_window must be >= 0");
      break;
    }
    default:
      QFORGE_CHECK(false);
  }
  return parse_common_tokens(f, c);
}

Status parse_gpt2(const Fields& f, ModelConfig* c) {
  QFORGE_ASSIGN_OR_RETURN(c->hidden_size, f.req_int("n_embd"));
  QFORGE_ASSIGN_OR_RETURN(c->num_layers, f.req_int("n_layer"));
  QFORGE_ASSIGN_OR_RETURN(c->num_heads, f.req_int("n_head"));
  QFORGE_ASSIGN_OR_RETURN(c->vocab_size, f.req_int("vocab_size"));
  QFORGE_ASSIGN_OR_RETURN(c->max_positions, f.req_int("n_positions"));
  QFORGE_ASSIGN_OR_RETURN(c->norm_eps, f.req_number("layer_norm_epsilon"));
  QFORGE_ASSIGN_OR_RETURN(c->intermediate_size, f.int_or("n_inner", 4 * c->hidden_size));
  if (c->num_heads <= 0) return parse_error(f.source() + ": n_head must be positive");
  c->num_kv_heads = c->num_heads;
  c->head_dim = c->hidden_size / c->num_heads;
  if (c->head_dim * c->num_heads != c->hidden_size)
    return parse_error(f.source() + ": n_embd " + std::to_string(c->hidden_size) + " is not divisible by n_head " +
                       std::to_string(c->num_heads));
  QFORGE_ASSIGN_OR_RETURN(std::string act, f.string_or("activation_function", "gelu_new"));
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") {
    c->mlp = MlpType::gelu_tanh;
  } else if (act == "gelu") {
    c->mlp = MlpType::gelu_erf;
  } else {
    return unsupported(f.source() + ": activation_function '" + act + "' is not supported for gpt2");
  }
  QFORGE_ASSIGN_OR_RETURN(c->tie_word_embeddings, f.bool_or("tie_word_embeddings", true));
  QFORGE_ASSIGN_OR_RETURN(c->scale_attn_weights, f.bool_or("scale_attn_weights", true));
  QFORGE_ASSIGN_OR_RETURN(c->scale_attn_by_inverse_layer_idx, f.bool_or("scale_attn_by_inverse_layer_idx", false));
  // reorder_and_upcast_attn only changes the precision of the score matmul, already fp32 here.
  c->norm = NormType::layer_norm;
  c->pre_norm = true;
  c->causal = true;
  c->rope = RopeStyle::none;
  c->learned_positions = true;
  c->fused_qkv = true;
  c->qkv_bias = c->attn_output_bias = c->mlp_bias = true;
  return parse_common_tokens(f, c);
}

Status parse_bert(const Fields& f, ModelConfig* c) {
  QFORGE_ASSIGN_OR_RETURN(c->hidden_size, f.req_int("hidden_size"));
  QFORGE_ASSIGN_OR_RETURN(c->num_layers, f.req_int("num_hidden_layers"));
  QFORGE_ASSIGN_OR_RETURN(c->num_heads, f.req_int("num_attention_heads"));
  QFORGE_ASSIGN_OR_RETURN(c->intermediate_size, f.req_int("intermediate_size"));
  QFORGE_ASSIGN_OR_RETURN(c->vocab_size, f.req_int("vocab_size"));
  QFORGE_ASSIGN_OR_RETURN(c->max_positions, f.req_int("max_position_embeddings"));
  QFORGE_ASSIGN_OR_RETURN(c->type_vocab_size, f.req_int("type_vocab_size"));
  QFORGE_ASSIGN_OR_RETURN(c->norm_eps, f.req_number("layer_norm_eps"));
  if (c->num_heads <= 0) return parse_error(f.source() + ": num_attention_heads must be positive");
  c->num_kv_heads = c->num_heads;
  c->head_dim = c->hidden_size / c->num_heads;
  if (c->head_dim * c->num_heads != c->hidden_size)
    return parse_error(f.source() + ": hidden_size " + std::to_string(c->hidden_size) +
                       " is not divisible by num_attention_heads " + std::to_string(c->num_heads));
  QFORGE_ASSIGN_OR_RETURN(std::string act, f.string_or("hidden_act", "gelu"));
  if (act == "gelu") {
    c->mlp = MlpType::gelu_erf;
  } else if (act == "gelu_new" || act == "gelu_pytorch_tanh") {
    c->mlp = MlpType::gelu_tanh;
  } else {
    return unsupported(f.source() + ": hidden_act '" + act + "' is not supported for bert");
  }
  QFORGE_ASSIGN_OR_RETURN(std::string pos, f.string_or("position_embedding_type", "absolute"));
  if (pos != "absolute")
    return unsupported(f.source() + ": position_embedding_type '" + pos + "' is not supported (only 'absolute')");
  QFORGE_ASSIGN_OR_RETURN(bool is_decoder, f.bool_or("is_decoder", false));
  if (is_decoder) return unsupported(f.source() + ": bert with is_decoder true is not supported");
  c->tie_word_embeddings = false;  // BertModel has no LM head
  c->norm = NormType::layer_norm;
  c->pre_norm = false;
  c->causal = false;
  c->rope = RopeStyle::none;
  c->learned_positions = true;
  c->qkv_bias = c->attn_output_bias = c->mlp_bias = true;
  return parse_common_tokens(f, c);
}

}  // namespace

const char* norm_type_name(NormType t) { return t == NormType::rms_norm ? "rms_norm" : "layer_norm"; }
const char* mlp_type_name(MlpType t) {
  switch (t) {
    case MlpType::gated_silu: return "gated_silu";
    case MlpType::gelu_tanh: return "gelu_tanh";
    case MlpType::gelu_erf: return "gelu_erf";
  }
  return "?";
}
const char* rope_style_name(RopeStyle s) {
  switch (s) {
    case RopeStyle::none: return "none";
    case RopeStyle::half_split: return "half_split";
    case RopeStyle::interleaved: return "interleaved";
  }
  return "?";
}

Expected<ModelConfig> parse_model_config(const nlohmann::json& config, const std::string& source) {
  QFORGE_ASSIGN_OR_RETURN(Architecture arch, architecture_from_config(config, source));
  ModelConfig c;
  c.arch = arch;
  c.source = source;
  Fields f(config, source);
  switch (arch) {
    case Architecture::llama:
    case Architecture::mistral:
    case Architecture::qwen2:
      QFORGE_RETURN_IF_ERROR(parse_llama_family(f, &c));
      break;
    case Architecture::gpt2:
      QFORGE_RETURN_IF_ERROR(parse_gpt2(f, &c));
      break;
    case Architecture::bert:
      QFORGE_RETURN_IF_ERROR(parse_bert(f, &c));
      break;
    case Architecture::llama2c:
      return unsupported(source + ": llama2.c checkpoints have no config.json");
  }
  QFORGE_RETURN_IF_ERROR(validate_model_config(c));
  return c;
}

Expected<ModelConfig> load_model_config(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string file = fs::is_directory(path, ec) ? (fs::path(path) / "config.json").string() : path;
  std::ifstream in(file, std::ios::binary);
  if (!in) return io_error(file + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  json config = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return parse_error(file + ": not valid JSON");
  return parse_model_config(config, file);
}

Status validate_model_config(const ModelConfig& c) {
  const std::string& src = c.source.empty() ? std::string("model config") : c.source;
  // Each dimension stays below 2^24 and products of three stay below 2^62, so every buffer size
  // computed from them fits in int64 and BLAS's int.
  constexpr int64_t kMaxDim = int64_t{1} << 24;
  struct Dim {
    const char* name;
    int64_t value;
    int64_t min;
  };
  const Dim dims[] = {
      {"hidden_size", c.hidden_size, 1},       {"num_layers", c.num_layers, 1},
      {"num_heads", c.num_heads, 1},           {"num_kv_heads", c.num_kv_heads, 1},
      {"head_dim", c.head_dim, 1},             {"intermediate_size", c.intermediate_size, 1},
      {"vocab_size", c.vocab_size, 1},         {"max_positions", c.max_positions, 0},
      {"type_vocab_size", c.type_vocab_size, 0}, {"sliding_window", c.sliding_window, 0},
  };
  for (const Dim& d : dims)
    if (d.value < d.min || d.value > kMaxDim)
      return invalid_argument(src + ": " + d.name + " = " + std::to_string(d.value) + " is out of range [" +
                              std::to_string(d.min) + ", " + std::to_string(kMaxDim) + "]");
  if (c.num_heads % c.num_kv_heads != 0)
    return invalid_argument(src + ": num_heads " + std::to_string(c.num_heads) + " is not a multiple of num_kv_heads " +
                            std::to_string(c.num_kv_heads));
  if (c.q_dim() > kMaxDim) return invalid_argument(src + ": num_heads * head_dim is too large");
  if (c.rope != RopeStyle::none && c.head_dim % 2 != 0)
    return invalid_argument(src + ": RoPE needs an even head_dim, got " + std::to_string(c.head_dim));
  if (c.learned_positions && c.max_positions <= 0)
    return invalid_argument(src + ": learned position embeddings need max_positions > 0");
  if (!(c.norm_eps > 0) || !std::isfinite(c.norm_eps))
    return invalid_argument(src + ": norm epsilon must be positive and finite");
  if (c.fused_qkv && c.num_kv_heads != c.num_heads)
    return invalid_argument(src + ": a fused qkv projection needs num_kv_heads == num_heads");
  if (!c.causal && c.type_vocab_size <= 0 && c.arch == Architecture::bert)
    return invalid_argument(src + ": bert needs type_vocab_size > 0");
  return Status::ok();
}

}  // namespace qforge
