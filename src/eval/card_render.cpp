// Quantization card rendering: Markdown, self-contained HTML (inline CSS and SVG) and the three
// charts. Everything here is a pure function of the Card, so a card read back from its JSON
// renders to the same bytes.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "qforge/card.h"
#include "qforge/svg_chart.h"

namespace qforge {
namespace {

using svg::escape_xml;

std::string fixed(double v, int decimals) {
  if (!std::isfinite(v)) return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  std::string s(buf);
  if (s == "-0" || s.find_first_not_of("-0.") == std::string::npos) {
    if (s[0] == '-') s.erase(0, 1);
  }
  return s;
}

std::string sci(double v) {
  if (!std::isfinite(v)) return fixed(v, 0);
  if (v == 0) return "0";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3e", v);
  return buf;
}

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? std::to_string(b) + " B" : fixed(v, 2) + " " + units[u];
}

std::string human_count(int64_t n) {
  const double v = static_cast<double>(n);
  if (n >= 1000000000) return fixed(v / 1e9, 2) + "B";
  if (n >= 1000000) return fixed(v / 1e6, 2) + "M";
  if (n >= 1000) return fixed(v / 1e3, 1) + "K";
  return std::to_string(n);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string sqnr_text(const std::optional<WeightError>& e) {
  if (!e) return "not measured";
  if (e->noise == 0) return "exact";
  const auto s = e->sqnr_db();
  return s ? fixed(*s, 2) : "n/a";
}

std::string rel_text(const std::optional<WeightError>& e) {
  if (!e) return "not measured";
  if (e->noise == 0) return "0";
  return sci(e->rel_l2());
}

std::string file_base_name(const std::string& output_path) {
  const std::string path = card_base_path(output_path);  // "dir/" names the directory
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool kept(const CardTensor& t) { return !t.quantized; }

std::string method_title(const Card& c) {
  if (c.method.gguf)
    return (c.method.name != "gguf-preset" ? c.method.name + " into " : std::string()) + "GGUF " + c.method.gguf->preset;
  std::string s = c.method.name;
  if (c.scheme) s += " " + c.scheme->name;
  if (c.method.activations) s += " + activations " + c.method.activations->scheme;
  return s;
}

// Method parameters as (name, value) rows.
std::vector<std::pair<std::string, std::string>> method_rows(const Card& c) {
  const CardMethod& m = c.method;
  std::vector<std::pair<std::string, std::string>> rows;
  rows.emplace_back("method", m.name);
  if (c.scheme) {
    const CardScheme& s = *c.scheme;
    rows.emplace_back("scheme", s.name + " (" + s.family + ")");
    rows.emplace_back("bits", std::to_string(s.bits));
    rows.emplace_back("granularity", s.granularity + (s.granularity == "group" ? " of " + std::to_string(s.group_size) : ""));
    rows.emplace_back("symmetric", s.symmetric ? "yes" : "no (zero-point / minimum stored)");
  }
  if (m.gptq) {
    rows.emplace_back("GPTQ damp", fixed(m.gptq->damp, 4) + " x mean(diag H)");
    rows.emplace_back("GPTQ block size", std::to_string(m.gptq->block_size));
    rows.emplace_back("GPTQ act-order", m.gptq->act_order ? "yes" : "no");
    rows.emplace_back("GPTQ static groups", m.gptq->static_groups ? "yes" : "no");
    rows.emplace_back("GPTQ true-sequential", m.gptq->sequential ? "yes" : "no");
    rows.emplace_back("GPTQ MSE-optimal clipping", m.gptq->mse_clip ? "yes" : "no");
    rows.emplace_back("GPTQ scale refit", m.gptq->refit_passes > 0 ? std::to_string(m.gptq->refit_passes) + " passes" : "no");
  }
  if (m.awq) {
    rows.emplace_back("AWQ alpha grid", std::to_string(m.awq->grid) + " points");
    rows.emplace_back("AWQ clipping search",
                      m.awq->clip ? "yes (" + std::to_string(m.awq->clip_grid) + " steps, max shrink " +
                                        fixed(m.awq->max_shrink, 2) + ")"
                                  : "no");
  }
  if (m.smoothquant_alpha) rows.emplace_back("SmoothQuant alpha", fixed(*m.smoothquant_alpha, 3));
  if (m.activations)
    rows.emplace_back("activations", m.activations->scheme +
                                         (m.activations->observer.empty() ? "" : " (observer " + m.activations->observer + ")"));
  if (m.gguf) {
    const CardGguf& g = *m.gguf;
    rows.emplace_back("GGUF preset", g.preset + " (default type " + g.default_type + ")");
    rows.emplace_back("--pure", g.pure ? "yes" : "no");
    rows.emplace_back("--allow-fallback", g.allow_fallback ? "yes" : "no");
    for (const auto& o : g.overrides) rows.emplace_back("override", o);
    if (!g.output_tensor_type.empty()) rows.emplace_back("--output-tensor-type", g.output_tensor_type);
    if (!g.token_embedding_type.empty()) rows.emplace_back("--token-embedding-type", g.token_embedding_type);
    rows.emplace_back("imatrix", g.imatrix ? g.imatrix->path + " (sha256 " + g.imatrix->sha256 + ")" : "none");
  }
  if (!m.filter.empty()) rows.emplace_back("--filter", m.filter);
  if (!m.keep.empty()) rows.emplace_back("--keep", m.keep);
  if (m.batch_windows > 0) rows.emplace_back("calibration batch", std::to_string(m.batch_windows) + " windows");
  if (!m.hidden_dtype.empty()) rows.emplace_back("hidden-state storage", m.hidden_dtype);
  rows.emplace_back("error measured against",
                    m.error_reference == "rescaled"
                        ? "the rescaled weight the quantizer received (after the exact AWQ/SmoothQuant scale fold)"
                        : "the source weight");
  return rows;
}

std::string eval_reason(const Card& c) {
  return c.evaluation.measured ? "" : "not measured: " + c.evaluation.reason;
}

// Where a role sorts in charts: forward order through a block, then everything else by name.
int role_rank(const std::string& role) {
  static const char* const kOrder[] = {"attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "mlp_gate", "mlp_up",
                                       "mlp_down", "token_embedding", "output"};
  for (size_t i = 0; i < sizeof(kOrder) / sizeof(kOrder[0]); ++i)
    if (role == kOrder[i]) return static_cast<int>(i);
  return 100;
}

void sort_roles(std::vector<std::string>& roles) {
  std::stable_sort(roles.begin(), roles.end(), [](const std::string& a, const std::string& b) {
    const int ra = role_rank(a), rb = role_rank(b);
    return ra != rb ? ra < rb : a < b;
  });
}

// Roles of the 2-D tensors, in chart order.
std::vector<std::string> layer_roles(const Card& c, bool quantized_only) {
  std::vector<std::string> roles;
  std::set<std::string> seen;
  for (const CardTensor& t : c.tensors) {
    if (t.shape.size() < 2 || (quantized_only && !t.quantized)) continue;
    if (seen.insert(t.role).second) roles.push_back(t.role);
  }
  sort_roles(roles);
  return roles;
}

constexpr int kChartWidth = 1080;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Charts

std::string card_error_chart_svg(const Card& c) {
  svg::BarChart ch;
  ch.id = "qf-chart-error";
  ch.title = "Weight-space SQNR per layer and tensor role (dB, higher is better)";
  ch.subtitle = c.method.error_reference == "rescaled"
                    ? "dequantized weights vs the rescaled weights the quantizer received"
                    : "dequantized weights vs the source weights";
  ch.x_label = "layer";
  ch.y_label = "SQNR (dB)";
  ch.empty_message = "not measured: no quantized tensor has a weight-space error";
  // Categories: the layers, plus "global" for quantized tensors outside the blocks.
  std::map<int, size_t> layer_index;
  for (const CardTensor& t : c.tensors)
    if (t.quantized && t.error && t.error->sqnr_db()) layer_index[t.layer] = 0;
  for (auto& [layer, idx] : layer_index) {  // blocks in order, then "global" (as in the heatmap)
    if (layer < 0) continue;
    idx = ch.categories.size();
    ch.categories.push_back(std::to_string(layer));
  }
  if (layer_index.count(-1)) {
    layer_index[-1] = ch.categories.size();
    ch.categories.push_back("global");
  }
  // Series: one per role (quantized tensors with a finite SQNR), aggregated by energy.
  std::map<std::string, std::map<int, WeightError>> by_role;
  std::vector<std::string> roles;
  for (const CardTensor& t : c.tensors) {
    if (!t.quantized || !t.error || !t.error->sqnr_db()) continue;
    if (!by_role.count(t.role)) roles.push_back(t.role);
    by_role[t.role][t.layer].add(*t.error);
  }
  sort_roles(roles);
  for (const std::string& role : roles) {
    svg::BarSeries s;
    s.name = role;
    s.values.assign(ch.categories.size(), std::nullopt);
    for (const auto& [layer, e] : by_role[role])
      if (auto db = e.sqnr_db()) s.values[layer_index[layer]] = *db;
    ch.series.push_back(std::move(s));
  }
  ch.height = 400;
  ch.width = kChartWidth;
  return svg::render_bar_chart(ch);
}

std::string card_bits_heatmap_svg(const Card& c) {
  svg::Heatmap h;
  h.id = "qf-chart-bits";
  h.title = "Bits per weight of each tensor (layers x roles)";
  h.subtitle = "all planes counted (scales, zero-points, block headers); cell tooltip gives the stored type";
  h.x_label = "tensor role";
  h.y_label = "layer";
  h.value_label = "bits/weight";
  h.missing_label = "none";
  h.width = kChartWidth;
  h.empty_message = "no 2-D weights in the card";
  h.x_categories = layer_roles(c, false);
  std::map<std::string, size_t> col;
  for (size_t i = 0; i < h.x_categories.size(); ++i) col[h.x_categories[i]] = i;
  std::map<int, size_t> row;
  for (const CardTensor& t : c.tensors)
    if (t.shape.size() >= 2) row[t.layer] = 0;
  // Blocks first (in order), then the tensors outside them.
  std::vector<int> order;
  for (const auto& [layer, idx] : row)
    if (layer >= 0) order.push_back(layer);
  if (row.count(-1)) order.push_back(-1);
  for (size_t i = 0; i < order.size(); ++i) {
    row[order[i]] = i;
    h.y_categories.push_back(order[i] < 0 ? "global" : std::to_string(order[i]));
  }
  h.values.assign(h.x_categories.size() * h.y_categories.size(), std::nullopt);
  h.cell_text.assign(h.values.size(), "");
  for (const CardTensor& t : c.tensors) {
    if (t.shape.size() < 2) continue;
    const size_t i = row[t.layer] * h.x_categories.size() + col[t.role];
    h.values[i] = t.bits_per_weight;
    h.cell_text[i] = svg::fmt_label(t.bits_per_weight, 3);
  }
  h.cell_decimals = 3;
  h.height = 60 + 22 * static_cast<int>(h.y_categories.size()) + 60;
  return svg::render_heatmap(h);
}

std::string card_pareto_chart_svg(const Card& c) {
  svg::ScatterChart ch;
  ch.id = "qf-chart-pareto";
  ch.title = "Size vs KL divergence (lower left is better)";
  ch.x_label = "bits per weight (whole model)";
  ch.y_label = "mean KLD vs source (nats, log scale)";
  ch.log_y = true;
  ch.pareto = true;
  bool have_sweep = false;
  if (c.sweep_json) {
    const nlohmann::json s = nlohmann::json::parse(*c.sweep_json, nullptr, false);
    if (s.is_object() && s.contains("points") && s["points"].is_array()) {
      svg::ScatterSeries series;
      series.name = "sweep";
      for (const auto& p : s["points"]) {
        if (!p.is_object() || !p.contains("bits_per_weight") || !p["bits_per_weight"].is_number() ||
            !p.contains("kld_mean") || !p["kld_mean"].is_number())
          continue;
        svg::ScatterPoint pt;
        pt.x = p["bits_per_weight"].get<double>();
        pt.y = p["kld_mean"].get<double>();
        pt.label = p.contains("label") && p["label"].is_string() ? p["label"].get<std::string>() : "";
        pt.highlight = p.contains("this") && p["this"].is_boolean() && p["this"].get<bool>();
        series.points.push_back(pt);
      }
      have_sweep = !series.points.empty();
      ch.series.push_back(std::move(series));
    }
  }
  if (c.evaluation.measured) {
    svg::ScatterSeries self;
    self.name = "this output";
    self.color = "#111111";
    self.points.push_back({c.output.bits_per_weight, c.evaluation.kld_mean, method_title(c), true});
    ch.series.push_back(std::move(self));
  }
  ch.subtitle = have_sweep ? "sweep points with their Pareto front; this output highlighted"
                           : "this output only (a sweep adds the other configurations and the front)";
  ch.width = kChartWidth;
  ch.empty_message = "KLD not measured: quantize with --card-eval TEXT (or a sweep) places this model here";
  return svg::render_scatter_chart(ch);
}

// ---------------------------------------------------------------------------------------------
// Markdown

namespace {

std::string md_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '|' || ch == '*' || ch == '_' || ch == '`' || ch == '<' || ch == '>' || ch == '[' || ch == ']' ||
        ch == '\\')
      out += '\\';
    out += ch == '\n' ? ' ' : ch;
  }
  return out;
}
std::string md_code(const std::string& s) {
  // Inline code with a fence longer than any backtick run inside.
  size_t run = 0, longest = 0;
  for (char ch : s) {
    run = ch == '`' ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  const std::string fence(longest + 1, '`');
  return fence + (longest ? " " : "") + s + (longest ? " " : "") + fence;
}

void md_files(std::string& o, const std::vector<CardFile>& files) {
  o += "| file | bytes | SHA-256 |\n|---|---:|---|\n";
  for (const auto& f : files) o += "| " + md_code(f.path) + " | " + std::to_string(f.bytes) + " | `" + f.sha256 + "` |\n";
  o += "\n";
}

}  // namespace

std::string render_card_markdown(const Card& c) {
  std::string o;
  const WeightError total = c.total_error();
  o += "# Quantization card: " + md_escape(file_base_name(c.output.path)) + "\n\n";
  o += "Written by qforge " + md_escape(c.tool.version) + " (schema " + kCardSchemaId + " v" +
       std::to_string(c.schema_version) + "). The charts are in the HTML card beside this file.\n\n";
  o += "| | |\n|---|---|\n";
  o += "| Source | " + md_code(c.source.path) + ": " + md_escape(c.source.architecture) + ", " +
       human_count(c.source.parameters) + " parameters, " + std::to_string(c.source.layers) + " layers, " +
       human_bytes(c.source.total_bytes) + " |\n";
  o += "| Output | " + md_code(c.output.path) + ": " + c.output.format + ", " + human_bytes(c.output.total_bytes) +
       ", " + fixed(c.output.bits_per_weight, 3) + " bits/weight (quantized tensors: " +
       fixed(c.output.quantized_bits_per_weight, 3) + "), " + fixed(c.output.size_ratio, 2) + "x smaller |\n";
  o += "| Method | " + md_escape(method_title(c)) + " |\n";
  o += "| Weight error | " +
       (total.count > 0 ? "SQNR " + sqnr_text(total) + " dB, relative L2 " + rel_text(total) +
                              " (all quantized tensors, energy-weighted)"
                        : std::string("not measured")) +
       " |\n";
  if (c.evaluation.measured) {
    const CardEvaluation& e = c.evaluation;
    o += "| Perplexity | " + fixed(e.ppl, 4) + " (source " + fixed(e.ppl_source, 4) + ", ln ratio " +
         fixed(e.ln_ppl_ratio, 5) + ") on " + md_code(e.text.path) + " |\n";
    o += "| KLD vs source | mean " + sci(e.kld_mean) + ", median " + sci(e.kld_median) + ", p99 " + sci(e.kld_p99) +
         "; top-1 agreement " + fixed(100 * e.top1_agreement, 2) + "% |\n";
  } else {
    o += "| Perplexity / KLD | " + md_escape(eval_reason(c)) + " |\n";
  }
  o += "\n## What\n\n### Source\n\n";
  o += "- path: " + md_code(c.source.path) + " (" + c.source.kind + ")\n";
  o += "- architecture: " + md_escape(c.source.architecture) + ", " + std::to_string(c.source.parameters) +
       " parameters, " + std::to_string(c.source.layers) + " layers\n";
  o += "- total size: " + std::to_string(c.source.total_bytes) + " bytes (" + human_bytes(c.source.total_bytes) + ")\n\n";
  md_files(o, c.source.files);
  o += "### Output\n\n";
  o += "- path: " + md_code(c.output.path) + " (" + c.output.format + ")\n";
  o += "- total size: " + std::to_string(c.output.total_bytes) + " bytes (" + human_bytes(c.output.total_bytes) +
       "); tensor data " + std::to_string(c.output.tensor_bytes) + " bytes\n";
  o += "- effective bits per weight: " + fixed(c.output.bits_per_weight, 4) + " (all tensors), " +
       fixed(c.output.quantized_bits_per_weight, 4) + " (quantized tensors)\n";
  o += "- size ratio: " + fixed(c.output.size_ratio, 3) + "x smaller than the source\n\n";
  md_files(o, c.output.files);
  o += "### Tool and machine\n\n";
  o += "- qforge " + md_escape(c.tool.version) + "\n";
  o += "- command: " + md_code(c.tool.command) + "\n";
  o += "- seed: " + (c.tool.seed ? std::to_string(*c.tool.seed) : std::string("none (the result does not depend on one)")) + "\n";
  o += "- CPU: " + md_escape(c.tool.machine.cpu) + "; kernel ISA level: " + c.tool.machine.isa + "; GPU: " +
       md_escape(c.tool.machine.gpu) + "\n\n";

  o += "## How\n\n### Method\n\n| parameter | value |\n|---|---|\n";
  for (const auto& [k, v] : method_rows(c)) o += "| " + md_escape(k) + " | " + md_escape(v) + " |\n";
  o += "\n### Calibration data\n\n";
  if (c.calibration) {
    const CardCalibration& k = *c.calibration;
    o += "- file: " + md_code(k.file.path) + " (" + std::to_string(k.file.bytes) + " bytes, SHA-256 `" + k.file.sha256 +
         "`)\n";
    o += "- " + std::to_string(k.windows) + " windows x " + std::to_string(k.ctx) + " tokens = " +
         std::to_string(k.tokens_used) + " tokens, sampled from " + std::to_string(k.file_tokens) +
         " tokens with seed " + std::to_string(k.seed) + "\n\n";
  } else if (c.method.gguf && c.method.gguf->imatrix) {
    o += "- none directly; importance matrix " + md_code(c.method.gguf->imatrix->path) + "\n\n";
  } else {
    o += "- none (data-free round-to-nearest)\n\n";
  }
  o += "### Stored types\n\n| type | tensors | parameters | bytes | bits/weight |\n|---|---:|---:|---:|---:|\n";
  for (const auto& t : c.types())
    o += "| " + md_escape(t.type) + " | " + std::to_string(t.tensors) + " | " + std::to_string(t.parameters) + " | " +
         std::to_string(t.bytes) + " | " +
         fixed(t.parameters > 0 ? 8.0 * static_cast<double>(t.bytes) / static_cast<double>(t.parameters) : 0.0, 4) + " |\n";
  o += "\n### Tensors kept in higher precision\n\n";
  size_t kept_count = 0;
  for (const auto& t : c.tensors) kept_count += kept(t) ? 1 : 0;
  if (kept_count == 0) {
    o += "None: every tensor was quantized.\n\n";
  } else {
    o += "| tensor | shape | type | why |\n|---|---|---|---|\n";
    for (const auto& t : c.tensors)
      if (kept(t))
        o += "| " + md_code(t.name) + " | " + shape_text(t.shape) + " | " + md_escape(t.type) + " | " + t.reason_kind +
             ": " + md_escape(t.reason) + " |\n";
    o += "\n";
  }
  o += "### Per-tensor\n\n";
  o += "| tensor | role | layer | shape | type | bits/weight | bytes | rel. L2 error | SQNR (dB) | why |\n";
  o += "|---|---|---:|---|---|---:|---:|---:|---:|---|\n";
  for (const auto& t : c.tensors)
    o += "| " + md_code(t.name) + " | " + md_escape(t.role) + " | " + (t.layer < 0 ? "-" : std::to_string(t.layer)) +
         " | " + shape_text(t.shape) + " | " + md_escape(t.type) + " | " + fixed(t.bits_per_weight, 4) + " | " +
         std::to_string(t.bytes) + " | " + rel_text(t.error) + " | " + sqnr_text(t.error) + " | " +
         md_escape(t.reason) + (t.error_note.empty() ? "" : " (" + md_escape(t.error_note) + ")") + " |\n";

  o += "\n## Cost\n\n### Per layer\n\n";
  o += "| layer | parameters | bytes | bits/weight | quantized tensors | rel. L2 error | SQNR (dB) |\n";
  o += "|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& l : c.layers()) {
    const std::optional<WeightError> e = l.quantized_tensors > 0 ? std::optional<WeightError>(l.error) : std::nullopt;
    o += "| " + std::to_string(l.layer) + " | " + std::to_string(l.parameters) + " | " + std::to_string(l.bytes) + " | " +
         fixed(l.parameters > 0 ? 8.0 * static_cast<double>(l.bytes) / static_cast<double>(l.parameters) : 0.0, 4) +
         " | " + std::to_string(l.quantized_tensors) + " | " + rel_text(e) + " | " + sqnr_text(e) + " |\n";
  }
  o += "\n### Quality on text\n\n";
  if (c.evaluation.measured) {
    const CardEvaluation& e = c.evaluation;
    o += "- text: " + md_code(e.text.path) + " (" + std::to_string(e.text.bytes) + " bytes, SHA-256 `" + e.text.sha256 +
         "`)\n";
    o += "- protocol: " + md_escape(e.protocol) + ", ctx " + std::to_string(e.ctx) + ", " + std::to_string(e.windows) +
         " of " + std::to_string(e.windows_total) + " windows, " + std::to_string(e.tokens_scored) + " scored tokens\n\n";
    o += "| metric | value |\n|---|---:|\n";
    o += "| perplexity (output) | " + fixed(e.ppl, 4) + " |\n";
    o += "| perplexity (source) | " + fixed(e.ppl_source, 4) + " |\n";
    o += "| ln(ppl / ppl source) | " + fixed(e.ln_ppl_ratio, 6) + " |\n";
    o += "| KLD mean | " + sci(e.kld_mean) + " |\n";
    o += "| KLD median | " + sci(e.kld_median) + " |\n";
    o += "| KLD p90 | " + sci(e.kld_p90) + " |\n";
    o += "| KLD p99 | " + sci(e.kld_p99) + " |\n";
    o += "| KLD max | " + sci(e.kld_max) + " |\n";
    o += "| top-1 agreement | " + fixed(100 * e.top1_agreement, 3) + "% |\n";
    o += "| RMS delta p (source top token) | " + sci(e.delta_p_rms) + " |\n\n";
  } else {
    o += "Perplexity and KLD " + md_escape(eval_reason(c)) + ".\n\n";
  }
  o += "### Speed\n\n";
  if (c.speed.measured) {
    auto opt = [](const std::optional<double>& v) { return v ? fixed(*v, 1) : std::string("not measured"); };
    o += "- prefill: " + opt(c.speed.prefill_tokens_per_second) + " tokens/s; decode: " +
         opt(c.speed.decode_tokens_per_second) + " tokens/s; peak RSS: " +
         (c.speed.peak_rss_bytes ? human_bytes(*c.speed.peak_rss_bytes) : std::string("not measured")) + "\n\n";
  } else {
    o += "Not measured: " + md_escape(c.speed.reason) + ".\n\n";
  }
  if (!c.notes.empty()) {
    o += "## Notes\n\n";
    for (const auto& n : c.notes) o += "- " + md_escape(n) + "\n";
    o += "\n";
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// HTML

namespace {

constexpr const char* kCss = R"css(
:root { --fg:#1d2330; --muted:#5b6475; --line:#dfe3ea; --bg:#f5f7fa; --accent:#0072B2; --warn:#b45309; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.5 "DejaVu Sans", Helvetica, Arial, sans-serif; color:var(--fg); background:var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 64px; }
header h1 { font-size: 24px; margin: 0 0 4px; }
header p { margin: 0; color: var(--muted); }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 8px; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; margin: 20px 0; }
.tile { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.tile .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.tile .v { font-size: 22px; font-weight: bold; margin-top: 2px; }
.tile .s { color: var(--muted); font-size: 12px; }
.panel { background:#fff; border:1px solid var(--line); border-radius: 8px; padding: 14px 16px; margin: 12px 0; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #eef1f6; position: sticky; top: 0; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.kept td { background: #fff8e6; }
.kv td:first-child { color: var(--muted); width: 230px; }
.cmd { background:#1d2330; color:#e8edf5; padding: 10px 12px; border-radius: 6px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
.nm { color: var(--warn); font-style: italic; }
figure { margin: 14px 0; background:#fff; border:1px solid var(--line); border-radius: 8px; padding: 10px; overflow-x: auto; }
figure svg { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 6px; }
ul.notes li { color: var(--warn); }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; }
)css";

std::string h(const std::string& s) { return escape_xml(s); }

std::string tile(const std::string& key, const std::string& value, const std::string& sub) {
  return "<div class=\"tile\"><div class=\"k\">" + h(key) + "</div><div class=\"v\">" + h(value) +
         "</div><div class=\"s\">" + h(sub) + "</div></div>\n";
}

std::string kv_table(const std::vector<std::pair<std::string, std::string>>& rows) {
  std::string o = "<table class=\"kv\">\n";
  for (const auto& [k, v] : rows) o += "<tr><td>" + h(k) + "</td><td>" + h(v) + "</td></tr>\n";
  return o + "</table>\n";
}

std::string files_table(const std::vector<CardFile>& files) {
  std::string o = "<table><tr><th>file</th><th class=\"n\">bytes</th><th>SHA-256</th></tr>\n";
  for (const auto& f : files)
    o += "<tr><td><code>" + h(f.path) + "</code></td><td class=\"n\">" + std::to_string(f.bytes) +
         "</td><td><code>" + h(f.sha256) + "</code></td></tr>\n";
  return o + "</table>\n";
}

std::string nm(const std::string& s) { return "<span class=\"nm\">" + h(s) + "</span>"; }

}  // namespace

std::string render_card_html(const Card& c) {
  const WeightError total = c.total_error();
  const std::string name = file_base_name(c.output.path);
  std::string o;
  o += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  o += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  o += "<meta name=\"generator\" content=\"qforge " + h(c.tool.version) + "\">\n";
  o += "<title>Quantization card: " + h(name) + "</title>\n<style>" + std::string(kCss) + "</style>\n</head>\n<body>\n<main>\n";
  o += "<header><h1>Quantization card: " + h(name) + "</h1>\n<p>" + h(method_title(c)) + " of <code>" +
       h(c.source.path) + "</code> (" + h(c.source.architecture) + ", " + h(human_count(c.source.parameters)) +
       " parameters) &middot; qforge " + h(c.tool.version) + " &middot; schema " + kCardSchemaId + " v" +
       std::to_string(c.schema_version) + "</p></header>\n";

  o += "<section class=\"tiles\">\n";
  o += tile("Output size", human_bytes(c.output.total_bytes),
            fixed(c.output.size_ratio, 2) + "x smaller than " + human_bytes(c.source.total_bytes));
  o += tile("Bits per weight", fixed(c.output.bits_per_weight, 3),
            "quantized tensors: " + fixed(c.output.quantized_bits_per_weight, 3));
  o += tile("Weight SQNR", total.count > 0 ? sqnr_text(total) + " dB" : "not measured",
            total.count > 0 ? "relative L2 error " + rel_text(total) : "");
  if (c.evaluation.measured) {
    o += tile("Mean KLD", sci(c.evaluation.kld_mean),
              "p99 " + sci(c.evaluation.kld_p99) + ", top-1 " + fixed(100 * c.evaluation.top1_agreement, 2) + "%");
    o += tile("Perplexity", fixed(c.evaluation.ppl, 3), "source " + fixed(c.evaluation.ppl_source, 3));
  } else {
    o += tile("Mean KLD", "not measured", c.evaluation.reason);
  }
  o += "</section>\n";

  // Charts first: they are the summary a reader looks for.
  o += "<h2>Charts</h2>\n";
  o += "<figure>" + card_error_chart_svg(c) +
       "<figcaption>Chart 1. Signal-to-quantization-noise ratio of each layer's quantized tensors, grouped by role "
       "(energy-weighted when a layer has several tensors of a role).</figcaption></figure>\n";
  o += "<figure>" + card_bits_heatmap_svg(c) +
       "<figcaption>Chart 2. Bits per weight allocated to every 2-D weight; tensors kept in higher precision show "
       "their source width.</figcaption></figure>\n";
  o += "<figure>" + card_pareto_chart_svg(c) +
       "<figcaption>Chart 3. Model size against mean KL divergence from the source on the evaluation text; the "
       "dashed line is the Pareto front of the points shown.</figcaption></figure>\n";

  o += "<h2>What</h2>\n<h3>Source</h3>\n<div class=\"panel\">\n";
  o += kv_table({{"path", c.source.path + " (" + c.source.kind + ")"},
                 {"architecture", c.source.architecture},
                 {"parameters", std::to_string(c.source.parameters) + " (" + human_count(c.source.parameters) + ")"},
                 {"layers", std::to_string(c.source.layers)},
                 {"total size", std::to_string(c.source.total_bytes) + " bytes (" + human_bytes(c.source.total_bytes) + ")"}});
  o += files_table(c.source.files) + "</div>\n";
  o += "<h3>Output</h3>\n<div class=\"panel\">\n";
  o += kv_table({{"path", c.output.path + " (" + c.output.format + ")"},
                 {"total size", std::to_string(c.output.total_bytes) + " bytes (" + human_bytes(c.output.total_bytes) + ")"},
                 {"tensor data", std::to_string(c.output.tensor_bytes) + " bytes"},
                 {"bits per weight", fixed(c.output.bits_per_weight, 4) + " (all tensors), " +
                                         fixed(c.output.quantized_bits_per_weight, 4) + " (quantized tensors)"},
                 {"size ratio", fixed(c.output.size_ratio, 3) + "x smaller"}});
  o += files_table(c.output.files) + "</div>\n";
  o += "<h3>Tool and machine</h3>\n<div class=\"panel\">\n<div class=\"cmd mono\">" + h(c.tool.command) + "</div>\n";
  o += kv_table({{"qforge version", c.tool.version},
                 {"seed", c.tool.seed ? std::to_string(*c.tool.seed) : "none (the result does not depend on one)"},
                 {"CPU", c.tool.machine.cpu},
                 {"kernel ISA level", c.tool.machine.isa},
                 {"GPU", c.tool.machine.gpu}});
  o += "</div>\n";

  o += "<h2>How</h2>\n<h3>Method and scheme</h3>\n<div class=\"panel\">" + kv_table(method_rows(c)) + "</div>\n";
  o += "<h3>Calibration data</h3>\n<div class=\"panel\">";
  if (c.calibration) {
    const CardCalibration& k = *c.calibration;
    o += kv_table({{"file", k.file.path},
                   {"SHA-256", k.file.sha256},
                   {"file size", std::to_string(k.file.bytes) + " bytes, " + std::to_string(k.file_tokens) + " tokens"},
                   {"windows", std::to_string(k.windows) + " x " + std::to_string(k.ctx) + " tokens = " +
                                   std::to_string(k.tokens_used) + " tokens"},
                   {"seed", std::to_string(k.seed)}});
  } else if (c.method.gguf && c.method.gguf->imatrix) {
    o += "<p>None directly; importance matrix <code>" + h(c.method.gguf->imatrix->path) + "</code>.</p>";
  } else {
    o += "<p>None (data-free round-to-nearest).</p>";
  }
  o += "</div>\n<h3>Stored types</h3>\n<div class=\"panel\"><table><tr><th>type</th><th class=\"n\">tensors</th>"
       "<th class=\"n\">parameters</th><th class=\"n\">bytes</th><th class=\"n\">bits/weight</th></tr>\n";
  for (const auto& t : c.types())
    o += "<tr><td>" + h(t.type) + "</td><td class=\"n\">" + std::to_string(t.tensors) + "</td><td class=\"n\">" +
         std::to_string(t.parameters) + "</td><td class=\"n\">" + std::to_string(t.bytes) + "</td><td class=\"n\">" +
         fixed(t.parameters > 0 ? 8.0 * static_cast<double>(t.bytes) / static_cast<double>(t.parameters) : 0.0, 4) +
         "</td></tr>\n";
  o += "</table></div>\n";
  o += "<h3>Tensors kept in higher precision</h3>\n<div class=\"panel\">";
  size_t kept_count = 0;
  for (const auto& t : c.tensors) kept_count += kept(t) ? 1 : 0;
  if (kept_count == 0) {
    o += "<p>None: every tensor was quantized.</p>";
  } else {
    o += "<table><tr><th>tensor</th><th>shape</th><th>type</th><th>why</th></tr>\n";
    for (const auto& t : c.tensors)
      if (kept(t))
        o += "<tr><td><code>" + h(t.name) + "</code></td><td class=\"mono\">" + h(shape_text(t.shape)) + "</td><td>" +
             h(t.type) + "</td><td><b>" + h(t.reason_kind) + "</b>: " + h(t.reason) + "</td></tr>\n";
    o += "</table>";
  }
  o += "</div>\n<h3>Per-tensor</h3>\n<div class=\"panel\"><table><tr><th>tensor</th><th>role</th><th class=\"n\">layer</th>"
       "<th>shape</th><th>type</th><th class=\"n\">bits/weight</th><th class=\"n\">bytes</th>"
       "<th class=\"n\">rel. L2 error</th><th class=\"n\">SQNR (dB)</th><th>why</th></tr>\n";
  for (const auto& t : c.tensors) {
    o += std::string(kept(t) ? "<tr class=\"kept\">" : "<tr>") + "<td><code>" + h(t.name) + "</code></td><td>" +
         h(t.role) + "</td><td class=\"n\">" + (t.layer < 0 ? "-" : std::to_string(t.layer)) + "</td><td class=\"mono\">" +
         h(shape_text(t.shape)) + "</td><td>" + h(t.type) + "</td><td class=\"n\">" + fixed(t.bits_per_weight, 4) +
         "</td><td class=\"n\">" + std::to_string(t.bytes) + "</td><td class=\"n\">" +
         (t.error ? h(rel_text(t.error)) : nm("not measured")) + "</td><td class=\"n\">" +
         (t.error ? h(sqnr_text(t.error)) : nm("not measured")) + "</td><td>" + h(t.reason) +
         (t.error_note.empty() ? "" : " <span class=\"nm\">(" + h(t.error_note) + ")</span>") + "</td></tr>\n";
  }
  o += "</table></div>\n";

  o += "<h2>Cost</h2>\n<h3>Per layer</h3>\n<div class=\"panel\"><table><tr><th class=\"n\">layer</th>"
       "<th class=\"n\">parameters</th><th class=\"n\">bytes</th><th class=\"n\">bits/weight</th>"
       "<th class=\"n\">quantized tensors</th><th class=\"n\">rel. L2 error</th><th class=\"n\">SQNR (dB)</th></tr>\n";
  for (const auto& l : c.layers()) {
    const std::optional<WeightError> e = l.quantized_tensors > 0 ? std::optional<WeightError>(l.error) : std::nullopt;
    o += "<tr><td class=\"n\">" + std::to_string(l.layer) + "</td><td class=\"n\">" + std::to_string(l.parameters) +
         "</td><td class=\"n\">" + std::to_string(l.bytes) + "</td><td class=\"n\">" +
         fixed(l.parameters > 0 ? 8.0 * static_cast<double>(l.bytes) / static_cast<double>(l.parameters) : 0.0, 4) +
         "</td><td class=\"n\">" + std::to_string(l.quantized_tensors) + "</td><td class=\"n\">" + h(rel_text(e)) +
         "</td><td class=\"n\">" + h(sqnr_text(e)) + "</td></tr>\n";
  }
  o += "</table></div>\n<h3>Quality on text</h3>\n<div class=\"panel\">";
  if (c.evaluation.measured) {
    const CardEvaluation& e = c.evaluation;
    o += kv_table({{"text", e.text.path + " (" + std::to_string(e.text.bytes) + " bytes)"},
                   {"text SHA-256", e.text.sha256},
                   {"protocol", e.protocol + ", ctx " + std::to_string(e.ctx) + ", " + std::to_string(e.windows) + " of " +
                                    std::to_string(e.windows_total) + " windows, " + std::to_string(e.tokens_scored) +
                                    " scored tokens"},
                   {"perplexity (output)", fixed(e.ppl, 4)},
                   {"perplexity (source)", fixed(e.ppl_source, 4)},
                   {"ln(ppl / ppl source)", fixed(e.ln_ppl_ratio, 6)},
                   {"KLD mean / median", sci(e.kld_mean) + " / " + sci(e.kld_median)},
                   {"KLD p90 / p99 / max", sci(e.kld_p90) + " / " + sci(e.kld_p99) + " / " + sci(e.kld_max)},
                   {"top-1 agreement", fixed(100 * e.top1_agreement, 3) + "%"},
                   {"RMS delta p (source top token)", sci(e.delta_p_rms)}});
  } else {
    o += "<p>Perplexity and KLD " + nm(eval_reason(c)) + ".</p>";
  }
  o += "</div>\n<h3>Speed</h3>\n<div class=\"panel\">";
  if (c.speed.measured) {
    auto opt = [](const std::optional<double>& v) { return v ? fixed(*v, 1) + " tokens/s" : std::string("not measured"); };
    o += kv_table({{"prefill", opt(c.speed.prefill_tokens_per_second)},
                   {"decode", opt(c.speed.decode_tokens_per_second)},
                   {"peak RSS", c.speed.peak_rss_bytes ? human_bytes(*c.speed.peak_rss_bytes) : "not measured"}});
  } else {
    o += "<p>" + nm("not measured: " + c.speed.reason) + "</p>";
  }
  o += "</div>\n";
  if (!c.notes.empty()) {
    o += "<h2>Notes</h2>\n<ul class=\"notes\">\n";
    for (const auto& n : c.notes) o += "<li>" + h(n) + "</li>\n";
    o += "</ul>\n";
  }
  o += "<footer>The JSON beside this page is the record (schema " + std::string(kCardSchemaId) + " v" +
       std::to_string(c.schema_version) + ", docs/card-schema.md); this page and the Markdown card are rendered from "
       "it (<code>qforge card FILE.card.json</code>).</footer>\n";
  o += "</main>\n</body>\n</html>\n";
  return o;
}

}  // namespace qforge
