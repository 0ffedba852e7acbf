// qforge convert MODEL --out model.gguf [--type f16|bf16|f32], and the GGUF engine shared with
// `qforge quantize --format gguf`: open the input, print the preflight, write the file.
#include <filesystem>
#include <map>
#include <memory>

#include "cli_common.h"
#include "commands.h"
#include "qforge/imatrix.h"
#include "qforge/parallel.h"

namespace qforge::cli {
namespace {

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return std::filesystem::exists(a, ec) && std::filesystem::exists(b, ec) && std::filesystem::equivalent(a, b, ec);
}

std::string type_text(GgmlType t) { return ggml_type_name(t); }

}  // namespace

void print_gguf_preflight(const GgufModelInput& input, const GgufQuantizePlan& plan, const GgufQuantizeOptions& o,
                          const std::string& output, std::FILE* out) {
  const ModelConfig& c = input.config();
  std::fprintf(out, "preflight: %s (%s, %s, %lld layers, %lld heads / %lld KV heads%s) -> %s\n", input.path().c_str(),
               gguf_input_kind_name(input.kind()), input.gguf_architecture().c_str(),
               static_cast<long long>(c.num_layers), static_cast<long long>(c.num_heads),
               static_cast<long long>(c.num_kv_heads), input.tied_embeddings() ? ", tied embeddings" : "",
               output.c_str());
  std::fprintf(out, "preset %s (general.file_type %u)%s%s\n\n", plan.preset->name, plan.preset->file_type,
               o.pure ? ", --pure" : "", o.imatrix ? (", imatrix " + o.imatrix->path()).c_str() : "");
  Table t;
  t.add_column("tensor", Table::Align::left);
  t.add_column("shape", Table::Align::left);
  t.add_column("from", Table::Align::left);
  t.add_column("type", Table::Align::left);
  t.add_column("bits/w");
  t.add_column("bytes");
  t.add_column("why", Table::Align::left);
  struct TypeTotals {
    int64_t tensors = 0, weights = 0;
    uint64_t bytes = 0;
  };
  std::map<std::string, TypeTotals> by_type;
  int64_t imatrix_used = 0;
  for (const GgufTensorPlan& p : plan.tensors) {
    std::string why = p.reason;
    if (p.fallback) why = "FALLBACK from " + type_text(p.wanted) + ": " + p.fallback_reason + " [" + p.reason + "]";
    if (p.requantize) why += " [re-quantized from " + type_text(p.source_type) + "]";
    if (p.imatrix) why += " [imatrix]";
    t.add_row({p.name, shape_to_string(p.shape), type_text(p.source_type), type_text(p.type),
               format_fixed(p.bits_per_weight(), 4), format_bytes(p.nbytes), why});
    TypeTotals& tt = by_type[type_text(p.type)];
    tt.tensors += 1;
    tt.weights += p.numel();
    tt.bytes += p.nbytes;
    imatrix_used += p.imatrix ? 1 : 0;
  }
  t.print(out);
  std::fprintf(out, "\nsummary: %zu tensors, %s parameters -> %s file (%llu bytes), %.4f bits/weight overall",
               plan.tensors.size(), format_count(static_cast<uint64_t>(plan.parameters)).c_str(),
               format_bytes(plan.file_bytes).c_str(), static_cast<unsigned long long>(plan.file_bytes),
               plan.bits_per_weight());
  if (plan.quantized_parameters > 0)
    std::fprintf(out, ", %.4f bits/weight over the %s quantizable weights",
                 plan.quantized_bits_per_weight(), format_count(static_cast<uint64_t>(plan.quantized_parameters)).c_str());
  std::fprintf(out, "\ntypes:");
  bool first = true;
  for (const auto& [name, tt] : by_type) {
    std::fprintf(out, "%s %s x%lld (%s weights, %s)", first ? "" : ";", name.c_str(), static_cast<long long>(tt.tensors),
                 format_count(static_cast<uint64_t>(tt.weights)).c_str(), format_bytes(tt.bytes).c_str());
    first = false;
  }
  std::fprintf(out, "\n");
  // Which llama.cpp backends can run the chosen types.
  std::string cpu_missing, cuda_missing;
  for (const auto& [name, tt] : by_type) {
    const GgufBackendSupport s = gguf_backend_support(*ggml_type_from_name(name));
    if (!s.cpu) cpu_missing += " " + name + " (" + s.note + ")";
    if (!s.cuda) cuda_missing += " " + name + " x" + std::to_string(tt.tensors) + " (" + s.note + ")";
  }
  std::fprintf(out, "llama.cpp backends: CPU %s; CUDA %s\n",
               cpu_missing.empty() ? "runs every type here" : ("cannot run:" + cpu_missing).c_str(),
               cuda_missing.empty() ? "runs every type here" : ("cannot run:" + cuda_missing).c_str());
  if (plan.fallbacks.empty()) {
    std::fprintf(out, "fallbacks: none\n");
  } else {
    std::fprintf(out, "fallbacks: %zu tensor(s)%s\n", plan.fallbacks.size(),
                 o.allow_fallback ? " (allowed by --allow-fallback; recorded in qforge.fallbacks)" : "");
    for (const auto& f : plan.fallbacks) std::fprintf(out, "  %s\n", f.c_str());
  }
  if (!plan.requantized.empty())
    std::fprintf(out, "re-quantized from already quantized input: %zu tensor(s)%s\n", plan.requantized.size(),
                 o.allow_requantize ? " (allowed by --allow-requantize)" : "");
  if (o.imatrix) {
    std::fprintf(out, "imatrix: %s (%s, %zu entries, %lld chunks), used for %lld tensor(s)", o.imatrix->path().c_str(),
                 o.imatrix->legacy() ? "legacy .dat" : "GGUF", o.imatrix->entries().size(),
                 static_cast<long long>(o.imatrix->chunk_count()), static_cast<long long>(imatrix_used));
    if (!plan.imatrix_missing.empty()) {
      std::fprintf(out, "; no entry for %zu:", plan.imatrix_missing.size());
      for (const auto& n : plan.imatrix_missing) std::fprintf(out, " %s", n.c_str());
    }
    std::fprintf(out, "\n");
  }
  std::fflush(out);
}

