// llama2.c v0 checkpoints (Karpathy's run.c format), mapped onto the llama forward pass.
//
// Layout (little-endian): 7 int32 header fields
//   dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative: separate classifier), seq_len
// then fp32 arrays, each [n_layers, ...] stacked over layers where per-layer:
//   token_embedding [vocab, dim]
//   rms_att [L, dim]; wq [L, dim, dim]; wk [L, kv_dim, dim]; wv [L, kv_dim, dim]; wo [L, dim, dim]
//   rms_ffn [L, dim]; w1 [L, hidden, dim]; w2 [L, dim, hidden]; w3 [L, hidden, dim]
//   rms_final [dim]; freq_cis_real, freq_cis_imag [seq_len, head_size/2] each (unused: recomputed)
//   wcls [vocab, dim] only when vocab_size < 0
// Matrices are [out, in] like nn.Linear (w1 = gate, w3 = up, w2 = down). RoPE rotates adjacent
// pairs (2i, 2i+1) with theta 10000; RMSNorm eps is 1e-5.
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>

#include "model/model_impl.h"

namespace qforge {
namespace {

class MemorySource final : public TensorSource {
 public:
  explicit MemorySource(std::string label) : label_(std::move(label)) {}
  void add(std::string name, Tensor t) { tensors_.emplace(std::move(name), std::move(t)); }
  std::vector<std::string> tensor_names() const override {
    std::vector<std::string> names;
    for (const auto& [k, v] : tensors_) names.push_back(k);
    return names;
  }
  Expected<Tensor> tensor(const std::string& name) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return parse_error(label_ + ": no tensor '" + name + "'");
    return it->second;
  }
  std::string label() const override { return label_; }

 private:
  std::string label_;
  std::map<std::string, Tensor> tensors_;
};

}  // namespace

Expected<Llama2cCheckpoint> read_llama2c(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  constexpr size_t kHeader = 7 * sizeof(int32_t);
  if (file->size() < kHeader)
    return parse_error(path + ": " + std::to_string(file->size()) + " bytes is too small for a llama2.c header");
  int32_t h[7];
  std::memcpy(h, file->data(), kHeader);
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i)
    if ((i == 5 ? std::abs(static_cast<int64_t>(h[i])) : h[i]) <= 0)
      return parse_error(path + ": llama2.c header field " + names[i] + " = " + std::to_string(h[i]) + " must be " +
                         (i == 5 ? "non-zero" : "positive"));
  ModelConfig c;
  c.arch = Architecture::llama2c;
  c.source = path;
  c.hidden_size = h[0];
  c.intermediate_size = h[1];
  c.num_layers = h[2];
  c.num_heads = h[3];
  c.num_kv_heads = h[4];
  c.vocab_size = std::abs(static_cast<int64_t>(h[5]));
  c.max_positions = h[6];
  c.tie_word_embeddings = h[5] > 0;
  if (c.hidden_size % c.num_heads != 0)
    return parse_error(path + ": dim " + std::to_string(c.hidden_size) + " is not divisible by n_heads " +
                       std::to_string(c.num_heads));
  c.head_dim = c.hidden_size / c.num_heads;
  c.norm = NormType::rms_norm;
  c.norm_eps = 1e-5;
  c.pre_norm = true;
  c.causal = true;
  c.mlp = MlpType::gated_silu;
  c.rope = RopeStyle::interleaved;
  c.rope_theta = 10000.0;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  QFORGE_RETURN_IF_ERROR(validate_model_config(c));

  // Walk the file, checking each array fits before viewing it (products checked for overflow).
  const int64_t D = c.hidden_size, F = c.intermediate_size, L = c.num_layers, V = c.vocab_size;
  const int64_t KV = c.kv_dim(), S = c.max_positions, hs = c.head_dim;
  const uint8_t* base = file->data();
  uint64_t offset = kHeader;
  auto next = [&](std::initializer_list<int64_t> dims) -> Expected<const float*> {
    uint64_t bytes = sizeof(float);
    bool overflow = false;
    for (int64_t d : dims) overflow |= __builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes);
    if (overflow || bytes > file->size() - offset)
      return parse_error(path + ": truncated: the header (dim " + std::to_string(D) + ", layers " +
                         std::to_string(L) + ", vocab " + std::to_string(h[5]) + ") needs more than the file's " +
                         std::to_string(file->size()) + " bytes");
    const float* p = reinterpret_cast<const float*>(base + offset);
    offset += bytes;
    return p;
  };
  std::shared_ptr<void> owner = file;
  auto view = [&](const float* p, Shape shape) {
    return Tensor::view(DType::f32, std::move(shape), const_cast<float*>(p), owner);
  };
  auto src_ptr = std::make_shared<MemorySource>(path);
  MemorySource& src = *src_ptr;
  auto per_layer = [&](TensorRole role, int64_t rows, int64_t cols) -> Status {
    QFORGE_ASSIGN_OR_RETURN(const float* p, next({L, rows, cols}));
    for (int64_t l = 0; l < L; ++l) {
      QFORGE_ASSIGN_OR_RETURN(std::string name, tensor_name_for_role(c.arch, role, static_cast<int>(l), false));
      src.add(name, view(p + l * rows * cols, cols == 1 ? Shape{rows} : Shape{rows, cols}));
    }
    return Status::ok();
  };

  QFORGE_ASSIGN_OR_RETURN(const float* emb, next({V, D}));
  src.add("model.embed_tokens.weight", view(emb, {V, D}));
  QFORGE_RETURN_IF_ERROR(per_layer(TensorRole::attn_norm, D, 1));
  QFORGE_RETURN_IF_ERROR(per_layer(TensorRole::attn_q, c.q_dim(), D));
  QFORGE_RETURN_IF_ERROR(per_layer(TensorRole::attn_k, KV, D));
  QFORGE_RETURN_IF_ERROR(per_layer(TensorRole::attn_v, KV, D));
  QFORGE_RETURN_IF_ERROR(per_layer(TensorRole::attn_output, D, c.q_dim()));
  QFORGE_RETURN_IF_ERROR(per_layer(TensorRole::mlp_norm, D, 1));
  QFORGE_RETURN_IF_ERROR(per_layer(TensorRole::mlp_gate, F, D));   // w1
  QFORGE_RETURN_IF_ERROR(per_layer(TensorRole::mlp_down, D, F));   // w2
  QFORGE_RETURN_IF_ERROR(per_layer(TensorRole::mlp_up, F, D));     // w3
  QFORGE_ASSIGN_OR_RETURN(const float* final_norm, next({D}));
  src.add("model.norm.weight", view(final_norm, {D}));
  QFORGE_ASSIGN_OR_RETURN(const float* freq_real, next({S, hs / 2}));
  QFORGE_ASSIGN_OR_RETURN(const float* freq_imag, next({S, hs / 2}));
  (void)freq_real;
  (void)freq_imag;
  if (!c.tie_word_embeddings) {
    QFORGE_ASSIGN_OR_RETURN(const float* wcls, next({V, D}));
    src.add("lm_head.weight", view(wcls, {V, D}));
  }
  if (offset != file->size())
    return parse_error(path + ": " + std::to_string(file->size() - offset) +
                       " trailing bytes after the llama2.c weights (header says dim " + std::to_string(D) +
                       ", layers " + std::to_string(L) + ", vocab " + std::to_string(h[5]) + ")");
  return Llama2cCheckpoint{c, std::move(src_ptr)};
}

Expected<Model> Model::load_llama2c(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(Llama2cCheckpoint ck, read_llama2c(path));
  return from_tensors(ck.config, *ck.tensors, TensorNaming::hf);
}

}  // namespace qforge
