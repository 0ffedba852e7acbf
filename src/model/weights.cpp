// Loading model weights by tensor role: every tensor in the source must resolve to a role the
// config expects, and every expected tensor must be there with the expected shape. Weights are
// converted to f32 at load.
#include <cstring>
#include <map>
#include <tuple>

#include "model/model_impl.h"

namespace qforge {
namespace {

using Key = std::tuple<TensorRole, int, bool>;  // role, layer (-1 global), is_bias

struct Need {
  TensorRole role;
  int layer;
  bool is_bias;
  Shape shape;  // as the model uses it ([out, in] for linears)
  bool optional = false;
};

std::string key_text(const Key& k) {
  auto [role, layer, bias] = k;
  std::string s = tensor_role_name(role);
  if (bias) s += " bias";
  if (layer >= 0) s += " of layer " + std::to_string(layer);
  return s;
}

// The tensors the config implies, with their shapes.
std::vector<Need> expected_tensors(const ModelConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t qd = c.q_dim(), kd = c.kv_dim();
  const bool ln = c.norm == NormType::layer_norm;
  std::vector<Need> needs;
  auto add = [&](TensorRole r, int layer, Shape shape, bool has_bias, bool optional = false) {
    needs.push_back({r, layer, false, shape, optional});
    if (has_bias) needs.push_back({r, layer, true, Shape{shape[0]}, optional});
  };
  add(TensorRole::token_embedding, -1, {V, H}, false);
  if (c.learned_positions) add(TensorRole::position_embedding, -1, {c.max_positions, H}, false);
  if (c.arch == Architecture::bert) {
    add(TensorRole::token_type_embedding, -1, {c.type_vocab_size, H}, false);
    add(TensorRole::embedding_norm, -1, {H}, true);
  }
  for (int l = 0; l < static_cast<int>(c.num_layers); ++l) {
    add(TensorRole::attn_norm, l, {H}, ln);
    if (c.fused_qkv) {
      add(TensorRole::attn_qkv, l, {qd + 2 * kd, H}, c.qkv_bias);
    } else {
      add(TensorRole::attn_q, l, {qd, H}, c.qkv_bias);
      add(TensorRole::attn_k, l, {kd, H}, c.qkv_bias);
      add(TensorRole::attn_v, l, {kd, H}, c.qkv_bias);
    }
    add(TensorRole::attn_output, l, {H, qd}, c.attn_output_bias);
    add(TensorRole::mlp_norm, l, {H}, ln);
    if (c.mlp == MlpType::gated_silu) add(TensorRole::mlp_gate, l, {I, H}, c.mlp_bias);
    add(TensorRole::mlp_up, l, {I, H}, c.mlp_bias);
    add(TensorRole::mlp_down, l, {H, I}, c.mlp_bias);
  }
  if (c.pre_norm) add(TensorRole::final_norm, -1, {H}, ln);
  if (c.causal) add(TensorRole::output, -1, {V, H}, false, /*optional=*/c.tie_word_embeddings);
  if (c.arch == Architecture::bert) add(TensorRole::pooler, -1, {H, H}, true, /*optional=*/true);
  return needs;
}

std::string join_limited(const std::vector<std::string>& items, size_t limit = 8) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < limit; ++i) s += (i ? ", " : "") + items[i];
  if (items.size() > limit) s += ", ... (" + std::to_string(items.size()) + " in all)";
  return s;
}

// Reads a tensor as contiguous f32 with the expected shape (transposing [in, out] linears).
Expected<Tensor> read_f32(const TensorSource& src, const std::string& name, const Shape& want, bool transposed) {
  QFORGE_ASSIGN_OR_RETURN(Tensor t, src.tensor(name));
  if (!dtype_is_float(t.dtype()))
    return unsupported(src.label() + ": tensor '" + name + "' has dtype " + dtype_name(t.dtype()) +
                       "; weights must be floating point");
  Shape stored = want;
  if (transposed) std::swap(stored[0], stored[1]);
  if (t.shape() != stored)
    return parse_error(src.label() + ": tensor '" + name + "' has shape " + shape_to_string(t.shape()) +
                       ", expected " + shape_to_string(stored) + " from the config");
  QFORGE_ASSIGN_OR_RETURN(Tensor f, t.to_f32());
  if (!transposed) return f;
  const int64_t rows = want[0], cols = want[1];  // f is [cols, rows]
  Tensor out = Tensor::zeros(DType::f32, want);
  const float* in = f.data_as<float>();
  float* o = out.data_as<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) o[r * cols + c] = in[c * rows + r];
  return out;
}

std::vector<float> to_vector(const Tensor& t) {
  const float* p = t.data_as<float>();
  return std::vector<float>(p, p + t.numel());
}


}  // namespace

