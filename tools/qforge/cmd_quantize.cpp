// qforge quantize PATH --scheme S --out OUT: weight-only round-to-nearest quantization of the
// linear weights into qforge's packed safetensors layout.
#include <sys/stat.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include "cli_common.h"
#include "commands.h"
#include "qforge/mixed_precision.h"
#include "qforge/packed.h"
#include "qforge/parallel.h"
#include "quantize_calibrated.h"

namespace qforge::cli {
namespace {

uint64_t file_size_or_zero(const std::string& path) {
  std::error_code ec;
  auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<uint64_t>(n);
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return std::filesystem::exists(a, ec) && std::filesystem::exists(b, ec) && std::filesystem::equivalent(a, b, ec);
}

// A plain tensor copied from the (memory-mapped) source during the write; the copy point is where
// an interrupt is noticed.
Status add_plain_copy(PackedWriter& writer, const std::string& name, const Tensor& t) {
  return writer.add_plain_lazy(name, t.dtype(), t.shape(), [t](uint8_t* out, size_t nbytes) -> Status {
    QFORGE_RETURN_IF_ERROR(check_interrupted("quantize"));
    if (nbytes != t.nbytes()) return Status::error(ErrorCode::internal, "plain tensor size changed");
    std::memcpy(out, t.data(), nbytes);
    return Status::ok();
  });
}

}  // namespace

Expected<QuantizeSummary> quantize_checkpoint(const QuantizeRequest& req) {
  const double start = now_seconds();
  QFORGE_RETURN_IF_ERROR(check_output_path(req.output, "--out"));
  if (same_file(req.input, req.output))
    return invalid_argument("--out '" + req.output + "' is the input file; choose another path");
  QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::open(req.input));
  if (ckpt.metadata().count(kPackedMetadataKey))
    return invalid_argument(req.input + " is already a qforge packed file (run 'qforge dequantize' first)");

  std::vector<std::string> not_2d;
  QFORGE_ASSIGN_OR_RETURN(std::vector<SelectedTensor> selected, select_tensors(ckpt, req.selection, &not_2d));
  if (!not_2d.empty() && req.selection.filter) {
    std::string list;
    for (const auto& n : not_2d) list += (list.empty() ? "" : ", ") + n;
    warn("--filter also matched tensors that are not 2-D; kept as they are: " + list);
  }
  if (selected.empty())
    return invalid_argument(req.input + ": no 2-D tensors selected for quantization" +
                            (req.selection.filter ? std::string(" (check --filter/--keep)")
                                                  : std::string(" (no linear-layer weights found; use --filter)")));

  QuantizeSummary summary;
  summary.input_bytes = 0;
  for (const auto& f : ckpt.files()) summary.input_bytes += f.file_size();

  // Weights the scheme cannot represent (e.g. group size not dividing the columns) stay as they are.
  std::vector<SelectedTensor> to_quantize;
  std::set<std::string> quantized_set;
  for (const auto& sel : selected) {
    const SafetensorsTensorInfo* info = ckpt.find(sel.name);
    const int64_t rows = sel.transposed ? info->shape[1] : info->shape[0];
    const int64_t cols = sel.transposed ? info->shape[0] : info->shape[1];
    if (Status v = validate_scheme(req.scheme, rows, cols); !v) {
      summary.kept_incompatible.push_back(sel.name + " (" + v.message() + ")");
      continue;
    }
    to_quantize.push_back(sel);
    quantized_set.insert(sel.name);
  }

  PackedWriter writer(req.output);
  // What determined the contents (not --out or --threads), so equal inputs give equal files.
  std::string command = "qforge quantize " + shell_quote(req.input) + " --scheme " + req.scheme.name();
  if (req.selection.filter) command += " --filter " + shell_quote(req.selection.filter_pattern);
  if (req.selection.keep) command += " --keep " + shell_quote(req.selection.keep_pattern);
  writer.set_command(command);
  for (const auto& [k, v] : ckpt.metadata()) QFORGE_RETURN_IF_ERROR(writer.set_metadata(k, v));

