// qforge analyze PATH --scheme S...: quantize weights in memory and measure the reconstruction error.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "commands.h"
#include "qforge/atomic_file.h"
#include "qforge/packed.h"
#include "qforge/parallel.h"

namespace qforge::cli {

double AnalyzeTotals::sqnr_db() const {
  if (noise == 0) return signal > 0 ? std::numeric_limits<double>::infinity() : 0.0;
  if (signal == 0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / noise);
}
double AnalyzeTotals::rel_rmse() const { return signal > 0 ? std::sqrt(noise / signal) : (noise > 0 ? INFINITY : 0.0); }
double AnalyzeTotals::bits_per_weight() const {
  return elements > 0 ? 8.0 * static_cast<double>(nbytes) / static_cast<double>(elements) : 0.0;
}

namespace {

AnalyzeCell skipped_cell(std::string reason) {
  AnalyzeCell c;
  c.skipped = true;
  c.reason = std::move(reason);
  return c;
}

// Measures one tensor under every scheme. Errors that concern only this tensor/scheme pair
// (shape incompatible, non-finite weights) become skipped cells; only I/O errors propagate.
Status analyze_one(const SafetensorsCheckpoint& ckpt, const SelectedTensor& sel, const std::vector<Scheme>& schemes,
                   AnalyzeTensor* out) {
  out->name = sel.name;
  out->shape = ckpt.find(sel.name)->shape;
  out->transposed = sel.transposed;
  out->cells.assign(schemes.size(), AnalyzeCell{});
  Expected<WeightMatrix> m = load_weight_matrix(ckpt, sel);
  if (!m) {
    if (m.status().code() == ErrorCode::io_error) return m.status();
    for (auto& c : out->cells) c = skipped_cell(m.status().message());
    return Status::ok();
  }
  const int64_t rows = m->rows, cols = m->cols;
  const float* w = m->data();
  const int64_t n = rows * cols;
  double signal = 0;
  for (int64_t i = 0; i < n; ++i) signal += static_cast<double>(w[i]) * w[i];
  std::vector<float> approx(static_cast<size_t>(n));
  for (size_t s = 0; s < schemes.size(); ++s) {
    AnalyzeCell& cell = out->cells[s];
    if (Status v = validate_scheme(schemes[s], rows, cols); !v) {
      cell = skipped_cell(v.message());
      continue;
    }
    Expected<QuantizedTensor> q = quantize(schemes[s], w, rows, cols);
    if (!q) {
      cell = skipped_cell(q.status().message());
      continue;
    }
    if (Status d = dequantize(*q, approx.data()); !d) {
      cell = skipped_cell(d.message());
      continue;
    }
    cell.stats = error_stats(w, approx.data(), n);
    double noise = 0;
    for (int64_t i = 0; i < n; ++i) {
      double e = static_cast<double>(w[i]) - approx[static_cast<size_t>(i)];
      noise += e * e;
    }
    cell.signal = signal;
    cell.noise = noise;
    cell.nbytes = q->nbytes();
    cell.bits_per_weight = q->bits_per_weight();
  }
  return Status::ok();
}

std::string cell_reason(const std::string& reason) {
  std::string r = reason;
  std::replace(r.begin(), r.end(), '\n', ' ');
  return "skipped: " + r;
}

double finite_or_nan(double v) { return std::isfinite(v) ? v : std::numeric_limits<double>::quiet_NaN(); }

}  // namespace

Expected<AnalyzeResult> analyze_tensors(const SafetensorsCheckpoint& ckpt, const std::vector<SelectedTensor>& names,
                                        const std::vector<Scheme>& schemes) {
  AnalyzeResult r;
  r.source = ckpt.path();
  r.schemes = schemes;
  r.tensors.resize(names.size());
  // Largest tensors first so the dynamic schedule balances; results go to fixed slots.
  std::vector<size_t> order(names.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return shape_numel(ckpt.find(names[a].name)->shape) > shape_numel(ckpt.find(names[b].name)->shape);
  });
  std::vector<Status> status(names.size());
  Progress progress("analyze", static_cast<int64_t>(names.size()), "tensors", progress_options());
  const int64_t count = static_cast<int64_t>(names.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < count; ++k) {
    size_t i = order[static_cast<size_t>(k)];
    status[i] = check_interrupted("analyze");
    if (!status[i]) continue;
    status[i] = analyze_one(ckpt, names[i], schemes, &r.tensors[i]);
    progress.tick();
  }
  progress.finish();
  for (const auto& s : status) QFORGE_RETURN_IF_ERROR(s);

