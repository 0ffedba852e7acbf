// The fp32 forward pass shared by every architecture: the config's flags (norm type, pre/post
// norm, RoPE style, fused qkv, gated MLP, causal or bidirectional) select the math per block.
// Batches are flat: the tokens of several independent sequences are stacked row after row, and
// attention looks up each row's keys in its own sequence's KV cache slot.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "model/model_impl.h"

namespace qforge {
namespace {

// One sequence's rows in the flat batch.
struct Span {
  int64_t sequence;  // KV cache slot
  int64_t row0;      // first row in the batch
  int64_t n;         // rows
  int64_t past;      // tokens already in the cache before this call
};

struct Batch {
  std::vector<Span> spans;
  std::vector<int64_t> row_span;    // span index of each row
  std::vector<int64_t> positions;   // absolute position of each row
  const uint8_t* key_mask = nullptr;  // encoder padding: key row r is attended iff key_mask[r]
  int64_t total = 0;
};

std::vector<float> buffer(int64_t rows, int64_t cols) {
  return std::vector<float>(static_cast<size_t>(rows) * static_cast<size_t>(cols));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Model plumbing

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

const ModelConfig& Model::config() const { return impl_->config; }
const Tensor& Model::token_embedding() const { return impl_->token_embedding; }

void Model::release_embedding_and_head() {
  impl_->token_embedding = Tensor();
  impl_->output.reset();
}

std::string linear_site_name(const LinearSite& site) {
  if (site.layer < 0) return tensor_role_name(site.role);
  return "layer " + std::to_string(site.layer) + " " + tensor_role_name(site.role);
}

std::unique_ptr<Linear>* Model::Impl::slot(const LinearSite& site) {
  std::unique_ptr<Linear>* s = nullptr;
  if (site.layer < 0) {
    if (site.role == TensorRole::output) s = &output;
    if (site.role == TensorRole::pooler) s = &pooler;
  } else if (static_cast<size_t>(site.layer) < layers.size()) {
    LayerWeights& L = layers[static_cast<size_t>(site.layer)];
    switch (site.role) {
      case TensorRole::attn_q: s = &L.q; break;
      case TensorRole::attn_k: s = &L.k; break;
      case TensorRole::attn_v: s = &L.v; break;
      case TensorRole::attn_qkv: s = &L.qkv; break;
      case TensorRole::attn_output: s = &L.o; break;
      case TensorRole::mlp_gate: s = &L.gate; break;
      case TensorRole::mlp_up: s = &L.up; break;
      case TensorRole::mlp_down: s = &L.down; break;
      default: break;
    }
  }
  return (s != nullptr && *s != nullptr) ? s : nullptr;
}

void Model::Impl::ensure_rope_table(int64_t positions) {
  if (positions <= rope_positions || rope_inv_freq.empty()) return;
  const int64_t half = config.head_dim / 2;
  rope_cos.resize(static_cast<size_t>(positions * half));
  rope_sin.resize(static_cast<size_t>(positions * half));
  for (int64_t p = rope_positions; p < positions; ++p) {
    // The angle is rounded to fp32 as HF does (fp32 position times fp32 inverse frequency), then
    // its cosine and sine are taken accurately (ops::rope does the same per call).
    const float pos = static_cast<float>(p);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * rope_inv_freq[static_cast<size_t>(i)];
      rope_cos[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(static_cast<double>(angle)));
      rope_sin[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
  rope_positions = positions;
}

void Model::Impl::init_rope() {
  rope_cos.clear();
  rope_sin.clear();
  rope_positions = 0;
  rope_inv_freq.clear();
  if (config.rope == RopeStyle::none) return;
  const int64_t half = config.head_dim / 2;
  rope_inv_freq.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // HF: 1 / theta ** (arange(0, dim, 2).float() / dim), all in fp32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(config.head_dim);
    rope_inv_freq[static_cast<size_t>(i)] =
        static_cast<float>(1.0 / std::pow(config.rope_theta, static_cast<double>(exponent)));
  }
}

Linear* Model::linear(const LinearSite& site) const {
  auto* s = impl_->slot(site);
  return s ? s->get() : nullptr;
}

std::vector<LinearSite> Model::linear_sites() const {
  std::vector<LinearSite> sites;
  const TensorRole order[] = {TensorRole::attn_q,      TensorRole::attn_k,   TensorRole::attn_v,
                              TensorRole::attn_qkv,    TensorRole::attn_output, TensorRole::mlp_gate,
                              TensorRole::mlp_up,      TensorRole::mlp_down};
  for (int l = 0; l < static_cast<int>(impl_->layers.size()); ++l)
    for (TensorRole r : order)
      if (impl_->slot({l, r})) sites.push_back({l, r});
  if (impl_->output) sites.push_back({-1, TensorRole::output});
  if (impl_->pooler) sites.push_back({-1, TensorRole::pooler});
  return sites;
}

Status Model::replace_linear(const LinearSite& site, std::unique_ptr<Linear> layer) {
  auto* s = impl_->slot(site);
  if (!s) return invalid_argument("model has no linear layer at " + linear_site_name(site));
  if (!layer) return invalid_argument("replace_linear at " + linear_site_name(site) + ": null layer");
  if (!*s) return invalid_argument("replace_linear at " + linear_site_name(site) + ": the layer was released");
  const Linear& old = **s;
  if (layer->in_features() != old.in_features() || layer->out_features() != old.out_features())
    return invalid_argument("replace_linear at " + linear_site_name(site) + ": shape [" +
                            std::to_string(layer->out_features()) + ", " + std::to_string(layer->in_features()) +
                            "] does not match [" + std::to_string(old.out_features()) + ", " +
                            std::to_string(old.in_features()) + "]");
  *s = std::move(layer);
  return Status::ok();
}

int Model::add_hook(const LinearSite& site, LinearHook hook) {
  int id = impl_->next_hook_id++;
  impl_->hooks.push_back({id, site, std::move(hook)});
  return id;
}

void Model::remove_hook(int id) {
  auto& h = impl_->hooks;
  h.erase(std::remove_if(h.begin(), h.end(), [id](const Impl::Hook& e) { return e.id == id; }), h.end());
}

void Model::clear_hooks() { impl_->hooks.clear(); }

// ---------------------------------------------------------------------------------------------
// KV cache

void KVCache::clear() { std::fill(lengths_.begin(), lengths_.end(), 0); }

void KVCache::clear(int64_t sequence) {
  if (sequence >= 0 && sequence < max_sequences_) lengths_[static_cast<size_t>(sequence)] = 0;
}

Status KVCache::truncate(int64_t sequence, int64_t length) {
  if (sequence < 0 || sequence >= max_sequences_)
    return out_of_range("KV cache has no sequence " + std::to_string(sequence));
  int64_t& len = lengths_[static_cast<size_t>(sequence)];
  if (length < 0 || length > len)
    return out_of_range("cannot truncate sequence " + std::to_string(sequence) + " of length " +
                        std::to_string(len) + " to " + std::to_string(length));
  len = length;
  return Status::ok();
}

Expected<KVCache> Model::make_cache(int64_t max_sequences, int64_t max_tokens) const {
  const ModelConfig& c = impl_->config;
  if (max_sequences <= 0 || max_tokens <= 0)
    return invalid_argument("KV cache needs positive sizes, got " + std::to_string(max_sequences) + " sequences x " +
                            std::to_string(max_tokens) + " tokens");
  // layers * sequences * tokens * kv_dim floats, checked without overflow against 2^40 floats.
  const double floats = static_cast<double>(c.num_layers) * static_cast<double>(max_sequences) *
                        static_cast<double>(max_tokens) * static_cast<double>(c.kv_dim());
  if (floats > static_cast<double>(int64_t{1} << 40))
    return invalid_argument("KV cache of " + std::to_string(max_sequences) + " x " + std::to_string(max_tokens) +
                            " tokens is too large");
  KVCache cache;
  cache.num_layers_ = c.num_layers;
  cache.max_sequences_ = max_sequences;
  cache.max_tokens_ = max_tokens;
  cache.kv_dim_ = c.kv_dim();
  cache.lengths_.assign(static_cast<size_t>(max_sequences), 0);
  const size_t n = static_cast<size_t>(floats);
  cache.k_.resize(n);
  cache.v_.resize(n);
  return cache;
}

// ---------------------------------------------------------------------------------------------
// The transformer blocks

namespace {

class Runner {
 public:
  // `cache_base`: the model layer stored in the cache's layer 0 (block-wise runs keep a
  // one-layer cache).
  Runner(Model::Impl& m, const Batch& b, KVCache& cache, int64_t cache_base = 0)
      : m_(m), c_(m.config), b_(b), cache_(cache), cache_base_(cache_base) {}

  // x: [total, hidden] embeddings in, block outputs out (before any final norm). Runs layers
  // [first, last); last < 0 means through the last layer.
  void run_layers(float* x, int64_t first = 0, int64_t last = -1) {
    if (last < 0) last = c_.num_layers;
    const int64_t n = b_.total, H = c_.hidden_size, I = c_.intermediate_size;
    // Scratch buffers come from the model's workspace (grown, never shrunk), so repeated calls
    // of the same size do not fault in fresh pages each time.
    const int64_t qd = c_.q_dim(), kd = c_.kv_dim();
    const bool gated = c_.mlp == MlpType::gated_silu;
    const int64_t per_row = 2 * H + 2 * qd + 2 * kd + I + (gated ? I : 0) + (c_.fused_qkv ? qd + 2 * kd : 0);
    std::vector<float>& ws = m_.workspace;
    if (ws.size() < static_cast<size_t>(n * per_row)) {
      ws.clear();
      ws.shrink_to_fit();
      ws.resize(static_cast<size_t>(n * per_row));
    }
    float* next = ws.data();
    auto carve = [&](int64_t cols) {
      float* p = next;
      next += n * cols;
      return p;
    };
    float* h = carve(H);
    float* o = carve(H);
    float* q = carve(qd);
    float* k = carve(kd);
    float* v = carve(kd);
    float* attn = carve(qd);
    float* g = carve(I);
    float* u = gated ? carve(I) : nullptr;
    float* qkv = c_.fused_qkv ? carve(qd + 2 * kd) : nullptr;

    for (int64_t l = first; l < last; ++l) {
      LayerWeights& L = m_.layers[static_cast<size_t>(l)];
      const int layer = static_cast<int>(l);
      // Attention block.
      const float* in = x;
      if (c_.pre_norm) {
        norm(x, L.attn_norm_w, L.attn_norm_b, h);
        in = h;
      }
      if (c_.fused_qkv) {
        linear({layer, TensorRole::attn_qkv}, *L.qkv, in, qkv);
        split_qkv(qkv, q, k, v);
      } else {
        linear({layer, TensorRole::attn_q}, *L.q, in, q);
        linear({layer, TensorRole::attn_k}, *L.k, in, k);
        linear({layer, TensorRole::attn_v}, *L.v, in, v);
      }
      if (c_.rope != RopeStyle::none) apply_rope(q, k);
      store_kv(l, k, v);
      attention(l, q, attn);
      linear({layer, TensorRole::attn_output}, *L.o, attn, o);
      residual(x, o, L.attn_norm_w, L.attn_norm_b);

      // MLP block.
      in = x;
      if (c_.pre_norm) {
        norm(x, L.mlp_norm_w, L.mlp_norm_b, h);
        in = h;
      }
      if (c_.mlp == MlpType::gated_silu) {
        linear({layer, TensorRole::mlp_gate}, *L.gate, in, g);
        linear({layer, TensorRole::mlp_up}, *L.up, in, u);
        ops::silu_mul(g, u, n * I, g);
      } else {
        linear({layer, TensorRole::mlp_up}, *L.up, in, g);
        if (c_.mlp == MlpType::gelu_tanh) {
          ops::gelu_tanh(g, n * I);
        } else {
          ops::gelu_erf(g, n * I);
        }
      }
      linear({layer, TensorRole::mlp_down}, *L.down, g, o);
      residual(x, o, L.mlp_norm_w, L.mlp_norm_b);
    }
  }

  // Runs a linear (rows = n, or b_.total by default) with the hooks registered at its site.
  void linear(const LinearSite& site, const Linear& lin, const float* x, float* y, int64_t rows = -1) {
    if (rows < 0) rows = b_.total;
    bool hooked = false;
    for (const auto& hk : m_.hooks) hooked |= hk.site == site;
    if (!hooked) {
      lin.forward(x, rows, y);
      return;
    }
    // Hooks see (and may rewrite) a private copy, so layers sharing this input are unaffected.
    std::vector<float> copy(x, x + rows * lin.in_features());
    for (const auto& hk : m_.hooks)
      if (hk.site == site) hk.fn(LinearActivations{site, copy.data(), rows, lin.in_features()});
    lin.forward(copy.data(), rows, y);
  }

  void norm(const float* x, const std::vector<float>& w, const std::vector<float>& b, float* y, int64_t rows = -1) {
    if (rows < 0) rows = b_.total;
    if (c_.norm == NormType::rms_norm) {
      ops::rms_norm(x, w.data(), rows, c_.hidden_size, c_.norm_eps, y);
    } else {
      ops::layer_norm(x, w.data(), b.empty() ? nullptr : b.data(), rows, c_.hidden_size, c_.norm_eps, y);
    }
  }

 private:
  // Pre-norm: x += o. Post-norm (bert): x = norm(x + o).
  void residual(float* x, const float* o, const std::vector<float>& w, const std::vector<float>& b) {
    const int64_t count = b_.total * c_.hidden_size;
    for (int64_t i = 0; i < count; ++i) x[i] += o[i];
    if (!c_.pre_norm) norm(x, w, b, x);
  }

  void split_qkv(const float* qkv, float* q, float* k, float* v) {
    const int64_t qd = c_.q_dim(), kd = c_.kv_dim(), stride = qd + 2 * kd;
    for (int64_t r = 0; r < b_.total; ++r) {
      const float* row = qkv + r * stride;
      std::memcpy(q + r * qd, row, sizeof(float) * static_cast<size_t>(qd));
      std::memcpy(k + r * kd, row + qd, sizeof(float) * static_cast<size_t>(kd));
      std::memcpy(v + r * kd, row + qd + kd, sizeof(float) * static_cast<size_t>(kd));
    }
  }

  void apply_rope(float* q, float* k) {
    const int64_t qd = c_.q_dim(), kd = c_.kv_dim(), half = c_.head_dim / 2;
    int64_t max_pos = 0;
    for (int64_t p : b_.positions) max_pos = std::max(max_pos, p + 1);
    m_.ensure_rope_table(max_pos);
    const float* cs = m_.rope_cos.data();
    const float* sn = m_.rope_sin.data();
#pragma omp parallel for if (b_.total > 16)
    for (int64_t r = 0; r < b_.total; ++r) {
      const int64_t pos = b_.positions[static_cast<size_t>(r)];
      ops::rope_apply(q + r * qd, c_.num_heads, c_.head_dim, cs + pos * half, sn + pos * half, c_.rope);
      ops::rope_apply(k + r * kd, c_.num_kv_heads, c_.head_dim, cs + pos * half, sn + pos * half, c_.rope);
    }
  }

  void store_kv(int64_t layer, const float* k, const float* v) {
    const int64_t kd = c_.kv_dim();
    for (const Span& s : b_.spans) {
      const size_t bytes = sizeof(float) * static_cast<size_t>(s.n * kd);
      std::memcpy(cache_.k(layer - cache_base_, s.sequence) + s.past * kd, k + s.row0 * kd, bytes);
      std::memcpy(cache_.v(layer - cache_base_, s.sequence) + s.past * kd, v + s.row0 * kd, bytes);
    }
  }

  // Scaled dot-product attention. Work items are (sequence, head, block of up to kRowBlock query
  // rows); each computes its scores against the keys it can see with one GEMM, masks and
  // softmaxes them, and multiplies by V with a second GEMM. Blocking the rows keeps a causal
  // prefill from computing much of the masked upper triangle. Items run in parallel with BLAS
  // limited to one thread each.
  void attention(int64_t layer, const float* q, float* out) {
    constexpr int64_t kRowBlock = 64;
    const int64_t hd = c_.head_dim, qd = c_.q_dim(), kd = c_.kv_dim();
    const int64_t group = c_.num_heads / c_.num_kv_heads;
    float scale = c_.scale_attn_weights ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))) : 1.0f;
    if (c_.scale_attn_by_inverse_layer_idx) scale /= static_cast<float>(layer + 1);
    struct Item {
      int64_t span, head, row0, rows;
    };
    std::vector<Item> items;
    int64_t max_keys = 0;
    int64_t work = 0;  // multiply-adds of the two GEMMs, roughly
    for (size_t si = 0; si < b_.spans.size(); ++si) {
      const Span& s = b_.spans[si];
      max_keys = std::max(max_keys, s.past + s.n);
      for (int64_t h = 0; h < c_.num_heads; ++h)
        for (int64_t r0 = 0; r0 < s.n; r0 += kRowBlock) {
          const int64_t rows = std::min(kRowBlock, s.n - r0);
          items.push_back({static_cast<int64_t>(si), h, r0, rows});
          work += 2 * rows * (s.past + r0 + rows) * hd;
        }
    }
    const int64_t n_items = static_cast<int64_t>(items.size());
    // Below ~100k multiply-adds a parallel region costs more than it saves (and on a busy machine
    // a region waits for a descheduled thread): tiny models and short decodes stay serial.
    const bool parallel = n_items > 1 && work >= (int64_t{1} << 17);
    // Every attention GEMM is small (one head, one row block): BLAS runs them single-threaded.
    const int blas_threads = set_blas_threads(1);
    constexpr float kMasked = -std::numeric_limits<float>::infinity();
#pragma omp parallel if (parallel)
    {
      std::vector<float> scores(static_cast<size_t>(kRowBlock * max_keys));
#pragma omp for schedule(dynamic, 1)
      for (int64_t it = 0; it < n_items; ++it) {
        const Item& item = items[static_cast<size_t>(it)];
        const Span& s = b_.spans[static_cast<size_t>(item.span)];
        const int64_t g = item.head / group;
        // Keys this block can see: causal rows up to their own position, encoder rows all.
        const int64_t keys = c_.causal ? s.past + item.row0 + item.rows : s.past + s.n;
        const float* qb = q + (s.row0 + item.row0) * qd + item.head * hd;
        const float* kb = cache_.k(layer - cache_base_, s.sequence) + g * hd;
        const float* vb = cache_.v(layer - cache_base_, s.sequence) + g * hd;
        float* sc = scores.data();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(item.rows), static_cast<int>(keys),
                    static_cast<int>(hd), scale, qb, static_cast<int>(qd), kb, static_cast<int>(kd), 0.0f, sc,
                    static_cast<int>(keys));
        for (int64_t i = 0; i < item.rows; ++i) {
          float* row = sc + i * keys;
          const int64_t qpos = s.past + item.row0 + i;
          const int64_t end = c_.causal ? qpos + 1 : keys;
          const int64_t begin =
              (c_.causal && c_.sliding_window > 0) ? std::max<int64_t>(0, qpos - c_.sliding_window + 1) : 0;
          for (int64_t j = 0; j < begin; ++j) row[j] = kMasked;
          for (int64_t j = end; j < keys; ++j) row[j] = kMasked;
          if (b_.key_mask)
            for (int64_t j = begin; j < end; ++j)
              if (!b_.key_mask[s.row0 + (j - s.past)]) row[j] = kMasked;
          ops::softmax(row, keys);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(item.rows), static_cast<int>(hd),
                    static_cast<int>(keys), 1.0f, sc, static_cast<int>(keys), vb, static_cast<int>(kd), 0.0f,
                    out + (s.row0 + item.row0) * qd + item.head * hd, static_cast<int>(qd));
      }
    }
    if (blas_threads > 0) set_blas_threads(blas_threads);
  }