int run_gguf_quantize(const GgufQuantizeRequest& r) {
  const std::string cmd = r.command;
  if (Status s = check_output_path(r.output, "--out"); !s) return report_error(s);
  if (same_file(r.input, r.output))
    return report_error(invalid_argument("--out '" + r.output + "' is the input file; choose another path"));
  GgufQuantizeOptions o;
  Expected<const GgufPreset*> preset = find_gguf_preset(r.type);
  if (!preset) return report_error(preset.status().with_context("--type"));
  o.preset = *preset;
  o.pure = r.pure;
  o.allow_requantize = r.allow_requantize;
  o.allow_fallback = r.allow_fallback;
  for (const std::string& spec : r.tensor_types) {
    Expected<GgufTypeOverride> ov = parse_gguf_type_override(spec, "--tensor-type '" + spec + "'");
    if (!ov) return report_error(ov.status());
    o.overrides.push_back(std::move(*ov));
  }
  if (!r.tensor_type_file.empty()) {
    Expected<std::vector<GgufTypeOverride>> file = read_gguf_type_override_file(r.tensor_type_file);
    if (!file) return report_error(file.status());
    for (auto& ov : *file) o.overrides.push_back(std::move(ov));
  }
  if (!r.output_tensor_type.empty()) {
    Expected<GgmlType> t = parse_gguf_weight_type(r.output_tensor_type, "--output-tensor-type");
    if (!t) return report_error(t.status());
    o.output_tensor_type = *t;
  }
  if (!r.token_embedding_type.empty()) {
    Expected<GgmlType> t = parse_gguf_weight_type(r.token_embedding_type, "--token-embedding-type");
    if (!t) return report_error(t.status());
    o.token_embedding_type = *t;
  }
  std::optional<Imatrix> imatrix;
  if (!r.imatrix.empty()) {
    Expected<Imatrix> m = Imatrix::load(r.imatrix);
    if (!m) return report_error(m.status().with_context("--imatrix"));
    imatrix = std::move(*m);
    o.imatrix = &*imatrix;
  }
  Expected<GgufModelInput> input = GgufModelInput::open(r.input, r.input_options);
  if (!input) return report_error(input.status());
  for (const std::string& w : input->warnings()) warn(w);
  Expected<GgufQuantizePlan> plan = plan_gguf_quantization(*input, o);
  if (!plan) return report_error(plan.status());
  print_gguf_preflight(*input, *plan, o, r.output, stdout);
  if (!plan->requantized.empty() && o.allow_requantize)
    warn(std::to_string(plan->requantized.size()) +
         " tensor(s) are dequantized from an already quantized input and quantized again; the errors compound");
  if (Status s = check_gguf_plan(*plan, o); !s) {
    std::printf("\n");
    return report_error(Status::error(s.code(), cmd + " stopped at the preflight: " + s.message()));
  }
  if (r.dry_run) {
    std::printf("\n--dry-run: nothing written\n");
    return 0;
  }
  std::printf("\n");
  std::fflush(stdout);
  if (r.calibrate) {
    if (Status s = r.calibrate(*input, *plan, o); !s) return report_error(s);
  }
  Expected<GgufWriteResult> w = write_gguf_model(*input, *plan, o, r.output, progress_options(), cmd);
  if (!w) return report_error(w.status());
  std::printf("wrote %s: %s (%llu bytes), %lld tensors, %.4f bits/weight, in %s\n", r.output.c_str(),
              format_bytes(w->file_bytes).c_str(), static_cast<unsigned long long>(w->file_bytes),
              static_cast<long long>(w->tensors), plan->bits_per_weight(), format_seconds(w->seconds).c_str());
  if (std::string_view(r.command) == "quantize")
    if (Status s = write_gguf_quantize_card(r, *input, *plan, o, r.card); !s)
      return report_error(s.with_context("quantization card of " + r.output));
  return 0;
}