  r.totals.assign(schemes.size(), AnalyzeTotals{});
  for (const auto& t : r.tensors) {
    for (size_t s = 0; s < schemes.size(); ++s) {
      const AnalyzeCell& c = t.cells[s];
      AnalyzeTotals& tot = r.totals[s];
      if (c.skipped) {
        ++tot.skipped;
        continue;
      }
      ++tot.tensors;
      tot.elements += c.stats.count;
      tot.signal += c.signal;
      tot.noise += c.noise;
      tot.max_abs = std::max(tot.max_abs, c.stats.max_abs);
      tot.nbytes += c.nbytes;
    }
  }
  return r;
}

void print_analyze_tensors(const AnalyzeResult& r, std::FILE* out) {
  Table t;
  t.add_column("tensor", Table::Align::left);
  t.add_column("shape", Table::Align::left);
  t.add_column("scheme", Table::Align::left);
  t.add_column("SQNR dB");
  t.add_column("rel RMSE");
  t.add_column("max abs err");
  t.add_column("bits/w");
  std::vector<std::string> skipped_notes;
  for (size_t i = 0; i < r.tensors.size(); ++i) {
    const auto& tensor = r.tensors[i];
    if (i > 0 && r.schemes.size() > 1) t.add_separator();
    for (size_t s = 0; s < r.schemes.size(); ++s) {
      const AnalyzeCell& c = tensor.cells[s];
      std::string shape = shape_to_string(tensor.shape) + (tensor.transposed ? " (T)" : "");
      std::vector<std::string> row = {s == 0 ? tensor.name : "", s == 0 ? shape : "",
                                      r.schemes[s].name()};
      if (c.skipped) {
        row.push_back("-");
        row.push_back("-");
        row.push_back("-");
        row.push_back("-");
        skipped_notes.push_back(tensor.name + " with " + r.schemes[s].name() + ": " + cell_reason(c.reason));
      } else {
        row.push_back(format_fixed(c.stats.sqnr_db, 2));
        row.push_back(format_sci(c.stats.rel_rmse, 3));
        row.push_back(format_sci(c.stats.max_abs, 3));
        row.push_back(format_fixed(c.bits_per_weight, 3));
      }
      t.add_row(std::move(row));
    }
  }
  t.print(out);
  if (std::any_of(r.tensors.begin(), r.tensors.end(), [](const AnalyzeTensor& x) { return x.transposed; }))
    std::fprintf(out, "  (T): stored [in, out]; quantized as its [out, in] transpose\n");
  for (const auto& note : skipped_notes) std::fprintf(out, "  %s\n", note.c_str());
}

void print_analyze_totals(const AnalyzeResult& r, std::FILE* out) {
  Table t;
  t.add_column("scheme", Table::Align::left);
  t.add_column("tensors");
  t.add_column("params");
  t.add_column("bits/w");
  t.add_column("SQNR dB");
  t.add_column("rel RMSE");
  t.add_column("max abs err");
  t.add_column("quantized size", Table::Align::right);
  for (size_t s = 0; s < r.schemes.size(); ++s) {
    const AnalyzeTotals& tot = r.totals[s];
    std::string tensors = std::to_string(tot.tensors);
    if (tot.skipped) tensors += " (+" + std::to_string(tot.skipped) + " skipped)";
    if (tot.tensors == 0) {
      t.add_row({r.schemes[s].name(), tensors, "0", "-", "-", "-", "-", "-"});
      continue;
    }
    t.add_row({r.schemes[s].name(), tensors, format_count(static_cast<uint64_t>(tot.elements)),
               format_fixed(tot.bits_per_weight(), 3), format_fixed(tot.sqnr_db(), 2), format_sci(tot.rel_rmse(), 3),
               format_sci(tot.max_abs, 3), format_bytes(tot.nbytes)});
  }
  t.print(out);
}

Status write_analyze_json(const AnalyzeResult& r, const std::string& path) {
  using json = nlohmann::json;
  json j;
  j["source"] = r.source;
  j["command"] = command_line();
  json schemes = json::array();
  for (const auto& s : r.schemes) schemes.push_back(s.name());
  j["schemes"] = schemes;
  json tensors = json::array();
  for (const auto& t : r.tensors) {
    json results = json::array();
    for (size_t s = 0; s < r.schemes.size(); ++s) {
      const AnalyzeCell& c = t.cells[s];
      json cell = {{"scheme", r.schemes[s].name()}, {"skipped", c.skipped}};
      if (c.skipped) {
        cell["reason"] = c.reason;
      } else {
        // Non-finite values (an exact reconstruction has SQNR +inf) are written as null.
        cell["sqnr_db"] = finite_or_nan(c.stats.sqnr_db);
        cell["rel_rmse"] = c.stats.rel_rmse;
        cell["max_abs_err"] = c.stats.max_abs;
        cell["mse"] = c.stats.mse;
        cell["bits_per_weight"] = c.bits_per_weight;
        cell["bytes"] = c.nbytes;
      }
      results.push_back(std::move(cell));
    }
    tensors.push_back(
        {{"name", t.name}, {"shape", t.shape}, {"transposed", t.transposed}, {"results", std::move(results)}});
  }
  j["tensors"] = std::move(tensors);
  json totals = json::array();
  for (size_t s = 0; s < r.schemes.size(); ++s) {
    const AnalyzeTotals& tot = r.totals[s];
    totals.push_back({{"scheme", r.schemes[s].name()},
                      {"tensors", tot.tensors},
                      {"skipped", tot.skipped},
                      {"elements", tot.elements},
                      {"sqnr_db", finite_or_nan(tot.sqnr_db())},
                      {"rel_rmse", finite_or_nan(tot.rel_rmse())},
                      {"max_abs_err", tot.max_abs},
                      {"bits_per_weight", tot.bits_per_weight()},
                      {"bytes", tot.nbytes}});
  }
  j["totals"] = std::move(totals);
  return write_file_atomic(path, j.dump(2) + "\n");
}

