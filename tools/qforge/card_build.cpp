// The quantization card of each quantize path (card_build.h).
#include "card_build.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <set>

#include "cli_common.h"
#include "cli_model.h"
#include "commands.h"
#include "quantize_calibrated.h"
#include "qforge/atomic_file.h"
#include "qforge/eval.h"
#include "qforge/gguf.h"
#include "qforge/gguf_quantize.h"
#include "qforge/hf_quant.h"
#include "qforge/model.h"
#include "qforge/packed.h"
#include "qforge/sha256.h"

namespace qforge::cli {
namespace fs = std::filesystem;

void add_card_options(CLI::App* cmd, CardRequest* r) {
  CLI::Option* eval = cmd->add_option("--card-eval", r->eval_text,
                  "Text file on which the quantization card records perplexity and KLD of the output against the "
                  "source (qforge-ppl-v1 protocol); without it the card says these were not measured");
  cmd->add_option("--card-ctx", r->eval_ctx, "[card] Tokens per evaluation window (default 512)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->needs(eval);
  cmd->add_option("--card-windows", r->eval_windows, "[card] Evaluate only the first N windows (default: all)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->needs(eval);
}

namespace {

std::string kind_name(ModelFileKind kind) {
  switch (kind) {
    case ModelFileKind::hf_directory: return "hf-directory";
    case ModelFileKind::safetensors: return "safetensors";
    case ModelFileKind::llama2c: return "llama2c";
    case ModelFileKind::gguf: return "gguf";
    case ModelFileKind::packed: return "safetensors";
  }
  return "safetensors";
}

// The files a model was read from: an HF directory's config.json, shard index and shards (other
// files in the directory are not inputs), or the file itself; plus `extra` files that exist
// (a tokenizer that was used), each once.
Expected<std::vector<CardFile>> source_files(const std::string& path, const std::vector<std::string>& extra) {
  std::vector<std::string> paths;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const char* name : {"config.json", "model.safetensors.index.json"}) {
      const std::string p = (fs::path(path) / name).string();
      if (fs::exists(p, ec)) paths.push_back(p);
    }
    QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::open(path));
    for (const auto& f : ckpt.files()) paths.push_back(f.path());
  } else {
    paths.push_back(path);
  }
  for (const std::string& e : extra)
    if (!e.empty() && fs::exists(e, ec) && std::find(paths.begin(), paths.end(), e) == paths.end()) paths.push_back(e);
  return describe_files(paths);
}

void fill_source_files(Card& card, std::vector<CardFile> files) {
  card.source.total_bytes = 0;
  for (const auto& f : files) card.source.total_bytes += f.bytes;
  card.source.files = std::move(files);
}

void fill_tool(Card& card, std::optional<uint64_t> seed) {
  card.tool.version = QFORGE_VERSION;
  card.tool.command = command_line();
  card.tool.seed = seed;
  card.tool.machine = card_machine();
}

CardScheme scheme_card(const Scheme& s) {
  const FormatTraits& f = format_traits(s.format);
  CardScheme c;
  c.name = s.name();
  c.family = f.name;
  c.bits = s.bits;
  c.granularity = s.granularity == Granularity::tensor ? "tensor" : s.granularity == Granularity::channel ? "channel" : "group";
  c.group_size = s.granularity == Granularity::group ? s.group_size : 0;
  c.symmetric = !f.zero_point;
  return c;
}

// Role and layer of an HF tensor name (role "other" when the architecture does not name it).
void resolve_role(CardTensor& t, std::optional<Architecture> arch) {
  t.role = "other";
  t.layer = -1;
  if (!arch) return;
  auto r = resolve_tensor_role(*arch, t.name);
  if (!r) return;
  t.role = std::string(tensor_role_name(r->role)) + (r->is_bias ? ".bias" : "");
  t.layer = r->layer;
}

// Output summary from the tensors, once they are filled.
Status finish_output(Card& card, const std::string& output, const std::string& format) {
  card.output.path = output;
  card.output.format = format;
  QFORGE_ASSIGN_OR_RETURN(card.output.files, describe_path(card_base_path(output)));
  card.output.total_bytes = 0;
  for (const auto& f : card.output.files) card.output.total_bytes += f.bytes;
  uint64_t tensor_bytes = 0, qbytes = 0;
  int64_t qparams = 0;
  for (const CardTensor& t : card.tensors) {
    tensor_bytes += t.bytes;
    if (t.quantized) {
      qbytes += t.bytes;
      qparams += t.numel();
    }
  }
  card.output.tensor_bytes = tensor_bytes;
  card.output.bits_per_weight =
      card.source.parameters > 0 ? 8.0 * static_cast<double>(tensor_bytes) / static_cast<double>(card.source.parameters) : 0;
  card.output.quantized_bits_per_weight = qparams > 0 ? 8.0 * static_cast<double>(qbytes) / static_cast<double>(qparams) : 0;
  card.output.size_ratio = card.output.total_bytes > 0 ? static_cast<double>(card.source.total_bytes) /
                                                             static_cast<double>(card.output.total_bytes)
                                                       : 0;
  return Status::ok();
}

// --card-eval: the output against the source on the text.
Status measure_evaluation(Card& card, const std::string& source, const std::string& output, bool output_needs_config,
                          const CardRequest& req) {
  if (req.eval_text.empty()) {
    card.evaluation.measured = false;
    card.evaluation.reason = "not requested (quantize --card-eval TEXT measures perplexity and KLD against the source)";
    return Status::ok();
  }
  QFORGE_ASSIGN_OR_RETURN(std::string text, read_file(req.eval_text));
  if (text.empty()) return invalid_argument("--card-eval " + req.eval_text + ": the file is empty");
  ModelSpec src;
  src.path = source;
  src.tokenizer = req.tokenizer;
  QFORGE_ASSIGN_OR_RETURN(LoadedModel source_model, load_cli_model(src, "source model"));
  QFORGE_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, load_cli_tokenizer(src, source_model));
  ModelSpec out;
  out.path = output;
  if (output_needs_config) {
    std::error_code ec;
    out.config = fs::is_directory(source, ec) ? source : fs::path(source).parent_path().string();
  }
  QFORGE_ASSIGN_OR_RETURN(LoadedModel output_model, load_cli_model(out, "quantized model"));
  EncodeOptions enc;
  const std::vector<int32_t> ids = tok->encode(text, enc);
  const int64_t bos = tok->adds_bos() && tok->bos_id() ? *tok->bos_id() : -1;
  Expected<EvalWindows> windows = make_eval_windows(ids, bos, req.eval_ctx, req.eval_text);
  if (!windows) return windows.status().with_context("--card-eval / --card-ctx");
  windows->text_sha256 = sha256_hex(text);
  EvalOptions eo;
  eo.max_windows = req.eval_windows;
  eo.should_stop = [] { return check_interrupted("card evaluation"); };
  std::fprintf(stderr, "card: evaluating %s against %s on %s (ctx %lld)\n", output.c_str(), source.c_str(),
               req.eval_text.c_str(), static_cast<long long>(req.eval_ctx));
  EvalReference ref;
  ref.model = &source_model.model;
  QFORGE_ASSIGN_OR_RETURN(EvalReport r, evaluate(output_model.model, *windows, eo, ref));
  if (!r.kld) return Status::error(ErrorCode::internal, "evaluation returned no KLD statistics");
  QFORGE_ASSIGN_OR_RETURN(std::vector<CardFile> tf, describe_files({req.eval_text}));
  fill_card_evaluation(card.evaluation, r, tf.front());
  return Status::ok();
}

}  // namespace

