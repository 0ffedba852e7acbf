// The fp32 CPU transformer engine: model configs (HF config.json, llama2.c headers), weights loaded
// by tensor role, and the forward pass for the llama family (llama, mistral, qwen2, llama2.c),
// gpt2 and bert, with a KV cache, batches of independent sequences, swappable linear layers
// (dense or quantized) and activation hooks on every linear input (calibration, GPTQ, AWQ, ...).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "qforge/linear.h"
#include "qforge/status.h"
#include "qforge/tensor.h"
#include "qforge/tensor_roles.h"

namespace qforge {

class SafetensorsCheckpoint;
class GgufFile;

enum class NormType : uint8_t {
  rms_norm = 0,    // x / sqrt(mean(x^2) + eps) * w
  layer_norm = 1,  // (x - mean) / sqrt(var + eps) * w + b
};

enum class MlpType : uint8_t {
  gated_silu = 0,  // SwiGLU: down(silu(gate(x)) * up(x))
  gelu_tanh = 1,   // down(gelu_tanh(up(x))): HF "gelu_new", "gelu_pytorch_tanh"
  gelu_erf = 2,    // down(gelu(up(x))) with the exact erf GELU: HF "gelu"
};

enum class RopeStyle : uint8_t {
  none = 0,         // no rotary embedding (learned absolute positions)
  half_split = 1,   // HF rotate_half / GPT-NeoX: dimension i pairs with i + head_dim/2
  interleaved = 2,  // Meta / llama2.c / GPT-J: dimension 2i pairs with 2i + 1
};

const char* norm_type_name(NormType t);
const char* mlp_type_name(MlpType t);
const char* rope_style_name(RopeStyle s);

// Everything the forward pass needs to know about a model's shape and math.
struct ModelConfig {
  Architecture arch = Architecture::llama;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // < num_heads: grouped-query attention
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t max_positions = 0;    // hard limit for learned positions; informational for RoPE
  int64_t type_vocab_size = 0;  // bert segment vocabulary

  NormType norm = NormType::rms_norm;
  double norm_eps = 1e-5;
  bool pre_norm = true;      // false: post-LN (bert)
  bool causal = true;        // false: bidirectional encoder (bert)
  MlpType mlp = MlpType::gated_silu;
  RopeStyle rope = RopeStyle::half_split;
  double rope_theta = 10000.0;
  bool learned_positions = false;  // gpt2, bert
  bool fused_qkv = false;          // gpt2 c_attn
  bool qkv_bias = false;           // q/k/v projections carry biases (qwen2, gpt2, bert, llama attention_bias)
  bool attn_output_bias = false;   // o_proj bias (gpt2, bert, llama attention_bias)
  bool mlp_bias = false;           // MLP biases (gpt2, bert, llama mlp_bias)
  bool tie_word_embeddings = false;
  int64_t sliding_window = 0;      // > 0: a query attends to at most this many latest keys (mistral)
  bool scale_attn_weights = true;  // scores scaled by 1/sqrt(head_dim) (gpt2 can turn it off)
  bool scale_attn_by_inverse_layer_idx = false;  // gpt2 option: scores also scaled by 1/(layer+1)

  int64_t bos_token_id = -1;  // -1: none
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = -1;
  std::string source;  // the file it came from, for messages

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  bool is_encoder() const { return !causal; }
};

// Parses an HF config.json object for llama, mistral, qwen2, gpt2 or bert. Missing required fields,
// wrong types and unsupported options (rope scaling, other activations) give errors naming the
// field and `source`.
Expected<ModelConfig> parse_model_config(const nlohmann::json& config, const std::string& source);
// Reads `path`: a config.json file or a directory holding one.
Expected<ModelConfig> load_model_config(const std::string& path);
// The engine config of a GGUF file from its metadata ({arch}.block_count, .embedding_length,
// .feed_forward_length, .attention.head_count(_kv), .attention.layer_norm_rms_epsilon,
// .rope.freq_base, .context_length, tokenizer.ggml.*). Missing keys and unsupported features
// (RoPE scaling, experts, partial rotary) are errors naming the key and the file.
Expected<ModelConfig> gguf_model_config(const GgufFile& file);
// Checks sizes are positive, consistent (heads divide, even head_dim for RoPE) and small enough
// that buffer sizes cannot overflow.
Status validate_model_config(const ModelConfig& config);

// A named tensor provider the loader reads from (safetensors checkpoints, llama2.c files, GGUF).
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual std::vector<std::string> tensor_names() const = 0;
  virtual Expected<Tensor> tensor(const std::string& name) const = 0;
  virtual std::string label() const = 0;  // named in errors (the path)
};

