// Shared pieces of the sensitivity / plan / sweep commands (mixed_precision_cli.h).
#include "mixed_precision_cli.h"

#include <unistd.h>

#include <filesystem>

#include "cli_common.h"
#include "qforge/atomic_file.h"
#include "qforge/sha256.h"

namespace qforge::cli {

Expected<EvalWindows> load_text_windows(const std::string& path, int64_t ctx, const Tokenizer& tokenizer,
                                        const std::string& option) {
  if (ctx < 2) return invalid_argument("--ctx " + std::to_string(ctx) + ": must be at least 2");
  auto text = read_file(path);
  if (!text) return text.status().with_context(option);
  if (text->empty()) return invalid_argument(option + " " + path + ": the file is empty");
  EncodeOptions enc;  // no special tokens; BOS once, as qforge eval
  const std::vector<int32_t> ids = tokenizer.encode(*text, enc);
  const int64_t bos = tokenizer.adds_bos() && tokenizer.bos_id() ? *tokenizer.bos_id() : -1;
  auto windows = make_eval_windows(ids, bos, ctx, path);
  if (!windows) return windows.status().with_context(option + " / --ctx");
  windows->text_sha256 = sha256_hex(*text);
  return windows;
}

ModelSpec reference_spec(const ModelSpec& spec) {
  ModelSpec s = spec;
  auto kind = detect_model_file(spec.path);
  if (kind && (*kind == ModelFileKind::gguf || *kind == ModelFileKind::packed)) s.dequantize_at_load = true;
  return s;
}

Expected<std::unique_ptr<ScratchDir>> ScratchDir::create(const std::string& parent, const std::string& stem) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path base = parent.empty() ? fs::temp_directory_path(ec) : fs::path(parent);
  if (ec) return io_error("no temporary directory: " + ec.message());
  if (!fs::is_directory(base, ec)) return io_error("--work-dir " + base.string() + ": not a directory");
  for (int i = 0; i < 1000; ++i) {
    fs::path p = base / (stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(i));
    if (fs::create_directory(p, ec)) return std::unique_ptr<ScratchDir>(new ScratchDir(p.string()));
  }
  return io_error("cannot create a scratch directory under " + base.string());
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Expected<LogitsCacheReader> make_reference_cache(Model& reference, const std::string& model_path, const EvalWindows& w,
                                                 int64_t windows, const std::string& text_path, const ScratchDir& scratch) {
  LogitsCacheInfo info;
  info.ctx = w.ctx;
  info.windows = windows;
  info.vocab = reference.config().vocab_size;
  info.dtype = DType::f16;
  info.text_sha256 = w.text_sha256;
  info.text = std::filesystem::path(text_path).filename().string();
  info.model = model_path;
  const std::string path = scratch.file("reference-logprobs.safetensors");
  const uint64_t bytes = logits_cache_data_bytes(windows, w.ctx, info.vocab, info.dtype);
  std::error_code ec;
  const auto space = std::filesystem::space(scratch.path(), ec);
  if (!ec && space.available < bytes + (uint64_t{64} << 20))
    return io_error("the reference cache needs " + format_bytes(bytes) + " but only " + format_bytes(space.available) +
                    " are free in " + scratch.path() + " (fewer --windows, or --work-dir elsewhere)");
  QFORGE_ASSIGN_OR_RETURN(std::unique_ptr<LogitsCacheWriter> writer, LogitsCacheWriter::create(path, info, w));
  Progress progress("reference", windows * w.ctx, "tokens", progress_options());
  int64_t reported = 0;
  EvalOptions eo;
  eo.max_windows = windows;
  eo.batch_tokens = 2048;
  eo.on_progress = [&](int64_t, int64_t tokens) {
    progress.tick(tokens - reported);
    reported = tokens;
  };
  eo.should_stop = [] { return check_interrupted("reference"); };
  QFORGE_ASSIGN_OR_RETURN(EvalReport r, evaluate(reference, w, eo, {}, writer.get()));
  progress.finish();
  (void)r;
  QFORGE_RETURN_IF_ERROR(writer->commit());
  return LogitsCacheReader::open(path);
}

Expected<VariantResult> evaluate_gguf_variant(const GgufModelInput& input, const GgufQuantizeOptions& options,
                                              const std::string& path, const EvalWindows& w, int64_t windows,
                                              const LogitsCacheReader& reference, const std::string& label, bool keep) {
  VariantResult v;
  QFORGE_ASSIGN_OR_RETURN(GgufQuantizePlan plan, plan_gguf_quantization(input, options));
  QFORGE_RETURN_IF_ERROR(check_gguf_plan(plan, options).with_context(label));
  Progress::Options quiet = progress_options();
  QFORGE_ASSIGN_OR_RETURN(GgufWriteResult written, write_gguf_model(input, plan, options, path, quiet, label));
  v.quantize_seconds = written.seconds;
  v.file_bytes = written.file_bytes;
  v.tensor_bytes = plan.tensor_bytes;
  v.parameters = plan.parameters;
  v.bits_per_weight = plan.bits_per_weight();
  auto model = Model::load_gguf(path, QuantizedWeights::dequantize_at_load);
  if (!model) return model.status().with_context(label + ": loading " + path);
  Progress progress(label, windows * w.ctx, "tokens", progress_options());
  int64_t reported = 0;
  EvalOptions eo;
  eo.max_windows = windows;
  eo.batch_tokens = 2048;
  eo.on_progress = [&](int64_t, int64_t tokens) {
    progress.tick(tokens - reported);
    reported = tokens;
  };
  eo.should_stop = [label] { return check_interrupted(label); };
  EvalReference ref;
  ref.cache = &reference;
  QFORGE_RETURN_IF_ERROR(reference.check_compatible(w, windows, model->config().vocab_size));
  auto report = evaluate(*model, w, eo, ref);
  progress.finish();
  if (!keep) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
  if (!report) return report.status().with_context(label);
  v.report = std::move(*report);
  return v;
}

}  // namespace qforge::cli