void fill_card_evaluation(CardEvaluation& e, const EvalReport& r, const CardFile& text) {
  e.measured = true;
  e.reason.clear();
  e.text = text;
  e.protocol = r.protocol;
  e.ctx = r.ctx;
  e.windows = r.windows;
  e.windows_total = r.windows_total;
  e.tokens_scored = r.ppl.tokens_scored;
  e.ppl = r.ppl.ppl;
  e.ppl_source = r.kld->reference.ppl;
  e.ln_ppl_ratio = r.kld->ln_ppl_ratio;
  e.kld_mean = r.kld->kld.mean;
  e.kld_median = r.kld->kld.median;
  e.kld_p90 = r.kld->kld.p90;
  e.kld_p99 = r.kld->kld.p99;
  e.kld_max = r.kld->kld.max;
  e.top1_agreement = r.kld->top1_agreement;
  e.delta_p_rms = r.kld->delta_p_rms;
}

namespace {

Status write_and_report(Card& card, const std::string& output) {
  card.speed.measured = false;
  card.speed.reason = "not measured by quantize (qforge bench or a sweep measures speed)";
  const std::string base = card_base_path(output);
  QFORGE_RETURN_IF_ERROR(write_card_files(card, base));
  std::printf("card: %s.card.{json,md,html}\n", base.c_str());
  return Status::ok();
}

// Why a safetensors-path tensor that is not quantized was kept.
void kept_reason(CardTensor& t, const Selection& sel, const std::vector<std::string>& incompatible) {
  const std::string prefix = t.name + " (";
  for (const auto& k : incompatible)
    if (k.rfind(prefix, 0) == 0) {
      t.reason_kind = "incompatible";
      t.reason = "the scheme cannot represent this shape: " + k.substr(prefix.size(), k.size() - prefix.size() - 1);
      return;
    }
  if (sel.keep && std::regex_search(t.name, *sel.keep)) {
    t.reason_kind = "keep-regex";
    t.reason = "matches --keep '" + sel.keep_pattern + "'";
    return;
  }
  if (t.shape.size() < 2) {
    t.reason_kind = "non-weight";
    t.reason = "1-D tensor (norm or bias): stored as it was";
    return;
  }
  t.reason_kind = "not-selected";
  t.reason = sel.filter ? "not matched by --filter '" + sel.filter_pattern + "'"
                        : "role " + t.role + " is not quantized by default (embeddings and the output head keep their dtype)";
}

// One tensor of a safetensors-based output, for the error pass. Quantized tensors of a packed
// file are loaded from it one at a time while measuring (`packed`), not all up front: the card
// must not raise the quantize command's peak memory.
struct OutputEntry {
  CardTensor card;
  const QuantizedTensor* q = nullptr;  // quantized and already in memory (else packed or plain)
  const PackedFile* packed = nullptr;  // quantized: load card.name from this file
  bool transposed = false;
  Tensor plain;                // plain output tensor
  bool measure = true;         // false: error filled already
};

// Rows [r0, r1) of a quantized tensor whose planes are row-major (per-row or per-group scales,
// or one per-tensor scale); nullopt when the layout does not split by rows (format extras).
std::optional<QuantizedTensor> slice_quantized_rows(const QuantizedTensor& q, int64_t r0, int64_t r1) {
  if (!q.extra.empty() || r0 < 0 || r1 > q.rows || r0 >= r1) return std::nullopt;
  const PlaneSizes all = scheme_plane_sizes(q.scheme, q.rows, q.cols);
  const PlaneSizes one = scheme_plane_sizes(q.scheme, 1, q.cols);
  const PlaneSizes part = scheme_plane_sizes(q.scheme, r1 - r0, q.cols);
  if (q.codes.size() != all.codes || q.scales.size() != all.scales || q.zeros.size() != all.zeros) return std::nullopt;
  QuantizedTensor out;
  out.scheme = q.scheme;
  out.rows = r1 - r0;
  out.cols = q.cols;
  auto slice = [&](const std::vector<uint8_t>& plane, size_t total, size_t per_row, size_t want,
                   std::vector<uint8_t>& dst) {
    if (total == 0) return want == 0;
    if (total == per_row * static_cast<size_t>(q.rows) && want == per_row * static_cast<size_t>(r1 - r0)) {
      dst.assign(plane.begin() + static_cast<std::ptrdiff_t>(per_row * static_cast<size_t>(r0)),
                 plane.begin() + static_cast<std::ptrdiff_t>(per_row * static_cast<size_t>(r1)));
      return true;
    }
    if (total == per_row && want == total) {  // one value for the whole tensor
      dst = plane;
      return true;
    }
    return false;
  };
  if (!slice(q.codes, all.codes, one.codes, part.codes, out.codes) ||
      !slice(q.scales, all.scales, one.scales, part.scales, out.scales) ||
      !slice(q.zeros, all.zeros, one.zeros, part.zeros, out.zeros))
    return std::nullopt;
  return out;
}

// Rows per measuring step: about 1M elements, so a tensor's f32 copies stay a few MB.
int64_t chunk_rows(int64_t cols) { return std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, cols)); }