// A llama2.c v0 checkpoint read without building a model: its config (architecture llama2c,
// interleaved RoPE) and its f32 tensors under the llama HF names, viewing the file's mapping.
struct Llama2cCheckpoint {
  ModelConfig config;
  std::shared_ptr<const TensorSource> tensors;
};
Expected<Llama2cCheckpoint> read_llama2c(const std::string& path);

// Where a linear layer sits: (layer, role); the output head is (-1, TensorRole::output) and the
// bert pooler (-1, TensorRole::pooler).
struct LinearSite {
  int layer = -1;
  TensorRole role = TensorRole::attn_q;
  bool operator==(const LinearSite&) const = default;
  auto operator<=>(const LinearSite&) const = default;
};
std::string linear_site_name(const LinearSite& site);  // "layer 3 attn_q", "output"

// The input of a linear layer about to run: `x` is [n_tokens, in_features] row-major, the
// batch's tokens in order. A hook may read it (calibration statistics) or overwrite it in place
// (the layer then consumes the modified input; other layers sharing that input are unaffected).
struct LinearActivations {
  LinearSite site;
  float* x = nullptr;
  int64_t n_tokens = 0;
  int64_t in_features = 0;
};
using LinearHook = std::function<void(const LinearActivations&)>;

// Per-layer K and V buffers for up to `max_sequences` independent sequences of up to `max_tokens`
// tokens each. Keys are stored after RoPE.
class KVCache {
 public:
  KVCache() = default;
  int64_t max_sequences() const { return max_sequences_; }
  int64_t max_tokens() const { return max_tokens_; }
  int64_t length(int64_t sequence) const { return lengths_.at(static_cast<size_t>(sequence)); }
  void clear();                   // all sequences
  void clear(int64_t sequence);   // one sequence
  // Drops tokens past `length` of a sequence (e.g. to re-run a shorter prefix).
  Status truncate(int64_t sequence, int64_t length);

  // Raw [max_tokens, kv_dim] key / value rows of one layer and sequence.
  float* k(int64_t layer, int64_t sequence) { return k_.data() + offset(layer, sequence); }
  float* v(int64_t layer, int64_t sequence) { return v_.data() + offset(layer, sequence); }

 private:
  friend class Model;
  size_t offset(int64_t layer, int64_t sequence) const {
    return static_cast<size_t>((layer * max_sequences_ + sequence) * max_tokens_ * kv_dim_);
  }
  int64_t num_layers_ = 0, max_sequences_ = 0, max_tokens_ = 0, kv_dim_ = 0;
  std::vector<int64_t> lengths_;
  std::vector<float> k_, v_;
};

// Tokens appended to one sequence of a KVCache: they take positions length .. length + n - 1.
struct TokenChunk {
  int64_t sequence = 0;
  std::span<const int32_t> tokens;
};

enum class LogitsMode : uint8_t {
  all = 0,   // logits for every token: [total_tokens, vocab]
  last = 1,  // only for each chunk's last token: [n_chunks, vocab]
  none = 2,  // no logits (fill the cache only)
};

