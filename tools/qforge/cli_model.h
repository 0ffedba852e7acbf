// Loading a model and its tokenizer for the commands that run models (eval, run): any file kind
// Model::load knows, with the tokenizer found beside it or given with --tokenizer.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "qforge/model.h"
#include "qforge/status.h"
#include "qforge/tokenizer.h"

namespace qforge::cli {

struct ModelSpec {
  std::string path;
  std::string tokenizer;  // --tokenizer: empty = find it from the model
  std::string config;     // --config: config.json for a lone .safetensors / packed file
  bool quantized_linear = false;
  bool dequantize_at_load = false;  // --dequantize-at-load: no fast kernels (the f32 reference)
};

// Registers --tokenizer, --config, --quantized-linear and --dequantize-at-load on `cmd` (the positional MODEL is the
// command's own).
void add_model_options(CLI::App* cmd, ModelSpec* spec);

struct LoadedModel {
  std::string path;
  ModelFileKind kind = ModelFileKind::hf_directory;
  Model model;
  double load_seconds = 0;
  int64_t parameters = 0;  // elements of all weights the engine holds (embeddings included once)
};

Expected<LoadedModel> load_cli_model(const ModelSpec& spec, const std::string& role = "model");

// The tokenizer: --tokenizer if given; else the model directory's (HF), the GGUF file's own
// vocabulary, or the directory of a .safetensors / packed file (or of --config). llama2.c models
// need --tokenizer. Errors name the option or the path searched.
Expected<std::unique_ptr<Tokenizer>> load_cli_tokenizer(const ModelSpec& spec, const LoadedModel& model);

// "24.9M" parameters etc.: one line describing a loaded model.
std::string describe_model(const LoadedModel& m);

// --threads: limits OpenMP (ScopedThreadLimit) and OpenBLAS threads for the object's lifetime.
class ThreadSetting {
 public:
  explicit ThreadSetting(int threads);
  ~ThreadSetting();
  ThreadSetting(const ThreadSetting&) = delete;
  ThreadSetting& operator=(const ThreadSetting&) = delete;
  int threads() const { return threads_; }

 private:
  int threads_;
  int previous_omp_;
  int previous_blas_;
};

}  // namespace qforge::cli
