// Calibrated post-training quantization: calibration data, the block-sequential pipeline and the
// processors that quantize one transformer block at a time (RTN, GPTQ; AWQ and SmoothQuant build
// on the same interface).
//
// The pipeline (CalibrationPipeline::run):
//   hidden = embed(calibration windows)                       [windows * ctx, hidden] f32
//   for each layer L (from the resume point):
//     1. run layer L on `hidden` with hooks on its linear inputs, accumulating per input group
//        (linears sharing one input: q/k/v, o, gate/up, down) the statistics the processor asks for
//     2. processor.process_block(ctx): quantize / rescale the block's linears and norms; it may
//        re-run the block (BlockContext::forward_block) or refresh statistics (recollect)
//     3. hidden = layer L (now quantized) applied to hidden: the quantized block's outputs are the
//        next block's inputs
//     4. on_block_done(L) (checkpoints for --resume)
// Memory: the hidden states of the calibration set (windows * ctx * hidden floats, updated in
// place), one sub-batch of the engine's workspace, and per input group the statistics (a Hessian
// is in^2 doubles; the optional token sample is capped).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <string>
#include <vector>

#include "qforge/format.h"
#include "qforge/model.h"
#include "qforge/status.h"

namespace qforge {

class Tokenizer;

// ---------------------------------------------------------------------------------------------
// Calibration data

struct CalibrationOptions {
  int64_t windows = 128;  // number of windows
  int64_t ctx = 512;      // tokens per window, BOS included
  uint64_t seed = 0;
};

// Windows sampled from a text file. How (deterministic for a file, tokenizer, options):
//   1. the whole file is read as UTF-8 and tokenized once without special tokens: the stream
//      t[0 .. N);
//   2. each window is BOS (when the tokenizer has one) followed by `body` = ctx - 1 stream tokens
//      (ctx tokens without BOS), taken from one of the S = floor(N / body) aligned,
//      non-overlapping slots [s * body, (s + 1) * body);
//   3. `windows` distinct slots are chosen by a partial Fisher-Yates shuffle of 0 .. S-1 driven by
//      std::mt19937_64(seed), step i swapping slot i with slot i + (rng() % (S - i)); the chosen
//      slots are then sorted ascending, so window i is the i-th chosen slot in file order.
// Fewer than `windows` slots is an error naming the counts.
struct CalibrationSet {
  std::string path;
  std::string sha256;       // of the file's bytes
  int64_t file_tokens = 0;  // N: tokens of the whole file
  int64_t windows = 0;
  int64_t ctx = 0;
  uint64_t seed = 0;
  bool bos = false;                // each window starts with BOS
  std::vector<int64_t> slots;      // chosen slot of each window
  std::vector<int32_t> tokens;     // windows * ctx
  int64_t tokens_used() const { return windows * ctx; }
  // {"calibration.sha256": ..., "calibration.file": ..., ...} for output metadata.
  std::map<std::string, std::string> metadata() const;
};

Expected<CalibrationSet> load_calibration_set(const std::string& path, const Tokenizer& tokenizer,
                                              const CalibrationOptions& options);
// The same from text already in memory (tests); `label` stands for the path, `sha256` is computed.
Expected<CalibrationSet> make_calibration_set(std::string_view text, const std::string& label,
                                              const Tokenizer& tokenizer, const CalibrationOptions& options);

// ---------------------------------------------------------------------------------------------
// Statistics of the inputs of a group of linears sharing one input

struct StatsRequest {
  bool hessian = false;  // sum over tokens of x xᵀ (GPTQ)
  bool moments = false;  // per column sum |x|, sum x², max |x| (AWQ, SmoothQuant, imatrix)
  // Keep up to this many input rows (tokens) per group: every k-th token of the calibration set in
  // order, k = max(1, ceil(tokens / sample_tokens)). 0: none.
  int64_t sample_tokens = 0;
};

struct InputStats {
  int64_t in_features = 0;
  int64_t tokens = 0;                 // rows seen
  std::vector<double> hessian;        // [in, in] sum x xᵀ (full symmetric matrix), if requested
  std::vector<double> sum_abs;        // [in] sum |x|
  std::vector<double> sum_sq;         // [in] sum x²
  std::vector<float> absmax;          // [in] max |x|
  std::vector<float> sample;          // [sample_rows, in] row-major
  int64_t sample_rows = 0;