Expected<Model> Model::from_tensors(const ModelConfig& config, const TensorSource& source, TensorNaming naming) {
  QFORGE_RETURN_IF_ERROR(validate_model_config(config));
  const std::string label = source.label();
  const Architecture arch = config.arch;

  // Resolve every name; anything unknown or outside the config's layers is an error.
  std::map<Key, std::string> found;
  std::vector<std::string> unknown;
  for (const std::string& name : source.tensor_names()) {
    auto r = resolve_tensor_role(arch, name, naming);
    if (!r.has_value()) {
      unknown.push_back("'" + name + "'");
      continue;
    }
    if (r->role == TensorRole::buffer) continue;
    if (r->layer >= config.num_layers) {
      unknown.push_back("'" + name + "' (layer " + std::to_string(r->layer) + " but the config has " +
                        std::to_string(config.num_layers) + ")");
      continue;
    }
    Key key{r->role, r->layer, r->is_bias};
    auto [it, inserted] = found.emplace(key, name);
    if (!inserted)
      return parse_error(label + ": tensors '" + it->second + "' and '" + name + "' are both the " + key_text(key));
  }
  if (!unknown.empty())
    return parse_error(label + ": unexpected tensors for " + architecture_name(arch) + ": " + join_limited(unknown));

  const std::vector<Need> needs = expected_tensors(config);
  std::map<Key, const Need*> need_of;
  for (const Need& n : needs) need_of[Key{n.role, n.layer, n.is_bias}] = &n;
  std::vector<std::string> missing, extra;
  for (const Need& n : needs) {
    if (n.optional || found.count(Key{n.role, n.layer, n.is_bias})) continue;
    auto name = tensor_name_for_role(arch, n.role, n.layer, n.is_bias, naming);
    missing.push_back(name.has_value() ? "'" + *name + "'" : key_text({n.role, n.layer, n.is_bias}));
  }
  for (const auto& [key, name] : found)
    if (!need_of.count(key)) extra.push_back("'" + name + "'");
  if (!missing.empty())
    return parse_error(label + ": missing tensors for " + architecture_name(arch) + ": " + join_limited(missing));
  if (!extra.empty())
    return parse_error(label + ": tensors the config does not use (check biases / tie_word_embeddings in " +
                       (config.source.empty() ? std::string("the config") : config.source) + "): " + join_limited(extra));

  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->layers.resize(static_cast<size_t>(config.num_layers));
  const bool transposed = linear_weights_transposed(arch, naming);

  // Loads into the right slot; linears get their bias attached.
  std::map<Key, Tensor> loaded;
  for (const Need& n : needs) {
    Key key{n.role, n.layer, n.is_bias};
    auto it = found.find(key);
    if (it == found.end()) continue;
    const bool t = transposed && !n.is_bias && is_linear_weight(n.role);
    QFORGE_ASSIGN_OR_RETURN(Tensor f, read_f32(source, it->second, n.shape, t));
    loaded.emplace(key, std::move(f));
  }
  auto take = [&](TensorRole r, int layer, bool bias) -> Tensor {
    auto it = loaded.find(Key{r, layer, bias});
    return it == loaded.end() ? Tensor() : it->second;
  };
  auto take_vec = [&](TensorRole r, int layer, bool bias) {
    Tensor t = take(r, layer, bias);
    return t.empty() ? std::vector<float>() : to_vector(t);
  };
  auto make_linear = [&](TensorRole r, int layer) -> Expected<std::unique_ptr<Linear>> {
    Tensor w = take(r, layer, false);
    if (w.empty()) return std::unique_ptr<Linear>();
    QFORGE_ASSIGN_OR_RETURN(auto lin, DenseLinear::create(std::move(w), take_vec(r, layer, true)));
    return std::unique_ptr<Linear>(std::move(lin));
  };

  impl->token_embedding = take(TensorRole::token_embedding, -1, false);
  impl->position_embedding = take(TensorRole::position_embedding, -1, false);
  impl->token_type_embedding = take(TensorRole::token_type_embedding, -1, false);
  impl->embedding_norm_w = take_vec(TensorRole::embedding_norm, -1, false);
  impl->embedding_norm_b = take_vec(TensorRole::embedding_norm, -1, true);
  for (int l = 0; l < static_cast<int>(config.num_layers); ++l) {
    LayerWeights& L = impl->layers[static_cast<size_t>(l)];
    L.attn_norm_w = take_vec(TensorRole::attn_norm, l, false);
    L.attn_norm_b = take_vec(TensorRole::attn_norm, l, true);
    L.mlp_norm_w = take_vec(TensorRole::mlp_norm, l, false);
    L.mlp_norm_b = take_vec(TensorRole::mlp_norm, l, true);
    QFORGE_ASSIGN_OR_RETURN(L.q, make_linear(TensorRole::attn_q, l));
    QFORGE_ASSIGN_OR_RETURN(L.k, make_linear(TensorRole::attn_k, l));
    QFORGE_ASSIGN_OR_RETURN(L.v, make_linear(TensorRole::attn_v, l));
    QFORGE_ASSIGN_OR_RETURN(L.qkv, make_linear(TensorRole::attn_qkv, l));
    QFORGE_ASSIGN_OR_RETURN(L.o, make_linear(TensorRole::attn_output, l));
    QFORGE_ASSIGN_OR_RETURN(L.gate, make_linear(TensorRole::mlp_gate, l));
    QFORGE_ASSIGN_OR_RETURN(L.up, make_linear(TensorRole::mlp_up, l));
    QFORGE_ASSIGN_OR_RETURN(L.down, make_linear(TensorRole::mlp_down, l));
  }
  impl->final_norm_w = take_vec(TensorRole::final_norm, -1, false);
  impl->final_norm_b = take_vec(TensorRole::final_norm, -1, true);
  QFORGE_ASSIGN_OR_RETURN(impl->pooler, make_linear(TensorRole::pooler, -1));
  if (config.causal) {
    Tensor head = take(TensorRole::output, -1, false);
    if (config.tie_word_embeddings) {
      // Some exporters save the tied head anyway; accept it only if it really is the embedding.
      if (!head.empty() &&
          std::memcmp(head.data(), impl->token_embedding.data(), impl->token_embedding.nbytes()) != 0)
        return parse_error(label + ": tie_word_embeddings is true but the output head differs from the embedding");
      head = impl->token_embedding;  // shared storage
    }
    QFORGE_ASSIGN_OR_RETURN(auto out, DenseLinear::create(std::move(head)));
    impl->output = std::move(out);
  }
  impl->init_rope();
  return Model(std::move(impl));
}

}  // namespace qforge
