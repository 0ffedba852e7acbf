// Small, dependency-free SVG charts for reports (quantization cards, sensitivity and sweep
// plots). Each render_* returns one self-contained <svg> element (inline styles, no scripts, no
// external fonts or links), so it can be embedded in HTML or written as an .svg file.
//
// Output is deterministic: the same input gives the same bytes on every platform (numbers are
// printed with a fixed, locale-independent format; no randomness, no timestamps). All text is
// XML-escaped. A chart with no drawable data still renders its frame, axes and a centred
// `empty_message` caption, so a report never contains an empty or missing chart.
//
//   svg::BarChart c;
//   c.title = "SQNR per layer"; c.y_label = "SQNR (dB)";
//   c.categories = {"0", "1", "2"};
//   c.series = {{"attn_q", {21.3, 20.9, 22.0}}, {"mlp_down", {19.8, std::nullopt, 20.1}}};
//   std::string svg = svg::render_bar_chart(c);
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qforge::svg {

// ---------------------------------------------------------------------------------------------
// Helpers (exposed for tests and for callers composing their own SVG/HTML)

// Escapes & < > " ' for XML text and attribute values.
std::string escape_xml(std::string_view text);
// A number for SVG attributes: fixed notation, at most `decimals` decimals, trailing zeros and a
// trailing '.' removed, "-0" printed as "0". Non-finite values print as "0".
std::string fmt_coord(double v, int decimals = 2);
// A number for tick and value labels: `significant` significant digits, plain notation for
// 1e-3 <= |v| < 1e6, otherwise "1.2e-05" style; "inf", "-inf", "nan" for non-finite values.
std::string fmt_label(double v, int significant = 3);

// "Nice" tick values (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi] with about `target` ticks. The
// first tick is <= lo and the last >= hi. lo == hi gives a small range around the value.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);
// Ticks of a log10 axis over [lo, hi] (both > 0): powers of ten, or 1-2-5 steps per decade when
// the range spans fewer than three decades.
std::vector<double> log_ticks(double lo, double hi);

// The fixed categorical palette (colour-blind safe, Okabe-Ito order plus extras); index wraps.
const char* palette_color(size_t index);
// A sequential colour scale (viridis, sampled and linearly interpolated) for t in [0, 1] as "#rrggbb".
std::string sequential_color(double t);
// "#000000" or "#ffffff", whichever reads better on `background_hex` ("#rrggbb").
const char* contrast_text_color(const std::string& background_hex);

// Indices of the Pareto-optimal points when both x and y are minimised (no other point has
// x' <= x and y' <= y with one strictly smaller), sorted by increasing x. Non-finite points are
// never on the front. Equal points are all kept.
std::vector<size_t> pareto_front(const std::vector<std::pair<double, double>>& points);

// ---------------------------------------------------------------------------------------------
// Charts

// Common layout. Sizes are in SVG user units (CSS pixels when embedded).
struct ChartFrame {
  std::string title;
  std::string subtitle;       // optional second line under the title
  std::string x_label, y_label;
  std::string empty_message = "not measured";  // caption when nothing can be drawn
  int width = 880;
  int height = 380;
  std::string id;  // optional id attribute of the <svg> (must be unique in a page)
};

// Grouped bars: one group per category along x, one bar per series inside each group, a legend
// of the series. Missing values (nullopt, or non-finite) leave a gap. The y axis includes 0
// unless y_min is set.
struct BarSeries {
  std::string name;
  std::vector<std::optional<double>> values;  // one per category (shorter: the rest missing)
  std::string color;                          // empty: palette_color(series index)
};
struct BarChart : ChartFrame {
  std::vector<std::string> categories;
  std::vector<BarSeries> series;
  std::optional<double> y_min, y_max;  // fixed axis limits (otherwise from the data and 0)
  int value_decimals = 3;              // significant digits of the value in each bar's tooltip
};
std::string render_bar_chart(const BarChart& chart);

// A grid of coloured cells: rows (y_categories, drawn top to bottom) x columns (x_categories),
// a colour bar with `value_label`, and each cell's value written inside when it fits. Missing
// cells (nullopt) are drawn hatched-grey and labelled in the legend as `missing_label`.
struct Heatmap : ChartFrame {
  std::vector<std::string> x_categories;
  std::vector<std::string> y_categories;
  std::vector<std::optional<double>> values;  // row-major [y][x]; size y * x (shorter: missing)
  std::vector<std::string> cell_text;         // optional per-cell text (same indexing) instead of the value
  std::string value_label;                    // colour bar caption, e.g. "bits/weight"
  std::string missing_label = "not applicable";
  std::optional<double> min, max;             // colour scale limits (otherwise from the data)
  bool reverse_scale = false;                 // true: high values dark
  int cell_decimals = 3;                      // significant digits of the cell text
};
std::string render_heatmap(const Heatmap& chart);

// Points and optional connecting lines, several series, optional log axes, and optionally the
// Pareto front (minimising both x and y over all series' points) drawn as a highlighted step
// line with its points ringed. Points with `highlight` are drawn larger with a dark outline;
// labels are written beside the points that have one.
struct ScatterPoint {
  double x = 0, y = 0;
  std::string label;       // written beside the point (empty: none)
  bool highlight = false;  // e.g. "this model" in a sweep
};
struct ScatterSeries {
  std::string name;
  std::vector<ScatterPoint> points;
  bool line = false;   // connect points in the given order
  std::string color;   // empty: palette_color(series index)
};
struct ScatterChart : ChartFrame {
  std::vector<ScatterSeries> series;
  bool log_x = false, log_y = false;  // non-positive values are not drawn on a log axis
  bool pareto = false;                // draw the front minimising x and y
  std::string pareto_label = "Pareto front";
};
std::string render_scatter_chart(const ScatterChart& chart);

}  // namespace qforge::svg