// Error of a quantized output tensor against the source, in row chunks where the layout allows.
Expected<WeightError> measure_quantized(const OutputEntry& e, const QuantizedTensor& q, const SafetensorsCheckpoint& ckpt) {
  QFORGE_ASSIGN_OR_RETURN(Tensor st, ckpt.tensor(e.card.name));
  const bool chunked = !e.transposed && st.ndim() == 2 && st.dim(0) == q.rows && st.dim(1) == q.cols &&
                       slice_quantized_rows(q, 0, 1).has_value();
  if (!chunked) {
    SelectedTensor sel{e.card.name, e.transposed};
    QFORGE_ASSIGN_OR_RETURN(WeightMatrix src, load_weight_matrix(ckpt, sel));
    if (src.rows != q.rows || src.cols != q.cols)
      return Status::error(ErrorCode::internal, e.card.name + ": output shape differs from the source");
    std::vector<float> deq(static_cast<size_t>(q.rows * q.cols));
    QFORGE_RETURN_IF_ERROR(dequantize(q, deq.data()));
    return measure_weight_error(src.data(), deq.data(), q.rows * q.cols);
  }
  WeightError total;
  const int64_t step = chunk_rows(q.cols);
  std::vector<float> deq;
  for (int64_t r0 = 0; r0 < q.rows; r0 += step) {
    const int64_t r1 = std::min(q.rows, r0 + step);
    const std::optional<QuantizedTensor> part = slice_quantized_rows(q, r0, r1);
    if (!part) return Status::error(ErrorCode::internal, e.card.name + ": rows do not slice");
    deq.resize(static_cast<size_t>((r1 - r0) * q.cols));
    QFORGE_RETURN_IF_ERROR(dequantize(*part, deq.data()));
    QFORGE_ASSIGN_OR_RETURN(Tensor src, st.slice_rows(r0, r1).to_f32());
    total.add(measure_weight_error(src.data_as<float>(), deq.data(), (r1 - r0) * q.cols));
  }
  return total;
}

