// SVG charts of the sensitivity and sweep commands, drawn with qforge/svg_chart.h.
#include <cmath>

#include "mixed_precision_cli.h"
#include "qforge/svg_chart.h"

namespace qforge::cli {

std::string sensitivity_svg(const SensitivityReport& r) {
  svg::Heatmap h;
  h.title = std::string("Quantization sensitivity: ") +
            (r.measured_kld ? "log10 KLD (nats)" : "log10 imatrix-weighted error") + " when only this unit is quantized";
  h.subtitle = r.model + ", " + std::to_string(r.windows) + " windows of " + std::to_string(r.ctx) + " on " + r.text;
  h.x_label = "GGUF type";
  h.y_label = sensitivity_granularity_name(r.granularity);
  for (GgmlType t : r.types) h.x_categories.push_back(ggml_type_name(t));
  for (const SensitivityUnit& u : r.units) {
    h.y_categories.push_back(u.name);
    for (const SensitivityCell& c : u.cells) {
      const double v = r.measured_kld ? c.kld : c.proxy;
      if (c.valid && std::isfinite(v) && v > 0) {
        h.values.push_back(std::log10(v));
      } else {
        h.values.push_back(std::nullopt);
      }
    }
  }
  h.value_label = r.measured_kld ? "log10 KLD" : "log10 proxy";
  h.missing_label = "type does not fit / zero";
  h.reverse_scale = true;
  h.width = 720;
  h.height = std::max(320, 60 + 14 * static_cast<int>(r.units.size()));
  h.cell_decimals = 2;
  return svg::render_heatmap(h);
}

std::string sweep_svg(const std::vector<SweepPoint>& points, const std::string& title, const std::string& subtitle) {
  svg::ScatterChart c;
  c.title = title;
  c.subtitle = subtitle;
  c.x_label = "bits per weight (all tensor data)";
  c.y_label = "mean KL divergence vs the unquantized model (nats, log scale)";
  c.log_y = true;
  c.pareto = true;
  svg::ScatterSeries presets{"llama.cpp presets", {}, false, ""};
  svg::ScatterSeries plans{"qforge plan (mixed precision)", {}, false, ""};
  for (const SweepPoint& p : points) (p.plan ? plans : presets).points.push_back({p.bits_per_weight, p.kld, p.label, p.plan});
  c.series.push_back(std::move(presets));
  if (!plans.points.empty()) c.series.push_back(std::move(plans));
  return svg::render_scatter_chart(c);
}

}  // namespace qforge::cli
