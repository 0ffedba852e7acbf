// Pieces shared by `qforge sensitivity`, `qforge plan` and `qforge sweep`: evaluation windows of a
// text, a reference log-probability cache in a scratch directory, and "quantize this GGUF variant,
// load it, measure it against the reference".
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "cli_model.h"
#include "qforge/eval.h"
#include "qforge/gguf_convert.h"
#include "qforge/gguf_quantize.h"
#include "qforge/sensitivity.h"
#include "qforge/status.h"

namespace qforge::cli {

// The text tokenized as `qforge eval` does (qforge-ppl-v1 windows); errors name `option`.
Expected<EvalWindows> load_text_windows(const std::string& path, int64_t ctx, const Tokenizer& tokenizer,
                                        const std::string& option);

// The model as the unquantized reference: quantized GGUF / packed inputs dequantized at load (f32
// math), other kinds as they are.
ModelSpec reference_spec(const ModelSpec& spec);

// A scratch directory removed (with everything in it) when the object dies.
class ScratchDir {
 public:
  // Under `parent` (empty: the system temp directory).
  static Expected<std::unique_ptr<ScratchDir>> create(const std::string& parent, const std::string& stem);
  ~ScratchDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// The reference model's log-probabilities on the first `windows` windows, computed once into an
// f16 cache file inside `scratch` (docs/evaluation.md, qforge-ref-logits-v1).
Expected<LogitsCacheReader> make_reference_cache(Model& reference, const std::string& model_path, const EvalWindows& w,
                                                 int64_t windows, const std::string& text_path, const ScratchDir& scratch);

struct VariantResult {
  EvalReport report;          // with report.kld set
  uint64_t file_bytes = 0;
  uint64_t tensor_bytes = 0;
  int64_t parameters = 0;
  double bits_per_weight = 0; // 8 * tensor bytes / parameters
  double quantize_seconds = 0;
};

// Quantizes `input` under `options` into `path` (preflight must pass), loads it (dequantized at
// load: the f32 reference math), evaluates it on the windows against `reference`, deletes it
// unless `keep`.
Expected<VariantResult> evaluate_gguf_variant(const GgufModelInput& input, const GgufQuantizeOptions& options,
                                              const std::string& path, const EvalWindows& w, int64_t windows,
                                              const LogitsCacheReader& reference, const std::string& label,
                                              bool keep = false);

// "Q8_0,Q6_K,..." -> quantized GGUF types (errors name `option` and the entry).
Expected<std::vector<GgmlType>> parse_type_list(const std::string& list, const std::string& option);

// Charts (mixed_precision_charts.cpp): the KLD of every unit and type as a heatmap; a sweep's
// size vs KLD with its Pareto front.
struct SweepPoint {
  std::string label;
  double bits_per_weight = 0;
  double kld = 0;
  bool plan = false;  // a mixed-precision plan rather than a preset
};
std::string sensitivity_svg(const SensitivityReport& report);
std::string sweep_svg(const std::vector<SweepPoint>& points, const std::string& title, const std::string& subtitle);

}  // namespace qforge::cli
