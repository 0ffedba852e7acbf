// qforge quantize --method rtn|gptq --calib FILE: the block-sequential pipeline (ptq.h) driven from
// the command line, with per-block state for --resume.
//
// Resume state, in "<out>.qforge-resume/" (every file written atomically):
//   block-NNN.safetensors  the quantized weights of block NNN (packed layout)
//   hidden-NNN.bin         the hidden states entering block NNN (raw little-endian, --calib-hidden dtype)
//   state.json             {"fingerprint": ..., "blocks_done": N, "hidden_sha256": ...}, written
//                          after the files it points at, so it never names a partial state
// The fingerprint covers everything that determines the result (input files, scheme, method
// options, calibration set and options); --resume refuses state from a different run. The state is
// removed once the output is written.
#include <nlohmann/json.hpp>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <csignal>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "cli_common.h"
#include "cli_model.h"
#include "qforge/atomic_file.h"
#include "qforge/act_quant.h"
#include "qforge/hf_quant.h"
#include "qforge/packed.h"
#include "qforge/ptq_methods.h"
#include "qforge/sha256.h"
#include "quantize_calibrated.h"

namespace qforge::cli {
namespace fs = std::filesystem;

std::string resume_state_dir(const std::string& output) { return output + ".qforge-resume"; }

namespace {

std::string block_file(const std::string& dir, int layer) {
  char name[64];
  std::snprintf(name, sizeof(name), "block-%03d.safetensors", layer);
  return (fs::path(dir) / name).string();
}

std::string hidden_file(const std::string& dir, int layer) {
  char name[64];
  std::snprintf(name, sizeof(name), "hidden-%03d.bin", layer);
  return (fs::path(dir) / name).string();
}

std::string site_tensor_name(Architecture arch, const LinearSite& site) {
  auto n = tensor_name_for_role(arch, site.role, site.layer, false);
  return n ? *n : std::string();
}

std::string fingerprint(const CalibratedQuantizeRequest& req, const SafetensorsCheckpoint& ckpt,
                        const CalibrationSet& calib) {
  nlohmann::json j;
  j["input"] = fs::absolute(req.input).string();
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : ckpt.files()) files.push_back({f.path(), f.file_size()});
  j["files"] = files;
  j["method"] = req.method;
  j["scheme"] = req.scheme.name();
  j["filter"] = req.selection.filter_pattern;
  j["keep"] = req.selection.keep_pattern;
  j["calib_sha256"] = calib.sha256;
  j["windows"] = calib.windows;
  j["ctx"] = calib.ctx;
  j["seed"] = calib.seed;
  j["batch_windows"] = req.batch_windows;
  j["hidden_dtype"] = dtype_name(req.hidden_dtype);
  j["format"] = req.format;
  j["act"] = {req.act_scheme, req.act_observer};
  if (req.method == "awq" || req.method == "awq+gptq")
    j["awq"] = {req.awq.grid, req.awq.clip, req.awq.clip_grid, req.awq.max_shrink};
  if (req.method == "smoothquant") j["alpha"] = req.alpha;
  if (req.method == "gptq" || req.method == "awq+gptq")
    j["gptq"] = {req.gptq.damp, req.gptq.block_size, req.gptq.act_order, req.gptq.sequential};
  return sha256_hex(j.dump());
}

Status write_hidden(const std::string& path, std::span<const uint8_t> hidden, std::string* sha) {
  QFORGE_ASSIGN_OR_RETURN(AtomicFile f, AtomicFile::create(path));
  QFORGE_RETURN_IF_ERROR(f.write(hidden.data(), hidden.size_bytes()));
  QFORGE_RETURN_IF_ERROR(f.commit());
  Sha256 h;
  h.update(hidden.data(), hidden.size_bytes());
  *sha = h.final_hex();
  return Status::ok();
}

Expected<std::vector<uint8_t>> read_hidden(const std::string& path, size_t nbytes, const std::string& sha) {
  QFORGE_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  if (bytes.size() != nbytes)
    return parse_error(path + ": " + std::to_string(bytes.size()) + " bytes, " + std::to_string(nbytes) + " expected");
  if (sha256_hex(bytes) != sha) return parse_error(path + ": SHA-256 does not match state.json");
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

// Test hook: QFORGE_QUANTIZE_CRASH_AFTER_BLOCK=N kills the process (SIGKILL, no cleanup) right after
// block N's state was saved, to test --resume against a real crash.
// Returns freed heap memory to the system: tokenizing the whole calibration file and loading the
// model leave tens of MB of freed heap that glibc would otherwise keep for the whole run, which
// counts against the pipeline's memory bound.
void release_free_heap() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

int crash_after_block() {
  const char* v = std::getenv("QFORGE_QUANTIZE_CRASH_AFTER_BLOCK");
  return v ? std::atoi(v) : -1;
}

}  // namespace

Expected<QuantizeSummary> quantize_calibrated(const CalibratedQuantizeRequest& req) {
  const double start = now_seconds();
  QFORGE_RETURN_IF_ERROR(check_output_path(req.output, "--out"));
  if (req.method != "rtn" && req.method != "gptq" && req.method != "awq" && req.method != "awq+gptq" &&
      req.method != "smoothquant")
    return invalid_argument("--method must be rtn, gptq, awq, awq+gptq or smoothquant, got '" + req.method + "'");
  QFORGE_ASSIGN_OR_RETURN(ActScheme act_scheme, parse_act_scheme(req.act_scheme));
  // AWQ and SmoothQuant fold scales into norms and activation quantization records scales: the
  // per-block resume state holds only quantized weights, so these runs start from block 0.
  const bool rewrites_block = req.method == "awq" || req.method == "awq+gptq" || req.method == "smoothquant" ||
                              act_scheme != ActScheme::none;
  if (req.resume && rewrites_block)
    return unsupported("--resume supports --method rtn and gptq without --act-scheme");
  if (req.format != "packed" && req.format != "gptq" && req.format != "awq")
    return invalid_argument("--format must be packed, gptq or awq for calibrated quantization");
  QFORGE_ASSIGN_OR_RETURN(ModelFileKind kind, detect_model_file(req.input));
  if (kind != ModelFileKind::hf_directory && kind != ModelFileKind::safetensors)
    return invalid_argument("--calib needs an HF directory or a .safetensors checkpoint, " + req.input + " is " +
                            model_file_kind_name(kind));
  QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::open(req.input));
  QFORGE_ASSIGN_OR_RETURN(Architecture arch, checkpoint_architecture(ckpt));
  QFORGE_ASSIGN_OR_RETURN(std::vector<SelectedTensor> selected, select_tensors(ckpt, req.selection));
  std::map<std::string, bool> selected_transposed;
  for (const auto& s : selected) selected_transposed[s.name] = s.transposed;