// Error of a plain output tensor against the source (row chunks for 2-D tensors).
Expected<WeightError> measure_plain(const OutputEntry& e, const SafetensorsCheckpoint& ckpt) {
  QFORGE_ASSIGN_OR_RETURN(Tensor st, ckpt.tensor(e.card.name));
  if (st.numel() != e.plain.numel())
    return Status::error(ErrorCode::internal, e.card.name + ": output size differs from the source");
  if (st.ndim() != 2 || e.plain.ndim() != 2 || st.dim(0) != e.plain.dim(0)) {
    QFORGE_ASSIGN_OR_RETURN(Tensor sf, st.to_f32());
    QFORGE_ASSIGN_OR_RETURN(Tensor of, e.plain.to_f32());
    return measure_weight_error(sf.data_as<float>(), of.data_as<float>(), sf.numel());
  }
  WeightError total;
  const int64_t rows = st.dim(0), step = chunk_rows(st.dim(1));
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    const int64_t r1 = std::min(rows, r0 + step);
    QFORGE_ASSIGN_OR_RETURN(Tensor sf, st.slice_rows(r0, r1).to_f32());
    QFORGE_ASSIGN_OR_RETURN(Tensor of, e.plain.slice_rows(r0, r1).to_f32());
    total.add(measure_weight_error(sf.data_as<float>(), of.data_as<float>(), sf.numel()));
  }
  return total;
}

// Measures every entry's error against the source checkpoint (parallel over tensors; each one in
// row chunks, so memory stays bounded by a few MB per thread plus one quantized tensor).
Status measure_entries(std::vector<OutputEntry>& entries, const SafetensorsCheckpoint& ckpt) {
  const int64_t n = static_cast<int64_t>(entries.size());
  std::vector<Status> status(entries.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    OutputEntry& e = entries[static_cast<size_t>(i)];
    if (!e.measure) continue;
    auto run = [&]() -> Status {
      QFORGE_RETURN_IF_ERROR(check_interrupted("card"));
      if (e.packed != nullptr) {
        QFORGE_ASSIGN_OR_RETURN(QuantizedTensor q, e.packed->load_quantized(e.card.name));
        QFORGE_ASSIGN_OR_RETURN(e.card.error, measure_quantized(e, q, ckpt));
      } else if (e.q != nullptr) {
        QFORGE_ASSIGN_OR_RETURN(e.card.error, measure_quantized(e, *e.q, ckpt));
      } else {
        QFORGE_ASSIGN_OR_RETURN(e.card.error, measure_plain(e, ckpt));
      }
      return Status::ok();
    };
    status[static_cast<size_t>(i)] = run();
  }
  for (size_t i = 0; i < status.size(); ++i)
    if (!status[i]) return status[i].with_context("card: tensor '" + entries[i].card.name + "'");
  return Status::ok();
}

void fill_source_checkpoint(Card& card, const SafetensorsCheckpoint& ckpt, const std::string& input,
                            std::optional<Architecture> arch) {
  card.source.path = input;
  std::error_code ec;
  card.source.kind = fs::is_directory(input, ec) ? "hf-directory" : "safetensors";
  card.source.architecture = arch ? architecture_name(*arch) : "unknown";
  card.source.parameters = 0;
  int max_layer = -1;
  for (const auto& name : ckpt.tensor_names()) {
    card.source.parameters += shape_numel(ckpt.find(name)->shape);
    if (arch)
      if (auto r = resolve_tensor_role(*arch, name)) max_layer = std::max(max_layer, r->layer);
  }
  card.source.layers = max_layer + 1;
}

std::vector<std::string> natural_names(const SafetensorsCheckpoint& ckpt) {
  std::vector<std::string> names = ckpt.tensor_names();
  std::stable_sort(names.begin(), names.end(), natural_less);
  return names;
}

CardTensor source_tensor(const SafetensorsCheckpoint& ckpt, const std::string& name, std::optional<Architecture> arch) {
  const SafetensorsTensorInfo* info = ckpt.find(name);
  CardTensor t;
  t.name = name;
  t.shape = info->shape;
  t.source_dtype = dtype_name(info->dtype);
  t.source_bytes = info->end - info->begin;
  resolve_role(t, arch);
  return t;
}

