// GgufModelInput: an HF directory, a llama2.c checkpoint or a GGUF file, seen as the tensors and
// metadata of a llama.cpp GGUF file (names by tensor role, Q/K rows in llama.cpp's RoPE order,
// architecture and tokenizer keys as convert_hf_to_gguf.py writes them).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "qforge/atomic_file.h"
#include "qforge/format.h"
#include "qforge/gguf_convert.h"
#include "qforge/safetensors.h"

namespace qforge {

struct GgufModelInput::Impl {
  std::string path;
  GgufInputKind kind = GgufInputKind::hf;
  std::string gguf_arch;
  Architecture arch = Architecture::llama;
  ModelConfig config;
  bool tied = false;
  std::vector<GgufKeyValue> metadata;
  std::optional<GgufVocab> vocab;
  std::vector<GgufInputTensor> tensors;
  std::optional<SafetensorsCheckpoint> checkpoint;    // hf
  std::shared_ptr<const TensorSource> llama2c;        // llama2c
  std::optional<GgufFile> gguf;                       // gguf
  std::vector<const GgufTensorInfo*> gguf_infos;      // gguf: per tensor
  std::vector<std::string> warnings;
};

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Order of roles inside a layer (and of the global tensors), as llama.cpp lists them.
int role_rank(TensorRole role) {
  switch (role) {
    case TensorRole::token_embedding: return 0;
    case TensorRole::attn_norm: return 1;
    case TensorRole::attn_q: return 2;
    case TensorRole::attn_k: return 3;
    case TensorRole::attn_v: return 4;
    case TensorRole::attn_qkv: return 5;
    case TensorRole::attn_output: return 6;
    case TensorRole::mlp_norm: return 7;
    case TensorRole::mlp_gate: return 8;
    case TensorRole::mlp_up: return 9;
    case TensorRole::mlp_down: return 10;
    case TensorRole::final_norm: return 11;
    case TensorRole::output: return 12;
    default: return 13;
  }
}

// token_embd first, then layer by layer, then output_norm and output.
bool tensor_order(const GgufInputTensor& a, const GgufInputTensor& b) {
  auto key = [](const GgufInputTensor& t) {
    const int group = t.role.layer >= 0 ? 1 : (t.role.role == TensorRole::token_embedding ? 0 : 2);
    return std::make_tuple(group, t.role.layer, role_rank(t.role.role), t.role.is_bias ? 1 : 0, t.name);
  };
  return key(a) < key(b);
}

std::optional<GgmlType> float_type(DType d) {
  switch (d) {
    case DType::f32: return GgmlType::F32;
    case DType::f16: return GgmlType::F16;
    case DType::bf16: return GgmlType::BF16;
    default: return std::nullopt;
  }
}

// The shape a tensor of the llama family must have under `c`; empty when the role is not part of
// the family.
Shape expected_shape(const ModelConfig& c, const ResolvedTensor& r) {
  const int64_t H = c.hidden_size, V = c.vocab_size, F = c.intermediate_size;
  Shape w;
  switch (r.role) {
    case TensorRole::token_embedding:
    case TensorRole::output: w = {V, H}; break;
    case TensorRole::attn_norm:
    case TensorRole::mlp_norm:
    case TensorRole::final_norm: return {H};
    case TensorRole::attn_q: w = {c.q_dim(), H}; break;
    case TensorRole::attn_k:
    case TensorRole::attn_v: w = {c.kv_dim(), H}; break;
    case TensorRole::attn_output: w = {H, c.q_dim()}; break;
    case TensorRole::mlp_gate:
    case TensorRole::mlp_up: w = {F, H}; break;
    case TensorRole::mlp_down: w = {H, F}; break;
    default: return {};
  }
  if (r.is_bias) return {w[0]};
  return w;
}

// Biases the config says the model has.
bool bias_expected(const ModelConfig& c, TensorRole role) {
  switch (role) {
    case TensorRole::attn_q:
    case TensorRole::attn_k:
    case TensorRole::attn_v: return c.qkv_bias;
    case TensorRole::attn_output: return c.attn_output_bias;
    case TensorRole::mlp_gate:
    case TensorRole::mlp_up:
    case TensorRole::mlp_down: return c.mlp_bias;
    default: return false;
  }
}

// Checks roles, layers, shapes and completeness of a llama-family tensor list.
Status check_llama_tensors(const std::string& label, const ModelConfig& c, const std::vector<GgufInputTensor>& tensors,
                           bool need_output) {
  std::map<std::tuple<int, int, bool>, const GgufInputTensor*> seen;
  for (const auto& t : tensors) {
    const ResolvedTensor& r = t.role;
    const std::string what = label + ": tensor '" + t.source_name + "'";
    if (r.layer >= c.num_layers)
      return invalid_argument(what + " is in layer " + std::to_string(r.layer) + " but the model has " +
                              std::to_string(c.num_layers) + " layers");
    const Shape want = expected_shape(c, r);
    if (want.empty())
      return unsupported(what + " has role " + std::string(tensor_role_name(r.role)) +
                         ", which the llama family does not use");
    if (t.shape != want)
      return invalid_argument(what + " has shape " + shape_to_string(t.shape) + ", expected " + shape_to_string(want) +
                              " from the model config");
    if (r.is_bias && !bias_expected(c, r.role))
      return invalid_argument(what + " is a bias the config does not declare (attention_bias / mlp_bias)");
    seen[{r.layer, static_cast<int>(r.role), r.is_bias}] = &t;
  }
  auto require = [&](TensorRole role, int layer, bool bias) -> Status {
    if (seen.count({layer, static_cast<int>(role), bias})) return Status::ok();
    return invalid_argument(label + ": missing the " + std::string(tensor_role_name(role)) + (bias ? " bias" : " weight") +
                            (layer >= 0 ? " of layer " + std::to_string(layer) : std::string()));
  };
  QFORGE_RETURN_IF_ERROR(require(TensorRole::token_embedding, -1, false));
  QFORGE_RETURN_IF_ERROR(require(TensorRole::final_norm, -1, false));
  if (need_output) QFORGE_RETURN_IF_ERROR(require(TensorRole::output, -1, false));
  for (int l = 0; l < c.num_layers; ++l) {
    for (TensorRole role : {TensorRole::attn_norm, TensorRole::attn_q, TensorRole::attn_k, TensorRole::attn_v,
                            TensorRole::attn_output, TensorRole::mlp_norm, TensorRole::mlp_gate, TensorRole::mlp_up,
                            TensorRole::mlp_down}) {
      QFORGE_RETURN_IF_ERROR(require(role, l, false));
      if (bias_expected(c, role)) QFORGE_RETURN_IF_ERROR(require(role, l, true));
    }
  }
  return Status::ok();
}

Expected<json> read_json_file(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(std::string text, read_file(path));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return parse_error(path + ": not a JSON object");
  return j;
}

// tokenizer_config.json's add_bos_token / add_eos_token and added_tokens.json, as gguf-py's
// SpecialVocab and convert_hf_to_gguf.py read them.
Status apply_hf_tokenizer_files(const fs::path& dir, GgufVocab* v) {
  std::error_code ec;
  const fs::path tc = dir / "tokenizer_config.json";
  if (fs::is_regular_file(tc, ec)) {
    QFORGE_ASSIGN_OR_RETURN(json j, read_json_file(tc.string()));
    for (auto [key, field] : {std::pair{"add_bos_token", &v->add_bos}, std::pair{"add_eos_token", &v->add_eos}}) {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) continue;
      if (!it->is_boolean()) return parse_error(tc.string() + ": '" + key + "' must be true or false");
      *field = it->get<bool>();
    }
  }
  const fs::path added = dir / "added_tokens.json";
  if (fs::is_regular_file(added, ec)) {
    QFORGE_ASSIGN_OR_RETURN(json j, read_json_file(added.string()));
    for (const auto& [text, id] : j.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0)
        return parse_error(added.string() + ": id of '" + text + "' is not a non-negative integer");
      const auto i = static_cast<size_t>(id.get<int64_t>());
      if (i >= v->tokens.size())
        return invalid_argument(added.string() + ": added token '" + text + "' has id " + std::to_string(i) +
                                " beyond the model's " + std::to_string(v->tokens.size()) + " embedding rows");
      v->tokens[i] = text;
      v->scores[i] = -1000.0f;  // convert_hf_to_gguf.py's score for added tokens
      v->token_types[i] = static_cast<int32_t>(GgufTokenType::user_defined);
    }
  }
  return Status::ok();
}

