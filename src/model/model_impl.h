// Internal state of qforge::Model, shared by the loader (weights.cpp, llama2c.cpp) and the
// forward pass (forward.cpp, ops.cpp).
#pragma once

#include <memory>
#include <vector>

#include "qforge/model.h"

namespace qforge {

struct LayerWeights {
  std::unique_ptr<Linear> q, k, v, qkv, o, gate, up, down;
  std::vector<float> attn_norm_w, attn_norm_b;  // bias only for LayerNorm
  std::vector<float> mlp_norm_w, mlp_norm_b;
};

struct Model::Impl {
  ModelConfig config;
  Tensor token_embedding;       // f32 [vocab, hidden]
  Tensor position_embedding;    // f32 [max_positions, hidden] (learned positions)
  Tensor token_type_embedding;  // f32 [type_vocab, hidden] (bert)
  std::vector<float> embedding_norm_w, embedding_norm_b;  // bert
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm_w, final_norm_b;  // pre-norm models
  std::unique_ptr<Linear> output;                 // decoders: lm_head (shares the embedding when tied)
  std::unique_ptr<Linear> pooler;                 // bert, optional
  std::vector<float> rope_inv_freq;               // head_dim / 2 frequencies

  struct Hook {
    int id;
    LinearSite site;
    LinearHook fn;
  };
  std::vector<Hook> hooks;
  int next_hook_id = 1;

  // The slot holding the linear at `site`, or null when the architecture has none there.
  std::unique_ptr<Linear>* slot(const LinearSite& site);
  // Fills rope_inv_freq from the config.
  void init_rope();
};

// Internal kernels (ops.cpp). Rows are contiguous [n, dim] blocks.
namespace ops {
void rms_norm(const float* x, const float* w, int64_t n, int64_t dim, double eps, float* y);
void layer_norm(const float* x, const float* w, const float* b, int64_t n, int64_t dim, double eps, float* y);
// y = silu(gate) * up, elementwise over count values (y may alias gate).
void silu_mul(const float* gate, const float* up, int64_t count, float* y);
void gelu_tanh(float* x, int64_t count);
void gelu_erf(float* x, int64_t count);
// Rotates heads of one token in place: `heads` heads of head_dim values each at x.
void rope(float* x, int64_t heads, int64_t head_dim, int64_t position, const float* inv_freq, RopeStyle style);
}  // namespace ops

}  // namespace qforge