std::optional<Architecture> optional_architecture(const SafetensorsCheckpoint& ckpt) {
  auto a = checkpoint_architecture(ckpt);
  return a ? std::optional<Architecture>(*a) : std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// packed (RTN)

Status write_packed_quantize_card(const QuantizeRequest& req, const QuantizeSummary& summary, const CardRequest& creq) {
  Card card;
  QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::open(req.input));
  const std::optional<Architecture> arch = optional_architecture(ckpt);
  fill_source_checkpoint(card, ckpt, req.input, arch);
  QFORGE_ASSIGN_OR_RETURN(std::vector<CardFile> files, source_files(req.input, {}));
  fill_source_files(card, std::move(files));
  fill_tool(card, std::nullopt);
  card.scheme = scheme_card(req.scheme);
  card.method.name = "rtn";
  card.method.filter = req.selection.filter_pattern;
  card.method.keep = req.selection.keep_pattern;

  QFORGE_ASSIGN_OR_RETURN(PackedFile pf, PackedFile::open(req.output));
  std::vector<OutputEntry> entries;
  for (const std::string& name : natural_names(ckpt)) {
    OutputEntry e;
    e.card = source_tensor(ckpt, name, arch);
    if (const PackedTensorInfo* info = pf.find_quantized(name)) {
      e.packed = &pf;
      e.transposed = info->transposed;
      e.card.quantized = true;
      e.card.type = info->scheme.name();
      e.card.bytes = info->nbytes;
      e.card.bits_per_weight = info->bits_per_weight();
      e.card.reason_kind = "scheme";
      e.card.reason = "the requested scheme (round-to-nearest)";
    } else {
      QFORGE_ASSIGN_OR_RETURN(e.plain, pf.plain(name));
      e.card.type = dtype_name(e.plain.dtype());
      e.card.bytes = e.plain.nbytes();
      e.card.bits_per_weight = 8.0 * static_cast<double>(e.card.bytes) / static_cast<double>(std::max<int64_t>(1, e.card.numel()));
      kept_reason(e.card, req.selection, summary.kept_incompatible);
    }
    entries.push_back(std::move(e));
  }
  QFORGE_RETURN_IF_ERROR(measure_entries(entries, ckpt));
  for (auto& e : entries) card.tensors.push_back(std::move(e.card));
  for (const auto& k : summary.kept_incompatible) card.notes.push_back("kept unquantized: " + k);
  QFORGE_RETURN_IF_ERROR(finish_output(card, req.output, "qforge-packed"));
  QFORGE_RETURN_IF_ERROR(measure_evaluation(card, req.input, req.output, true, creq));
  return write_and_report(card, req.output);
}

namespace {

bool rescales_weights(const std::string& method) {
  return method == "awq" || method == "awq+gptq" || method == "smoothquant";
}

void describe_calibrated_method(CardMethod& m, const CalibratedQuantizeRequest& req) {
  m.name = req.method;
  m.filter = req.selection.filter_pattern;
  m.keep = req.selection.keep_pattern;
  const bool gptq = req.method == "gptq" || req.method == "awq+gptq";
  const bool awq = req.method == "awq" || req.method == "awq+gptq";
  m.error_reference = rescales_weights(req.method) ? "rescaled" : "source";
  if (gptq)
    m.gptq = CardGptq{req.gptq.damp,       req.gptq.block_size, req.gptq.act_order,
                      req.gptq.act_order,  req.gptq.sequential, req.gptq.mse_clip,
                      req.gptq.refit ? int64_t{req.gptq.refit_passes} : 0};
  if (awq) m.awq = CardAwq{req.awq.grid, req.awq.clip, req.awq.clip_grid, req.awq.max_shrink};
  if (req.method == "smoothquant") m.smoothquant_alpha = req.alpha;
  if (req.act_scheme != "none" && !req.act_scheme.empty())
    m.activations = CardActivations{req.act_scheme, req.act_scheme.find("static") != std::string::npos ? req.act_observer : ""};
  m.batch_windows = req.batch_windows;
  m.hidden_dtype = dtype_name(req.hidden_dtype);
}

}  // namespace

void describe_calibrated_gguf(Card& card, const CalibratedQuantizeRequest& req, const GgufCalibratedTensors& result) {
  std::optional<CardGguf> gguf = card.method.gguf;
  describe_calibrated_method(card.method, req);
  card.method.gguf = gguf;
  card.tool.seed = req.calib_options.seed;
  card.calibration = result.card_calibration;
  if (rescales_weights(req.method)) {
    // The GGUF card compares the written weights with the source's; the method's exact rescaling
    // is part of that difference.
    card.method.error_reference = "source";
    card.notes.push_back("the per-tensor errors compare the written weights with the source weights, which " + req.method +
                         " rescaled per channel (an exact fold, compensated in the norms): they are not pure "
                         "quantization errors; the KLD against the source (--card-eval) measures the end-to-end effect");
  }
}

// ---------------------------------------------------------------------------------------------
// calibrated (rtn / gptq / awq / awq+gptq / smoothquant; packed, gptq or awq output)