  // Convenience views (empty when not collected).
  std::vector<double> mean_abs() const;
  std::vector<double> mean_sq() const;
};

// Linears of one block that consume the same input, in forward order (e.g. {q, k, v}).
struct InputGroup {
  std::vector<LinearSite> sites;
  InputStats stats;
};

// The input groups of `layer` for the model's architecture: {q,k,v} or {qkv}, {o}, {gate,up} or
// {up}, {down}.
std::vector<std::vector<LinearSite>> block_input_groups(const Model& model, int layer);

// ---------------------------------------------------------------------------------------------
// The pipeline and its processors

class CalibrationPipeline;

// What a processor sees of the block being processed.
class BlockContext {
 public:
  int layer() const { return layer_; }
  Model& model() { return model_; }
  // Statistics of the block's input groups, collected with the weights the block had when they
  // were (re)collected.
  std::vector<InputGroup>& groups() { return groups_; }
  InputGroup* group_of(const LinearSite& site);
  int64_t windows() const;
  int64_t ctx() const;
  int64_t hidden_size() const;
  // Copies windows [first, first + count) of the block's input hidden states (the previous,
  // already processed blocks' output) to `out`: [count * ctx, hidden] floats.
  Status read_block_input(int64_t first, int64_t count, float* out) const;
  // Runs the block with its current weights on windows [first, first + count) of the block
  // input, writing [count * ctx, hidden] floats to `out` (hooks the caller registered fire).
  Status forward_block(int64_t first, int64_t count, float* out);
  // Collects the statistics of `groups` (indices into groups(); empty = all) again with the
  // block's current weights (e.g. GPTQ's sequential mode, after the q/k/v were quantized).
  Status recollect(const std::vector<int>& group_indices = {});

 private:
  friend class CalibrationPipeline;
  BlockContext(CalibrationPipeline& pipeline, Model& model, int layer) : pipeline_(pipeline), model_(model), layer_(layer) {}
  CalibrationPipeline& pipeline_;
  Model& model_;
  int layer_;
  std::vector<InputGroup> groups_;
};

// Quantizes (or otherwise rewrites) one block given its calibration statistics.
class BlockProcessor {
 public:
  virtual ~BlockProcessor() = default;
  virtual std::string name() const = 0;
  // Statistics collected before process_block.
  virtual StatsRequest stats_request() const = 0;
  // True: nothing is collected before process_block; the processor calls BlockContext::recollect
  // for the groups it needs when it needs them (saves a pass and the memory of unused statistics).
  virtual bool collects_itself() const { return false; }
  virtual Status process_block(BlockContext& ctx) = 0;
};

struct PipelineOptions {
  int64_t batch_windows = 2;  // windows run through a block at once (bounds the engine workspace)
  // Storage of the calibration hidden states between blocks: f32, or bf16 to halve the largest
  // buffer (the residual stream is then rounded to bf16, relative 2^-9, between blocks; blocks
  // still compute in f32).
  DType hidden_dtype = DType::f32;
  // Called after block L's output was computed (the stored hidden states are its output, as raw
  // bytes of hidden_dtype) and before block L+1 starts; an error stops the run.
  std::function<Status(int layer, std::span<const uint8_t> hidden_bytes)> on_block_done;
  // Called at the start of each block.
  std::function<void(int layer)> on_block_start;
};

class CalibrationPipeline {
 public:
  // The model must be a decoder; the set's windows must fit its positions.
  static Expected<std::unique_ptr<CalibrationPipeline>> create(Model& model, const CalibrationSet& calib,
                                                               PipelineOptions options = {});
  // Starting point: block 0 on the embedded calibration windows (the default), or a resume point:
  // block `layer` on saved hidden states (its input: hidden_bytes() as on_block_done gave them).
  Status start_at(int layer, std::vector<uint8_t> hidden_bytes);
  // Processes blocks from the start point to the last one.
  Status run(BlockProcessor& processor);
  // Collects the statistics `request` asks for at every linear input of `layer` with the
  // current hidden states as the block's input, without changing anything (tests, imatrix).
  Expected<std::vector<InputGroup>> collect(int layer, const StatsRequest& request);
  // Advances the hidden states through `layer` (its current weights).
  Status advance(int layer);

  int next_layer() const { return next_layer_; }
  // The stored hidden states, raw (hidden_dtype), and windows of them as f32.
  std::span<const uint8_t> hidden_bytes() const { return hidden_; }
  Status read_hidden(int64_t first, int64_t count, float* out) const;
  Model& model() { return model_; }
  int64_t windows() const { return windows_; }
  int64_t ctx() const { return ctx_; }

 private:
  friend class BlockContext;
  CalibrationPipeline(Model& model, PipelineOptions options) : model_(model), options_(std::move(options)) {}
  Status collect_into(int layer, const StatsRequest& request, std::vector<InputGroup>& groups,
                      const std::vector<int>& indices);
  // Runs `layer` on windows [first, first + count) of the stored hidden states into `buf`.
  Status run_windows(int layer, int64_t first, int64_t count, float* buf);
  void write_hidden(int64_t first, int64_t count, const float* in);
  size_t elem_bytes() const { return options_.hidden_dtype == DType::bf16 ? 2 : 4; }

