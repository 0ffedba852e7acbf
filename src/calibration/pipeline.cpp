// The block-sequential calibration pipeline (include/qforge/ptq.h): calibration windows run
// through the model one transformer block at a time, with per-input-group statistics collected by
// hooks on the block's linears.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "qforge/dtype.h"
#include "qforge/progress.h"
#include "qforge/ptq.h"

namespace qforge {

std::vector<double> InputStats::mean_abs() const {
  std::vector<double> m(sum_abs.size());
  for (size_t i = 0; i < m.size(); ++i) m[i] = tokens > 0 ? sum_abs[i] / static_cast<double>(tokens) : 0.0;
  return m;
}

std::vector<double> InputStats::mean_sq() const {
  std::vector<double> m(sum_sq.size());
  for (size_t i = 0; i < m.size(); ++i) m[i] = tokens > 0 ? sum_sq[i] / static_cast<double>(tokens) : 0.0;
  return m;
}

std::vector<std::vector<LinearSite>> block_input_groups(const Model& model, int layer) {
  std::vector<std::vector<LinearSite>> groups;
  auto add = [&](std::initializer_list<TensorRole> roles) {
    std::vector<LinearSite> g;
    for (TensorRole r : roles)
      if (model.linear({layer, r})) g.push_back({layer, r});
    if (!g.empty()) groups.push_back(std::move(g));
  };
  add({TensorRole::attn_q, TensorRole::attn_k, TensorRole::attn_v});
  add({TensorRole::attn_qkv});
  add({TensorRole::attn_output});
  add({TensorRole::mlp_gate, TensorRole::mlp_up});
  add({TensorRole::mlp_down});
  return groups;
}

namespace {

// Adds one batch of input rows x [rows, in] to `s`. `total_tokens` (of a whole pass) sets the
// sampling stride.
void accumulate(InputStats& s, const StatsRequest& req, const float* x, int64_t rows, int64_t in,
                int64_t total_tokens, std::vector<float>& scratch) {
  if (req.hessian) {
    // Σ x xᵀ of this batch in f32 (at most a few thousand products per entry, summed by BLAS),
    // added to a double accumulator, so the rounding does not grow with the calibration set.
    scratch.assign(static_cast<size_t>(in * in), 0.0f);
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(in), static_cast<int>(rows), 1.0f, x,
                static_cast<int>(in), 0.0f, scratch.data(), static_cast<int>(in));
    double* h = s.hessian.data();
#pragma omp parallel for schedule(static) if (in >= 256)
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = i; j < in; ++j) h[i * in + j] += static_cast<double>(scratch[static_cast<size_t>(i * in + j)]);
  }
  if (req.moments) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * in;
      for (int64_t c = 0; c < in; ++c) {
        const float v = row[c], a = std::fabs(v);
        s.sum_abs[static_cast<size_t>(c)] += a;
        s.sum_sq[static_cast<size_t>(c)] += static_cast<double>(v) * static_cast<double>(v);
        if (a > s.absmax[static_cast<size_t>(c)]) s.absmax[static_cast<size_t>(c)] = a;
      }
    }
  }
  if (req.sample_tokens > 0) {
    const int64_t stride = std::max<int64_t>(1, (total_tokens + req.sample_tokens - 1) / req.sample_tokens);
    for (int64_t r = 0; r < rows && s.sample_rows < req.sample_tokens; ++r) {
      if ((s.tokens + r) % stride != 0) continue;
      s.sample.insert(s.sample.end(), x + r * in, x + (r + 1) * in);
      ++s.sample_rows;
    }
  }
  s.tokens += rows;
}

void reset_stats(InputStats& s, const StatsRequest& req, int64_t in) {
  s = InputStats{};
  s.in_features = in;
  if (req.hessian) s.hessian.assign(static_cast<size_t>(in * in), 0.0);
  if (req.moments) {
    s.sum_abs.assign(static_cast<size_t>(in), 0.0);
    s.sum_sq.assign(static_cast<size_t>(in), 0.0);
    s.absmax.assign(static_cast<size_t>(in), 0.0f);
  }
  if (req.sample_tokens > 0) s.sample.reserve(static_cast<size_t>(req.sample_tokens * in));
}

}  // namespace

// ---------------------------------------------------------------------------------------------

InputGroup* BlockContext::group_of(const LinearSite& site) {
  for (auto& g : groups_)
    if (std::find(g.sites.begin(), g.sites.end(), site) != g.sites.end()) return &g;
  return nullptr;
}

int64_t BlockContext::windows() const { return pipeline_.windows_; }
int64_t BlockContext::ctx() const { return pipeline_.ctx_; }
int64_t BlockContext::hidden_size() const { return model_.config().hidden_size; }
Status BlockContext::read_block_input(int64_t first, int64_t count, float* out) const {
  return pipeline_.read_hidden(first, count, out);
}

