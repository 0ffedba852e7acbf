// Building the quantization card (include/qforge/card.h) for each `qforge quantize` path, and the
// `qforge card` command that re-renders a card from its JSON.
//
// The card's per-tensor error is measured after the output was written, by reading the output
// back and dequantizing it against the source (so it describes the file on disk, not an
// in-memory intermediate), except for methods that rescale weights before quantizing (AWQ,
// SmoothQuant): there the error is recorded during quantization against the rescaled weight the
// quantizer received (record_weight_errors), and the card says so (method.error_reference).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "qforge/card.h"
#include "qforge/eval.h"
#include "qforge/ptq.h"
#include "qforge/tensor_roles.h"

namespace qforge {
class GgufModelInput;
struct GgufQuantizePlan;
struct GgufQuantizeOptions;
}  // namespace qforge

namespace qforge::cli {

struct QuantizeRequest;
struct QuantizeSummary;
struct GgufQuantizeRequest;
struct CalibratedQuantizeRequest;
struct GgufCalibratedTensors;

// --card-eval TEXT [--card-ctx N] [--card-windows N]: perplexity and KLD of the output against
// the source on TEXT, recorded in the card.
struct CardRequest {
  std::string eval_text;      // empty: not measured
  int64_t eval_ctx = 512;
  int64_t eval_windows = 0;   // 0: every window of the text
  std::string tokenizer;      // for llama2.c sources (quantize --tokenizer)
};

// Registers --card-eval, --card-ctx, --card-windows on `cmd`.
void add_card_options(CLI::App* cmd, CardRequest* request);

// Card writers of the three quantize paths (called once the output exists). Each writes
// <out>.card.json, .card.md and .card.html beside the output (card_base_path) and prints where.
Status write_packed_quantize_card(const QuantizeRequest& request, const QuantizeSummary& summary,
                                  const CardRequest& card);
Status write_calibrated_quantize_card(const CalibratedQuantizeRequest& request, const QuantizeSummary& summary,
                                      const CardRequest& card);
Status write_gguf_quantize_card(const GgufQuantizeRequest& request, const GgufModelInput& input,
                                const GgufQuantizePlan& plan, const GgufQuantizeOptions& options,
                                const CardRequest& card);

// Fills the card's evaluation section from an evaluation with a reference (r.kld set) of `text`.
void fill_card_evaluation(CardEvaluation& e, const EvalReport& r, const CardFile& text);

// The method and calibration of a calibrated GGUF run (quantize --calib --format gguf).
void describe_calibrated_gguf(Card& card, const CalibratedQuantizeRequest& request, const GgufCalibratedTensors& result);

// Wraps a weight quantizer (RtnProcessor / GptqProcessor) so that each quantized linear's error
// against the weight it received is recorded into *errors, keyed by the tensor's HF name.
std::unique_ptr<BlockProcessor> record_weight_errors(std::unique_ptr<BlockProcessor> inner, Architecture arch,
                                                     std::map<std::string, WeightError>* errors);

// qforge card CARD.json [--out-md F] [--out-html F]
void add_card_command(CLI::App& app, int* exit_code);

}  // namespace qforge::cli