  Model& model_;
  PipelineOptions options_;
  int64_t windows_ = 0, ctx_ = 0;
  int next_layer_ = 0;
  std::vector<uint8_t> hidden_;
  StatsRequest request_;  // of the running processor
};

// ---------------------------------------------------------------------------------------------
// Weight quantizers used by processors

// Quantizes every linear of the block with `quantize_site` and swaps in a QuantizedLinear; the
// results are kept (keyed by site) for writing.
using QuantizedSiteMap = std::map<LinearSite, QuantizedTensor>;

// Which scheme each site gets; a site mapped to nothing is left as it is.
using SchemeForSite = std::function<std::optional<Scheme>(const LinearSite& site, int64_t rows, int64_t cols)>;

// Round-to-nearest with the table's reference quantizer; no statistics needed. The baseline.
class RtnProcessor final : public BlockProcessor {
 public:
  explicit RtnProcessor(SchemeForSite scheme_for) : scheme_for_(std::move(scheme_for)) {}
  std::string name() const override { return "rtn"; }
  StatsRequest stats_request() const override { return {}; }
  Status process_block(BlockContext& ctx) override;
  QuantizedSiteMap& results() { return results_; }

 private:
  SchemeForSite scheme_for_;
  QuantizedSiteMap results_;
};

// Replaces the linear at `site` with a QuantizedLinear holding `q` (bias kept).
Status install_quantized(Model& model, const LinearSite& site, const QuantizedTensor& q);

struct GptqOptions {
  double damp = 0.01;           // added to H's diagonal: damp * mean(diag H)
  int64_t block_size = 128;     // lazy batch update width (columns)
  bool act_order = false;       // columns in order of decreasing H diagonal, static groups
  bool sequential = true;       // re-collect inputs after each group is quantized (true-sequential)
  int max_damp_raises = 8;      // Cholesky failures: damp *= 10 each time, with a warning
  // MSE-optimal clipping of the group parameters: per (row, group) the clip ratio among
  // 1, 1 - 1/clip_grid, ..., 1 - clip_max_shrink minimising Σ_j H_jj (w_j - q(w_j))², chosen when
  // the group's parameters are fixed (before the sweep quantizes any of its columns).
  bool mse_clip = false;
  int clip_grid = 20;
  double clip_max_shrink = 0.5;
  // After the sweep, per row: least-squares refit of the group scales with every code and
  // zero-point fixed, minimising the layer objective (w - ŵ)ᵀ H (w - ŵ) with w the original row and
  // H the damped Hessian of the sweep; the scales are rounded to the format's scale dtype and a
  // row keeps its old scales unless the rounded refit lowers its objective. int-sym / int-asym
  // with group or per-channel scales only (gptq_refit_supports).
  bool refit = false;
  // With refit: sweeps in all, 1..64 (each later one re-runs the sweep on the scales kept so far,
  // each row's best refit, then refits again); each row keeps the pass with the lowest objective.
  // 4: the best of 1, 2, 4, 8 on ref-llama-25m int4-g128-asym (docs/ptq.md).
  int refit_passes = 4;
};

// GPTQ (Frantar et al. 2022) of one weight W [rows, cols] with H = 2/n Σ x xᵀ (as `sum_xxt`, the
// un-normalised Σ x xᵀ, and n tokens). The output is a QuantizedTensor of `scheme`: planar
// schemes, or the GGUF block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, whose blocks' scales
// and mins are chosen (the table's block search with H's diagonal as importance) when the sweep
// reaches the block's columns (with act-order: from the original weights, up front) and then stay
// fixed while the sweep rounds each weight to the nearest level of its sub-block. `warnings` gets
// messages about raised dampening. Deterministic.
struct GptqResult {
  QuantizedTensor q;
  double damp_used = 0;     // relative dampening finally used
  double proxy_loss = 0;    // Σ (w - q)² / d² over the sweep (GPTQ's objective, for logs)
  std::vector<std::string> warnings;
};
Expected<GptqResult> gptq_quantize(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                                   const double* sum_xxt, int64_t tokens, const GptqOptions& options);
// Whether gptq_quantize supports `scheme` (format families with per-column-sweepable quantizers).
bool gptq_supports(const Scheme& scheme);
// Whether GptqOptions::refit applies to `scheme` (int-sym / int-asym, group or per-channel scales).
bool gptq_refit_supports(const Scheme& scheme);

class GptqProcessor final : public BlockProcessor {
 public:
  GptqProcessor(SchemeForSite scheme_for, GptqOptions options) : scheme_for_(std::move(scheme_for)), options_(options) {}
  std::string name() const override { return "gptq"; }
  StatsRequest stats_request() const override;
  bool collects_itself() const override { return options_.sequential; }
  Status process_block(BlockContext& ctx) override;
  QuantizedSiteMap& results() { return results_; }
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  SchemeForSite scheme_for_;
  GptqOptions options_;
  QuantizedSiteMap results_;
  std::vector<std::string> warnings_;
};

}  // namespace qforge
