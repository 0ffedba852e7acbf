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
  // cos and sin of every position seen so far ([positions, head_dim / 2] each), grown on demand
  // by forward (outside parallel regions): windows revisit the same positions.
  std::vector<float> rope_cos, rope_sin;
  int64_t rope_positions = 0;
  void ensure_rope_table(int64_t positions);

  struct Hook {
    int id;
    LinearSite site;
    LinearHook fn;
  };
  std::vector<Hook> hooks;
  std::vector<float> workspace;  // forward-pass scratch, reused between calls
  int next_hook_id = 1;

  // The slot holding the linear at `site`, or null when the architecture has none there.
  std::unique_ptr<Linear>* slot(const LinearSite& site);
  // Fills rope_inv_freq from the config.
  void init_rope();
};

// The Linear for a quantized weight under `mode` (linear_kernel.cpp): a QuantizedLinear for
// on_the_fly, a KernelLinear for kernels, or null when the weight should stay dequantized at load
// (mode dequantize_at_load, no kernel for the scheme, or `transposed` planes under kernels).
Expected<std::unique_ptr<Linear>> make_quantized_linear(QuantizedTensor q, std::vector<float> bias,
                                                        QuantizedWeights mode, bool transposed = false);

// Internal kernels (ops.cpp). Rows are contiguous [n, dim] blocks.
namespace ops {
void rms_norm(const float* x, const float* w, int64_t n, int64_t dim, double eps, float* y);
void layer_norm(const float* x, const float* w, const float* b, int64_t n, int64_t dim, double eps, float* y);
// True when the CPU has AVX2 and FMA and QFORGE_SIMD_LEVEL is not "scalar": the *_avx2 kernels
// (ops-avx2.cpp) replace the scalar references below.
bool use_avx2();
// y = silu(gate) * up, elementwise over count values (y may alias gate). Dispatches.
void silu_mul(const float* gate, const float* up, int64_t count, float* y);
void silu_mul_ref(const float* gate, const float* up, int64_t count, float* y);
void silu_mul_avx2(const float* gate, const float* up, int64_t count, float* y);
// In-place softmax of n scores: exp(x - max) / sum with the sum in double; -inf entries become 0
// and a row of only -inf becomes all zeros. Dispatches.
void softmax(float* x, int64_t n);
void softmax_ref(float* x, int64_t n);
void softmax_avx2(float* x, int64_t n);
void gelu_tanh(float* x, int64_t count);
void gelu_erf(float* x, int64_t count);
// Rotates heads of one token in place: `heads` heads of head_dim values each at x.
void rope(float* x, int64_t heads, int64_t head_dim, int64_t position, const float* inv_freq, RopeStyle style);
// The same rotation with the position's cos/sin (head_dim / 2 each) precomputed.
void rope_apply(float* x, int64_t heads, int64_t head_dim, const float* cs, const float* sn, RopeStyle style);
}  // namespace ops

}  // namespace qforge
