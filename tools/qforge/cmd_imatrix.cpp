// qforge imatrix MODEL --calib FILE --out imatrix.gguf: the mean squared activation entering each
// input column of every linear in the transformer blocks, in llama.cpp's GGUF imatrix layout, so
// `qforge quantize --format gguf --imatrix` and llama-quantize can both use it.
//
// The calibration windows are those of `qforge quantize --calib` (ptq.h); the blocks run one at a
// time with the model's own (unquantized) weights, so the statistics equal those of a full forward
// pass. One chunk = one window (imatrix.chunk_count = windows, imatrix.chunk_size = ctx).
#include <filesystem>

#include "cli_common.h"
#include "cli_model.h"
#include "qforge/imatrix.h"
#include "qforge/parallel.h"
#include "quantize_calibrated.h"

namespace qforge::cli {
namespace {

// Records Σ x² per input column of every linear; changes nothing.
class ImatrixProcessor final : public BlockProcessor {
 public:
  explicit ImatrixProcessor(Architecture arch) : arch_(arch) {}
  std::string name() const override { return "imatrix"; }
  StatsRequest stats_request() const override {
    StatsRequest r;
    r.moments = true;
    return r;
  }
  Status process_block(BlockContext& ctx) override {
    for (const InputGroup& g : ctx.groups()) {
      for (const LinearSite& site : g.sites) {
        QFORGE_ASSIGN_OR_RETURN(std::string name, tensor_name_for_role(arch_, site.role, site.layer, false, TensorNaming::gguf));
        ImatrixSums s;
        s.n_cols = g.stats.in_features;
        s.in_sum2.assign(g.stats.sum_sq.begin(), g.stats.sum_sq.end());
        s.counts = {static_cast<float>(g.stats.tokens)};
        entries[name] = std::move(s);
      }
    }
    return Status::ok();
  }
  std::map<std::string, ImatrixSums> entries;

 private:
  Architecture arch_;
};

}  // namespace

void add_imatrix_command(CLI::App& app, int* exit_code) {
  struct Options {
    ModelSpec model;
    std::string calib, output;
    CalibrationOptions calib_options;
    int64_t batch_windows = 2;
    int threads = 0;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "imatrix", "Importance matrix (mean squared input activation per column of every linear) in llama.cpp's GGUF "
                 "imatrix layout");
  cmd->add_option("model", opt->model.path, "Model: HF directory, .safetensors, GGUF or llama2.c .bin")->required();
  cmd->add_option("--calib", opt->calib, "Calibration text file")->required();
  cmd->add_option("-o,--out", opt->output, "Output imatrix GGUF file (written atomically)")->required();
  cmd->add_option("--calib-windows", opt->calib_options.windows, "Calibration windows (default 128)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--calib-ctx", opt->calib_options.ctx, "Tokens per window, BOS included (default 512)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--seed", opt->calib_options.seed, "Seed of the window sampling (default 0)");
  cmd->add_option("--calib-batch", opt->batch_windows, "Windows run through a block at once (default 2)")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  cmd->add_option("-j,--threads", opt->threads, "Worker threads")->check(CLI::Range(1, 1024));
  add_model_options(cmd, &opt->model);
  cmd->callback([opt, exit_code] {
    auto fail = [&](const Status& s) { *exit_code = report_error(s); };
    ThreadSetting threads(opt->threads);
    install_interrupt_handler();
    const double start = now_seconds();
    if (Status s = check_output_path(opt->output, "--out"); !s) return fail(s);
    Expected<LoadedModel> m = load_cli_model(opt->model);
    if (!m) return fail(m.status());
    Expected<std::unique_ptr<Tokenizer>> tok = load_cli_tokenizer(opt->model, *m);
    if (!tok) return fail(tok.status());
    Expected<CalibrationSet> calib = load_calibration_set(opt->calib, **tok, opt->calib_options);
    if (!calib) return fail(calib.status());
    std::fprintf(stderr, "calibration: %s (%lld tokens): %lld windows x %lld tokens, seed %llu\n", calib->path.c_str(),
                 static_cast<long long>(calib->file_tokens), static_cast<long long>(calib->windows),
                 static_cast<long long>(calib->ctx), static_cast<unsigned long long>(calib->seed));
    ImatrixProcessor proc(m->model.config().arch);
    Progress progress("imatrix", m->model.config().num_layers, "blocks", progress_options());
    PipelineOptions po;
    po.batch_windows = opt->batch_windows;
    po.on_block_done = [&](int, std::span<const uint8_t>) {
      progress.tick();
      return Status::ok();
    };
    auto pipeline = CalibrationPipeline::create(m->model, *calib, po);
    if (!pipeline) return fail(pipeline.status());
    Status run = (*pipeline)->run(proc);
    progress.finish();
    if (!run) return fail(run);
    const std::string dataset = std::filesystem::path(opt->calib).filename().string();
    if (Status s = write_imatrix_gguf(opt->output, proc.entries, {dataset}, calib->windows, calib->ctx); !s)
      return fail(s);
    std::printf("wrote %s: %zu entries from %lld tokens (%lld windows x %lld) in %s\n", opt->output.c_str(),
                proc.entries.size(), static_cast<long long>(calib->tokens_used()),
                static_cast<long long>(calib->windows), static_cast<long long>(calib->ctx),
                format_seconds(now_seconds() - start).c_str());
    *exit_code = 0;
  });
}

}  // namespace qforge::cli