Status check_special_ids(const GgufVocab& v) {
  for (auto [name, id] : {std::pair{"bos", v.bos_id}, std::pair{"eos", v.eos_id}, std::pair{"unk", v.unk_id},
                          std::pair{"pad", v.pad_id}})
    if (id >= static_cast<int64_t>(v.tokens.size()))
      return invalid_argument(v.source + ": " + name + " token id " + std::to_string(id) + " is outside the " +
                              std::to_string(v.tokens.size()) + "-token vocabulary");
  return Status::ok();
}

template <class T>
void put(std::vector<GgufKeyValue>* md, std::string key, T value) {
  md->push_back({std::move(key), GgufValue(value)});
}

// general.*, {arch}.* and tokenizer.* keys, in convert_hf_to_gguf.py's order.
std::vector<GgufKeyValue> model_metadata(const std::string& arch, const std::string& name, const ModelConfig& c,
                                         const std::optional<GgufVocab>& vocab) {
  std::vector<GgufKeyValue> md;
  const std::string a = arch + ".";
  put(&md, "general.architecture", arch);
  put(&md, "general.type", std::string("model"));
  put(&md, "general.name", name);
  put(&md, a + "block_count", static_cast<uint32_t>(c.num_layers));
  put(&md, a + "context_length", static_cast<uint32_t>(c.max_positions));
  put(&md, a + "embedding_length", static_cast<uint32_t>(c.hidden_size));
  put(&md, a + "feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  put(&md, a + "attention.head_count", static_cast<uint32_t>(c.num_heads));
  put(&md, a + "attention.head_count_kv", static_cast<uint32_t>(c.num_kv_heads));
  put(&md, a + "rope.freq_base", static_cast<float>(c.rope_theta));
  put(&md, a + "attention.layer_norm_rms_epsilon", static_cast<float>(c.norm_eps));
  if (c.head_dim * c.num_heads != c.hidden_size) {  // llama.cpp derives head_dim from these otherwise
    put(&md, a + "attention.key_length", static_cast<uint32_t>(c.head_dim));
    put(&md, a + "attention.value_length", static_cast<uint32_t>(c.head_dim));
  }
  if (arch == "llama") {  // LlamaModel.set_gguf_parameters
    put(&md, a + "vocab_size", static_cast<uint32_t>(c.vocab_size));
    put(&md, a + "rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  }
  if (!vocab) {
    put(&md, "tokenizer.ggml.model", std::string("none"));
    return md;
  }
  put(&md, "tokenizer.ggml.model", vocab->model);
  put(&md, "tokenizer.ggml.pre", vocab->pre);
  md.push_back({"tokenizer.ggml.tokens", GgufValue::array(vocab->tokens)});
  md.push_back({"tokenizer.ggml.scores", GgufValue::array(vocab->scores)});
  md.push_back({"tokenizer.ggml.token_type", GgufValue::array(vocab->token_types)});
  if (vocab->bos_id >= 0) put(&md, "tokenizer.ggml.bos_token_id", static_cast<uint32_t>(vocab->bos_id));
  if (vocab->eos_id >= 0) put(&md, "tokenizer.ggml.eos_token_id", static_cast<uint32_t>(vocab->eos_id));
  if (vocab->unk_id >= 0) put(&md, "tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(vocab->unk_id));
  if (vocab->pad_id >= 0) put(&md, "tokenizer.ggml.padding_token_id", static_cast<uint32_t>(vocab->pad_id));
  put(&md, "tokenizer.ggml.add_bos_token", vocab->add_bos);
  put(&md, "tokenizer.ggml.add_eos_token", vocab->add_eos);
  return md;
}

bool starts_with_gguf_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

Status check_vocab_options(const GgufModelInputOptions& o) {
  if (o.no_vocab && !o.tokenizer.empty())
    return invalid_argument("--tokenizer and --no-vocab were both given; choose one");
  return Status::ok();
}

Status open_hf(const std::string& path, const GgufModelInputOptions& o, GgufModelInput::Impl* m) {
  QFORGE_RETURN_IF_ERROR(check_vocab_options(o));
  m->kind = GgufInputKind::hf;
  QFORGE_ASSIGN_OR_RETURN(m->config, load_model_config(path));
  const ModelConfig& c = m->config;
  m->arch = c.arch;
  switch (c.arch) {
    case Architecture::llama:
    case Architecture::mistral: m->gguf_arch = "llama"; break;
    case Architecture::qwen2: m->gguf_arch = "qwen2"; break;
    default:
      return unsupported(path + ": GGUF conversion supports llama, mistral and qwen2 checkpoints, not " +
                         std::string(architecture_name(c.arch)));
  }
  if (c.max_positions <= 0)
    return invalid_argument(path + "/config.json: max_position_embeddings is missing; GGUF needs a context length");
  if (c.sliding_window > 0 && c.sliding_window < c.max_positions)
    m->warnings.push_back(path + ": sliding_window " + std::to_string(c.sliding_window) +
                          " is not stored: llama.cpp's llama architecture attends to the whole context, so outputs "
                          "differ from HF beyond " + std::to_string(c.sliding_window) + " tokens");
  QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint ck, SafetensorsCheckpoint::open(path));
  // llama.cpp's llama architecture rotates adjacent pairs; HF llama/mistral weights are stored
  // for rotate_half, so their q/k rows are permuted. qwen2 runs NEOX-style RoPE: no permutation.
  const bool permute = c.arch != Architecture::qwen2;
  for (const std::string& name : ck.tensor_names()) {
    QFORGE_ASSIGN_OR_RETURN(ResolvedTensor r, resolve_tensor_role(c.arch, name, TensorNaming::hf));
    if (r.role == TensorRole::buffer) continue;  // e.g. rotary inv_freq: recomputed by llama.cpp
    const SafetensorsTensorInfo* info = ck.find(name);
    const std::optional<GgmlType> type = float_type(info->dtype);
    if (!type)
      return unsupported(path + ": tensor '" + name + "' has dtype " + dtype_name(info->dtype) +
                         " (only F32, F16 and BF16 checkpoints can be converted)");
    GgufInputTensor t;
    QFORGE_ASSIGN_OR_RETURN(t.name, tensor_name_for_role(c.arch, r.role, r.layer, r.is_bias, TensorNaming::gguf));
    t.source_name = name;
    t.role = r;
    t.shape = info->shape;
    t.type = *type;
    if (permute && r.role == TensorRole::attn_q) t.permute_heads = c.num_heads;
    if (permute && r.role == TensorRole::attn_k) t.permute_heads = c.num_kv_heads;
    m->tensors.push_back(std::move(t));
  }
  bool has_output = false;
  for (const auto& t : m->tensors) has_output |= t.role.role == TensorRole::output;
  QFORGE_RETURN_IF_ERROR(check_llama_tensors(path, c, m->tensors, !c.tie_word_embeddings));
  m->tied = !has_output;
  m->checkpoint = std::move(ck);

  const fs::path dir(path);
  std::error_code ec;
  const std::string tokenizer = !o.tokenizer.empty() ? o.tokenizer : (dir / "tokenizer.model").string();
  if (!o.no_vocab) {
    if (!fs::is_regular_file(tokenizer, ec))
      return invalid_argument(o.tokenizer.empty()
                                  ? path + ": no tokenizer.model (SentencePiece) beside config.json; pass --tokenizer "
                                           "FILE, or --no-vocab to write a file without a vocabulary (BPE "
                                           "tokenizer.json vocabularies are not supported)"
                                  : "--tokenizer '" + tokenizer + "': no such file");
    QFORGE_ASSIGN_OR_RETURN(GgufVocab v, read_sentencepiece_vocab(tokenizer, c.vocab_size));
    QFORGE_RETURN_IF_ERROR(apply_hf_tokenizer_files(dir, &v));
    // config.json's special ids win over the SentencePiece model's, as in gguf-py's SpecialVocab.
    if (c.bos_token_id >= 0) v.bos_id = c.bos_token_id;
    if (!c.eos_token_ids.empty()) v.eos_id = c.eos_token_ids.front();
    if (c.pad_token_id >= 0) v.pad_id = c.pad_token_id;
    QFORGE_RETURN_IF_ERROR(check_special_ids(v));
    m->vocab = std::move(v);
  }
  return Status::ok();
}

Status open_llama2c(const std::string& path, const GgufModelInputOptions& o, GgufModelInput::Impl* m) {
  QFORGE_RETURN_IF_ERROR(check_vocab_options(o));
  m->kind = GgufInputKind::llama2c;
  m->arch = Architecture::llama2c;
  m->gguf_arch = "llama";
  QFORGE_ASSIGN_OR_RETURN(Llama2cCheckpoint ck, read_llama2c(path));
  m->config = ck.config;
  // llama2.c trains with interleaved RoPE, which is llama.cpp's own order: the weights are copied
  // unpermuted, as convert-llama2c-to-ggml does.
  for (const std::string& name : ck.tensors->tensor_names()) {
    QFORGE_ASSIGN_OR_RETURN(ResolvedTensor r, resolve_tensor_role(Architecture::llama2c, name, TensorNaming::hf));
    QFORGE_ASSIGN_OR_RETURN(Tensor t, ck.tensors->tensor(name));
    GgufInputTensor e;
    QFORGE_ASSIGN_OR_RETURN(e.name,
                            tensor_name_for_role(Architecture::llama2c, r.role, r.layer, r.is_bias, TensorNaming::gguf));
    e.source_name = name;
    e.role = r;
    e.shape = t.shape();
    e.type = GgmlType::F32;
    m->tensors.push_back(std::move(e));
  }
  bool has_output = false;
  for (const auto& t : m->tensors) has_output |= t.role.role == TensorRole::output;
  QFORGE_RETURN_IF_ERROR(check_llama_tensors(path, m->config, m->tensors, !m->config.tie_word_embeddings));
  m->tied = !has_output;
  m->llama2c = ck.tensors;
  if (!o.no_vocab) {
    if (o.tokenizer.empty())
      return invalid_argument(path + ": a llama2.c checkpoint carries no vocabulary; pass --tokenizer tokenizer.bin "
                                     "(llama2.c format or a SentencePiece .model), or --no-vocab");
    GgufVocab v;
    if (fs::path(o.tokenizer).extension() == ".model") {
      QFORGE_ASSIGN_OR_RETURN(v, read_sentencepiece_vocab(o.tokenizer, m->config.vocab_size));
    } else {
      QFORGE_ASSIGN_OR_RETURN(v, read_llama2c_vocab(o.tokenizer, m->config.vocab_size));
    }
    QFORGE_RETURN_IF_ERROR(check_special_ids(v));
    m->vocab = std::move(v);
  }
  return Status::ok();
}

Status open_gguf(const std::string& path, const GgufModelInputOptions& o, GgufModelInput::Impl* m) {
  if (o.no_vocab || !o.tokenizer.empty() || !o.name.empty())
    return invalid_argument(path + ": a GGUF input keeps its own vocabulary and name (--tokenizer, --no-vocab and "
                                   "--name apply to HF and llama2.c inputs)");
  m->kind = GgufInputKind::gguf;
  QFORGE_ASSIGN_OR_RETURN(GgufFile f, GgufFile::open(path));
  QFORGE_ASSIGN_OR_RETURN(m->gguf_arch, f.get_string("general.architecture"));
  if (m->gguf_arch == "llama")
    m->arch = Architecture::llama;
  else if (m->gguf_arch == "qwen2")
    m->arch = Architecture::qwen2;
  else
    return unsupported(path + ": general.architecture '" + m->gguf_arch +
                       "' is not supported (GGUF quantization handles llama and qwen2 files)");
  const std::string a = m->gguf_arch + ".";
  ModelConfig& c = m->config;
  c.arch = m->arch;
  c.source = path;
  QFORGE_ASSIGN_OR_RETURN(c.num_layers, f.get_u32(a + "block_count"));
  QFORGE_ASSIGN_OR_RETURN(c.num_heads, f.get_u32(a + "attention.head_count"));
  c.num_kv_heads = c.num_heads;
  if (f.contains(a + "attention.head_count_kv")) {
    QFORGE_ASSIGN_OR_RETURN(c.num_kv_heads, f.get_u32(a + "attention.head_count_kv"));
  }
  QFORGE_ASSIGN_OR_RETURN(c.hidden_size, f.get_u32(a + "embedding_length"));
  if (c.num_layers <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0)
    return invalid_argument(path + ": block_count / head counts are inconsistent (" + std::to_string(c.num_layers) +
                            " layers, " + std::to_string(c.num_heads) + " heads, " + std::to_string(c.num_kv_heads) +
                            " KV heads)");
  m->metadata = f.metadata();
  m->gguf = std::move(f);
  bool has_output = false;
  for (const GgufTensorInfo& info : m->gguf->tensors()) {
    Expected<ResolvedTensor> r = resolve_tensor_role(m->arch, info.name, TensorNaming::gguf);
    if (!r) return Status::error(r.status().code(), path + ": " + r.status().message());
    if (r->layer >= c.num_layers)
      return invalid_argument(path + ": tensor '" + info.name + "' is in layer " + std::to_string(r->layer) +
                              " but block_count is " + std::to_string(c.num_layers));
    GgufInputTensor t;
    t.name = info.name;
    t.source_name = info.name;
    t.role = *r;
    t.shape = info.shape;
    t.type = info.type;
    if (r->role == TensorRole::token_embedding && info.shape.size() == 2) c.vocab_size = info.shape[0];
    has_output |= r->role == TensorRole::output;
    m->tensors.push_back(std::move(t));
    m->gguf_infos.push_back(&info);
  }
  m->tied = !has_output;
  return Status::ok();
}

}  // namespace

const char* gguf_input_kind_name(GgufInputKind kind) {
  switch (kind) {
    case GgufInputKind::hf: return "hf";
    case GgufInputKind::llama2c: return "llama2c";
    case GgufInputKind::gguf: return "gguf";
  }
  return "?";
}

GgufModelInput::GgufModelInput(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GgufModelInput::GgufModelInput(GgufModelInput&&) noexcept = default;
GgufModelInput& GgufModelInput::operator=(GgufModelInput&&) noexcept = default;
GgufModelInput::~GgufModelInput() = default;

Expected<GgufModelInput> GgufModelInput::open(const std::string& path, const GgufModelInputOptions& options) {
  auto m = std::make_unique<Impl>();
  m->path = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (!fs::is_regular_file(fs::path(path) / "config.json", ec))
      return invalid_argument(path + ": a model directory needs a config.json (HF layout)");
    QFORGE_RETURN_IF_ERROR(open_hf(path, options, m.get()));
  } else if (!fs::exists(path, ec)) {
    return io_error(path + ": no such file or directory");
  } else if (starts_with_gguf_magic(path)) {
    QFORGE_RETURN_IF_ERROR(open_gguf(path, options, m.get()));
  } else if (fs::path(path).extension() == ".safetensors") {
    return invalid_argument(path + ": pass the model directory (with config.json), not a .safetensors file");
  } else {
    QFORGE_RETURN_IF_ERROR(open_llama2c(path, options, m.get()));
  }
  if (m->kind != GgufInputKind::gguf) {
    std::stable_sort(m->tensors.begin(), m->tensors.end(), tensor_order);
    std::string name = options.name;
    if (name.empty()) {
      fs::path p = fs::path(path).lexically_normal();
      if (p.filename().empty()) p = p.parent_path();
      name = m->kind == GgufInputKind::hf ? p.filename().string() : p.stem().string();
    }
    m->metadata = model_metadata(m->gguf_arch, name, m->config, m->vocab);
  }
  return GgufModelInput(std::move(m));
}

const std::string& GgufModelInput::path() const { return impl_->path; }
GgufInputKind GgufModelInput::kind() const { return impl_->kind; }
const std::string& GgufModelInput::gguf_architecture() const { return impl_->gguf_arch; }
Architecture GgufModelInput::architecture() const { return impl_->arch; }
const ModelConfig& GgufModelInput::config() const { return impl_->config; }
bool GgufModelInput::tied_embeddings() const { return impl_->tied; }
const std::vector<GgufKeyValue>& GgufModelInput::metadata() const { return impl_->metadata; }
const std::optional<GgufVocab>& GgufModelInput::vocab() const { return impl_->vocab; }
const std::vector<GgufInputTensor>& GgufModelInput::tensors() const { return impl_->tensors; }
const GgufFile* GgufModelInput::gguf_file() const { return impl_->gguf ? &*impl_->gguf : nullptr; }
const std::vector<std::string>& GgufModelInput::warnings() const { return impl_->warnings; }

std::span<const uint8_t> GgufModelInput::raw_bytes(size_t index) const {
  if (!impl_->gguf || index >= impl_->gguf_infos.size()) return {};
  return impl_->gguf->tensor_bytes(*impl_->gguf_infos[index]);
}

Expected<std::vector<float>> GgufModelInput::load_f32(size_t index) const {
  const Impl& m = *impl_;
  if (index >= m.tensors.size()) return out_of_range("tensor index " + std::to_string(index) + " is out of range");
  const GgufInputTensor& t = m.tensors[index];
  const std::string what = m.path + ": tensor '" + t.source_name + "'";
  const auto n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  if (m.gguf) {
    const GgufTensorInfo& info = *m.gguf_infos[index];
    if (ggml_type_to_dtype(info.type)) {
      QFORGE_ASSIGN_OR_RETURN(Tensor raw, m.gguf->tensor(info));
      Expected<Tensor> f = raw.to_f32();
      if (!f) return f.status().with_context(what);
      if (n) std::memcpy(out.data(), f->data(), n * sizeof(float));
      return out;
    }
    const FormatTraits* fmt = find_format_by_gguf_type(static_cast<int>(info.type));
    if (fmt == nullptr)
      return unsupported(what + " has type " + ggml_type_name(info.type) + ", which qforge cannot dequantize");
    QuantizedTensor q;
    q.scheme.format = fmt->id;
    q.scheme.bits = fmt->min_bits;
    q.scheme.granularity = fmt->default_granularity;
    q.scheme.group_size = fmt->default_granularity == Granularity::group ? fmt->default_group : 0;
    q.cols = t.cols();
    q.rows = t.rows();
    const std::span<const uint8_t> bytes = m.gguf->tensor_bytes(info);
    q.codes.assign(bytes.begin(), bytes.end());
    Status st = dequantize(q, out.data());
    if (!st) return st.with_context(what);
    return out;
  }
  Expected<Tensor> raw = m.checkpoint ? m.checkpoint->tensor(t.source_name) : m.llama2c->tensor(t.source_name);
  if (!raw) return raw.status();
  Expected<Tensor> f = raw->to_f32();
  if (!f) return f.status().with_context(what);
  if (static_cast<size_t>(f->numel()) != n)
    return Status::error(ErrorCode::internal, what + ": element count changed since the input was opened");
  const float* src = f->data_as<float>();
  if (t.permute_heads > 0) {
    const int64_t rows = t.shape[0], cols = t.shape.size() == 2 ? t.shape[1] : 1;
    if (rows % (2 * t.permute_heads) != 0)
      return invalid_argument(what + ": " + std::to_string(rows) + " rows do not split into " +
                              std::to_string(t.permute_heads) + " heads of even size");
    permute_qk_rows(src, rows, cols, t.permute_heads, out.data());
  } else if (n) {
    std::memcpy(out.data(), src, n * sizeof(float));
  }
  return out;
}

}  // namespace qforge
