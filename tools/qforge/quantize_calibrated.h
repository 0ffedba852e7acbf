// Calibrated commands: qforge quantize --method rtn|gptq --calib FILE (block-sequential quantization
// into qforge's packed layout, resumable block by block; cmd_quantize_calib.cpp) and qforge imatrix.
#pragma once

#include <string>

#include "commands.h"
#include "qforge/ptq.h"

namespace qforge::cli {

struct CalibratedQuantizeRequest {
  std::string input;   // HF directory or .safetensors checkpoint
  std::string output;  // packed .safetensors
  std::string method = "gptq";  // rtn | gptq
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
};

// The directory beside the output holding the per-block state (removed after success).
std::string resume_state_dir(const std::string& output);

Expected<QuantizeSummary> quantize_calibrated(const CalibratedQuantizeRequest& request);

// qforge imatrix MODEL --calib FILE --out imatrix.gguf (cmd_imatrix.cpp).
void add_imatrix_command(CLI::App& app, int* exit_code);

}  // namespace qforge::cli