Status BlockContext::forward_block(int64_t first, int64_t count, float* out) {
  if (first < 0 || count <= 0 || first > windows() - count)
    return out_of_range("forward_block: windows [" + std::to_string(first) + ", " + std::to_string(first + count) +
                        ") outside [0, " + std::to_string(windows()) + ")");
  const int64_t per_window = ctx() * hidden_size();
  for (int64_t b = 0; b < count; b += pipeline_.options_.batch_windows) {
    const int64_t n = std::min(pipeline_.options_.batch_windows, count - b);
    QFORGE_RETURN_IF_ERROR(pipeline_.run_windows(layer_, first + b, n, out + b * per_window));
  }
  return Status::ok();
}

Status BlockContext::recollect(const std::vector<int>& group_indices) {
  return pipeline_.collect_into(layer_, pipeline_.request_, groups_, group_indices);
}

// ---------------------------------------------------------------------------------------------

Expected<std::unique_ptr<CalibrationPipeline>> CalibrationPipeline::create(Model& model, const CalibrationSet& calib,
                                                                           PipelineOptions options) {
  const ModelConfig& c = model.config();
  if (!c.causal) return invalid_argument("calibration pipeline: " + std::string(architecture_name(c.arch)) +
                                         " is an encoder; only decoder models are supported");
  if (calib.windows <= 0 || calib.ctx <= 0 ||
      calib.tokens.size() != static_cast<size_t>(calib.windows * calib.ctx))
    return invalid_argument("calibration set " + calib.path + " is inconsistent (" + std::to_string(calib.tokens.size()) +
                            " tokens for " + std::to_string(calib.windows) + " x " + std::to_string(calib.ctx) + ")");
  if (options.batch_windows <= 0) return invalid_argument("pipeline batch_windows must be positive");
  if (options.hidden_dtype != DType::f32 && options.hidden_dtype != DType::bf16)
    return invalid_argument("pipeline hidden states are stored as f32 or bf16, not " +
                            std::string(dtype_name(options.hidden_dtype)));
  // windows * ctx * hidden floats, checked against 2^36 (256 GiB) before allocating.
  const double floats =
      static_cast<double>(calib.windows) * static_cast<double>(calib.ctx) * static_cast<double>(c.hidden_size);
  if (floats > static_cast<double>(int64_t{1} << 36))
    return invalid_argument("calibration set of " + std::to_string(calib.windows) + " x " + std::to_string(calib.ctx) +
                            " tokens is too large for hidden size " + std::to_string(c.hidden_size));
  std::unique_ptr<CalibrationPipeline> p(new CalibrationPipeline(model, std::move(options)));
  p->windows_ = calib.windows;
  p->ctx_ = calib.ctx;
  p->hidden_.resize(static_cast<size_t>(floats) * p->elem_bytes());
  // Embedded window by window, so no second full-size f32 buffer exists in bf16 mode.
  const int64_t H = c.hidden_size;
  std::vector<float> row(static_cast<size_t>(calib.ctx * H));
  for (int64_t w = 0; w < calib.windows; ++w) {
    QFORGE_RETURN_IF_ERROR(model.embed_tokens(calib.tokens.data() + w * calib.ctx, 1, calib.ctx, row));
    p->write_hidden(w, 1, row.data());
  }
  return p;
}

Status CalibrationPipeline::read_hidden(int64_t first, int64_t count, float* out) const {
  if (first < 0 || count < 0 || first > windows_ - count)
    return out_of_range("hidden states: windows [" + std::to_string(first) + ", " + std::to_string(first + count) +
                        ") outside [0, " + std::to_string(windows_) + ")");
  const size_t n = static_cast<size_t>(count * ctx_ * model_.config().hidden_size);
  const size_t off = static_cast<size_t>(first * ctx_ * model_.config().hidden_size);
  if (options_.hidden_dtype == DType::f32) {
    std::memcpy(out, hidden_.data() + off * 4, n * 4);
  } else {
    const uint8_t* src = hidden_.data() + off * 2;
    for (size_t i = 0; i < n; ++i) {
      uint16_t b;
      std::memcpy(&b, src + 2 * i, 2);
      out[i] = bf16_to_f32(b);
    }
  }
  return Status::ok();
}

void CalibrationPipeline::write_hidden(int64_t first, int64_t count, const float* in) {
  const size_t n = static_cast<size_t>(count * ctx_ * model_.config().hidden_size);
  const size_t off = static_cast<size_t>(first * ctx_ * model_.config().hidden_size);
  if (options_.hidden_dtype == DType::f32) {
    std::memcpy(hidden_.data() + off * 4, in, n * 4);
  } else {
    uint8_t* dst = hidden_.data() + off * 2;
    for (size_t i = 0; i < n; ++i) {
      const uint16_t b = f32_to_bf16(in[i]);
      std::memcpy(dst + 2 * i, &b, 2);
    }
  }
}

Status CalibrationPipeline::start_at(int layer, std::vector<uint8_t> hidden) {
  if (layer < 0 || layer > model_.config().num_layers)
    return out_of_range("pipeline start layer " + std::to_string(layer) + " is outside [0, " +
                        std::to_string(model_.config().num_layers) + "]");
  if (hidden.size() != hidden_.size())
    return invalid_argument("saved hidden states hold " + std::to_string(hidden.size()) + " bytes, " +
                            std::to_string(hidden_.size()) + " expected");
  hidden_ = std::move(hidden);
  next_layer_ = layer;
  return Status::ok();
}