  // Quantize in parallel; planes enter the writer in selection order (ordered region), so the file
  // does not depend on the thread count, and at most ~one tensor per thread is held in memory.
  Progress progress("quantize", static_cast<int64_t>(to_quantize.size()), "tensors", progress_options());
  Status first_error;  // written only inside the ordered region
  std::atomic<bool> failed{false};
  const int64_t count = static_cast<int64_t>(to_quantize.size());
#pragma omp parallel for ordered schedule(dynamic, 1)
  for (int64_t i = 0; i < count; ++i) {
    const SelectedTensor& sel = to_quantize[static_cast<size_t>(i)];
    Expected<QuantizedTensor> q = cancelled("quantize: interrupted");
    DType dtype = DType::f32;
    if (!failed.load() && !interrupted()) {
      Expected<WeightMatrix> m = load_weight_matrix(ckpt, sel);
      if (!m) {
        q = m.status();
      } else {
        dtype = m->dtype;
        q = quantize(req.scheme, m->data(), m->rows, m->cols);
        if (!q) q = q.status().with_context(req.input + ": tensor '" + sel.name + "'");
      }
    }
#pragma omp ordered
    {
      if (!failed.load()) {
        Status st = q ? writer.add_quantized(sel.name, *q, dtype, sel.transposed) : q.status();
        if (st) {
          const uint64_t in_bytes = ckpt.find(sel.name)->end - ckpt.find(sel.name)->begin;
          summary.quantized_tensors += 1;
          summary.quantized_elements += q->rows * q->cols;
          summary.quantized_bytes_in += in_bytes;
          summary.quantized_bytes_out += q->nbytes();
          if (req.verbose)
            std::printf("  %-56s %-14s %s -> %s\n", sel.name.c_str(),
                        shape_to_string(ckpt.find(sel.name)->shape).c_str(), format_bytes(in_bytes).c_str(),
                        format_bytes(q->nbytes()).c_str());
        } else {
          first_error = st;
          failed.store(true);
        }
      }
    }
    progress.tick();
  }
  progress.finish();
  if (failed.load()) return first_error;
  QFORGE_RETURN_IF_ERROR(check_interrupted("quantize"));

  for (const auto& name : ckpt.tensor_names()) {
    if (quantized_set.count(name)) continue;
    QFORGE_ASSIGN_OR_RETURN(Tensor t, ckpt.tensor(name));
    QFORGE_RETURN_IF_ERROR(add_plain_copy(writer, name, t));
    summary.plain_tensors += 1;
  }
  QFORGE_RETURN_IF_ERROR(writer.finish());
  summary.output_bytes = file_size_or_zero(req.output);
  summary.seconds = now_seconds() - start;
  return summary;
}

void print_quantize_summary(const QuantizeRequest& req, const QuantizeSummary& s, std::FILE* out, const char* indent) {
  for (const auto& k : s.kept_incompatible) warn("kept unquantized: " + k);
  std::fprintf(out, "%squantized %lld tensors (%s parameters) with %s: %s -> %s (%.3f bits/weight)\n",
               indent, static_cast<long long>(s.quantized_tensors),
               format_count(static_cast<uint64_t>(s.quantized_elements)).c_str(), req.scheme.name().c_str(),
               format_bytes(s.quantized_bytes_in).c_str(), format_bytes(s.quantized_bytes_out).c_str(),
               s.quantized_elements > 0
                   ? 8.0 * static_cast<double>(s.quantized_bytes_out) / static_cast<double>(s.quantized_elements)
                   : 0.0);
  std::fprintf(out, "%skept %lld tensors as they were; wrote %s (%s, input %s, %.2fx smaller) in %s\n", indent,
               static_cast<long long>(s.plain_tensors), req.output.c_str(), format_bytes(s.output_bytes).c_str(),
               format_bytes(s.input_bytes).c_str(),
               s.output_bytes > 0 ? static_cast<double>(s.input_bytes) / static_cast<double>(s.output_bytes) : 0.0,
               format_seconds(s.seconds).c_str());
}

