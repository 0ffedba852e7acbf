// qforge quantize --method rtn|gptq --calib FILE: the block-sequential pipeline (ptq.h) driven from
// the command line, with per-block state for --resume.
//
// Resume state, in "<out>.qforge-resume/" (every file written atomically):
//   block-NNN.safetensors  the quantized weights of block NNN (packed layout); for AWQ, SmoothQuant
//                          and --act-scheme also the block's norms, its unquantized linears and
//                          (metadata "act_scales") its static activation scales
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
  if (!req.site_scheme_fingerprint.empty()) j["site_schemes"] = req.site_scheme_fingerprint;
  j["act"] = {req.act_scheme, req.act_observer};
  if (req.method == "awq" || req.method == "awq+gptq")
    j["awq"] = {req.awq.grid, req.awq.clip, req.awq.clip_grid, req.awq.max_shrink};
  if (req.method == "smoothquant") j["alpha"] = req.alpha;
  if (req.method == "gptq" || req.method == "awq+gptq")
    j["gptq"] = {req.gptq.damp, req.gptq.block_size, req.gptq.act_order, req.gptq.sequential, req.gptq.mse_clip,
                 req.gptq.clip_grid, req.gptq.clip_max_shrink};
  // Appended only when set, so fingerprints of runs without the refit stay as they were.
  if ((req.method == "gptq" || req.method == "awq+gptq") && req.gptq.refit) j["gptq_refit_passes"] = req.gptq.refit_passes;
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

// What a block rewrite (AWQ / SmoothQuant folds, activation quantization) changed besides the
// quantized weights: the block's norms, its linears left unquantized (dense, with bias) and the
// static activation scales of its linears (metadata "act_scales": {"<weight name>": scale}).
Status save_block_state(Model& model, Architecture arch, int layer, const QuantizedSiteMap& results,
                        const ActQuantProcessor* act, std::map<std::string, Tensor>& plain,
                        std::map<std::string, std::string>& meta) {
  for (auto [role, which] : {std::pair{TensorRole::attn_norm, Model::BlockNorm::attention},
                             std::pair{TensorRole::mlp_norm, Model::BlockNorm::mlp}})
    for (bool bias : {false, true}) {
      std::span<float> v = bias ? model.norm_bias(layer, which) : model.norm_weight(layer, which);
      if (v.empty()) continue;
      auto name = tensor_name_for_role(arch, role, layer, bias);
      if (!name) continue;
      plain[*name] = Tensor::from_f32({static_cast<int64_t>(v.size())}, std::vector<float>(v.begin(), v.end()));
    }
  nlohmann::json scales = nlohmann::json::object();
  for (const auto& group : block_input_groups(model, layer))
    for (const LinearSite& site : group) {
      const std::string name = site_tensor_name(arch, site);
      if (act != nullptr) {
        auto it = act->record().scales.find(name);
        if (it != act->record().scales.end()) scales[name] = it->second;
      }
      if (results.count(site)) continue;
      // Unquantized: its dense weight as the block left it (the ActQuantLinear wrapper is
      // re-applied on resume, so the inner weight is what is saved).
      const Linear* lin = model.linear(site);
      if (lin == nullptr) continue;
      std::vector<float> w(static_cast<size_t>(lin->out_features() * lin->in_features()));
      lin->dense_weight(w.data());
      plain[name] = Tensor::from_f32({lin->out_features(), lin->in_features()}, w);
      if (!lin->bias().empty()) {
        auto bname = tensor_name_for_role(arch, site.role, site.layer, true);
        if (bname) plain[*bname] = Tensor::from_f32({static_cast<int64_t>(lin->bias().size())}, lin->bias());
      }
    }
  if (act != nullptr) meta["act_scales"] = scales.dump();
  return Status::ok();
}

