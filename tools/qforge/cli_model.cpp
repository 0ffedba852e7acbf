// Model and tokenizer loading shared by `qforge eval` and `qforge run`.
#include "cli_model.h"

#include <omp.h>

#include <filesystem>

#include "cli_common.h"
#include "qforge/gguf.h"
#include "qforge/linear.h"
#include "qforge/parallel.h"

namespace qforge::cli {

void add_model_options(CLI::App* cmd, ModelSpec* spec) {
  cmd->add_option("--tokenizer", spec->tokenizer,
                  "Tokenizer file or directory (tokenizer.model, tokenizer.json, .gguf, llama2.c .bin); "
                  "default: the model's own");
  cmd->add_option("--config", spec->config,
                  "config.json (or its directory) for a lone .safetensors or packed model file");
  cmd->add_flag("--quantized-linear", spec->quantized_linear,
                "GGUF and packed models: keep weights quantized and dequantize them on every call (QuantizedLinear) "
                "instead of running the fast kernels");
  cmd->add_flag("--dequantize-at-load", spec->dequantize_at_load,
                "GGUF and packed models: dequantize quantized weights to f32 once at load instead of running the "
                "fast kernels");
}

Expected<LoadedModel> load_cli_model(const ModelSpec& spec, const std::string& role) {
  const double t0 = now_seconds();
  QFORGE_ASSIGN_OR_RETURN(ModelFileKind kind, detect_model_file(spec.path));
  ModelLoadOptions options;
  options.config = spec.config;
  options.quantized_linear = spec.quantized_linear;
  options.weights = spec.dequantize_at_load ? QuantizedWeights::dequantize_at_load : QuantizedWeights::kernels;
  if (spec.quantized_linear && spec.dequantize_at_load)
    return invalid_argument("--quantized-linear and --dequantize-at-load exclude each other");
  const bool quantized_file = kind == ModelFileKind::packed || kind == ModelFileKind::gguf;
  if ((spec.quantized_linear || spec.dequantize_at_load) && !quantized_file)
    warn(std::string(spec.quantized_linear ? "--quantized-linear" : "--dequantize-at-load") +
         " applies to GGUF and packed files only; " + spec.path + " is " + model_file_kind_name(kind));
  auto model = Model::load(spec.path, options);
  if (!model.has_value()) return model.status().with_context("loading the " + role + " " + spec.path);
  LoadedModel m{spec.path, kind, std::move(model).value(), 0, 0};
  m.load_seconds = now_seconds() - t0;
  const ModelConfig& c = m.model.config();
  for (const LinearSite& site : m.model.linear_sites()) {
    if (site.role == TensorRole::output && c.tie_word_embeddings) continue;
    const Linear* l = m.model.linear(site);
    m.parameters += l->in_features() * l->out_features() + static_cast<int64_t>(l->bias().size());
  }
  m.parameters += c.vocab_size * c.hidden_size;
  return m;
}

Expected<std::unique_ptr<Tokenizer>> load_cli_tokenizer(const ModelSpec& spec, const LoadedModel& m) {
  namespace fs = std::filesystem;
  TokenizerOptions options;
  options.vocab_size = m.model.config().vocab_size;  // llama2.c tokenizer.bin stores no count
  Expected<std::unique_ptr<Tokenizer>> tok = Status::error(ErrorCode::internal, "no tokenizer");
  if (!spec.tokenizer.empty()) {
    tok = load_tokenizer(spec.tokenizer, options);
    if (!tok.has_value()) return tok.status().with_context("--tokenizer " + spec.tokenizer);
  } else {
    switch (m.kind) {
      case ModelFileKind::hf_directory:
        tok = load_tokenizer(m.path, options);
        break;
      case ModelFileKind::gguf: {
        QFORGE_ASSIGN_OR_RETURN(GgufFile file, GgufFile::open(m.path));
        tok = load_gguf_tokenizer(file);
        break;
      }
      case ModelFileKind::safetensors:
      case ModelFileKind::packed: {
        std::string dir = fs::path(m.path).parent_path().string();
        if (!spec.config.empty()) {
          std::error_code ec;
          dir = fs::is_directory(spec.config, ec) ? spec.config : fs::path(spec.config).parent_path().string();
        }
        tok = load_tokenizer(dir.empty() ? "." : dir, options);
        break;
      }
      case ModelFileKind::llama2c:
        return invalid_argument(m.path + " is a llama2.c checkpoint, which holds no tokenizer: give one with "
                                "--tokenizer (e.g. tok512.bin)");
    }
    if (!tok.has_value())
      return tok.status().with_context("finding the tokenizer of " + m.path + " (or give --tokenizer)");
  }
  const int64_t vocab = m.model.config().vocab_size;
  if ((*tok)->vocab_size() > vocab)
    return invalid_argument("tokenizer " + (*tok)->source() + " has " + std::to_string((*tok)->vocab_size()) +
                            " tokens but the model only " + std::to_string(vocab));
  return tok;
}

std::string describe_model(const LoadedModel& m) {
  const ModelConfig& c = m.model.config();
  std::string s = m.path + " (" + model_file_kind_name(m.kind) + ", " + architecture_name(c.arch) + ", " +
                  format_count(static_cast<uint64_t>(m.parameters)) + " parameters, " + std::to_string(c.num_layers) +
                  " layers, hidden " + std::to_string(c.hidden_size) + ", vocab " + std::to_string(c.vocab_size);
  int64_t quantized = 0;
  for (const LinearSite& site : m.model.linear_sites())
    if (m.model.linear(site)->describe() != "f32") ++quantized;
  if (quantized > 0) s += ", " + std::to_string(quantized) + " quantized linears";
  return s + ")";
}

ThreadSetting::ThreadSetting(int threads)
    : threads_(threads > 0 ? threads : omp_get_max_threads()), previous_omp_(omp_get_max_threads()), previous_blas_(0) {
  if (threads > 0) {
    omp_set_num_threads(threads);
    previous_blas_ = set_blas_threads(threads);
  }
}

ThreadSetting::~ThreadSetting() {
  omp_set_num_threads(previous_omp_);
  if (previous_blas_ > 0) set_blas_threads(previous_blas_);
}

}  // namespace qforge::cli