Status CalibrationPipeline::run_windows(int layer, int64_t first, int64_t count, float* buf) {
  QFORGE_RETURN_IF_ERROR(read_hidden(first, count, buf));
  const size_t n = static_cast<size_t>(count * ctx_ * model_.config().hidden_size);
  return model_.forward_layer(layer, std::span<float>(buf, n), count, ctx_);
}

Status CalibrationPipeline::collect_into(int layer, const StatsRequest& request, std::vector<InputGroup>& groups,
                                         const std::vector<int>& indices) {
  std::vector<int> chosen = indices;
  if (chosen.empty())
    for (int i = 0; i < static_cast<int>(groups.size()); ++i) chosen.push_back(i);
  const int64_t total = windows_ * ctx_;
  std::vector<int> hook_ids;
  std::vector<float> scratch;
  Status hook_error;
  for (int gi : chosen) {
    if (gi < 0 || gi >= static_cast<int>(groups.size()))
      return out_of_range("recollect: no input group " + std::to_string(gi));
    InputGroup& g = groups[static_cast<size_t>(gi)];
    const Linear* lin = model_.linear(g.sites.front());
    if (!lin) return invalid_argument("no linear at " + linear_site_name(g.sites.front()));
    reset_stats(g.stats, request, lin->in_features());
    InputStats* stats = &g.stats;
    hook_ids.push_back(model_.add_hook(g.sites.front(), [stats, &request, total, &scratch](const LinearActivations& a) {
      accumulate(*stats, request, a.x, a.n_tokens, a.in_features, total, scratch);
    }));
  }
  const int64_t H = model_.config().hidden_size;
  const int64_t bw = std::min(options_.batch_windows, windows_);
  std::vector<float> out(static_cast<size_t>(bw * ctx_ * H));
  Status st;
  for (int64_t b = 0; b < windows_ && st; b += bw) {
    const int64_t n = std::min(bw, windows_ - b);
    st = check_interrupted("calibration");
    if (st) st = run_windows(layer, b, n, out.data());
  }
  for (int id : hook_ids) model_.remove_hook(id);
  QFORGE_RETURN_IF_ERROR(st);
  // Mirror the upper triangle the batches accumulated.
  for (int gi : chosen) {
    InputStats& s = groups[static_cast<size_t>(gi)].stats;
    if (s.hessian.empty()) continue;
    const int64_t in = s.in_features;
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < i; ++j) s.hessian[static_cast<size_t>(i * in + j)] = s.hessian[static_cast<size_t>(j * in + i)];
  }
  return Status::ok();
}

Expected<std::vector<InputGroup>> CalibrationPipeline::collect(int layer, const StatsRequest& request) {
  if (layer < 0 || layer >= model_.config().num_layers)
    return out_of_range("collect: layer " + std::to_string(layer) + " is outside the model");
  std::vector<InputGroup> groups;
  for (auto& sites : block_input_groups(model_, layer)) groups.push_back({std::move(sites), {}});
  QFORGE_RETURN_IF_ERROR(collect_into(layer, request, groups, {}));
  return groups;
}

Status CalibrationPipeline::advance(int layer) {
  const int64_t H = model_.config().hidden_size;
  const int64_t bw = std::min(options_.batch_windows, windows_);
  std::vector<float> buf(static_cast<size_t>(bw * ctx_ * H));
  for (int64_t b = 0; b < windows_; b += bw) {
    QFORGE_RETURN_IF_ERROR(check_interrupted("calibration"));
    const int64_t n = std::min(bw, windows_ - b);
    QFORGE_RETURN_IF_ERROR(run_windows(layer, b, n, buf.data()));
    write_hidden(b, n, buf.data());
  }
  return Status::ok();
}

Status CalibrationPipeline::run(BlockProcessor& processor) {
  request_ = processor.stats_request();
  const int layers = static_cast<int>(model_.config().num_layers);
  for (int L = next_layer_; L < layers; ++L) {
    QFORGE_RETURN_IF_ERROR(check_interrupted("calibration"));
    if (options_.on_block_start) options_.on_block_start(L);
    BlockContext ctx(*this, model_, L);
    for (auto& sites : block_input_groups(model_, L)) ctx.groups_.push_back({std::move(sites), {}});
    const bool needs_stats =
        !processor.collects_itself() && (request_.hessian || request_.moments || request_.sample_tokens > 0);
    if (needs_stats) QFORGE_RETURN_IF_ERROR(collect_into(L, request_, ctx.groups_, {}));
    QFORGE_RETURN_IF_ERROR(processor.process_block(ctx).with_context(processor.name() + ", layer " + std::to_string(L)));
    ctx.groups_.clear();
    QFORGE_RETURN_IF_ERROR(advance(L));
    next_layer_ = L + 1;
    if (options_.on_block_done) QFORGE_RETURN_IF_ERROR(options_.on_block_done(L, hidden_));
  }
  return Status::ok();
}

}  // namespace qforge
