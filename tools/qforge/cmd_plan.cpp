// qforge plan MODEL --sensitivity S.json --target-bpw X | --target-size BYTES | --max-kld Y |
// --max-ppl-increase P: a GGUF type per tensor minimising the predicted KLD under a size budget, or
// the smallest plan whose measured KLD (perplexity increase) meets a bound (docs/mixed-precision.md).
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <map>

#include "cli_common.h"
#include "cli_model.h"
#include "commands.h"
#include "mixed_precision_cli.h"
#include "qforge/atomic_file.h"
#include "qforge/mixed_precision.h"

namespace qforge::cli {
namespace {

struct PlanCommandOptions {
  ModelSpec model;
  std::string sensitivity;  // JSON from qforge sensitivity
  // Inline sensitivity run (without --sensitivity).
  std::string text;
  std::string types = "Q8_0,Q6_K,Q5_K,Q4_K,Q3_K,Q2_K";
  std::string granularity = "tensor";
  int64_t windows = 8;
  int64_t ctx = 512;
  std::string save_sensitivity;
  // Budget.
  double target_bpw = 0;
  uint64_t target_size = 0;
  double max_kld = 0;
  double max_ppl_increase = 0;  // percent
  std::string cost = "kld";
  // Measured search.
  std::string eval_text;
  int64_t eval_windows = 32;
  int max_iterations = 6;
  std::string work_dir;
  // Output.
  std::string out;
  std::string json;
  bool no_vocab = false;
  int threads = 0;
};

void print_plan(const MixedPrecisionPlan& plan, std::FILE* out) {
  std::map<std::string, std::pair<int, int64_t>> by_type;
  for (const PlanTensor& t : plan.tensors) by_type[ggml_type_name(t.type)].first += 1;
  std::fprintf(out, "plan: preset %s, %zu tensors:", plan.preset.c_str(), plan.tensors.size());
  for (const auto& [name, n] : by_type) std::fprintf(out, " %s x%d", name.c_str(), n.first);
  std::fprintf(out, "\n      file %s (%llu bytes), %.4f bits/weight, predicted KLD %.6f (sum of per-unit costs)%s\n",
               format_bytes(plan.file_bytes).c_str(), static_cast<unsigned long long>(plan.file_bytes),
               plan.bits_per_weight, plan.predicted,
               plan.exact ? ", exact optimum" : (", within " + format_sci(plan.predicted - plan.lower_bound, 2) + " of the Lagrangian bound").c_str());
}

int run_plan(const PlanCommandOptions& o) {
  const int budgets = (o.target_bpw > 0) + (o.target_size > 0) + (o.max_kld > 0) + (o.max_ppl_increase > 0);
  if (budgets != 1)
    return report_error(invalid_argument("give exactly one of --target-bpw, --target-size, --max-kld, --max-ppl-increase"));
  if (o.sensitivity.empty() && o.text.empty())
    return report_error(invalid_argument("give --sensitivity S.json (from qforge sensitivity) or --text CALIB to measure it"));
  const bool search = o.max_kld > 0 || o.max_ppl_increase > 0;
  if (search && o.eval_text.empty())
    return report_error(invalid_argument("--max-kld / --max-ppl-increase measure plans: give --eval-text HELDOUT"));
  if (o.cost != "kld" && o.cost != "proxy") return report_error(invalid_argument("--cost must be kld or proxy"));
  for (const auto& [path, option] : {std::pair{o.out, "--out"}, std::pair{o.json, "--json"},
                                     std::pair{o.save_sensitivity, "--save-sensitivity"}})
    if (!path.empty())
      if (Status s = check_output_path(path, option); !s) return report_error(s);
  for (const auto& [path, option] : {std::pair{o.sensitivity, "--sensitivity"}, std::pair{o.text, "--text"},
                                     std::pair{o.eval_text, "--eval-text"}})
    if (!path.empty() && !std::filesystem::exists(path)) return report_error(io_error(std::string(option) + " " + path + ": no such file"));
  ThreadSetting threads(o.threads);

  // The GGUF view quantize will see (same vocabulary options), so sizes match its output.
  GgufModelInputOptions in_opts;
  in_opts.tokenizer = o.model.tokenizer;
  in_opts.no_vocab = o.no_vocab;
  auto input = GgufModelInput::open(o.model.path, in_opts);
  if (!input) return report_error(input.status());

  std::optional<LoadedModel> loaded;  // the f32 model: inline sensitivity and the search's reference
  std::unique_ptr<Tokenizer> tokenizer;
  auto load_model = [&]() -> Status {
    if (loaded) return Status::ok();
    ModelSpec spec = o.model;
    spec = reference_spec(spec);
    QFORGE_ASSIGN_OR_RETURN(LoadedModel m, load_cli_model(spec));
    loaded.emplace(std::move(m));
    QFORGE_ASSIGN_OR_RETURN(tokenizer, load_cli_tokenizer(spec, *loaded));
    return Status::ok();
  };

  SensitivityReport sensitivity;
  if (!o.sensitivity.empty()) {
    auto s = read_sensitivity_json(o.sensitivity);
    if (!s) return report_error(s.status().with_context("--sensitivity"));
    sensitivity = std::move(*s);
  } else {
    if (Status s = load_model(); !s) return report_error(s);
    auto types = parse_type_list(o.types, "--types");
    if (!types) return report_error(types.status());
    auto gran = parse_sensitivity_granularity(o.granularity);
    if (!gran) return report_error(gran.status());
    auto w = load_text_windows(o.text, o.ctx, *tokenizer, "--text");
    if (!w) return report_error(w.status());
    SensitivityOptions so;
    so.types = *types;
    so.granularity = *gran;
    so.windows = o.windows;
    so.measure_kld = o.cost == "kld";
    std::unique_ptr<Progress> bar;
    so.on_progress = [&](int64_t done, int64_t total) {
      if (!bar) bar = std::make_unique<Progress>("sensitivity", total, "measurements", progress_options());
      bar->tick(done - bar->done());
    };
    so.should_stop = [] { return check_interrupted("sensitivity"); };
    GgufModelInputOptions names_only;
    names_only.no_vocab = true;
    auto names = GgufModelInput::open(o.model.path, names_only);
    if (!names) return report_error(names.status());
    auto s = measure_sensitivity(loaded->model, *names, *w, so);
    if (bar) bar->finish();
    if (!s) return report_error(s.status());
    sensitivity = std::move(*s);
    sensitivity.model = o.model.path;
    if (!o.save_sensitivity.empty()) {
      nlohmann::ordered_json j = sensitivity_to_json(sensitivity);
      j["command"] = command_line();
      if (Status st = write_file_atomic(o.save_sensitivity, j.dump(1) + "\n"); !st) return report_error(st);
    }
  }
  std::printf("sensitivity: %zu units (%s granularity), types", sensitivity.units.size(),
              sensitivity_granularity_name(sensitivity.granularity));
  for (GgmlType t : sensitivity.types) std::printf(" %s", ggml_type_name(t));
  std::printf("; measured on %s, %lld windows of %lld\n", sensitivity.text.c_str(),
              static_cast<long long>(sensitivity.windows), static_cast<long long>(sensitivity.ctx));

  auto problem = PlanProblem::create(*input, sensitivity, o.cost == "kld" ? PlanCost::kld : PlanCost::proxy);
  if (!problem) return report_error(problem.status().with_context("--sensitivity"));
  std::printf("possible plans: %.4f .. %.4f bits/weight, files of %s .. %s\n", problem->min_bits_per_weight(),
              problem->max_bits_per_weight(), format_bytes(problem->min_file_bytes()).c_str(),
              format_bytes(problem->max_file_bytes()).c_str());

  MixedPrecisionPlan plan;
  nlohmann::ordered_json search_json;
  std::string header;
  if (!search) {
    PlanBudget budget;
    if (o.target_bpw > 0) {
      budget.kind = PlanBudgetKind::bits_per_weight;
      budget.bits_per_weight = o.target_bpw;
    } else {
      budget.kind = PlanBudgetKind::file_bytes;
      budget.file_bytes = o.target_size;
    }
    auto p = problem->solve(budget);
    if (!p) return report_error(p.status());
    plan = std::move(*p);
  } else {
    if (Status s = load_model(); !s) return report_error(s);
    auto w = load_text_windows(o.eval_text, o.ctx, *tokenizer, "--eval-text");
    if (!w) return report_error(w.status());
    const int64_t n_windows = o.eval_windows > 0 ? std::min(o.eval_windows, w->count) : w->count;
    auto scratch = ScratchDir::create(o.work_dir, "qforge-plan");
    if (!scratch) return report_error(scratch.status());
    std::printf("measuring on %s: %lld of %lld windows of %lld; reference log-probabilities cached in %s\n",
                o.eval_text.c_str(), static_cast<long long>(n_windows), static_cast<long long>(w->count),
                static_cast<long long>(o.ctx), (*scratch)->path().c_str());
    std::fflush(stdout);
    auto ref = make_reference_cache(loaded->model, o.model.path, *w, n_windows, o.eval_text, **scratch);
    if (!ref) return report_error(ref.status());
    PlanSearchOptions so;
    so.metric = o.max_kld > 0 ? PlanMetric::kld : PlanMetric::ln_ppl_ratio;
    so.bound = o.max_kld > 0 ? o.max_kld : std::log1p(o.max_ppl_increase / 100.0);
    so.max_iterations = o.max_iterations;
    so.log = [](const std::string& line) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    };
    int counter = 0;
    nlohmann::ordered_json iterations = nlohmann::ordered_json::array();
    auto measure = [&](const MixedPrecisionPlan& p) -> Expected<double> {
      QFORGE_ASSIGN_OR_RETURN(GgufQuantizeOptions qo, problem->options_for(p));
      const std::string path = (*scratch)->file("plan-" + std::to_string(++counter) + ".gguf");
      QFORGE_ASSIGN_OR_RETURN(VariantResult v, evaluate_gguf_variant(*input, qo, path, *w, n_windows, *ref,
                                                                     "measure plan " + std::to_string(counter)));
      const KldStats& k = *v.report.kld;
      std::printf("  plan %d: ppl %.4f (reference %.4f, %+.3f%%), KLD %.6f +/- %.6f, top-1 %.2f%%\n", counter,
                  v.report.ppl.ppl, k.reference.ppl, 100.0 * (v.report.ppl.ppl / k.reference.ppl - 1.0), k.kld.mean,
                  k.kld.stderr_mean, 100.0 * k.top1_agreement);
      iterations.push_back({{"file_bytes", v.file_bytes},
                            {"bits_per_weight", v.bits_per_weight},
                            {"predicted", p.predicted},
                            {"ppl", v.report.ppl.ppl},
                            {"ref_ppl", k.reference.ppl},
                            {"kld_mean", k.kld.mean},
                            {"kld_stderr", k.kld.stderr_mean},
                            {"top1_agreement", 100.0 * k.top1_agreement}});
      return so.metric == PlanMetric::kld ? k.kld.mean : k.ln_ppl_ratio;
    };
    auto result = search_plan_for_bound(*problem, so, measure);
    if (!result) return report_error(result.status());
    search_json["metric"] = so.metric == PlanMetric::kld ? "kld" : "ln_ppl_ratio";
    search_json["bound"] = so.bound;
    search_json["eval_text"] = o.eval_text;
    search_json["eval_windows"] = n_windows;
    search_json["ctx"] = o.ctx;
    for (size_t i = 0; i < result->iterations.size() && i < iterations.size(); ++i) {
      iterations[i]["budget_bytes"] = result->iterations[i].budget_bytes;
      iterations[i]["scale"] = result->iterations[i].scale;
      iterations[i]["measured_metric"] = result->iterations[i].measured;
      iterations[i]["meets"] = result->iterations[i].meets;
    }
    search_json["iterations"] = iterations;
    if (result->best < 0) {
      if (!o.json.empty()) {
        nlohmann::ordered_json j;
        j["search"] = search_json;
        j["found"] = false;
        (void)write_file_atomic(o.json, j.dump(2) + "\n");
      }
      return report_error(invalid_argument(
          result->largest_fails
              ? "no plan from these types meets the bound: the largest one measured above it"
              : "no plan meeting the bound was found in " + std::to_string(o.max_iterations) +
                    " iterations (raise --max-iterations)"));
    }
    plan = result->iterations[static_cast<size_t>(result->best)].plan;
    char buf[200];
    std::snprintf(buf, sizeof buf, "measured %s %.6f <= %.6f on %lld windows of %s (iteration %d of %zu)",
                  so.metric == PlanMetric::kld ? "KLD" : "ln(ppl/ppl_ref)",
                  result->iterations[static_cast<size_t>(result->best)].measured, so.bound,
                  static_cast<long long>(n_windows), std::filesystem::path(o.eval_text).filename().string().c_str(),
                  result->best + 1, result->iterations.size());
    header = buf;
    search_json["found"] = true;
    search_json["best_iteration"] = result->best + 1;
  }
  print_plan(plan, stdout);
  const std::string comment = "model: " + o.model.path + "\nsensitivity: " +
                              (o.sensitivity.empty() ? std::string("measured inline") : o.sensitivity) + " (" +
                              sensitivity_granularity_name(sensitivity.granularity) + ", " +
                              std::to_string(sensitivity.windows) + " windows of " + std::to_string(sensitivity.ctx) +
                              " on " + sensitivity.text + ")" + (header.empty() ? "" : "\n" + header);
  if (!o.out.empty()) {
    if (Status s = write_file_atomic(o.out, plan_file_text(plan, comment)); !s) return report_error(s.with_context("--out"));
    std::printf("wrote %s (apply with: qforge quantize %s --plan %s --out model.gguf)\n", o.out.c_str(),
                o.model.path.c_str(), o.out.c_str());
  }
  if (!o.json.empty()) {
    nlohmann::ordered_json j = plan_to_json(plan);
    if (!search_json.is_null()) j["search"] = search_json;
    j["command"] = command_line();
    j["qforge_version"] = QFORGE_VERSION;
    if (Status s = write_file_atomic(o.json, j.dump(2) + "\n"); !s) return report_error(s.with_context("--json"));
  }
  return 0;
}

}  // namespace