void add_analyze_command(CLI::App& app, int* exit_code) {
  struct Options {
    std::string path;
    std::vector<std::string> schemes;
    std::string filter;
    std::string keep;
    std::string json_out;
    bool totals_only = false;
    int threads = 0;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "analyze", "Quantize weights in memory with each scheme and report the reconstruction error per tensor");
  cmd->add_option("path", opt->path, "A .safetensors file or an HF model directory")->required();
  cmd->add_option("-s,--scheme", opt->schemes,
                  "Quantization scheme, e.g. int8-ch-sym, int4-g128-asym, nf4, mxfp4 (repeatable, or comma-separated)")
      ->required()
      ->delimiter(',');
  cmd->add_option("--filter", opt->filter,
                  "Regex (ECMAScript, matched anywhere in the name) selecting the tensors to analyze instead of "
                  "the default linear-layer weights");
  cmd->add_option("--keep", opt->keep, "Regex of tensor names to leave out");
  cmd->add_option("--json", opt->json_out, "Also write the results as JSON to this file");
  cmd->add_flag("--totals-only", opt->totals_only, "Print only the per-scheme totals");
  cmd->add_option("-j,--threads", opt->threads, "Worker threads (default: OpenMP's choice)")
      ->check(CLI::Range(1, 1024));
  cmd->callback([opt, exit_code] {
    auto fail = [&](const Status& s) { *exit_code = report_error(s); };
    Expected<std::vector<Scheme>> schemes = parse_schemes(opt->schemes, "--scheme");
    if (!schemes) return fail(schemes.status());
    Selection sel;
    Expected<std::optional<std::regex>> filter = compile_regex(opt->filter, "--filter");
    if (!filter) return fail(filter.status());
    Expected<std::optional<std::regex>> keep = compile_regex(opt->keep, "--keep");
    if (!keep) return fail(keep.status());
    sel.filter = *filter;
    sel.keep = *keep;
    sel.filter_pattern = opt->filter;
    sel.keep_pattern = opt->keep;
    if (!opt->json_out.empty())
      if (Status s = check_output_path(opt->json_out, "--json"); !s) return fail(s);
    std::optional<ScopedThreadLimit> limit;
    if (opt->threads > 0) limit.emplace(opt->threads);

    Expected<SafetensorsCheckpoint> ckpt = SafetensorsCheckpoint::open(opt->path);
    if (!ckpt) return fail(ckpt.status());
    if (ckpt->metadata().count(kPackedMetadataKey))
      return fail(invalid_argument(opt->path + " is a qforge packed file; analyze measures unquantized checkpoints "
                                               "(run 'qforge dequantize' to get one back)"));
    Expected<std::vector<SelectedTensor>> names = select_tensors(*ckpt, sel);
    if (!names) return fail(names.status());
    if (names->empty())
      return fail(invalid_argument(opt->path + ": no 2-D tensors selected" +
                                   (opt->filter.empty() ? std::string(" (no linear-layer weights found; use --filter)")
                                                        : " by --filter '" + opt->filter + "'")));
    double start = now_seconds();
    Expected<AnalyzeResult> r = analyze_tensors(*ckpt, *names, *schemes);
    if (!r) return fail(r.status());
    double elapsed = now_seconds() - start;
    std::printf("%s: %zu tensors x %zu schemes\n\n", opt->path.c_str(), names->size(), schemes->size());
    if (!opt->totals_only) {
      print_analyze_tensors(*r, stdout);
      std::printf("\n");
    }
    std::printf("totals (weighted by element count):\n");
    print_analyze_totals(*r, stdout);
    std::printf("\nanalyzed in %s\n", format_seconds(elapsed).c_str());
    if (!opt->json_out.empty()) {
      if (Status s = write_analyze_json(*r, opt->json_out); !s) return fail(s);
      std::printf("wrote %s\n", opt->json_out.c_str());
    }
    *exit_code = 0;
  });
}

}  // namespace qforge::cli