Status write_calibrated_quantize_card(const CalibratedQuantizeRequest& req, const QuantizeSummary& summary,
                                      const CardRequest& creq) {
  Card card;
  QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::open(req.input));
  const std::optional<Architecture> arch = optional_architecture(ckpt);
  fill_source_checkpoint(card, ckpt, req.input, arch);
  QFORGE_ASSIGN_OR_RETURN(std::vector<CardFile> files, source_files(req.input, {req.tokenizer}));
  fill_source_files(card, std::move(files));
  fill_tool(card, req.calib_options.seed);
  card.scheme = scheme_card(req.scheme);
  describe_calibrated_method(card.method, req);
  const bool rescaled = card.method.error_reference == "rescaled";
  if (summary.card_calibration) card.calibration = *summary.card_calibration;

  std::vector<OutputEntry> entries;
  std::optional<HfQuantCheckpoint> hf;
  std::optional<PackedFile> pf;
  std::optional<SafetensorsCheckpoint> hf_files;
  if (req.format == "packed") {
    QFORGE_ASSIGN_OR_RETURN(PackedFile f, PackedFile::open(req.output));
    pf = std::move(f);
  } else {
    QFORGE_ASSIGN_OR_RETURN(HfQuantCheckpoint h, read_hf_quantized(req.output));
    hf = std::move(h);
    QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint s, SafetensorsCheckpoint::open(req.output));
    hf_files = std::move(s);
  }
  const std::string method_text = req.method == "rtn" ? "round-to-nearest" : req.method;
  for (const std::string& name : natural_names(ckpt)) {
    OutputEntry e;
    e.card = source_tensor(ckpt, name, arch);
    bool quantized = false;
    if (pf) {
      if (const PackedTensorInfo* info = pf->find_quantized(name)) {
        e.packed = &*pf;
        e.transposed = info->transposed;
        e.card.bytes = info->nbytes;
        quantized = true;
      } else {
        QFORGE_ASSIGN_OR_RETURN(e.plain, pf->plain(name));
      }
    } else if (auto it = hf->quantized.find(name); it != hf->quantized.end()) {
      e.q = &it->second;  // hf holds the output's tensors while the card is built
      // Bytes as stored in the HF layout (qweight, qzeros, scales, g_idx).
      const std::string prefix = name.size() > 7 ? name.substr(0, name.size() - 7) : name;  // drop ".weight"
      for (const char* suffix : {".qweight", ".qzeros", ".scales", ".g_idx"})
        if (const SafetensorsTensorInfo* info = hf_files->find(prefix + suffix)) e.card.bytes += info->end - info->begin;
      quantized = true;
    } else if (auto p = hf->plain.find(name); p != hf->plain.end()) {
      e.plain = p->second;
    } else {
      return Status::error(ErrorCode::internal, "card: tensor '" + name + "' is missing from " + req.output);
    }
    if (quantized) {
      e.card.quantized = true;
      e.card.type = req.scheme.name();
      e.card.bits_per_weight = 8.0 * static_cast<double>(e.card.bytes) / static_cast<double>(std::max<int64_t>(1, e.card.numel()));
      e.card.reason_kind = "scheme";
      e.card.reason = "the requested scheme (" + (e.card.layer < 0 ? "round-to-nearest: outside the transformer blocks" : method_text) + ")";
      if (auto r = summary.weight_errors.find(name); r != summary.weight_errors.end()) {
        e.card.error = r->second;
        e.card.error_note = "against the rescaled weight";
        e.measure = false;
      }
    } else {
      e.card.type = dtype_name(e.plain.dtype());
      e.card.bytes = e.plain.nbytes();
      e.card.bits_per_weight = 8.0 * static_cast<double>(e.card.bytes) / static_cast<double>(std::max<int64_t>(1, e.card.numel()));
      kept_reason(e.card, req.selection, summary.kept_incompatible);
    }
    entries.push_back(std::move(e));
  }
  QFORGE_RETURN_IF_ERROR(measure_entries(entries, ckpt));
  for (auto& e : entries) {
    // A norm the method divided by its scales differs from the source by the exact fold.
    if (rescaled && !e.card.quantized && e.card.error && e.card.error->noise > 0)
      e.card.error_note = "rescaled by the method's exact scale fold (not a quantization error)";
    card.tensors.push_back(std::move(e.card));
  }
  for (const auto& k : summary.kept_incompatible) card.notes.push_back("kept unquantized: " + k);
  if (rescaled)
    card.notes.push_back("weight-space errors of the linears are measured against the weights after " + req.method +
                         " folded its per-channel scales (what the quantizer received), not the source weights; the "
                         "KLD against the source (--card-eval) measures the end-to-end effect");
  QFORGE_RETURN_IF_ERROR(finish_output(card, req.output, req.format == "packed" ? "qforge-packed" : req.format));
  CardRequest eval = creq;
  if (eval.tokenizer.empty()) eval.tokenizer = req.tokenizer;
  QFORGE_RETURN_IF_ERROR(measure_evaluation(card, req.input, req.output, req.format == "packed", eval));
  return write_and_report(card, req.output);
}

// ---------------------------------------------------------------------------------------------
// GGUF presets

