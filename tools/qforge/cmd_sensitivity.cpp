// qforge sensitivity MODEL --text CALIB --types Q8_0,...: the KL divergence each tensor (or tensor
// group) alone causes in each candidate GGUF type, with SQNR and the imatrix-weighted error proxy
// (qforge/sensitivity.h, docs/mixed-precision.md).
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>

#include "cli_common.h"
#include "cli_model.h"
#include "commands.h"
#include "mixed_precision_cli.h"
#include "qforge/atomic_file.h"
#include "qforge/sensitivity.h"

namespace qforge::cli {

Expected<std::vector<GgmlType>> parse_type_list(const std::string& list, const std::string& option) {
  std::vector<GgmlType> types;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string name = list.substr(start, comma - start);
    if (!name.empty()) {
      QFORGE_ASSIGN_OR_RETURN(GgmlType t, parse_gguf_weight_type(name, option));
      QFORGE_RETURN_IF_ERROR(gguf_block_type_scheme(t).status().with_context(option + " " + name));
      if (std::find(types.begin(), types.end(), t) != types.end())
        return invalid_argument(option + ": " + name + " is listed twice");
      types.push_back(t);
    }
    start = comma + 1;
  }
  if (types.empty()) return invalid_argument(option + ": no type given");
  return types;
}

namespace {

struct SensitivityCommandOptions {
  ModelSpec model;
  std::string text;
  std::string types = "Q8_0,Q6_K,Q5_K,Q4_K,Q3_K,Q2_K";
  std::string granularity = "tensor";
  int64_t ctx = 512;
  int64_t windows = 8;
  bool proxy_only = false;
  std::string filter;
  std::string json, svg;
  int threads = 0;
};

std::string sci(double v) { return std::isfinite(v) ? format_sci(v, 2) : (std::isnan(v) ? "-" : "inf"); }

void print_report(const SensitivityReport& r, std::FILE* out) {
  Table t;
  t.add_column("unit", Table::Align::left);
  t.add_column("params");
  for (GgmlType type : r.types) t.add_column(std::string(r.measured_kld ? "KLD " : "proxy ") + ggml_type_name(type));
  t.add_column(std::string("SQNR dB ") + ggml_type_name(r.types.back()));
  for (const SensitivityUnit& u : r.units) {
    std::vector<std::string> row{u.name, format_count(static_cast<uint64_t>(u.parameters))};
    for (const SensitivityCell& c : u.cells) row.push_back(c.valid ? sci(r.measured_kld ? c.kld : c.proxy) : "n/a");
    row.push_back(u.cells.back().valid ? format_fixed(u.cells.back().sqnr_db, 2) : "n/a");
    t.add_row(row);
  }
  t.print(out);
  if (r.measured_kld) {
    std::fprintf(out, "\nSpearman rank correlation with the measured KLD: proxy %s over all %s cells; -SQNR %s\n",
                 format_fixed(r.spearman_all, 3).c_str(), "valid", format_fixed(r.spearman_sqnr_all, 3).c_str());
    std::fprintf(out, "  per type (proxy vs KLD across units):");
    for (size_t i = 0; i < r.types.size(); ++i)
      std::fprintf(out, " %s %s", ggml_type_name(r.types[i]), format_fixed(r.spearman_per_type[i], 3).c_str());
    std::fprintf(out, "\n");
    std::fprintf(out,
                 "cost: %lld measurements ran %lld layer passes + %lld head passes over %lld windows of %lld "
                 "(re-running the whole model each time: %lld + %lld); reference pass %s, total %s\n",
                 static_cast<long long>(r.measurements), static_cast<long long>(r.layer_passes),
                 static_cast<long long>(r.head_passes), static_cast<long long>(r.windows),
                 static_cast<long long>(r.ctx), static_cast<long long>(r.naive_layer_passes),
                 static_cast<long long>(r.naive_head_passes), format_seconds(r.reference_seconds).c_str(),
                 format_seconds(r.seconds).c_str());
  }
  std::fprintf(out, "reference ppl on these windows %.4f\n", r.ref_ppl);
}

int run_sensitivity(const SensitivityCommandOptions& o) {
  if (o.windows < 0) return report_error(invalid_argument("--windows must be >= 0"));
  for (const auto& [path, option] : {std::pair{o.json, "--json"}, std::pair{o.svg, "--svg"}})
    if (!path.empty())
      if (Status s = check_output_path(path, option); !s) return report_error(s);
  auto types = parse_type_list(o.types, "--types");
  if (!types) return report_error(types.status());
  auto granularity = parse_sensitivity_granularity(o.granularity);
  if (!granularity) return report_error(granularity.status());
  if (!std::filesystem::exists(o.text)) return report_error(io_error("--text " + o.text + ": no such file"));
  ThreadSetting threads(o.threads);

  ModelSpec spec = o.model;
  spec = reference_spec(spec);
  auto loaded = load_cli_model(spec);
  if (!loaded) return report_error(loaded.status());
  auto tok = load_cli_tokenizer(spec, *loaded);
  if (!tok) return report_error(tok.status());
  auto windows = load_text_windows(o.text, o.ctx, **tok, "--text");
  if (!windows) return report_error(windows.status());
  GgufModelInputOptions in_opts;
  in_opts.no_vocab = true;  // names and shapes only
  auto input = GgufModelInput::open(o.model.path, in_opts);
  if (!input) return report_error(input.status().with_context("the GGUF view of " + o.model.path));

  const int64_t n_windows = o.windows > 0 ? std::min(o.windows, windows->count) : windows->count;
  std::printf("model:  %s\n", describe_model(*loaded).c_str());
  std::printf("text:   %s, %lld of %lld windows of %lld tokens (%s)\n", o.text.c_str(), static_cast<long long>(n_windows),
              static_cast<long long>(windows->count), static_cast<long long>(o.ctx), perplexity_protocol_description().c_str());
  std::fflush(stdout);

  SensitivityOptions so;
  so.types = *types;
  so.granularity = *granularity;
  so.windows = n_windows;
  so.measure_kld = !o.proxy_only;
  auto filter = compile_regex(o.filter, "--filter");
  if (!filter) return report_error(filter.status());
  so.filter = *filter;
  std::unique_ptr<Progress> bar;
  so.on_progress = [&](int64_t done, int64_t total) {
    if (!bar) bar = std::make_unique<Progress>("sensitivity", total, "measurements", progress_options());
    bar->tick(done - bar->done());
  };
  so.should_stop = [] { return check_interrupted("sensitivity"); };
  auto report = measure_sensitivity(loaded->model, *input, *windows, so);
  if (bar) bar->finish();
  if (!report) return report_error(report.status());
  report->model = o.model.path;
  std::printf("\n");
  print_report(*report, stdout);
  if (!o.json.empty()) {
    nlohmann::ordered_json j = sensitivity_to_json(*report);
    j["command"] = command_line();
    j["qforge_version"] = QFORGE_VERSION;
    if (Status s = write_file_atomic(o.json, j.dump(1) + "\n"); !s) return report_error(s.with_context("--json"));
    std::printf("wrote %s\n", o.json.c_str());
  }
  if (!o.svg.empty()) {
    if (Status s = write_file_atomic(o.svg, sensitivity_svg(*report)); !s) return report_error(s.with_context("--svg"));
    std::printf("wrote %s\n", o.svg.c_str());
  }
  return 0;
}

}  // namespace