  ModelSpec spec;
  spec.path = req.input;
  spec.tokenizer = req.tokenizer;
  QFORGE_ASSIGN_OR_RETURN(LoadedModel loaded, load_cli_model(spec, "model"));
  Model& model = loaded.model;
  QFORGE_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, load_cli_tokenizer(spec, loaded));
  QFORGE_ASSIGN_OR_RETURN(CalibrationSet calib, load_calibration_set(req.calib, *tok, req.calib_options));
  std::error_code ec_card;
  release_free_heap();
  std::fprintf(stderr, "calibration: %s (sha256 %.16s..., %lld tokens): %lld windows x %lld tokens, seed %llu\n",
               calib.path.c_str(), calib.sha256.c_str(), static_cast<long long>(calib.file_tokens),
               static_cast<long long>(calib.windows), static_cast<long long>(calib.ctx),
               static_cast<unsigned long long>(calib.seed));

  QuantizeSummary summary;
  summary.card_calibration = CardCalibration{{calib.path, fs::file_size(calib.path, ec_card), calib.sha256},
                                             calib.file_tokens, calib.windows, calib.ctx, calib.tokens_used(), calib.seed};
  for (const auto& f : ckpt.files()) summary.input_bytes += f.file_size();
  std::set<std::string> incompatible;
  const bool gptq = req.method == "gptq" || req.method == "awq+gptq";
  SchemeForSite scheme_for = [&](const LinearSite& site, int64_t rows, int64_t cols) -> std::optional<Scheme> {
    const std::string name = site_tensor_name(arch, site);
    if (!selected_transposed.count(name)) return std::nullopt;
    if (Status v = validate_scheme(req.scheme, rows, cols); !v) {
      if (incompatible.insert(name).second) summary.kept_incompatible.push_back(name + " (" + v.message() + ")");
      return std::nullopt;
    }
    return req.scheme;
  };
  if (gptq && !gptq_supports(req.scheme))
    return unsupported("--method gptq does not support scheme " + req.scheme.name() +
                       " (integer and other planar schemes only; GGUF output uses --format gguf)");

  std::unique_ptr<BlockProcessor> processor;
  QuantizedSiteMap* results = nullptr;
  GptqProcessor* gptq_processor = nullptr;
  if (gptq) {
    auto p = std::make_unique<GptqProcessor>(scheme_for, req.gptq);
    results = &p->results();
    gptq_processor = p.get();
    processor = std::move(p);
  } else {
    auto p = std::make_unique<RtnProcessor>(scheme_for);
    results = &p->results();
    processor = std::move(p);
  }
  // The card's weight error of rescaled weights is taken at the quantizer's input (card_build.h).
  if (req.method == "awq" || req.method == "awq+gptq" || req.method == "smoothquant")
    processor = record_weight_errors(std::move(processor), arch, &summary.weight_errors);
  // AWQ / SmoothQuant rewrite the block before the weight quantizer; activation quantization wraps
  // the quantized block (include/qforge/ptq_methods.h).
  AwqProcessor* awq_processor = nullptr;
  if (req.method == "awq" || req.method == "awq+gptq") {
    auto p = std::make_unique<AwqProcessor>(scheme_for, req.awq, std::move(processor));
    awq_processor = p.get();
    processor = std::move(p);
  } else if (req.method == "smoothquant") {
    processor = std::make_unique<SmoothQuantProcessor>(SmoothQuantOptions{req.alpha}, std::move(processor));
  }
  ActQuantProcessor* act_processor = nullptr;
  if (act_scheme != ActScheme::none) {
    auto p = std::make_unique<ActQuantProcessor>(act_scheme, req.act_observer, std::move(processor));
    act_processor = p.get();
    processor = std::move(p);
  }

  // Resume state.
  const std::string dir = resume_state_dir(req.output);
  const std::string state_path = (fs::path(dir) / "state.json").string();
  const std::string fp = fingerprint(req, ckpt, calib);
  const int layers = static_cast<int>(model.config().num_layers);
  int blocks_done = 0;
  std::vector<uint8_t> resumed_hidden;
  std::error_code ec;
  if (req.resume && fs::exists(state_path, ec)) {
    QFORGE_ASSIGN_OR_RETURN(std::string text, read_file(state_path));
    nlohmann::json st = nlohmann::json::parse(text, nullptr, false);
    if (st.is_discarded() || !st.is_object() || !st.contains("fingerprint") || !st.contains("blocks_done") ||
        !st.contains("hidden_sha256"))
      return parse_error(state_path + ": not a qforge resume state");
    if (st["fingerprint"] != fp)
      return invalid_argument(state_path + " belongs to a different run (input, scheme, method or calibration "
                              "changed); remove it or run without --resume");
    blocks_done = st["blocks_done"].get<int>();
    if (blocks_done < 1 || blocks_done > layers) return parse_error(state_path + ": bad blocks_done");
    for (int L = 0; L < blocks_done; ++L) {
      QFORGE_ASSIGN_OR_RETURN(PackedFile pf, PackedFile::open(block_file(dir, L)));
      for (const PackedTensorInfo& info : pf.quantized()) {
        QFORGE_ASSIGN_OR_RETURN(QuantizedTensor q, pf.load_quantized(info.name));
        const auto resolved = resolve_tensor_role(arch, info.name);
        if (!resolved) return resolved.status().with_context(block_file(dir, L));
        const LinearSite site{resolved->layer, resolved->role};
        QFORGE_RETURN_IF_ERROR(install_quantized(model, site, q));
        (*results)[site] = std::move(q);
      }
    }
    QFORGE_ASSIGN_OR_RETURN(resumed_hidden,
                            read_hidden(hidden_file(dir, blocks_done),
                                        static_cast<size_t>(calib.tokens_used() * model.config().hidden_size) *
                                            dtype_size(req.hidden_dtype),
                                        st["hidden_sha256"].get<std::string>()));
    std::fprintf(stderr, "resuming after block %d of %d from %s\n", blocks_done - 1, layers, dir.c_str());
  } else {
    if (req.resume) warn("--resume: no state at " + dir + "; starting from block 0");
    fs::remove_all(dir, ec);
  }
  fs::create_directories(dir, ec);
  if (ec) return io_error("cannot create " + dir + ": " + ec.message());

  Progress progress("quantize", layers - blocks_done, "blocks", progress_options());
  const int crash_at = crash_after_block();
  PipelineOptions po;
  po.batch_windows = req.batch_windows;
  po.hidden_dtype = req.hidden_dtype;
  po.on_block_done = [&](int layer, std::span<const uint8_t> hidden) -> Status {
    std::map<std::string, QuantizedTensor> block;
    for (const auto& [site, q] : *results)
      if (site.layer == layer) block[site_tensor_name(arch, site)] = q;
    QFORGE_RETURN_IF_ERROR(write_packed(block_file(dir, layer), block, {}));
    std::string sha;
    QFORGE_RETURN_IF_ERROR(write_hidden(hidden_file(dir, layer + 1), hidden, &sha));
    nlohmann::json st = {{"fingerprint", fp}, {"blocks_done", layer + 1}, {"hidden_sha256", sha}};
    QFORGE_RETURN_IF_ERROR(write_file_atomic(state_path, st.dump(2) + "\n"));
    fs::remove(hidden_file(dir, layer), ec);
    progress.tick();
    if (layer == crash_at) std::raise(SIGKILL);
    return Status::ok();
  };
  QFORGE_ASSIGN_OR_RETURN(std::unique_ptr<CalibrationPipeline> pipeline, CalibrationPipeline::create(model, calib, po));
  if (blocks_done > 0) QFORGE_RETURN_IF_ERROR(pipeline->start_at(blocks_done, std::move(resumed_hidden)));
  Status run = pipeline->run(*processor);
  progress.finish();
  if (!run) {
    if (run.code() == ErrorCode::cancelled)
      return Status::error(ErrorCode::cancelled, run.message() + " (finished blocks are kept in " + dir +
                                                     "; continue with --resume)");
    return run;
  }
  if (gptq_processor != nullptr)
    for (const auto& w : gptq_processor->warnings()) warn(w);
  if (awq_processor != nullptr && req.verbose)
    for (const auto& line : awq_processor->log()) std::fprintf(stderr, "awq: %s\n", line.c_str());
  // Norms the method folded scales into are written from the model, not the checkpoint.
  std::map<std::string, Tensor> folded;
  if (rewrites_block) {
    for (int L = 0; L < layers; ++L)
      for (auto [role, which] : {std::pair{TensorRole::attn_norm, Model::BlockNorm::attention},
                                 std::pair{TensorRole::mlp_norm, Model::BlockNorm::mlp}}) {
        for (bool bias : {false, true}) {
          std::span<float> v = bias ? model.norm_bias(L, which) : model.norm_weight(L, which);
          if (v.empty()) continue;
          auto name = tensor_name_for_role(arch, role, L, bias);
          if (!name || ckpt.find(*name) == nullptr) continue;
          folded[*name] = Tensor::from_f32({static_cast<int64_t>(v.size())}, std::vector<float>(v.begin(), v.end()));
        }
      }
  }
  std::string act_record;
  if (act_processor != nullptr) act_record = act_quant_record_to_json(act_processor->record());
  pipeline.reset();  // frees the calibration hidden states before writing

  // The output: quantized planes in selection order, then every other tensor as it was. Selected
  // weights outside the blocks (e.g. an untied output head) get plain round-to-nearest.
  if (req.format != "packed") {
    QFORGE_ASSIGN_OR_RETURN(HfQuantFormat hf_format, parse_hf_quant_format(req.format));
    std::map<std::string, QuantizedTensor> quantized;
    for (auto& [site, q] : *results) quantized[site_tensor_name(arch, site)] = q;
    std::map<std::string, Tensor> plain;
    for (const auto& name : ckpt.tensor_names()) {
      if (quantized.count(name)) continue;
      if (auto f = folded.find(name); f != folded.end()) {
        plain[name] = f->second;
      } else {
        QFORGE_ASSIGN_OR_RETURN(plain[name], ckpt.tensor(name));
      }
    }
    HfQuantExportOptions eo;
    eo.format = hf_format;
    std::error_code dir_ec;
    eo.source_dir = fs::is_directory(req.input, dir_ec) ? req.input : fs::path(req.input).parent_path().string();
    eo.desc_act = req.gptq.act_order && gptq;
    nlohmann::json meta = {{"method", req.method}};
    for (const auto& [k, v] : calib.metadata()) meta[k] = v;
    eo.qforge_metadata_json = meta.dump();
    if (!act_record.empty()) eo.metadata[kActQuantMetadataKey] = act_record;
    for (auto& [name, q] : quantized) {
      summary.quantized_tensors += 1;
      summary.quantized_elements += q.rows * q.cols;
      summary.quantized_bytes_out += q.nbytes();
      if (const auto* info = ckpt.find(name)) summary.quantized_bytes_in += info->end - info->begin;
    }
    QFORGE_ASSIGN_OR_RETURN(HfQuantExportSummary es, export_hf_quantized(req.output, quantized, plain, eo));
    if (es.zero_point_zero_groups > 0)
      warn(std::to_string(es.zero_point_zero_groups) + " groups have zero-point 0, stored by GPTQ v1 as 2^bits - 1 "
           "(qforge and GPTQModel read them back; exllama's v1 kernels do not)");
    summary.plain_tensors = es.plain;
    summary.output_bytes = es.bytes;
    fs::remove_all(dir, ec);
    summary.seconds = now_seconds() - start;
    return summary;
  }
  PackedWriter writer(req.output);
  std::string command = "qforge quantize " + shell_quote(req.input) + " --method " + req.method +
                        (act_scheme != ActScheme::none ? " --act-scheme " + req.act_scheme : std::string()) + " --scheme " +
                        req.scheme.name() + " --calib " + shell_quote(req.calib) + " --calib-windows " +
                        std::to_string(calib.windows) + " --calib-ctx " + std::to_string(calib.ctx) + " --seed " +
                        std::to_string(calib.seed);
  if (gptq) {
    command += " --damp " + format_fixed(req.gptq.damp, 4);
    if (req.gptq.act_order) command += " --act-order";
    if (!req.gptq.sequential) command += " --no-sequential";
  }
  if (req.selection.filter) command += " --filter " + shell_quote(req.selection.filter_pattern);
  if (req.selection.keep) command += " --keep " + shell_quote(req.selection.keep_pattern);
  writer.set_command(command);
  for (const auto& [k, v] : ckpt.metadata()) QFORGE_RETURN_IF_ERROR(writer.set_metadata(k, v));
  for (const auto& [k, v] : calib.metadata()) QFORGE_RETURN_IF_ERROR(writer.set_metadata(k, v));
  QFORGE_RETURN_IF_ERROR(writer.set_metadata("quantize.method", req.method));
  if (!act_record.empty()) QFORGE_RETURN_IF_ERROR(writer.set_metadata(kActQuantMetadataKey, act_record));
  if (gptq) {
    QFORGE_RETURN_IF_ERROR(writer.set_metadata("gptq.damp", format_fixed(req.gptq.damp, 6)));
    QFORGE_RETURN_IF_ERROR(writer.set_metadata("gptq.block_size", std::to_string(req.gptq.block_size)));
    QFORGE_RETURN_IF_ERROR(writer.set_metadata("gptq.act_order", req.gptq.act_order ? "true" : "false"));
    QFORGE_RETURN_IF_ERROR(writer.set_metadata("gptq.static_groups", req.gptq.act_order ? "true" : "false"));
    QFORGE_RETURN_IF_ERROR(writer.set_metadata("gptq.sequential", req.gptq.sequential ? "true" : "false"));
  }
  std::map<std::string, const QuantizedTensor*> by_name;
  for (const auto& [site, q] : *results) by_name[site_tensor_name(arch, site)] = &q;
  std::set<std::string> written;
  for (const auto& sel : selected) {
    const SafetensorsTensorInfo* info = ckpt.find(sel.name);
    auto it = by_name.find(sel.name);
    QuantizedTensor rtn;
    const QuantizedTensor* q = nullptr;
    if (it != by_name.end()) {
      q = it->second;
    } else if (!incompatible.count(sel.name)) {
      QFORGE_ASSIGN_OR_RETURN(WeightMatrix m, load_weight_matrix(ckpt, sel));
      if (Status v = validate_scheme(req.scheme, m.rows, m.cols); !v) {
        summary.kept_incompatible.push_back(sel.name + " (" + v.message() + ")");
        continue;
      }
      Expected<QuantizedTensor> r = quantize(req.scheme, m.data(), m.rows, m.cols);
      if (!r) return r.status().with_context(req.input + ": tensor '" + sel.name + "'");
      rtn = std::move(*r);
      q = &rtn;
      warn(sel.name + " is outside the transformer blocks: round-to-nearest");
    } else {
      continue;
    }
    QFORGE_RETURN_IF_ERROR(writer.add_quantized(sel.name, *q, info->dtype, sel.transposed));
    written.insert(sel.name);
    summary.quantized_tensors += 1;
    summary.quantized_elements += q->rows * q->cols;
    summary.quantized_bytes_in += info->end - info->begin;
    summary.quantized_bytes_out += q->nbytes();
  }
  for (const auto& name : ckpt.tensor_names()) {
    if (written.count(name)) continue;
    Tensor t;
    if (auto f = folded.find(name); f != folded.end()) {
      t = f->second;
    } else {
      QFORGE_ASSIGN_OR_RETURN(t, ckpt.tensor(name));
    }
    QFORGE_RETURN_IF_ERROR(writer.add_plain(name, t));
    summary.plain_tensors += 1;
  }
  QFORGE_RETURN_IF_ERROR(writer.finish());
  fs::remove_all(dir, ec);
  summary.output_bytes = fs::file_size(req.output, ec);
  summary.seconds = now_seconds() - start;
  return summary;
}

}  // namespace qforge::cli