  Model::Impl& m_;
  const ModelConfig& c_;
  const Batch& b_;
  KVCache& cache_;
  int64_t cache_base_ = 0;
};

Status check_token(int32_t id, int64_t vocab, int64_t row) {
  if (id < 0 || id >= vocab)
    return out_of_range("token id " + std::to_string(id) + " at batch row " + std::to_string(row) +
                        " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  return Status::ok();
}

void add_row(float* x, const Tensor& table, int64_t index, int64_t dim) {
  const float* src = table.data_as<float>() + index * dim;
  for (int64_t i = 0; i < dim; ++i) x[i] += src[i];
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Decoder entry points

Status Model::forward(std::span<const TokenChunk> chunks, KVCache& cache, LogitsMode mode, Tensor* logits) {
  if (mode != LogitsMode::none && logits == nullptr) return invalid_argument("forward: logits output is null");
  int64_t rows = 0;
  for (const TokenChunk& ch : chunks) rows += mode == LogitsMode::last ? 1 : static_cast<int64_t>(ch.tokens.size());
  if (mode == LogitsMode::none) return forward(chunks, cache, mode, std::span<float>());
  Tensor out = Tensor::zeros(DType::f32, {rows, impl_->config.vocab_size});
  QFORGE_RETURN_IF_ERROR(forward(chunks, cache, mode, std::span<float>(out.data_as<float>(), static_cast<size_t>(out.numel()))));
  *logits = std::move(out);
  return Status::ok();
}

Status Model::forward(std::span<const TokenChunk> chunks, KVCache& cache, LogitsMode mode, std::span<float> logits) {
  Impl& m = *impl_;
  const ModelConfig& c = m.config;
  if (!c.causal) return invalid_argument(std::string(architecture_name(c.arch)) + " is an encoder: use encode()");
  if (m.token_embedding.empty() || !m.output)
    return Status::error(ErrorCode::internal, "forward: the embedding and output head were released");
  if (cache.num_layers_ != c.num_layers || cache.kv_dim_ != c.kv_dim())
    return invalid_argument("KV cache was not made for this model");
  if (chunks.empty()) return invalid_argument("forward: no token chunks");

  Batch b;
  std::set<int64_t> seen;
  for (const TokenChunk& ch : chunks) {
    if (ch.sequence < 0 || ch.sequence >= cache.max_sequences())
      return out_of_range("sequence " + std::to_string(ch.sequence) + " is outside the KV cache's " +
                          std::to_string(cache.max_sequences()) + " sequences");
    if (!seen.insert(ch.sequence).second)
      return invalid_argument("sequence " + std::to_string(ch.sequence) + " appears twice in one forward call");
    if (ch.tokens.empty()) return invalid_argument("sequence " + std::to_string(ch.sequence) + ": empty token chunk");
    const int64_t past = cache.length(ch.sequence), n = static_cast<int64_t>(ch.tokens.size());
    if (n > cache.max_tokens() - past)
      return out_of_range("sequence " + std::to_string(ch.sequence) + ": " + std::to_string(past) + " cached + " +
                          std::to_string(n) + " new tokens exceed the KV cache's " +
                          std::to_string(cache.max_tokens()) + " tokens");
    if (c.learned_positions && past + n > c.max_positions)
      return out_of_range("sequence " + std::to_string(ch.sequence) + ": position " + std::to_string(past + n - 1) +
                          " is beyond the model's " + std::to_string(c.max_positions) + " positions");
    b.spans.push_back({ch.sequence, b.total, n, past});
    for (int64_t i = 0; i < n; ++i) {
      QFORGE_RETURN_IF_ERROR(check_token(ch.tokens[static_cast<size_t>(i)], c.vocab_size, b.total + i));
      b.row_span.push_back(static_cast<int64_t>(b.spans.size()) - 1);
      b.positions.push_back(past + i);
    }
    b.total += n;
  }

  const int64_t out_rows = mode == LogitsMode::all ? b.total : (mode == LogitsMode::last ? static_cast<int64_t>(b.spans.size()) : 0);
  if (logits.size() != static_cast<size_t>(out_rows * c.vocab_size))
    return invalid_argument("forward: the logits buffer holds " + std::to_string(logits.size()) + " floats, " +
                            std::to_string(out_rows) + " x " + std::to_string(c.vocab_size) + " are needed");
  const int64_t H = c.hidden_size;
  auto x = buffer(b.total, H);
  for (size_t si = 0; si < b.spans.size(); ++si) {
    const Span& s = b.spans[si];
    for (int64_t i = 0; i < s.n; ++i) {
      float* row = x.data() + (s.row0 + i) * H;
      add_row(row, m.token_embedding, chunks[si].tokens[static_cast<size_t>(i)], H);
      if (c.learned_positions) add_row(row, m.position_embedding, s.past + i, H);
    }
  }

  Runner runner(m, b, cache);
  runner.run_layers(x.data());
  for (const Span& s : b.spans) cache.lengths_[static_cast<size_t>(s.sequence)] = s.past + s.n;
  if (mode == LogitsMode::none) return Status::ok();

  // Rows that need logits, gathered before the final norm so nothing else is computed.
  int64_t rows = b.total;
  if (mode == LogitsMode::last) {
    rows = static_cast<int64_t>(b.spans.size());
    auto last = buffer(rows, H);
    for (int64_t i = 0; i < rows; ++i) {
      const Span& s = b.spans[static_cast<size_t>(i)];
      std::memcpy(last.data() + i * H, x.data() + (s.row0 + s.n - 1) * H, sizeof(float) * static_cast<size_t>(H));
    }
    x.swap(last);
  }
  runner.norm(x.data(), m.final_norm_w, m.final_norm_b, x.data(), rows);
  runner.linear({-1, TensorRole::output}, *m.output, x.data(), logits.data(), rows);
  return Status::ok();
}

Expected<Tensor> Model::forward_batch(const int32_t* input_ids, int64_t batch, int64_t seq_len) {
  if (batch <= 0 || seq_len <= 0)
    return invalid_argument("forward_batch: empty batch [" + std::to_string(batch) + ", " + std::to_string(seq_len) + "]");
  QFORGE_ASSIGN_OR_RETURN(KVCache cache, make_cache(batch, seq_len));
  std::vector<TokenChunk> chunks;
  for (int64_t b = 0; b < batch; ++b)
    chunks.push_back({b, std::span<const int32_t>(input_ids + b * seq_len, static_cast<size_t>(seq_len))});
  Tensor logits;
  QFORGE_RETURN_IF_ERROR(forward(chunks, cache, LogitsMode::all, &logits));
  return logits.reshape({batch, seq_len, impl_->config.vocab_size});
}

// ---------------------------------------------------------------------------------------------
// Block-wise entry points

namespace {
Status check_block_batch(const ModelConfig& c, int64_t batch, int64_t seq_len, size_t hidden_floats,
                         const char* what) {
  if (!c.causal) return invalid_argument(std::string(what) + ": " + architecture_name(c.arch) + " is an encoder");
  if (batch <= 0 || seq_len <= 0 || batch > (int64_t{1} << 24) || seq_len > (int64_t{1} << 24))
    return invalid_argument(std::string(what) + ": bad batch [" + std::to_string(batch) + ", " +
                            std::to_string(seq_len) + "]");
  if (c.learned_positions && seq_len > c.max_positions)
    return out_of_range(std::string(what) + ": sequence length " + std::to_string(seq_len) + " exceeds the model's " +
                        std::to_string(c.max_positions) + " positions");
  const double need = static_cast<double>(batch) * static_cast<double>(seq_len) * static_cast<double>(c.hidden_size);
  if (static_cast<double>(hidden_floats) != need)
    return invalid_argument(std::string(what) + ": hidden buffer holds " + std::to_string(hidden_floats) +
                            " floats, " + std::to_string(batch) + " x " + std::to_string(seq_len) + " x " +
                            std::to_string(c.hidden_size) + " are needed");
  return Status::ok();
}
}  // namespace

Status Model::embed_tokens(const int32_t* input_ids, int64_t batch, int64_t seq_len, std::span<float> hidden) const {
  const ModelConfig& c = impl_->config;
  QFORGE_RETURN_IF_ERROR(check_block_batch(c, batch, seq_len, hidden.size(), "embed_tokens"));
  if (impl_->token_embedding.empty())
    return Status::error(ErrorCode::internal, "embed_tokens: the token embedding was released");
  const int64_t H = c.hidden_size;
  std::fill(hidden.begin(), hidden.end(), 0.0f);
  for (int64_t r = 0; r < batch * seq_len; ++r) {
    QFORGE_RETURN_IF_ERROR(check_token(input_ids[r], c.vocab_size, r));
    float* row = hidden.data() + r * H;
    add_row(row, impl_->token_embedding, input_ids[r], H);
    if (c.learned_positions) add_row(row, impl_->position_embedding, r % seq_len, H);
  }
  return Status::ok();
}

Status Model::forward_layer(int layer, std::span<float> hidden, int64_t batch, int64_t seq_len) {
  Impl& m = *impl_;
  const ModelConfig& c = m.config;
  if (layer < 0 || layer >= c.num_layers)
    return out_of_range("forward_layer: layer " + std::to_string(layer) + " is outside [0, " +
                        std::to_string(c.num_layers) + ")");
  QFORGE_RETURN_IF_ERROR(check_block_batch(c, batch, seq_len, hidden.size(), "forward_layer"));
  Batch b;
  b.total = batch * seq_len;
  b.row_span.resize(static_cast<size_t>(b.total));
  b.positions.resize(static_cast<size_t>(b.total));
  for (int64_t bi = 0; bi < batch; ++bi) {
    b.spans.push_back({bi, bi * seq_len, seq_len, 0});
    for (int64_t i = 0; i < seq_len; ++i) {
      b.row_span[static_cast<size_t>(bi * seq_len + i)] = bi;
      b.positions[static_cast<size_t>(bi * seq_len + i)] = i;
    }
  }
  // A one-layer cache: the Runner stores this layer's K/V in the cache's layer 0.
  KVCache cache;
  cache.num_layers_ = 1;
  cache.max_sequences_ = batch;
  cache.max_tokens_ = seq_len;
  cache.kv_dim_ = c.kv_dim();
  cache.lengths_.assign(static_cast<size_t>(batch), 0);
  const size_t n = static_cast<size_t>(batch * seq_len * c.kv_dim());
  cache.k_.resize(n);
  cache.v_.resize(n);
  Runner runner(m, b, cache, layer);
  runner.run_layers(hidden.data(), layer, layer + 1);
  return Status::ok();
}

Status Model::forward_head(std::span<const float> hidden, int64_t rows, std::span<float> logits) {
  Impl& m = *impl_;
  const ModelConfig& c = m.config;
  if (!c.causal || !m.output) return invalid_argument(std::string("forward_head: ") + architecture_name(c.arch) + " has no output head");
  if (rows <= 0 || rows > (int64_t{1} << 24)) return invalid_argument("forward_head: bad row count " + std::to_string(rows));
  if (hidden.size() != static_cast<size_t>(rows * c.hidden_size) || logits.size() != static_cast<size_t>(rows * c.vocab_size))
    return invalid_argument("forward_head: buffers hold " + std::to_string(hidden.size()) + " hidden and " +
                            std::to_string(logits.size()) + " logit floats for " + std::to_string(rows) + " rows");
  Batch b;
  b.total = rows;
  KVCache unused;
  Runner runner(m, b, unused);
  std::vector<float> x(hidden.begin(), hidden.end());
  runner.norm(x.data(), m.final_norm_w, m.final_norm_b, x.data(), rows);
  runner.linear({-1, TensorRole::output}, *m.output, x.data(), logits.data(), rows);
  return Status::ok();
}

std::span<float> Model::norm_weight(int layer, BlockNorm which) {
  if (layer < 0 || static_cast<size_t>(layer) >= impl_->layers.size()) return {};
  LayerWeights& L = impl_->layers[static_cast<size_t>(layer)];
  return which == BlockNorm::attention ? std::span<float>(L.attn_norm_w) : std::span<float>(L.mlp_norm_w);
}

std::span<float> Model::norm_bias(int layer, BlockNorm which) {
  if (layer < 0 || static_cast<size_t>(layer) >= impl_->layers.size()) return {};
  LayerWeights& L = impl_->layers[static_cast<size_t>(layer)];
  return which == BlockNorm::attention ? std::span<float>(L.attn_norm_b) : std::span<float>(L.mlp_norm_b);
}

// ---------------------------------------------------------------------------------------------
// Encoder entry point

Expected<EncoderOutput> Model::encode(const int32_t* input_ids, const int32_t* attention_mask,
                                      const int32_t* token_type_ids, int64_t batch, int64_t seq_len) {
  Impl& m = *impl_;
  const ModelConfig& c = m.config;
  if (c.causal) return invalid_argument(std::string(architecture_name(c.arch)) + " is a decoder: use forward()");
  if (batch <= 0 || seq_len <= 0)
    return invalid_argument("encode: empty batch [" + std::to_string(batch) + ", " + std::to_string(seq_len) + "]");
  if (seq_len > c.max_positions)
    return out_of_range("encode: sequence length " + std::to_string(seq_len) + " exceeds the model's " +
                        std::to_string(c.max_positions) + " positions");
  const int64_t total = batch * seq_len, H = c.hidden_size;
  std::vector<uint8_t> mask(static_cast<size_t>(total), 1);
  for (int64_t bi = 0; bi < batch; ++bi) {
    int64_t valid = 0;
    for (int64_t i = 0; i < seq_len; ++i) {
      const int64_t r = bi * seq_len + i;
      if (attention_mask) {
        const int32_t mv = attention_mask[r];
        if (mv != 0 && mv != 1)
          return invalid_argument("attention_mask[" + std::to_string(bi) + ", " + std::to_string(i) + "] = " +
                                  std::to_string(mv) + " (must be 0 or 1)");
        mask[static_cast<size_t>(r)] = static_cast<uint8_t>(mv);
      }
      valid += mask[static_cast<size_t>(r)];
      QFORGE_RETURN_IF_ERROR(check_token(input_ids[r], c.vocab_size, r));
      if (token_type_ids && (token_type_ids[r] < 0 || token_type_ids[r] >= c.type_vocab_size))
        return out_of_range("token_type_ids[" + std::to_string(bi) + ", " + std::to_string(i) + "] = " +
                            std::to_string(token_type_ids[r]) + " is outside [0, " +
                            std::to_string(c.type_vocab_size) + ")");
    }
    if (valid == 0) return invalid_argument("encode: sequence " + std::to_string(bi) + " has no unmasked token");
  }

  Batch b;
  b.total = total;
  b.key_mask = mask.data();
  for (int64_t bi = 0; bi < batch; ++bi) {
    b.spans.push_back({bi, bi * seq_len, seq_len, 0});
    for (int64_t i = 0; i < seq_len; ++i) {
      b.row_span.push_back(bi);
      b.positions.push_back(i);
    }
  }
  QFORGE_ASSIGN_OR_RETURN(KVCache cache, make_cache(batch, seq_len));

  // Embeddings: word + position + token type, then LayerNorm. HF uses positions 0..seq_len-1
  // whatever the padding.
  auto x = buffer(total, H);
  for (int64_t r = 0; r < total; ++r) {
    float* row = x.data() + r * H;
    add_row(row, m.token_embedding, input_ids[r], H);
    add_row(row, m.position_embedding, r % seq_len, H);
    add_row(row, m.token_type_embedding, token_type_ids ? token_type_ids[r] : 0, H);
  }
  ops::layer_norm(x.data(), m.embedding_norm_w.data(), m.embedding_norm_b.data(), total, H, c.norm_eps, x.data());

  Runner runner(m, b, cache);
  runner.run_layers(x.data());

  EncoderOutput out;
  out.last_hidden_state = Tensor::zeros(DType::f32, {batch, seq_len, H});
  std::memcpy(out.last_hidden_state.data(), x.data(), sizeof(float) * x.size());
  out.mean_pooled = Tensor::zeros(DType::f32, {batch, H});
  for (int64_t bi = 0; bi < batch; ++bi) {
    std::vector<double> acc(static_cast<size_t>(H), 0.0);
    int64_t count = 0;
    for (int64_t i = 0; i < seq_len; ++i) {
      const int64_t r = bi * seq_len + i;
      if (!mask[static_cast<size_t>(r)]) continue;
      ++count;
      for (int64_t d = 0; d < H; ++d) acc[static_cast<size_t>(d)] += x[static_cast<size_t>(r * H + d)];
    }
    float* dst = out.mean_pooled.data_as<float>() + bi * H;
    for (int64_t d = 0; d < H; ++d) dst[d] = static_cast<float>(acc[static_cast<size_t>(d)] / static_cast<double>(count));
  }
  if (m.pooler) {
    auto first = buffer(batch, H);
    for (int64_t bi = 0; bi < batch; ++bi)
      std::memcpy(first.data() + bi * H, x.data() + bi * seq_len * H, sizeof(float) * static_cast<size_t>(H));
    out.pooler_output = Tensor::zeros(DType::f32, {batch, H});
    float* po = out.pooler_output.data_as<float>();
    runner.linear({-1, TensorRole::pooler}, *m.pooler, first.data(), po, batch);
    for (int64_t i = 0; i < batch * H; ++i) po[i] = std::tanh(po[i]);
  }
  return out;
}

}  // namespace qforge