Status write_gguf_quantize_card(const GgufQuantizeRequest& req, const GgufModelInput& input,
                                const GgufQuantizePlan& plan, const GgufQuantizeOptions& o, const CardRequest& creq) {
  Card card;
  card.source.path = req.input;
  QFORGE_ASSIGN_OR_RETURN(ModelFileKind kind, detect_model_file(req.input));
  card.source.kind = kind_name(kind);
  card.source.architecture = architecture_name(input.architecture());
  card.source.layers = input.config().num_layers;
  for (const auto& t : input.tensors()) card.source.parameters += t.numel();
  // The tokenizer GGUF conversion read for the vocabulary (default: tokenizer.model beside config.json).
  std::string tokenizer = req.input_options.tokenizer;
  if (tokenizer.empty() && !req.input_options.no_vocab && kind == ModelFileKind::hf_directory)
    tokenizer = (fs::path(req.input) / "tokenizer.model").string();
  QFORGE_ASSIGN_OR_RETURN(std::vector<CardFile> files,
                          source_files(req.input, {tokenizer}));
  fill_source_files(card, std::move(files));
  fill_tool(card, std::nullopt);
  card.method.name = "gguf-preset";
  CardGguf g;
  g.preset = o.preset->name;
  g.default_type = ggml_type_name(o.preset->default_type);
  g.pure = o.pure;
  g.allow_fallback = o.allow_fallback;
  for (const auto& ov : o.overrides) g.overrides.push_back(ov.pattern + "=" + ggml_type_name(ov.type) + " (" + ov.origin + ")");
  if (o.output_tensor_type) g.output_tensor_type = ggml_type_name(*o.output_tensor_type);
  if (o.token_embedding_type) g.token_embedding_type = ggml_type_name(*o.token_embedding_type);
  if (!req.imatrix.empty()) {
    QFORGE_ASSIGN_OR_RETURN(std::vector<CardFile> im, describe_files({req.imatrix}));
    g.imatrix = im.front();
  }
  card.method.gguf = g;
  if (req.describe_calibration) req.describe_calibration(card);

  // The written file, read back through the same loader (dequantizing through the format table).
  QFORGE_ASSIGN_OR_RETURN(GgufModelInput out, GgufModelInput::open(req.output));
  std::map<std::string, size_t> out_index;
  for (size_t i = 0; i < out.tensors().size(); ++i) out_index[out.tensors()[i].name] = i;
  card.tensors.resize(plan.tensors.size());
  std::vector<Status> status(plan.tensors.size());
  const int64_t n = static_cast<int64_t>(plan.tensors.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    const GgufTensorPlan& p = plan.tensors[static_cast<size_t>(i)];
    const GgufInputTensor& it = input.tensors()[p.input_index];
    CardTensor& t = card.tensors[static_cast<size_t>(i)];
    t.name = p.name;
    t.role = std::string(tensor_role_name(it.role.role)) + (it.role.is_bias ? ".bias" : "");
    t.layer = it.role.layer;
    t.shape = p.shape;
    t.source_dtype = ggml_type_name(p.source_type);
    t.type = ggml_type_name(p.type);
    t.quantized = ggml_type_info(p.type).quantized;
    t.bytes = p.nbytes;
    t.bits_per_weight = p.bits_per_weight();
    std::vector<int64_t> ne(p.shape.rbegin(), p.shape.rend());
    auto src_bytes = ggml_tensor_nbytes(p.source_type, ne);
    t.source_bytes = src_bytes ? *src_bytes : 0;
    t.reason = p.reason;
    if (p.fallback) {
      t.reason_kind = "fallback";
      t.reason = p.reason + "; wanted " + ggml_type_name(p.wanted) + ", fell back: " + p.fallback_reason;
    } else if (!p.quantizable) {
      t.reason_kind = "non-weight";
    } else if (!o.preset->quantized()) {
      t.reason_kind = "preset-float";
    } else if (p.reason.rfind("--", 0) == 0 ||
               (p.reason.find(':') != std::string::npos && p.reason.find("rule") == std::string::npos)) {
      t.reason_kind = "override";
    } else if (p.reason.find(" default") != std::string::npos) {
      t.reason_kind = o.pure ? "pure" : "preset-default";
    } else {
      t.reason_kind = "preset-rule";
    }
    if (p.imatrix) t.reason += " (imatrix)";
    auto run = [&]() -> Status {
      QFORGE_RETURN_IF_ERROR(check_interrupted("card"));
      auto oi = out_index.find(p.name);
      if (oi == out_index.end()) return Status::error(ErrorCode::internal, "not in the written file");
      QFORGE_ASSIGN_OR_RETURN(std::vector<float> a, input.load_f32(p.input_index));
      QFORGE_ASSIGN_OR_RETURN(std::vector<float> b, out.load_f32(oi->second));
      if (a.size() != b.size()) return Status::error(ErrorCode::internal, "size differs from the source");
      t.error = measure_weight_error(a.data(), b.data(), static_cast<int64_t>(a.size()));
      return Status::ok();
    };
    status[static_cast<size_t>(i)] = run();
  }
  for (size_t i = 0; i < status.size(); ++i)
    if (!status[i]) return status[i].with_context("card: tensor '" + plan.tensors[i].name + "' of " + req.output);
  for (const auto& f : plan.fallbacks) card.notes.push_back("fallback: " + f);
  for (const auto& r : plan.requantized) card.notes.push_back("re-quantized from a quantized input: " + r);
  for (const auto& w : plan.warnings) card.notes.push_back(w);
  for (const auto& w : input.warnings()) card.notes.push_back(w);
  if (!plan.imatrix_missing.empty()) {
    std::string list;
    for (const auto& m : plan.imatrix_missing) list += (list.empty() ? "" : ", ") + m;
    card.notes.push_back("no imatrix entry for: " + list);
  }
  QFORGE_RETURN_IF_ERROR(finish_output(card, req.output, "gguf"));
  CardRequest eval = creq;
  if (eval.tokenizer.empty()) eval.tokenizer = req.input_options.tokenizer;
  QFORGE_RETURN_IF_ERROR(measure_evaluation(card, req.input, req.output, false, eval));
  return write_and_report(card, req.output);
}