struct EncoderOutput {
  Tensor last_hidden_state;  // [batch, seq_len, hidden]
  Tensor mean_pooled;        // [batch, hidden]: mean over positions whose attention_mask is 1
  Tensor pooler_output;      // [batch, hidden] tanh(dense(first token)); empty without pooler weights
};

// What kind of model a path holds (detect_model_file).
enum class ModelFileKind : uint8_t {
  hf_directory = 0,  // a directory with config.json and safetensors weights
  safetensors = 1,   // a lone .safetensors checkpoint (config.json beside it or given)
  packed = 2,        // a qforge packed quantized .safetensors file (include/qforge/packed.h)
  gguf = 3,          // a llama.cpp GGUF file
  llama2c = 4,       // a llama2.c v0 .bin checkpoint
};
const char* model_file_kind_name(ModelFileKind kind);  // "hf", "safetensors", "packed", "gguf", "llama2c"
// Directories are HF; files are told apart by their magic bytes (GGUF), their safetensors header
// (a "qforge" manifest: packed) and otherwise taken as llama2.c. Errors name the path.
Expected<ModelFileKind> detect_model_file(const std::string& path);

// How the quantized (and f16/bf16) linear weights of GGUF and packed files run.
enum class QuantizedWeights : uint8_t {
  dequantize_at_load = 0,  // f32 copies made once at load (DenseLinear): the reference
  kernels = 1,             // fast CPU kernels (KernelLinear, qforge/kernels.h) where one exists for the
                           // scheme; other weights dequantized at load
  on_the_fly = 2,          // QuantizedLinear: dequantized at every forward call
};

struct ModelLoadOptions {
  // config.json (or a directory holding it) for .safetensors and packed files; empty: the
  // config.json in the file's directory.
  std::string config;
  // Packed files: keep quantized weights as QuantizedLinear layers (dequantized on every forward
  // call, less memory) instead of dequantizing them once at load.
  bool quantized_linear = false;
  // GGUF and packed files (quantized_linear = true means QuantizedWeights::on_the_fly). With
  // kernels or on_the_fly, a tied output head runs on the quantized token embedding.
  QuantizedWeights weights = QuantizedWeights::dequantize_at_load;
};

class Model {
 public:
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  // Any model detect_model_file recognises: an HF directory, a .safetensors checkpoint, a qforge
  // packed file, a GGUF file or a llama2.c .bin file.
  static Expected<Model> load(const std::string& path, const ModelLoadOptions& options = {});
  static Expected<Model> from_checkpoint(const ModelConfig& config, const SafetensorsCheckpoint& checkpoint);
  // Every tensor of `source` must resolve to a role the config expects (buffers are ignored);
  // every expected tensor must be present. f32/f16/bf16 tensors are converted to f32.
  static Expected<Model> from_tensors(const ModelConfig& config, const TensorSource& source,
                                      TensorNaming naming = TensorNaming::hf);
  // llama2.c v0 checkpoints (7 int32 header fields, then fp32 weights), interleaved RoPE.
  static Expected<Model> load_llama2c(const std::string& path);
  // llama.cpp GGUF files of architecture llama or qwen2: the config comes from the metadata
  // (gguf_model_config); quantized tensors are dequantized at load through the format table.
  // llama.cpp's converter permutes the Q/K rows of llama models so that RoPE rotates adjacent
  // pairs, so llama GGUF models run with RopeStyle::interleaved.
  static Expected<Model> load_gguf(const std::string& path,
                                   QuantizedWeights weights = QuantizedWeights::dequantize_at_load);
  // A qforge packed file with the given config (see ModelLoadOptions::quantized_linear).
  static Expected<Model> load_packed(const std::string& path, const ModelConfig& config, bool quantized_linear = false);
  static Expected<Model> load_packed(const std::string& path, const ModelConfig& config, QuantizedWeights weights);

  const ModelConfig& config() const;