Status restore_block_state(Model& model, Architecture arch, int layer, const PackedCheckpoint& pc,
                           ActQuantProcessor* act) {
  auto plain_f32 = [&](const std::string& name) -> Expected<std::optional<std::vector<float>>> {
    auto it = pc.plain.find(name);
    if (it == pc.plain.end()) return std::optional<std::vector<float>>{};
    QFORGE_ASSIGN_OR_RETURN(Tensor f, it->second.to_f32());
    const float* v = f.data_as<float>();
    return std::optional<std::vector<float>>(std::vector<float>(v, v + f.numel()));
  };
  for (auto [role, which] : {std::pair{TensorRole::attn_norm, Model::BlockNorm::attention},
                             std::pair{TensorRole::mlp_norm, Model::BlockNorm::mlp}})
    for (bool bias : {false, true}) {
      std::span<float> v = bias ? model.norm_bias(layer, which) : model.norm_weight(layer, which);
      auto name = tensor_name_for_role(arch, role, layer, bias);
      if (v.empty() || !name) continue;
      QFORGE_ASSIGN_OR_RETURN(auto saved, plain_f32(*name));
      if (!saved) continue;
      if (saved->size() != v.size()) return parse_error(*name + ": saved norm has the wrong size");
      std::copy(saved->begin(), saved->end(), v.begin());
    }
  std::map<std::string, float> scales;
  if (auto it = pc.metadata.find("act_scales"); it != pc.metadata.end()) {
    nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false);
    if (!j.is_object()) return parse_error("act_scales is not a JSON object");
    for (auto& [k, v] : j.items()) {
      if (!v.is_number()) return parse_error("act_scales: " + k + " is not a number");
      scales[k] = v.get<float>();
    }
  }
  for (const auto& group : block_input_groups(model, layer))
    for (const LinearSite& site : group) {
      const std::string name = site_tensor_name(arch, site);
      QFORGE_ASSIGN_OR_RETURN(auto w, plain_f32(name));
      if (w) {
        const Linear* lin = model.linear(site);
        if (lin == nullptr || static_cast<int64_t>(w->size()) != lin->out_features() * lin->in_features())
          return parse_error(name + ": saved weight has the wrong size");
        std::vector<float> bias = lin->bias();
        if (auto bname = tensor_name_for_role(arch, site.role, site.layer, true)) {
          QFORGE_ASSIGN_OR_RETURN(auto b, plain_f32(*bname));
          if (b) bias = *b;
        }
        QFORGE_ASSIGN_OR_RETURN(auto dense,
                                DenseLinear::create(Tensor::from_f32({lin->out_features(), lin->in_features()}, *w), bias));
        QFORGE_RETURN_IF_ERROR(model.replace_linear(site, std::move(dense)));
      }
      if (act != nullptr) {
        auto it = scales.find(name);
        QFORGE_RETURN_IF_ERROR(act->restore(model, site, name, it == scales.end() ? 0.0f : it->second));
      }
    }
  return Status::ok();
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
  // AWQ and SmoothQuant fold scales into norms (and AWQ into the producer linears), activation
  // quantization wraps the linears with recorded scales: the per-block resume state then also
  // holds the block's norms, its unquantized linears and its activation scales.
  const bool rewrites_block = req.method == "awq" || req.method == "awq+gptq" || req.method == "smoothquant" ||
                              act_scheme != ActScheme::none;
  const bool to_memory = req.quantized_out != nullptr;  // GGUF: results go to quantize_calibrated_gguf
  if (to_memory != (req.format == "gguf") || (to_memory && !req.site_scheme))
    return Status::error(ErrorCode::internal, "quantize_calibrated: GGUF output needs per-site schemes and a result map");
  if (req.format != "packed" && req.format != "gptq" && req.format != "awq" && req.format != "gguf")
    return invalid_argument("--format must be packed, gptq, awq or gguf for calibrated quantization");
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
    if (req.site_scheme) return req.site_scheme(site, rows, cols);
    const std::string name = site_tensor_name(arch, site);
    if (!selected_transposed.count(name)) return std::nullopt;
    if (Status v = validate_scheme(req.scheme, rows, cols); !v) {
      if (incompatible.insert(name).second) summary.kept_incompatible.push_back(name + " (" + v.message() + ")");
      return std::nullopt;
    }
    return req.scheme;
  };
  if (gptq && !req.site_scheme && !gptq_supports(req.scheme))
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
      QFORGE_ASSIGN_OR_RETURN(PackedCheckpoint pc, read_packed(block_file(dir, L)));
      for (auto& [name, q] : pc.quantized) {
        const auto resolved = resolve_tensor_role(arch, name);
        if (!resolved) return resolved.status().with_context(block_file(dir, L));
        const LinearSite site{resolved->layer, resolved->role};
        QFORGE_RETURN_IF_ERROR(install_quantized(model, site, q));
        (*results)[site] = std::move(q);
      }
      QFORGE_RETURN_IF_ERROR(restore_block_state(model, arch, L, pc, act_processor).with_context(block_file(dir, L)));
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
    std::map<std::string, Tensor> plain;
    std::map<std::string, std::string> meta;
    if (rewrites_block) QFORGE_RETURN_IF_ERROR(save_block_state(model, arch, layer, *results, act_processor, plain, meta));
    QFORGE_RETURN_IF_ERROR(write_packed(block_file(dir, layer), block, plain, {}, meta));
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
  // The windows are embedded: the embedding table and the output head (the largest tensors of a
  // small model; one f32 table when tied) are not needed again, since the output is written from
  // the checkpoint. This keeps the peak below 2x the model's f32 size (docs/ptq.md, "Memory").
  model.release_embedding_and_head();
  release_free_heap();
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

  if (to_memory) {
    for (auto& [site, q] : *results) {
      summary.quantized_tensors += 1;
      summary.quantized_elements += q.rows * q.cols;
      summary.quantized_bytes_out += q.nbytes();
      (*req.quantized_out)[site_tensor_name(arch, site)] = std::move(q);
    }
    if (req.dense_out != nullptr && rewrites_block) {
      // The writer quantizes what the pipeline did not from these values, not the checkpoint's:
      // a fold changed the norms and the columns / rows of every linear next to them.
      for (auto& [name, t] : folded) (*req.dense_out)[name] = std::move(t);
      for (int L = 0; L < layers; ++L)
        for (const auto& group : block_input_groups(model, L))
          for (const LinearSite& site : group) {
            const std::string name = site_tensor_name(arch, site);
            if (req.quantized_out->count(name)) continue;
            const Linear* lin = model.linear(site);
            std::vector<float> w(static_cast<size_t>(lin->out_features() * lin->in_features()));
            lin->dense_weight(w.data());
            (*req.dense_out)[name] = Tensor::from_f32({lin->out_features(), lin->in_features()}, w);
          }
    }
    fs::remove_all(dir, ec);
    summary.seconds = now_seconds() - start;
    return summary;
  }

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
    if (req.gptq.mse_clip) command += " --gptq-clip";
    if (req.gptq.refit) command += " --gptq-refit";
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
    if (req.gptq.refit) QFORGE_RETURN_IF_ERROR(writer.set_metadata("gptq.refit_passes", std::to_string(req.gptq.refit_passes)));
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