// ---------------------------------------------------------------------------------------------
// Weight error recorder (rescaling methods)

namespace {

class WeightErrorRecorder final : public BlockProcessor {
 public:
  WeightErrorRecorder(std::unique_ptr<BlockProcessor> inner, Architecture arch, std::map<std::string, WeightError>* errors)
      : inner_(std::move(inner)), arch_(arch), errors_(errors) {}
  std::string name() const override { return inner_->name(); }
  StatsRequest stats_request() const override { return inner_->stats_request(); }
  bool collects_itself() const override { return inner_->collects_itself(); }
  Status process_block(BlockContext& ctx) override {
    struct Snapshot {
      LinearSite site;
      std::string before;
      std::vector<float> w;
    };
    std::vector<Snapshot> snaps;
    for (const LinearSite& site : ctx.model().linear_sites()) {
      if (site.layer != ctx.layer()) continue;
      const Linear* l = ctx.model().linear(site);
      if (l == nullptr) continue;
      Snapshot s{site, l->describe(), std::vector<float>(static_cast<size_t>(l->out_features() * l->in_features()))};
      l->dense_weight(s.w.data());
      snaps.push_back(std::move(s));
    }
    QFORGE_RETURN_IF_ERROR(inner_->process_block(ctx));
    for (const Snapshot& s : snaps) {
      const Linear* l = ctx.model().linear(s.site);
      if (l == nullptr || l->describe() == s.before) continue;  // not quantized by the inner processor
      std::vector<float> after(s.w.size());
      l->dense_weight(after.data());
      auto name = tensor_name_for_role(arch_, s.site.role, s.site.layer, false);
      if (!name) continue;
      (*errors_)[*name] = measure_weight_error(s.w.data(), after.data(), static_cast<int64_t>(after.size()));
    }
    return Status::ok();
  }

 private:
  std::unique_ptr<BlockProcessor> inner_;
  Architecture arch_;
  std::map<std::string, WeightError>* errors_;
};

}  // namespace

std::unique_ptr<BlockProcessor> record_weight_errors(std::unique_ptr<BlockProcessor> inner, Architecture arch,
                                                     std::map<std::string, WeightError>* errors) {
  return std::make_unique<WeightErrorRecorder>(std::move(inner), arch, errors);
}

// ---------------------------------------------------------------------------------------------
// qforge card

void add_card_command(CLI::App& app, int* exit_code) {
  struct Options {
    std::string input, out_md, out_html;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "card", "Validate a quantization card (<out>.card.json) and render its Markdown and HTML again");
  cmd->add_option("card", opt->input, "The card's JSON file")->required();
  cmd->add_option("--out-md", opt->out_md, "Markdown output (default: the JSON path with .md for .json)");
  cmd->add_option("--out-html", opt->out_html, "HTML output (default: the JSON path with .html for .json)");
  cmd->callback([opt, exit_code] {
    auto fail = [&](const Status& s) { *exit_code = report_error(s); };
    Expected<std::string> text = read_file(opt->input);
    if (!text) return fail(text.status());
    Expected<Card> card = card_from_json(*text, opt->input);
    if (!card) return fail(card.status());
    std::string stem = opt->input;
    if (stem.size() > 5 && stem.compare(stem.size() - 5, 5, ".json") == 0) stem.resize(stem.size() - 5);
    const std::string md = opt->out_md.empty() ? stem + ".md" : opt->out_md;
    const std::string html = opt->out_html.empty() ? stem + ".html" : opt->out_html;
    for (const std::string* p : {&md, &html})
      if (Status s = check_output_path(*p, p == &md ? "--out-md" : "--out-html"); !s) return fail(s);
    if (Status s = write_file_atomic(md, render_card_markdown(*card)); !s) return fail(s);
    if (Status s = write_file_atomic(html, render_card_html(*card)); !s) return fail(s);
    std::printf("%s: valid (schema %s v%d, %zu tensors); wrote %s and %s\n", opt->input.c_str(), kCardSchemaId,
                card->schema_version, card->tensors.size(), md.c_str(), html.c_str());
    *exit_code = 0;
  });
}

}  // namespace qforge::cli