void add_plan_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<PlanCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Mixed-precision GGUF plan: a type per tensor minimising the predicted KLD under a size budget");
  cmd->add_option("model", o->model.path, "Model: HF directory, llama2.c .bin or F32/F16/BF16 GGUF")->required();
  cmd->add_option("--sensitivity", o->sensitivity, "qforge sensitivity --json output");
  cmd->add_option("--text", o->text, "Without --sensitivity: calibration text to measure it on");
  cmd->add_option("--types", o->types, "Without --sensitivity: candidate types")->capture_default_str();
  cmd->add_option("--granularity", o->granularity, "Without --sensitivity: tensor or group")->capture_default_str();
  cmd->add_option("--windows", o->windows, "Without --sensitivity: calibration windows")->capture_default_str();
  cmd->add_option("--ctx", o->ctx, "Window length (sensitivity and measurements)")->capture_default_str();
  cmd->add_option("--save-sensitivity", o->save_sensitivity, "Write the inline sensitivity report as JSON");
  cmd->add_option("--target-bpw", o->target_bpw, "Bits per weight of all tensor data, as qforge quantize prints it");
  cmd->add_option("--target-size", o->target_size, "Exact GGUF file size limit in bytes");
  cmd->add_option("--max-kld", o->max_kld, "Smallest plan whose measured mean KLD (nats) is at most this");
  cmd->add_option("--max-ppl-increase", o->max_ppl_increase, "Smallest plan whose measured perplexity is at most P% above the reference's");
  cmd->add_option("--cost", o->cost, "Per-unit cost: kld (measured) or proxy (imatrix-weighted error)")->capture_default_str();
  cmd->add_option("--eval-text", o->eval_text, "--max-kld / --max-ppl-increase: held-out text the plans are measured on");
  cmd->add_option("--eval-windows", o->eval_windows, "Windows of --eval-text measured (0: all)")->capture_default_str();
  cmd->add_option("--max-iterations", o->max_iterations, "Quantize-and-measure rounds of the search")->capture_default_str();
  cmd->add_option("--work-dir", o->work_dir, "Scratch directory for the reference cache and trial files (default: temp)");
  cmd->add_option("-o,--out", o->out, "Write the plan as a --tensor-type-file (qforge quantize --plan FILE)");
  cmd->add_option("--json", o->json, "Write the plan (and the search's iterations) as JSON");
  cmd->add_flag("--no-vocab", o->no_vocab, "Size the plan for a file quantized with --no-vocab");
  cmd->add_option("-j,--threads", o->threads, "Threads for BLAS and OpenMP (default: all)");
  add_model_options(cmd, &o->model);
  cmd->callback([o, exit_code] { *exit_code = run_plan(*o); });
}

}  // namespace qforge::cli
