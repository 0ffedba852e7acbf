// qforge sweep MODEL --presets Q8_0,Q6_K,... --text HELDOUT [--plan FILE ...]: quantize the model
// with each GGUF preset (and each mixed-precision plan), evaluate every variant against the
// unquantized model on the same windows, and tabulate size, perplexity, KLD and top-1 agreement
// with the size-vs-KLD Pareto front (table, JSON, markdown, SVG chart).
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "card_build.h"
#include "cli_common.h"
#include "cli_model.h"
#include "commands.h"
#include "mixed_precision_cli.h"
#include "qforge/atomic_file.h"
#include "qforge/card.h"
#include "qforge/mixed_precision.h"

namespace qforge::cli {
namespace {

struct SweepCommandOptions {
  ModelSpec model;
  std::string presets = "Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,Q3_K_M,Q2_K";
  std::vector<std::string> plans;
  std::string text;
  int64_t ctx = 512;
  int64_t windows = 32;
  std::string json, md, svg;
  std::string work_dir;
  std::string out_dir;  // keep the variants' GGUF files there, each with its card
  bool no_vocab = false;
  int threads = 0;
};

struct SweepEntry {
  std::string name;
  bool plan = false;
  VariantResult result;
  bool pareto = false;
};

// Indices on the front minimising both size and KLD (no other entry is at least as good in both
// and better in one).
void mark_pareto(std::vector<SweepEntry>& entries) {
  for (size_t i = 0; i < entries.size(); ++i) {
    const double si = static_cast<double>(entries[i].result.file_bytes), ki = entries[i].result.report.kld->kld.mean;
    bool dominated = false;
    for (size_t j = 0; j < entries.size() && !dominated; ++j) {
      if (j == i) continue;
      const double sj = static_cast<double>(entries[j].result.file_bytes), kj = entries[j].result.report.kld->kld.mean;
      dominated = sj <= si && kj <= ki && (sj < si || kj < ki);
    }
    entries[i].pareto = !dominated;
  }
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

int run_sweep(const SweepCommandOptions& o) {
  for (const auto& [path, option] : {std::pair{o.json, "--json"}, std::pair{o.md, "--md"}, std::pair{o.svg, "--svg"}})
    if (!path.empty())
      if (Status s = check_output_path(path, option); !s) return report_error(s);
  if (o.windows < 0) return report_error(invalid_argument("--windows must be >= 0"));
  if (!o.out_dir.empty() && !std::filesystem::is_directory(o.out_dir))
    return report_error(invalid_argument("--out-dir " + o.out_dir + ": not a directory"));
  // Every variant is checked before any work: unknown presets, unreadable plans.
  struct Variant {
    std::string name;
    bool plan = false;
    GgufQuantizeOptions options;
  };
  std::vector<Variant> variants;
  for (const std::string& name : split_list(o.presets)) {
    auto preset = find_gguf_preset(name);
    if (!preset) return report_error(preset.status().with_context("--presets"));
    if (!(*preset)->quantized()) return report_error(invalid_argument("--presets " + name + ": not a quantized preset"));
    Variant v;
    v.name = (*preset)->name;
    v.options.preset = *preset;
    variants.push_back(std::move(v));
  }
  for (const std::string& path : o.plans) {
    auto preset_name = read_plan_preset(path);
    if (!preset_name) return report_error(preset_name.status().with_context("--plan"));
    auto preset = find_gguf_preset(*preset_name);
    if (!preset) return report_error(preset.status().with_context("--plan " + path));
    auto overrides = read_gguf_type_override_file(path);
    if (!overrides) return report_error(overrides.status().with_context("--plan"));
    Variant v;
    v.name = std::filesystem::path(path).stem().string();
    v.plan = true;
    v.options.preset = *preset;
    v.options.overrides = std::move(*overrides);
    variants.push_back(std::move(v));
  }
  if (variants.empty()) return report_error(invalid_argument("nothing to sweep: give --presets and/or --plan"));
  if (!std::filesystem::exists(o.text)) return report_error(io_error("--text " + o.text + ": no such file"));
  ThreadSetting threads(o.threads);

  GgufModelInputOptions in_opts;
  in_opts.tokenizer = o.model.tokenizer;
  in_opts.no_vocab = o.no_vocab;
  auto input = GgufModelInput::open(o.model.path, in_opts);
  if (!input) return report_error(input.status());
  for (Variant& v : variants) {  // preflight of every variant up front
    auto plan = plan_gguf_quantization(*input, v.options);
    if (!plan) return report_error(plan.status().with_context(v.name));
    if (Status s = check_gguf_plan(*plan, v.options); !s) return report_error(s.with_context(v.name));
  }
  ModelSpec spec = o.model;
  spec = reference_spec(spec);
  auto loaded = load_cli_model(spec, "reference model");
  if (!loaded) return report_error(loaded.status());
  auto tok = load_cli_tokenizer(spec, *loaded);
  if (!tok) return report_error(tok.status());
  auto w = load_text_windows(o.text, o.ctx, **tok, "--text");
  if (!w) return report_error(w.status());
  const int64_t n_windows = o.windows > 0 ? std::min(o.windows, w->count) : w->count;
  auto scratch = ScratchDir::create(o.work_dir, "qforge-sweep");
  if (!scratch) return report_error(scratch.status());
  std::printf("model: %s\n", describe_model(*loaded).c_str());
  std::printf("text:  %s, %lld of %lld windows of %lld (%s)\n", o.text.c_str(), static_cast<long long>(n_windows),
              static_cast<long long>(w->count), static_cast<long long>(o.ctx), perplexity_protocol_description().c_str());
  std::fflush(stdout);
  auto ref = make_reference_cache(loaded->model, o.model.path, *w, n_windows, o.text, **scratch);
  if (!ref) return report_error(ref.status());

  std::vector<SweepEntry> entries;
  for (size_t i = 0; i < variants.size(); ++i) {
    if (Status s = check_interrupted("sweep"); !s) return report_error(s);
    const Variant& v = variants[i];
    const std::string path = o.out_dir.empty() ? (*scratch)->file("variant-" + std::to_string(i) + ".gguf")
                                               : (std::filesystem::path(o.out_dir) / (v.name + ".gguf")).string();
    auto r = evaluate_gguf_variant(*input, v.options, path, *w, n_windows, *ref, v.name, !o.out_dir.empty());
    if (!r) return report_error(r.status());
    const KldStats& k = *r->report.kld;
    std::printf("%-12s %.4f bits/weight, %s: ppl %.4f, KLD %.6f, top-1 %.2f%%\n", v.name.c_str(), r->bits_per_weight,
                format_bytes(r->file_bytes).c_str(), r->report.ppl.ppl, k.kld.mean, 100.0 * k.top1_agreement);
    std::fflush(stdout);
    entries.push_back({v.name, v.plan, std::move(*r), false});
  }
  mark_pareto(entries);
  const double ref_ppl = entries.front().result.report.kld->reference.ppl;
  if (!o.out_dir.empty()) {
    // Each kept variant gets its quantization card, with this sweep's measurement and every
    // variant as the card's sweep points (itself highlighted).
    auto text_file = describe_files({o.text});
    if (!text_file) return report_error(text_file.status());
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string path = (std::filesystem::path(o.out_dir) / (entries[i].name + ".gguf")).string();
      GgufQuantizeRequest req;
      req.input = o.model.path;
      req.output = path;
      req.type = variants[i].options.preset->name;
      req.input_options = in_opts;
      auto plan = plan_gguf_quantization(*input, variants[i].options);
      if (!plan) return report_error(plan.status());
      if (Status s = write_gguf_quantize_card(req, *input, *plan, variants[i].options, CardRequest{}); !s)
        return report_error(s.with_context("card of " + entries[i].name));
      const std::string base = card_base_path(path);
      auto json_text = read_file(base + ".card.json");
      if (!json_text) return report_error(json_text.status());
      auto card = card_from_json(*json_text, base + ".card.json");
      if (!card) return report_error(card.status());
      const EvalReport& r = entries[i].result.report;
      fill_card_evaluation(card->evaluation, r, text_file->front());
      nlohmann::ordered_json points = nlohmann::ordered_json::array();
      for (size_t j = 0; j < entries.size(); ++j)
        points.push_back({{"label", entries[j].name},
                          {"bits_per_weight", entries[j].result.bits_per_weight},
                          {"kld_mean", entries[j].result.report.kld->kld.mean},
                          {"file_bytes", entries[j].result.file_bytes},
                          {"pareto", entries[j].pareto},
                          {"this", j == i}});
      nlohmann::ordered_json sweep;
      sweep["command"] = command_line();
      sweep["points"] = points;
      card->sweep_json = sweep.dump();
      if (Status s = write_card_files(*card, base); !s) return report_error(s);
    }
  }

  Table t;
  for (const char* h : {"variant", "bits/w", "size", "ppl", "dppl", "KLD", "+/-", "top-1 %", "Pareto"})
    t.add_column(h, std::string(h) == "variant" || std::string(h) == "Pareto" ? Table::Align::left : Table::Align::right);
  for (const SweepEntry& e : entries) {
    const EvalReport& r = e.result.report;
    t.add_row({e.name + (e.plan ? " (plan)" : ""), format_fixed(e.result.bits_per_weight, 3), format_bytes(e.result.file_bytes),
               format_fixed(r.ppl.ppl, 4), format_fixed(r.ppl.ppl - ref_ppl, 4), format_fixed(r.kld->kld.mean, 6),
               format_fixed(r.kld->kld.stderr_mean, 6), format_fixed(100.0 * r.kld->top1_agreement, 2), e.pareto ? "*" : ""});
  }
  std::printf("\nreference (unquantized) ppl %.4f on the same windows\n", ref_ppl);
  t.print(stdout);

  const std::string protocol = std::to_string(n_windows) + " of " + std::to_string(w->count) + " windows of " +
                               std::to_string(o.ctx) + " tokens of " + std::filesystem::path(o.text).filename().string() +
                               " (" + std::string(kPerplexityProtocol) + "); KLD against the unquantized model, nats";
  if (!o.json.empty()) {
    nlohmann::ordered_json j;
    j["format"] = "qforge-sweep-v1";
    j["model"] = o.model.path;
    j["text"] = o.text;
    j["text_sha256"] = w->text_sha256;
    j["protocol"] = std::string(kPerplexityProtocol);
    j["ctx"] = o.ctx;
    j["windows"] = n_windows;
    j["windows_total"] = w->count;
    j["ref_ppl"] = ref_ppl;
    nlohmann::ordered_json arr = nlohmann::ordered_json::array();
    for (const SweepEntry& e : entries) {
      const EvalReport& r = e.result.report;
      arr.push_back({{"name", e.name},
                     {"kind", e.plan ? "plan" : "preset"},
                     {"file_bytes", e.result.file_bytes},
                     {"tensor_bytes", e.result.tensor_bytes},
                     {"parameters", e.result.parameters},
                     {"bits_per_weight", e.result.bits_per_weight},
                     {"ppl", r.ppl.ppl},
                     {"ppl_stderr", r.ppl.ppl_stderr},
                     {"delta_ppl", r.ppl.ppl - ref_ppl},
                     {"kld_mean", r.kld->kld.mean},
                     {"kld_stderr", r.kld->kld.stderr_mean},
                     {"kld_p99", r.kld->kld.p99},
                     {"top1_agreement", 100.0 * r.kld->top1_agreement},
                     {"pareto", e.pareto},
                     {"quantize_seconds", e.result.quantize_seconds},
                     {"eval_seconds", r.seconds}});
    }
    j["entries"] = arr;
    j["command"] = command_line();
    j["qforge_version"] = QFORGE_VERSION;
    if (Status s = write_file_atomic(o.json, j.dump(2) + "\n"); !s) return report_error(s.with_context("--json"));
  }
  if (!o.md.empty()) {
    std::ostringstream md;
    md << "# GGUF sweep: " << std::filesystem::path(o.model.path).filename().string() << "\n\n";
    md << "Generated by `" << command_line() << "` (qforge " << QFORGE_VERSION << ").\n\n";
    md << "Protocol: " << protocol << ". Reference (unquantized) perplexity " << format_fixed(ref_ppl, 4)
       << ". Bits/weight count all tensor data (norms and the embedding included). * = on the Pareto front of file "
          "size vs KLD.\n\n";
    md << "| variant | bits/weight | file bytes | ppl | Δppl | KLD | ± | top-1 % | Pareto |\n";
    md << "|---|---:|---:|---:|---:|---:|---:|---:|:---:|\n";
    for (const SweepEntry& e : entries) {
      const EvalReport& r = e.result.report;
      md << "| " << e.name << (e.plan ? " (plan)" : "") << " | " << format_fixed(e.result.bits_per_weight, 3) << " | "
         << e.result.file_bytes << " | " << format_fixed(r.ppl.ppl, 4) << " | " << format_fixed(r.ppl.ppl - ref_ppl, 4)
         << " | " << format_fixed(r.kld->kld.mean, 6) << " | " << format_fixed(r.kld->kld.stderr_mean, 6) << " | "
         << format_fixed(100.0 * r.kld->top1_agreement, 2) << " | " << (e.pareto ? "*" : "") << " |\n";
    }
    if (Status s = write_file_atomic(o.md, md.str()); !s) return report_error(s.with_context("--md"));
  }
  if (!o.svg.empty()) {
    std::vector<SweepPoint> points;
    for (const SweepEntry& e : entries)
      points.push_back({e.name, e.result.bits_per_weight, e.result.report.kld->kld.mean, e.plan});
    const std::string title = "GGUF variants of " + std::filesystem::path(o.model.path).filename().string() +
                              ": size vs KL divergence";
    if (Status s = write_file_atomic(o.svg, sweep_svg(points, title, protocol)); !s) return report_error(s.with_context("--svg"));
  }
  return 0;
}

}  // namespace

void add_sweep_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<SweepCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "sweep", "Quantize with several GGUF presets (and plans), evaluate each against the unquantized model");
  cmd->add_option("model", o->model.path, "Model: HF directory, llama2.c .bin or F32/F16/BF16 GGUF")->required();
  cmd->add_option("--presets", o->presets, "GGUF presets, comma-separated (empty: none)")->capture_default_str();
  cmd->add_option("--plan", o->plans, "Mixed-precision plan files (qforge plan --out) to include (repeatable)");
  cmd->add_option("--text", o->text, "Held-out evaluation text")->required();
  cmd->add_option("--ctx", o->ctx, "Window length in tokens")->capture_default_str();
  cmd->add_option("--windows", o->windows, "Evaluate the first N windows (0: all)")->capture_default_str();
  cmd->add_option("--json", o->json, "Write the results as JSON");
  cmd->add_option("--md", o->md, "Write the results as a markdown table");
  cmd->add_option("--svg", o->svg, "Write a chart of bits/weight vs KLD with the Pareto front as SVG");
  cmd->add_option("--work-dir", o->work_dir, "Scratch directory for the reference cache and the variants (default: temp)");
  cmd->add_option("--out-dir", o->out_dir,
                  "Keep every variant's GGUF file in this directory, each with its quantization card (this sweep's "
                  "measurement and points)");
  cmd->add_flag("--no-vocab", o->no_vocab, "Quantize without a vocabulary (HF input without tokenizer.model)");
  cmd->add_option("-j,--threads", o->threads, "Threads for BLAS and OpenMP (default: all)");
  add_model_options(cmd, &o->model);
  cmd->callback([o, exit_code] { *exit_code = run_sweep(*o); });
}

}  // namespace qforge::cli