void add_convert_command(CLI::App& app, int* exit_code) {
  struct Options {
    GgufQuantizeRequest req;
    int threads = 0;
  };
  auto opt = std::make_shared<Options>();
  opt->req.command = "convert";
  opt->req.type = "f16";
  CLI::App* cmd = app.add_subcommand(
      "convert", "Write a llama.cpp GGUF file (F16/BF16/F32) from an HF llama/mistral/qwen2 directory or a llama2.c "
                 "checkpoint");
  cmd->add_option("path", opt->req.input, "HF model directory (config.json + safetensors) or llama2.c .bin")
      ->required();
  cmd->add_option("-o,--out", opt->req.output, "Output .gguf file (written atomically)")->required();
  cmd->add_option("-t,--type", opt->req.type, "Type of the 2-D weights: f16 (default), bf16 or f32; 1-D tensors stay F32")
      ->check(CLI::IsMember({"f16", "bf16", "f32", "F16", "BF16", "F32"}));
  cmd->add_option("--tokenizer", opt->req.input_options.tokenizer,
                  "Tokenizer: SentencePiece tokenizer.model (default: beside config.json) or llama2.c tokenizer.bin");
  cmd->add_flag("--no-vocab", opt->req.input_options.no_vocab, "Write no vocabulary (tokenizer.ggml.model = none)");
  cmd->add_option("--name", opt->req.input_options.name, "general.name (default: the directory or file name)");
  cmd->add_flag("--dry-run", opt->req.dry_run, "Print the preflight and stop");
  cmd->add_option("-j,--threads", opt->threads, "Worker threads (default: OpenMP's choice)")->check(CLI::Range(1, 1024));
  cmd->callback([opt, exit_code] {
    std::optional<ScopedThreadLimit> limit;
    if (opt->threads > 0) limit.emplace(opt->threads);
    *exit_code = run_gguf_quantize(opt->req);
  });
}

}  // namespace qforge::cli