void add_sensitivity_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<SensitivityCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "sensitivity", "KL divergence caused by quantizing each tensor (or tensor group) alone to each candidate GGUF type");
  cmd->add_option("model", o->model.path, "Model: HF directory, llama2.c .bin or F32/F16/BF16 GGUF")->required();
  cmd->add_option("--text", o->text, "Calibration text (windows as qforge eval cuts them)")->required();
  cmd->add_option("--types", o->types, "Candidate GGUF types, comma-separated")->capture_default_str();
  cmd->add_option("--granularity", o->granularity, "tensor (every tensor) or group (a layer's attention / MLP)")
      ->capture_default_str();
  cmd->add_option("--ctx", o->ctx, "Window length in tokens")->capture_default_str();
  cmd->add_option("--windows", o->windows, "Evaluate the first N windows (0: all)")->capture_default_str();
  cmd->add_option("--filter", o->filter, "Only units whose name matches this regex (the report then cannot be planned with)");
  cmd->add_flag("--proxy-only", o->proxy_only, "Only SQNR and the imatrix-weighted error proxy (no KLD re-runs)");
  cmd->add_option("--json", o->json, "Write the report as JSON (input of qforge plan --sensitivity)");
  cmd->add_option("--svg", o->svg, "Write a heatmap of the KLD per unit and type as SVG");
  cmd->add_option("-j,--threads", o->threads, "Threads for BLAS and OpenMP (default: all)");
  add_model_options(cmd, &o->model);
  cmd->callback([o, exit_code] { *exit_code = run_sensitivity(*o); });
}

}  // namespace qforge::cli
