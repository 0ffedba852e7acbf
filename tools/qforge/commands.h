// The qforge subcommands. Each add_*_command registers a CLI11 subcommand whose callback stores
// the command's exit code in *exit_code. The engines behind analyze/quantize/dequantize are
// exposed so `qforge demo` runs exactly the code paths of the individual commands.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <functional>
#include <string>
#include <vector>

#include "card_build.h"
#include "cli_common.h"
#include "qforge/format.h"
#include "qforge/gguf_convert.h"
#include "qforge/gguf_quantize.h"
#include "qforge/safetensors.h"

namespace qforge::cli {

void add_inspect_command(CLI::App& app, int* exit_code);
void add_analyze_command(CLI::App& app, int* exit_code);
void add_quantize_command(CLI::App& app, int* exit_code);
void add_dequantize_command(CLI::App& app, int* exit_code);
void add_demo_command(CLI::App& app, int* exit_code);
void add_eval_command(CLI::App& app, int* exit_code);  // cmd_eval.cpp
void add_run_command(CLI::App& app, int* exit_code);   // cmd_run.cpp
void add_bench_command(CLI::App& app, int* exit_code); // cmd_bench.cpp
void add_convert_command(CLI::App& app, int* exit_code);
void add_sensitivity_command(CLI::App& app, int* exit_code);  // cmd_sensitivity.cpp
void add_plan_command(CLI::App& app, int* exit_code);         // cmd_plan.cpp
void add_sweep_command(CLI::App& app, int* exit_code);        // cmd_sweep.cpp

// ---- analyze ----------------------------------------------------------------------------------

// One tensor under one scheme.
struct AnalyzeCell {
  bool skipped = false;
  std::string reason;  // why it was skipped
  ErrorStats stats;
  double signal = 0;  // sum ref^2
  double noise = 0;   // sum (ref - approx)^2
  uint64_t nbytes = 0;  // bytes of the quantized planes
  double bits_per_weight = 0;
};

struct AnalyzeTensor {
  std::string name;
  Shape shape;  // as stored in the checkpoint
  bool transposed = false;  // quantized as its transpose (see SelectedTensor)
  std::vector<AnalyzeCell> cells;  // one per scheme, in the order given
};

// Totals of one scheme over the tensors it applied to, weighted by element count.
struct AnalyzeTotals {
  int64_t tensors = 0;
  int64_t skipped = 0;
  int64_t elements = 0;
  double signal = 0, noise = 0;
  double max_abs = 0;
  uint64_t nbytes = 0;
  double sqnr_db() const;
  double rel_rmse() const;
  double bits_per_weight() const;
};

struct AnalyzeResult {
  std::string source;
  std::vector<Scheme> schemes;
  std::vector<AnalyzeTensor> tensors;  // in selection (natural) order
  std::vector<AnalyzeTotals> totals;   // one per scheme
};

// Quantizes each named tensor in memory with each scheme (OpenMP over tensors; the result does
// not depend on the thread count).
Expected<AnalyzeResult> analyze_tensors(const SafetensorsCheckpoint& ckpt, const std::vector<SelectedTensor>& tensors,
                                        const std::vector<Scheme>& schemes);
void print_analyze_tensors(const AnalyzeResult& r, std::FILE* out);
void print_analyze_totals(const AnalyzeResult& r, std::FILE* out);
Status write_analyze_json(const AnalyzeResult& r, const std::string& path);

// ---- quantize ---------------------------------------------------------------------------------

struct QuantizeRequest {
  std::string input;   // checkpoint file or HF directory
  std::string output;  // .safetensors
  Scheme scheme;
  Selection selection;
  bool verbose = false;
  CardRequest card;  // the quantization card (card_build.h)
};

struct QuantizeSummary {
  int64_t quantized_tensors = 0;
  int64_t quantized_elements = 0;
  uint64_t quantized_bytes_in = 0;   // bytes of those tensors in the source
  uint64_t quantized_bytes_out = 0;  // bytes of their planes
  int64_t plain_tensors = 0;
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;
  std::vector<std::string> kept_incompatible;  // selected but not quantizable with the scheme (reason)
  double seconds = 0;
  // For the card: errors recorded during quantization (rescaling methods) and the calibration set.
  std::map<std::string, WeightError> weight_errors;
  std::optional<CardCalibration> card_calibration;
};

Expected<QuantizeSummary> quantize_checkpoint(const QuantizeRequest& request);
void print_quantize_summary(const QuantizeRequest& request, const QuantizeSummary& s, std::FILE* out,
                            const char* indent = "");

// ---- dequantize -------------------------------------------------------------------------------

struct DequantizeSummary {
  int64_t dequantized_tensors = 0;
  int64_t plain_tensors = 0;
  uint64_t output_bytes = 0;
  double seconds = 0;
};

// `dtype`: the dtype of dequantized tensors (nullopt: each tensor's original dtype).
Expected<DequantizeSummary> dequantize_file(const std::string& input, const std::string& output,
                                            std::optional<DType> dtype);

// ---- GGUF: convert, quantize --format gguf -------------------------------------------------------

struct GgufQuantizeRequest {
  const char* command = "quantize";  // for messages: "convert" or "quantize"
  std::string input;
  std::string output;
  std::string type;  // preset name (Q4_K_M, F16, ...)
  std::vector<std::string> tensor_types;  // REGEX=TYPE
  std::string tensor_type_file;
  std::string plan;  // --plan (qforge plan output); becomes tensor_type_file
  std::string output_tensor_type;
  std::string token_embedding_type;
  std::string imatrix;
  bool pure = false;
  bool allow_requantize = false;
  bool allow_fallback = false;
  bool dry_run = false;  // stop after the preflight
  GgufModelInputOptions input_options;
  // Calibrated quantization into GGUF (quantize --calib --format gguf, cmd_quantize_calib.cpp):
  // called after the preflight, before writing; sets the options' precomputed tensors.
  std::function<Status(const GgufModelInput&, const GgufQuantizePlan&, GgufQuantizeOptions&)> calibrate;
  CardRequest card;  // quantize only: the quantization card (card_build.h)
  // Calibrated GGUF: fills the card's method and calibration (set by quantize --calib).
  std::function<void(Card&)> describe_calibration;
};

// Opens the input, prints the preflight (always, before any work), stops on fallbacks /
// re-quantization unless allowed, then writes the file. Returns the exit code.
int run_gguf_quantize(const GgufQuantizeRequest& request);
void print_gguf_preflight(const GgufModelInput& input, const GgufQuantizePlan& plan, const GgufQuantizeOptions& options,
                          const std::string& output, std::FILE* out);

}  // namespace qforge::cli
