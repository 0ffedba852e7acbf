// Per-tensor quantization sensitivity: how much the model's next-token distributions move (KL
// divergence from the unquantized model) when ONLY one tensor, or one group of tensors, is stored
// in a given GGUF type, everything else staying f32. The measurements drive the mixed-precision
// planner (qforge/mixed_precision.h); docs/mixed-precision.md has the method and its cost model.
//
// How it is measured, cheaply:
//   1. the reference runs once, block by block (Model::embed_tokens / forward_layer /
//      forward_head), over the evaluation windows: the input of every layer and the reference
//      logits are cached, and the squared activations entering every linear are summed (an
//      importance matrix, for the proxy below);
//   2. for each unit (tensor or group) and candidate type, the unit's weights are replaced by
//      quantize -> dequantize through the format table's GGUF block quantizers (the exact bytes
//      `qforge quantize --format gguf` writes), and only layers first..L-1 and the head are run
//      again from the cached input of the unit's first layer;
//   3. KL(P_ref || P_quantized) per scored position (as `qforge eval`), its mean is the unit's cost.
// A unit in layer l costs (L - l) layer passes plus one head pass per window, instead of a full
// forward pass; the report counts both.
//
// The proxy needs no extra forward pass: sum_r sum_c imp_c (w_rc - q(w)_rc)^2 with imp_c the mean
// x_c^2 of the column's input (llama-imatrix's in_sum2 / counts), i.e. the expected squared error of
// the linear's output under independent inputs. Its Spearman rank correlation with the measured KLD
// is reported.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "qforge/eval.h"
#include "qforge/format.h"
#include "qforge/gguf.h"
#include "qforge/status.h"

namespace qforge {

class Model;
class GgufModelInput;

enum class SensitivityGranularity : uint8_t {
  tensor = 0,  // every quantizable tensor on its own
  group = 1,   // a layer's attention (q, k, v, output), a layer's MLP (gate, up, down); embeddings alone
};
const char* sensitivity_granularity_name(SensitivityGranularity g);  // "tensor", "group"
Expected<SensitivityGranularity> parse_sensitivity_granularity(const std::string& name);

struct SensitivityOptions {
  std::vector<GgmlType> types;  // candidate types, e.g. Q8_0, Q6_K, Q5_K, Q4_K, Q3_K, Q2_K
  SensitivityGranularity granularity = SensitivityGranularity::tensor;
  int64_t windows = 8;        // first N windows of the text (0: all)
  bool measure_kld = true;    // false: SQNR and proxy only (one reference pass, no re-runs)
  // Only units whose name matches (ECMAScript, searched): exploration and tests. A report that
  // leaves tensors out cannot be planned with.
  std::optional<std::regex> filter;
  // Called after each (unit, type) measurement with the count done and the total.
  std::function<void(int64_t done, int64_t total)> on_progress;
  std::function<Status()> should_stop;  // checked between measurements (e.g. check_interrupted)
};

// One unit stored in one type.
struct SensitivityCell {
  GgmlType type = GgmlType::Q8_0;
  bool valid = true;       // false: the type's block does not divide a tensor's row length
  std::string reason;      // why not valid
  uint64_t bytes = 0;      // GGUF bytes of the unit's tensors in this type (unaligned)
  double kld = 0;          // mean KL(P_ref || P_q) over scored positions, nats (measure_kld)
  double kld_stderr = 0;
  double top1 = 1;         // share of positions whose argmax agrees with the reference
  double sqnr_db = 0;      // 10 log10(sum w^2 / sum (w - q(w))^2) over the unit's weights
  double proxy = 0;        // imatrix-weighted squared error (see the top of this header)
};

struct SensitivityUnit {
  std::string name;                  // "blk.3.attn_q.weight", "blk.3.attn", "blk.3.ffn", "token_embd.weight"
  std::vector<std::string> tensors;  // its GGUF tensor names
  int layer = -1;                    // first layer its re-run starts at (-1: the output head only)
  int64_t parameters = 0;
  std::vector<SensitivityCell> cells;  // one per candidate type, in SensitivityOptions::types order
};

struct SensitivityReport {
  std::string model;
  std::string text;
  std::string text_sha256;
  int64_t ctx = 0;
  int64_t windows = 0;
  int64_t tokens_scored = 0;
  SensitivityGranularity granularity = SensitivityGranularity::tensor;
  std::vector<GgmlType> types;
  std::vector<SensitivityUnit> units;
  bool measured_kld = false;
  double ref_ppl = 0;  // the reference's perplexity on the windows (qforge-ppl-v1)
  // Cost: layer passes and head passes actually run (each over all windows), and what re-running
  // the whole model for every measurement would have taken.
  int64_t measurements = 0;
  int64_t layer_passes = 0;
  int64_t head_passes = 0;
  int64_t naive_layer_passes = 0;
  int64_t naive_head_passes = 0;
  double reference_seconds = 0;
  double seconds = 0;
  // Spearman rank correlation of the proxy with the measured KLD: over every valid cell, and per
  // type over the units (NaN when fewer than 3 cells or a constant ranking).
  double spearman_all = 0;
  std::vector<double> spearman_per_type;
  double spearman_sqnr_all = 0;  // of -SQNR with the KLD, for comparison
};

// Measures every quantizable tensor of `input` (the GGUF view of the model: names, shapes, the
// order `qforge quantize --format gguf` uses) on `model`, the same model loaded as f32
// (Model::load, dequantize_at_load). Decoder models of the llama family only.
Expected<SensitivityReport> measure_sensitivity(Model& model, const GgufModelInput& input, const EvalWindows& windows,
                                                const SensitivityOptions& options);

// JSON (the file `qforge sensitivity --json` writes and `qforge plan --sensitivity` reads).
nlohmann::ordered_json sensitivity_to_json(const SensitivityReport& report);
Expected<SensitivityReport> sensitivity_from_json(const nlohmann::ordered_json& j, const std::string& label);
Expected<SensitivityReport> read_sensitivity_json(const std::string& path);

// Spearman's rank correlation (average ranks for ties): NaN when fewer than 2 pairs or either
// ranking is constant. x and y must have equal sizes.
double spearman_correlation(const std::vector<double>& x, const std::vector<double>& y);

// The Scheme of the format-table row storing GGUF block type `type` (checked: an error for F32/F16/
// BF16, Q8_K and types without a row; gguf_type_scheme in gguf_quantize.h is the unchecked form).
Expected<Scheme> gguf_block_type_scheme(GgmlType type);

// The weights `qforge quantize --format gguf` would store, dequantized: quantize with the type's
// reference block quantizer (no importance weights), then dequantize. [rows, cols] row-major.
Expected<std::vector<float>> gguf_quantize_dequantize(GgmlType type, const float* w, int64_t rows, int64_t cols);

}  // namespace qforge