void add_quantize_command(CLI::App& app, int* exit_code) {
  struct Options {
    std::string input;
    std::string format = "packed";
    std::string scheme;
    std::string output;
    std::string filter;
    std::string keep;
    int threads = 0;
    bool verbose = false;
    GgufQuantizeRequest gguf;  // --format gguf
    CalibratedQuantizeRequest calib;  // --method / --calib
    std::string calib_hidden = "bf16";
    CardRequest card;  // --card-eval ...
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "quantize",
      "Weight-only quantization into qforge's packed safetensors layout (default) or a llama.cpp GGUF file "
      "(--format gguf --type Q4_K_M)");
  cmd->add_option("path", opt->input,
                  "A .safetensors file or an HF model directory (--format gguf: also a llama2.c .bin or an "
                  "F32/F16/BF16 GGUF)")
      ->required();
  cmd->add_option("-o,--out", opt->output, "Output file (written atomically)")->required();
  cmd->add_option("--format", opt->format,
                  "Output format: packed (qforge safetensors, default), gguf, or gptq / awq (an HF model directory "
                  "in GPTQ v1 / AutoAWQ GEMM layout; needs --calib)")
      ->check(CLI::IsMember({"packed", "gguf", "gptq", "awq"}));
  // packed
  cmd->add_option("-s,--scheme", opt->scheme, "[packed] Quantization scheme, e.g. int4-g128-asym, int8-ch-sym, nf4");
  cmd->add_option("--filter", opt->filter,
                  "[packed] Regex (ECMAScript, matched anywhere in the name) selecting the tensors to quantize "
                  "instead of the default linear-layer weights");
  cmd->add_option("--keep", opt->keep, "[packed] Regex of tensor names to keep in their original dtype");
  // gguf
  GgufQuantizeRequest& g = opt->gguf;
  cmd->add_option("-t,--type", g.type,
                  "[gguf] Preset: Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, Q4_0, Q4_1, Q5_0, Q5_1, Q3_K_S, Q3_K_M, "
                  "Q3_K_L, Q2_K, IQ4_NL, TQ1_0, TQ2_0, F16, BF16, F32");
  cmd->add_option("--tensor-type", g.tensor_types,
                  "[gguf] REGEX=TYPE: store tensors whose GGUF name matches as TYPE (repeatable; last match wins)");
  cmd->add_option("--tensor-type-file", g.tensor_type_file,
                  "[gguf] File of REGEX=TYPE lines ('#' comments), applied after --tensor-type");
  cmd->add_option("--plan", g.plan,
                  "[gguf] Mixed-precision plan from qforge plan (implies --format gguf; its preset unless --type)");
  cmd->add_option("--output-tensor-type", g.output_tensor_type, "[gguf] Type of output.weight (or tied token_embd)");
  cmd->add_option("--token-embedding-type", g.token_embedding_type, "[gguf] Type of token_embd.weight");
  cmd->add_flag("--pure", g.pure, "[gguf] Use the preset's type for every weight (no per-role rules)");
  cmd->add_option("--imatrix", g.imatrix, "[gguf] llama.cpp importance matrix (GGUF or legacy .dat)");
  cmd->add_flag("--allow-fallback", g.allow_fallback,
                "[gguf] Accept llama.cpp's fallback types for rows the chosen type's block does not divide");
  cmd->add_flag("--allow-requantize", g.allow_requantize,
                "[gguf] Accept already quantized GGUF input (dequantized, then quantized again)");
  cmd->add_option("--tokenizer", g.input_options.tokenizer,
                  "[gguf] Tokenizer for HF/llama2.c input (default: tokenizer.model beside config.json)");
  cmd->add_flag("--no-vocab", g.input_options.no_vocab, "[gguf] Write no vocabulary");
  cmd->add_option("--name", g.input_options.name, "[gguf] general.name for HF/llama2.c input");
  cmd->add_flag("--dry-run", g.dry_run, "[gguf] Print the preflight and stop");
  // calibrated
  CalibratedQuantizeRequest& c = opt->calib;
  cmd->add_option("--method", c.method,
                  "[packed] rtn (default without --calib) or gptq; with --calib the weights are quantized block by "
                  "block on calibration data")
      ->check(CLI::IsMember({"rtn", "gptq", "awq", "awq+gptq", "smoothquant"}));
  cmd->add_option("--act-scheme", c.act_scheme,
                  "[calib] Quantize linear inputs too: int8-token-dyn, int8-tensor-static or fp8-tensor-static "
                  "(static scales from --act-observer on the calibration data; recorded in the output)")
      ->check(CLI::IsMember({"none", "int8-token-dyn", "int8-tensor-static", "fp8-tensor-static"}));
  cmd->add_option("--act-observer", c.act_observer,
                  "[calib] Observer of static activation scales: minmax (default), percentile[:p], mse, entropy");
  cmd->add_option("--alpha", c.alpha, "[smoothquant] Migration strength in [0, 1] (default 0.5)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--awq-grid", c.awq.grid, "[awq] Points of the alpha grid in [0, 1) (default 20)")
      ->check(CLI::Range(1, 1000));
  cmd->add_flag("!--no-awq-clip", c.awq.clip, "[awq] Skip the clipping-ratio search");
  cmd->add_option("--calib", c.calib, "[packed] Calibration text file (windows sampled as docs/ptq.md says)");
  cmd->add_option("--calib-windows", c.calib_options.windows, "[packed] Calibration windows (default 128)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--calib-ctx", c.calib_options.ctx, "[packed] Tokens per calibration window, BOS included (default 512)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--seed", c.calib_options.seed, "[packed] Seed of the calibration window sampling (default 0)");
  cmd->add_option("--damp", c.gptq.damp, "[gptq] Dampening added to H's diagonal, times its mean (default 0.01)")
      ->check(CLI::Range(1e-8, 10.0));
  cmd->add_flag("--act-order", c.gptq.act_order,
                "[gptq] Quantize columns by decreasing Hessian diagonal (static groups keep scales contiguous)");
  cmd->add_flag("--gptq-clip", c.gptq.mse_clip,
                "[gptq] MSE-optimal clipping: per row and group the clip ratio (1 down to 0.5 in steps of 0.05) "
                "minimising the Hessian-diagonal-weighted error, chosen before the sweep");
  cmd->add_flag("--gptq-refit", c.gptq.refit,
                "[gptq] After the sweep, least-squares refit of each row's group scales with the codes fixed, "
                "minimising the Hessian-weighted layer error, then 3 more sweep + refit passes on the refit scales, "
                "each row keeping its best (int-sym / int-asym group or per-channel schemes)");
  cmd->add_option("--gptq-block", c.gptq.block_size, "[gptq] Lazy-update block width in columns (default 128)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  cmd->add_flag("!--no-sequential", c.gptq.sequential,
                "[gptq] Collect every linear's inputs once per block with the unquantized block (default: each "
                "group's inputs after the earlier groups of the block were quantized)");
  c.batch_windows = 1;
  cmd->add_option("--calib-batch", c.batch_windows, "[packed] Calibration windows run through a block at once (default 1)")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  cmd->add_option("--calib-hidden", opt->calib_hidden,
                  "[packed] Storage of the calibration hidden states between blocks: bf16 (default, half the "
                  "memory; blocks still compute in f32) or f32")
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_flag("--resume", c.resume, "[packed] Continue an interrupted calibrated run from its last finished block");
  cmd->add_option("-j,--threads", opt->threads, "Worker threads (default: OpenMP's choice)")
      ->check(CLI::Range(1, 1024));
  cmd->add_flag("-v,--verbose", opt->verbose, "[packed] List each quantized tensor");
  add_card_options(cmd, &opt->card);
  cmd->callback([opt, cmd, exit_code] {
    auto fail = [&](const Status& s) { *exit_code = report_error(s); };
    auto given = [&](const char* name) { return cmd->count(name) > 0; };
    std::optional<ScopedThreadLimit> limit;
    if (opt->threads > 0) limit.emplace(opt->threads);
    const bool calibrated = given("--calib");
    if (given("--plan")) {  // a qforge plan file: a --tensor-type-file naming its preset
      if (given("--format") && opt->format != "gguf") return fail(invalid_argument("--plan applies to --format gguf"));
      if (given("--tensor-type-file")) return fail(invalid_argument("--plan and --tensor-type-file exclude each other"));
      opt->format = "gguf";
      opt->gguf.tensor_type_file = opt->gguf.plan;
      if (opt->gguf.type.empty()) {
        Expected<std::string> preset = read_plan_preset(opt->gguf.plan);
        if (!preset) return fail(preset.status().with_context("--plan"));
        opt->gguf.type = *preset;
      }
    }
    if (opt->format == "gguf") {
      for (const char* name : {"--scheme", "--filter", "--keep", "--verbose"})
        if (given(name))
          return fail(invalid_argument(std::string(name) + " applies to --format packed; GGUF output takes --type "
                                                           "and --tensor-type"));
      if (opt->gguf.type.empty()) return fail(invalid_argument("--format gguf needs --type (e.g. --type Q4_K_M)"));
      if (given("--gptq-refit"))
        return fail(invalid_argument("--gptq-refit applies to int-sym / int-asym schemes with group or per-channel scales, "
                                     "not the GGUF block types of --format gguf"));
      opt->gguf.input = opt->input;
      opt->gguf.output = opt->output;
      if (calibrated) {  // GPTQ / AWQ into the preset's GGUF types (cmd_quantize_calib.cpp)
        if (!given("--method")) opt->calib.method = "gptq";
        CalibratedQuantizeRequest creq = opt->calib;
        creq.input = opt->input;
        creq.output = opt->output;
        creq.format = "gguf";
        creq.tokenizer = opt->gguf.input_options.tokenizer;
        creq.hidden_dtype = opt->calib_hidden == "bf16" ? DType::bf16 : DType::f32;
        // With --no-vocab, --tokenizer only tokenizes the calibration text.
        if (opt->gguf.input_options.no_vocab) opt->gguf.input_options.tokenizer.clear();
        auto storage = std::make_shared<GgufCalibratedTensors>();
        opt->gguf.calibrate = [creq, storage](const GgufModelInput& in, const GgufQuantizePlan& plan,
                                              GgufQuantizeOptions& o) {
          return quantize_calibrated_gguf(creq, in, plan, *storage, o);
        };
        opt->gguf.describe_calibration = [creq, storage](Card& card) { describe_calibrated_gguf(card, creq, *storage); };
        install_interrupt_handler();
      } else if (given("--method") || given("--resume")) {
        return fail(invalid_argument("--method and --resume with --format gguf need --calib FILE"));
      }
      opt->gguf.card = opt->card;
      *exit_code = run_gguf_quantize(opt->gguf);
      return;
    }
    for (const char* name : {"--type", "--tensor-type", "--tensor-type-file", "--output-tensor-type",
                             "--token-embedding-type", "--pure", "--imatrix", "--allow-fallback", "--allow-requantize",
                             "--no-vocab", "--name", "--dry-run"})
      if (given(name)) return fail(invalid_argument(std::string(name) + " applies to --format gguf"));
    if (!calibrated) {
      if (given("--method") && opt->calib.method != "rtn")
        return fail(invalid_argument("--method " + opt->calib.method + " needs --calib FILE"));
      if (opt->format == "gptq" || opt->format == "awq")
        return fail(invalid_argument("--format " + opt->format + " needs --calib FILE (calibrated pipeline)"));
      for (const char* name : {"--calib-windows", "--calib-ctx", "--seed", "--damp", "--act-order", "--gptq-block", "--gptq-clip",
                               "--gptq-refit", "--no-sequential", "--calib-batch", "--calib-hidden", "--resume", "--tokenizer",
                               "--act-scheme", "--act-observer", "--alpha", "--awq-grid", "--no-awq-clip"})
        if (given(name)) return fail(invalid_argument(std::string(name) + " applies to calibrated quantization (--calib)"));
    } else {
      const std::string& m = opt->calib.method;
      if (m != "gptq" && m != "awq+gptq")
        for (const char* name : {"--damp", "--act-order", "--gptq-block", "--gptq-clip", "--gptq-refit", "--no-sequential"})
          if (given(name)) return fail(invalid_argument(std::string(name) + " applies to --method gptq or awq+gptq"));
      if (m != "smoothquant" && given("--alpha")) return fail(invalid_argument("--alpha applies to --method smoothquant"));
      if (m != "awq" && m != "awq+gptq")
        for (const char* name : {"--awq-grid", "--no-awq-clip"})
          if (given(name)) return fail(invalid_argument(std::string(name) + " applies to --method awq or awq+gptq"));
    }
    if (opt->scheme.empty())
      return fail(invalid_argument("--scheme is required (or --format gguf --type PRESET for a GGUF file)"));
    QuantizeRequest req;
    req.input = opt->input;
    req.output = opt->output;
    req.verbose = opt->verbose;
    Expected<std::vector<Scheme>> schemes = parse_schemes({opt->scheme}, "--scheme");
    if (!schemes) return fail(schemes.status());
    req.scheme = schemes->front();
    if (given("--gptq-refit") && !gptq_refit_supports(req.scheme))
      return fail(invalid_argument("--gptq-refit applies to int-sym / int-asym schemes with group or per-channel scales, "
                                   "not --scheme " + req.scheme.name()));
    Expected<std::optional<std::regex>> filter = compile_regex(opt->filter, "--filter");
    if (!filter) return fail(filter.status());
    Expected<std::optional<std::regex>> keep = compile_regex(opt->keep, "--keep");
    if (!keep) return fail(keep.status());
    req.selection.filter = *filter;
    req.selection.keep = *keep;
    req.selection.filter_pattern = opt->filter;
    req.selection.keep_pattern = opt->keep;
    if (calibrated) {
      if (!given("--method")) opt->calib.method = "gptq";
      CalibratedQuantizeRequest creq = opt->calib;
      creq.input = req.input;
      creq.output = req.output;
      creq.scheme = req.scheme;
      creq.format = opt->format;
      creq.selection = req.selection;
      creq.verbose = req.verbose;
      creq.tokenizer = opt->gguf.input_options.tokenizer;
      creq.hidden_dtype = opt->calib_hidden == "bf16" ? DType::bf16 : DType::f32;
      install_interrupt_handler();
      Expected<QuantizeSummary> cs = quantize_calibrated(creq);
      if (!cs) return fail(cs.status());
      print_quantize_summary(req, *cs, stdout);
      if (Status st = write_calibrated_quantize_card(creq, *cs, opt->card); !st)
        return fail(st.with_context("quantization card of " + req.output));
      *exit_code = 0;
      return;
    }
    Expected<QuantizeSummary> s = quantize_checkpoint(req);
    if (!s) return fail(s.status());
    print_quantize_summary(req, *s, stdout);
    CardRequest card = opt->card;
    card.tokenizer = opt->gguf.input_options.tokenizer;
    if (Status st = write_packed_quantize_card(req, *s, card); !st)
      return fail(st.with_context("quantization card of " + req.output));
    *exit_code = 0;
  });
}

}  // namespace qforge::cli