  // Linear layers, by site. Null when the model has none there.
  Linear* linear(const LinearSite& site) const;
  // Every linear site in forward order (per layer: q, k, v or qkv, output, gate, up, down; then
  // the output head / pooler).
  std::vector<LinearSite> linear_sites() const;
  // Swaps in another implementation (e.g. a QuantizedLinear) of the same shape.
  Status replace_linear(const LinearSite& site, std::unique_ptr<Linear> layer);
  // f32 [vocab, hidden] token embedding table.
  const Tensor& token_embedding() const;
  // Frees the token embedding table and the output head (for a tied model, the same storage):
  // block-wise calibration (ptq.h) needs neither once its windows are embedded, and they are the
  // largest tensors of a small model. Afterwards forward() and embed_tokens() return errors;
  // forward_layer() still works.
  void release_embedding_and_head();

  // Hooks on linear inputs; they run in registration order. Returns an id for remove_hook.
  int add_hook(const LinearSite& site, LinearHook hook);
  void remove_hook(int id);
  void clear_hooks();

  // Decoder models (causal LMs).
  Expected<KVCache> make_cache(int64_t max_sequences, int64_t max_tokens) const;
  // Runs the chunks (distinct sequences) through the model, appending their K/V to `cache`.
  // `logits` receives [total_tokens, vocab] (LogitsMode::all) or [n_chunks, vocab] (last).
  Status forward(std::span<const TokenChunk> chunks, KVCache& cache, LogitsMode mode, Tensor* logits);
  // The same, writing the logits into a caller's buffer of exactly rows x vocab floats (rows as
  // above; empty for LogitsMode::none), e.g. one reused across calls. The size is checked before
  // anything runs.
  Status forward(std::span<const TokenChunk> chunks, KVCache& cache, LogitsMode mode, std::span<float> logits);
  // A whole [batch, seq_len] batch from scratch: logits [batch, seq_len, vocab].
  Expected<Tensor> forward_batch(const int32_t* input_ids, int64_t batch, int64_t seq_len);

  // Block-wise forward (calibration pipelines, include/qforge/ptq.h). Decoder models only.
  // Embeds [batch, seq_len] token ids of independent sequences starting at position 0 into
  // `hidden`, [batch * seq_len, hidden_size] floats (token plus learned position embeddings):
  // exactly the input forward() gives layer 0.
  Status embed_tokens(const int32_t* input_ids, int64_t batch, int64_t seq_len, std::span<float> hidden) const;
  // Runs decoder layer `layer` in place on [batch * seq_len, hidden_size] hidden states of `batch`
  // independent sequences of seq_len tokens at positions 0 .. seq_len - 1 (no KV cache is kept).
  // The hooks of the layer's linear sites fire. Running layers 0 .. L-1 in turn on embed_tokens'
  // output gives the same values forward() feeds layer L.
  Status forward_layer(int layer, std::span<float> hidden, int64_t batch, int64_t seq_len);
  // The end of forward(): the final norm and the output head on `rows` hidden states ([rows,
  // hidden_size], what the last forward_layer leaves), writing [rows, vocab] logits. The output
  // site's hooks fire. Decoder models only.
  Status forward_head(std::span<const float> hidden, int64_t rows, std::span<float> logits);
  // Mutable norm parameters of a layer's block (AWQ and SmoothQuant fold scales into them): the
  // attention block's or the MLP block's norm (pre-norm: its input norm; post-norm: the norm after
  // the residual). Empty spans when the model has none (no bias for RMSNorm).
  enum class BlockNorm : uint8_t { attention = 0, mlp = 1 };
  std::span<float> norm_weight(int layer, BlockNorm which);
  std::span<float> norm_bias(int layer, BlockNorm which);

  // Encoder models (bert). attention_mask and token_type_ids may be null (all ones / all zeros).
  Expected<EncoderOutput> encode(const int32_t* input_ids, const int32_t* attention_mask,
                                 const int32_t* token_type_ids, int64_t batch, int64_t seq_len);

  struct Impl;  // opaque; defined in src/model/model_impl.h

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qforge