Status quantize_calibrated_gguf(const CalibratedQuantizeRequest& base, const GgufModelInput& input,
                                const GgufQuantizePlan& plan, GgufCalibratedTensors& out, GgufQuantizeOptions& options) {
  if (base.method == "smoothquant" || base.act_scheme != "none")
    return invalid_argument("--format gguf takes --method rtn, gptq, awq or awq+gptq (GGUF has no activation "
                            "quantization to store SmoothQuant's W8A8 in)");
  if (input.kind() == GgufInputKind::gguf)
    return invalid_argument("--calib with --format gguf needs an HF or safetensors input, not a GGUF file");
  // Block linears by (layer, role) -> their planned tensor.
  std::map<LinearSite, const GgufTensorPlan*> planned;
  std::map<std::string, const GgufInputTensor*> by_source;
  for (const GgufTensorPlan& p : plan.tensors) {
    const GgufInputTensor& t = input.tensors()[p.input_index];
    by_source[t.source_name] = &t;
    if (t.role.layer >= 0 && !t.role.is_bias && p.quantizable && !p.copy)
      planned[LinearSite{t.role.layer, t.role.role}] = &p;
  }
  const bool gptq = base.method == "gptq" || base.method == "awq+gptq";
  CalibratedQuantizeRequest req = base;
  std::map<std::string, QuantizedTensor> quantized;
  std::map<std::string, Tensor> dense;
  req.quantized_out = &quantized;
  req.dense_out = &dense;
  for (const auto& [site, p] : planned) req.site_scheme_fingerprint += p->name + "=" + ggml_type_name(p->type) + ";";
  req.site_scheme = [&planned, gptq](const LinearSite& site, int64_t rows, int64_t cols) -> std::optional<Scheme> {
    auto it = planned.find(site);
    if (it == planned.end() || find_format_by_gguf_type(static_cast<int>(it->second->type)) == nullptr)
      return std::nullopt;
    const Scheme s = gguf_type_scheme(it->second->type);
    if (!format_traits(s.format).blocks_in_codes || !validate_scheme(s, rows, cols)) return std::nullopt;
    if (gptq && !gptq_supports(s)) return std::nullopt;  // e.g. IQ4_NL: the writer's RTN
    return s;
  };
  QFORGE_ASSIGN_OR_RETURN(QuantizeSummary summary, quantize_calibrated(req));
  out.card_calibration = summary.card_calibration;
  // To GGUF names and row order (q/k rows are permuted for llama.cpp's RoPE layout).
  auto row_order = [](const GgufInputTensor& t) {
    std::vector<float> index(static_cast<size_t>(t.rows())), order(index.size());
    for (size_t i = 0; i < index.size(); ++i) index[i] = static_cast<float>(i);
    permute_qk_rows(index.data(), t.rows(), 1, t.permute_heads, order.data());
    return order;  // order[i]: source row of row i
  };
  for (auto& [name, q] : quantized) {
    auto it = by_source.find(name);
    if (it == by_source.end()) return Status::error(ErrorCode::internal, name + " is not in the GGUF plan");
    const GgufInputTensor& t = *it->second;
    if (t.permute_heads > 0) {
      const size_t rb = q.codes.size() / static_cast<size_t>(q.rows);
      std::vector<uint8_t> codes(q.codes.size());
      const std::vector<float> order = row_order(t);
      for (int64_t r = 0; r < q.rows; ++r)
        std::memcpy(codes.data() + static_cast<size_t>(r) * rb,
                    q.codes.data() + static_cast<size_t>(order[static_cast<size_t>(r)]) * rb, rb);
      q.codes.swap(codes);
    }
    out.quantized[t.name] = std::move(q);
  }
  for (auto& [name, tensor] : dense) {
    auto it = by_source.find(name);
    if (it == by_source.end()) return Status::error(ErrorCode::internal, name + " is not in the GGUF plan");
    const GgufInputTensor& t = *it->second;
    QFORGE_ASSIGN_OR_RETURN(Tensor f, tensor.to_f32());
    const float* v = f.data_as<float>();
    std::vector<float> values(v, v + f.numel());
    if (t.permute_heads > 0) {
      std::vector<float> permuted(values.size());
      permute_qk_rows(values.data(), t.rows(), t.cols(), t.permute_heads, permuted.data());
      values.swap(permuted);
    }
    out.f32[t.name] = std::move(values);
  }
  options.prequantized = &out.quantized;
  options.replaced_f32 = &out.f32;
  std::printf("%s: %lld block linears quantized on calibration data (%s), %zu tensors rewritten, in %s\n",
              base.method.c_str(), static_cast<long long>(summary.quantized_tensors), base.calib.c_str(),
              out.f32.size(), format_seconds(summary.seconds).c_str());
  std::fflush(stdout);
  return Status::ok();
}

}  // namespace qforge::cli
