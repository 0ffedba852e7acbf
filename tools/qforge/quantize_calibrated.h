// Calibrated commands: qforge quantize --method rtn|gptq --calib FILE (block-sequential quantization
// into qforge's packed layout, resumable block by block; cmd_quantize_calib.cpp) and qforge imatrix.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "commands.h"
#include "qforge/awq.h"
#include "qforge/gguf_quantize.h"
#include "qforge/ptq.h"

namespace qforge::cli {

struct CalibratedQuantizeRequest {
  std::string input;   // HF directory or .safetensors checkpoint
  std::string output;  // packed .safetensors
  std::string method = "gptq";  // rtn | gptq | awq | awq+gptq | smoothquant
  std::string format = "packed";  // packed | gptq | awq (HF directory, include/qforge/hf_quant.h)
  AwqOptions awq;                 // awq, awq+gptq
  double alpha = 0.5;             // smoothquant migration strength
  std::string act_scheme = "none";     // --act-scheme (act_quant.h)
  std::string act_observer = "minmax";  // observer of static activation scales
  Scheme scheme;
  Selection selection;
  std::string tokenizer;  // default: the model's own
  std::string calib;      // calibration text file
  CalibrationOptions calib_options;
  GptqOptions gptq;
  int64_t batch_windows = 2;  // windows per block forward
  DType hidden_dtype = DType::f32;  // storage of the calibration hidden states (f32 or bf16)
  bool resume = false;
  bool verbose = false;
  // GGUF output (quantize_calibrated_gguf): each block linear's scheme (nullopt: left to the
  // writer), a text that identifies that choice for the resume fingerprint, and where the results
  // go instead of a file: quantized tensors and rewritten f32 tensors (norms an AWQ fold changed,
  // block linears not quantized here), by checkpoint tensor name.
  SchemeForSite site_scheme;
  std::string site_scheme_fingerprint;
  std::map<std::string, QuantizedTensor>* quantized_out = nullptr;
  std::map<std::string, Tensor>* dense_out = nullptr;
  CardRequest card;  // the quantization card (card_build.h)
};

// The directory beside the output holding the per-block state (removed after success).
std::string resume_state_dir(const std::string& output);

Expected<QuantizeSummary> quantize_calibrated(const CalibratedQuantizeRequest& request);

// --format gguf with --calib: runs the pipeline with each block linear's scheme taken from the
// GGUF plan (its per-tensor preset type; types GPTQ cannot sweep get RTN through the writer) and
// hands the results to the writer through `options` (prequantized blocks, rewritten f32 values),
// backed by `out`. Rows of q/k are permuted as the GGUF input permutes them.
struct GgufCalibratedTensors {
  std::map<std::string, QuantizedTensor> quantized;
  std::map<std::string, std::vector<float>> f32;
  std::optional<CardCalibration> card_calibration;  // for the quantization card
};
Status quantize_calibrated_gguf(const CalibratedQuantizeRequest& request, const GgufModelInput& input,
                                const GgufQuantizePlan& plan, GgufCalibratedTensors& out, GgufQuantizeOptions& options);

// qforge imatrix MODEL --calib FILE --out imatrix.gguf (cmd_imatrix.cpp).
void add_imatrix_command(CLI::App& app, int* exit_code);

}  // namespace qforge::cli
