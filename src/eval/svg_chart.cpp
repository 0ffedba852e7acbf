// SVG charts (include/qforge/svg_chart.h). Layout is computed in doubles and printed through
// fmt_coord, so output bytes depend only on the input.
#include "qforge/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace qforge::svg {
namespace {

constexpr const char* kFont = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\"";
constexpr double kCharWidth = 6.4;  // approximate advance of an 11px sans-serif character

double text_width(std::string_view s, double font_px = 11) {
  // Count UTF-8 code points, not bytes.
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return static_cast<double>(n) * kCharWidth * font_px / 11.0;
}

std::string truncate_label(const std::string& s, double max_width) {
  if (text_width(s) <= max_width) return s;
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) != 0x80 && text_width(out + "...") + kCharWidth > max_width) break;
    out.push_back(s[i]);
  }
  return out + "...";
}

struct Svg {
  std::string out;
  void add(const std::string& s) { out += s; }
  void text(double x, double y, const std::string& s, const char* anchor = "start", int size = 11,
            const char* extra = "", const char* fill = "#222") {
    out += "<text x=\"" + fmt_coord(x) + "\" y=\"" + fmt_coord(y) + "\" text-anchor=\"" + anchor +
           "\" font-size=\"" + std::to_string(size) + "\" fill=\"" + fill + "\"" + (*extra ? " " : "") + extra + ">" +
           escape_xml(s) + "</text>\n";
  }
  void line(double x1, double y1, double x2, double y2, const char* stroke, double width = 1,
            const char* extra = "") {
    out += "<line x1=\"" + fmt_coord(x1) + "\" y1=\"" + fmt_coord(y1) + "\" x2=\"" + fmt_coord(x2) + "\" y2=\"" +
           fmt_coord(y2) + "\" stroke=\"" + stroke + "\" stroke-width=\"" + fmt_coord(width) + "\"" +
           (*extra ? " " : "") + extra + "/>\n";
  }
  void rect(double x, double y, double w, double h, const std::string& fill, const std::string& tooltip = "",
            const char* extra = "") {
    out += "<rect x=\"" + fmt_coord(x) + "\" y=\"" + fmt_coord(y) + "\" width=\"" + fmt_coord(std::max(0.0, w)) +
           "\" height=\"" + fmt_coord(std::max(0.0, h)) + "\" fill=\"" + fill + "\"" + (*extra ? " " : "") + extra;
    if (tooltip.empty()) {
      out += "/>\n";
    } else {
      out += "><title>" + escape_xml(tooltip) + "</title></rect>\n";
    }
  }
};

// Opening tag, background, title and subtitle. Returns the y below the header.
double open_chart(Svg& s, const ChartFrame& f, int height, const char* kind) {
  s.add("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"qf-chart qf-" + std::string(kind) + "\"");
  if (!f.id.empty()) s.add(" id=\"" + escape_xml(f.id) + "\"");
  s.add(" width=\"" + std::to_string(f.width) + "\" height=\"" + std::to_string(height) + "\" viewBox=\"0 0 " +
        std::to_string(f.width) + " " + std::to_string(height) + "\" role=\"img\" " + kFont + ">\n");
  s.add("<title>" + escape_xml(f.title.empty() ? std::string(kind) : f.title) + "</title>\n");
  s.rect(0, 0, f.width, height, "#ffffff");
  double y = 8;
  if (!f.title.empty()) {
    s.text(12, y + 14, f.title, "start", 14, "font-weight=\"bold\"");
    y += 20;
  }
  if (!f.subtitle.empty()) {
    s.text(12, y + 12, f.subtitle, "start", 11, "", "#555");
    y += 16;
  }
  return y + 6;
}

void close_chart(Svg& s) { s.add("</svg>\n"); }

void empty_caption(Svg& s, double x0, double y0, double x1, double y1, const std::string& message) {
  s.rect(x0, y0, x1 - x0, y1 - y0, "#f6f6f6", "", "stroke=\"#cccccc\" stroke-dasharray=\"4 3\"");
  s.text((x0 + x1) / 2, (y0 + y1) / 2 + 4, message.empty() ? "no data" : message, "middle", 13,
         "font-style=\"italic\" class=\"qf-empty\"", "#666");
}

// Horizontal legend rows starting at (x, y); returns the y below it.
double legend(Svg& s, double x, double y, double max_x, const std::vector<std::pair<std::string, std::string>>& items,
              bool circles = false) {
  double cx = x;
  for (const auto& [name, color] : items) {
    const double w = 16 + text_width(name) + 14;
    if (cx + w > max_x && cx > x) {
      cx = x;
      y += 16;
    }
    if (circles) {
      s.add("<circle cx=\"" + fmt_coord(cx + 5) + "\" cy=\"" + fmt_coord(y + 5) + "\" r=\"4.5\" fill=\"" + color +
            "\"/>\n");
    } else {
      s.rect(cx, y, 10, 10, color);
    }
    s.text(cx + 15, y + 9, name, "start", 11);
    cx += w;
  }
  return items.empty() ? y : y + 18;
}

struct Axis {
  double lo = 0, hi = 1;  // data range shown (log axes: log10 values)
  bool log = false;
  std::vector<double> ticks;  // in data units
  double px0 = 0, px1 = 1;    // pixel range (for y: px0 = bottom)
  double map(double v) const {
    const double t = log ? std::log10(v) : v;
    if (hi == lo) return (px0 + px1) / 2;
    return px0 + (t - lo) / (hi - lo) * (px1 - px0);
  }
};

Axis make_axis(double lo, double hi, bool log, int target) {
  Axis a;
  a.log = log;
  if (log) {
    a.ticks = log_ticks(lo, hi);
    a.lo = std::log10(std::min(lo, a.ticks.front()));
    a.hi = std::log10(std::max(hi, a.ticks.back()));
  } else {
    a.ticks = nice_ticks(lo, hi, target);
    a.lo = a.ticks.front();
    a.hi = a.ticks.back();
  }
  return a;
}

void draw_y_axis(Svg& s, const Axis& a, double x0, double x1, const std::string& label, double top, double bottom) {
  for (double t : a.ticks) {
    const double y = a.map(t);
    s.line(x0, y, x1, y, "#e4e4e4");
    s.line(x0 - 4, y, x0, y, "#444");
    s.text(x0 - 7, y + 4, fmt_label(t), "end", 10, "", "#333");
  }
  s.line(x0, top, x0, bottom, "#444");
  if (!label.empty()) {
    const double cy = (top + bottom) / 2;
    s.add("<text x=\"14\" y=\"" + fmt_coord(cy) + "\" text-anchor=\"middle\" font-size=\"11\" fill=\"#222\" "
          "transform=\"rotate(-90 14 " + fmt_coord(cy) + ")\">" + escape_xml(label) + "</text>\n");
  }
}

bool finite(double v) { return std::isfinite(v); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Helpers

std::string escape_xml(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') {
          out += "?";
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string fmt_coord(double v, int decimals) {
  if (!std::isfinite(v)) return "0";
  decimals = std::clamp(decimals, 0, 9);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  std::string s(buf);
  if (s.find('.') != std::string::npos) {
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

std::string fmt_label(double v, int significant) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return "0";
  significant = std::clamp(significant, 1, 15);
  const double a = std::fabs(v);
  char buf[64];
  if (a >= 1e-3 && a < 1e6) {
    const int digits_before = static_cast<int>(std::floor(std::log10(a))) + 1;
    const int decimals = std::max(0, significant - digits_before);
    std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
    std::string s(buf);
    if (s.find('.') != std::string::npos) {
      while (s.back() == '0') s.pop_back();
      if (s.back() == '.') s.pop_back();
    }
    if (s == "-0") s = "0";
    return s;
  }
  std::snprintf(buf, sizeof(buf), "%.*e", significant - 1, v);
  // Trim zeros of the mantissa: 1.50e-05 -> 1.5e-05.
  std::string s(buf);
  const size_t e = s.find('e');
  std::string mant = s.substr(0, e), exp = s.substr(e);
  if (mant.find('.') != std::string::npos) {
    while (mant.back() == '0') mant.pop_back();
    if (mant.back() == '.') mant.pop_back();
  }
  return mant + exp;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (lo > hi) std::swap(lo, hi);
  if (lo == hi) {
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  target = std::max(2, target);
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  const double first = std::floor(lo / step + 1e-9) * step;
  const double last = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> ticks;
  for (int i = 0;; ++i) {
    double t = first + i * step;
    if (std::fabs(t) < step * 1e-9) t = 0;
    ticks.push_back(t);
    if (t >= last - step * 1e-9 || i > 1000) break;
  }
  if (ticks.size() < 2) ticks.push_back(ticks.back() + step);
  return ticks;
}

std::vector<double> log_ticks(double lo, double hi) {
  if (!(lo > 0) || !(hi > 0) || !std::isfinite(lo) || !std::isfinite(hi)) return {1, 10};
  if (lo > hi) std::swap(lo, hi);
  int e0 = static_cast<int>(std::floor(std::log10(lo) + 1e-12));
  int e1 = static_cast<int>(std::ceil(std::log10(hi) - 1e-12));
  if (e1 <= e0) e1 = e0 + 1;
  std::vector<double> ticks;
  if (e1 - e0 >= 3) {
    const int stride = (e1 - e0 + 5) / 6;  // at most ~6 labelled decades
    for (int e = e0; e <= e1; e += stride) ticks.push_back(std::pow(10.0, e));
    if (ticks.back() < hi) ticks.push_back(std::pow(10.0, e1));
    return ticks;
  }
  for (int e = e0; e <= e1; ++e)
    for (double m : {1.0, 2.0, 5.0}) {
      const double t = m * std::pow(10.0, e);
      if (e == e1 && m > 1) break;
      ticks.push_back(t);
    }
  // Trim ticks far outside the data (keep one on each side).
  while (ticks.size() > 2 && ticks[1] <= lo) ticks.erase(ticks.begin());
  while (ticks.size() > 2 && ticks[ticks.size() - 2] >= hi) ticks.pop_back();
  return ticks;
}

const char* palette_color(size_t index) {
  static const char* const kPalette[] = {"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9",
                                         "#D55E00", "#F0E442", "#000000", "#7F7F7F", "#8C564B"};
  return kPalette[index % (sizeof(kPalette) / sizeof(kPalette[0]))];
}

std::string sequential_color(double t) {
  // viridis at t = 0, 0.125, ..., 1.
  static const int kStops[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},   {44, 113, 142}, {33, 144, 141},
                                   {39, 173, 129}, {92, 200, 99},  {170, 220, 50},  {253, 231, 37}};
  if (!std::isfinite(t)) t = 0;
  t = std::clamp(t, 0.0, 1.0);
  const double pos = t * 8;
  const int i = std::min(7, static_cast<int>(std::floor(pos)));
  const double f = pos - i;
  char buf[8];
  int rgb[3];
  for (int c = 0; c < 3; ++c)
    rgb[c] = static_cast<int>(std::lround(kStops[i][c] + f * (kStops[i + 1][c] - kStops[i][c])));
  std::snprintf(buf, sizeof(buf), "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
  return buf;
}

const char* contrast_text_color(const std::string& hex) {
  if (hex.size() != 7 || hex[0] != '#') return "#000000";
  const long v = std::strtol(hex.c_str() + 1, nullptr, 16);
  const double r = (v >> 16) & 0xFF, g = (v >> 8) & 0xFF, b = v & 0xFF;
  const double luminance = 0.299 * r + 0.587 * g + 0.114 * b;
  return luminance > 140 ? "#000000" : "#ffffff";
}

std::vector<size_t> pareto_front(const std::vector<std::pair<double, double>>& points) {
  std::vector<size_t> idx;
  for (size_t i = 0; i < points.size(); ++i)
    if (finite(points[i].first) && finite(points[i].second)) idx.push_back(i);
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (points[a].first != points[b].first) return points[a].first < points[b].first;
    return points[a].second < points[b].second;
  });
  std::vector<size_t> front;
  double best_y = std::numeric_limits<double>::infinity();
  double best_x = std::numeric_limits<double>::quiet_NaN();
  for (size_t i : idx) {
    const auto [x, y] = points[i];
    if (y < best_y) {
      front.push_back(i);
      best_y = y;
      best_x = x;
    } else if (y == best_y && x == best_x) {
      front.push_back(i);  // an exact duplicate of a front point
    }
  }
  return front;
}

// ---------------------------------------------------------------------------------------------
// Bar chart

std::string render_bar_chart(const BarChart& c) {
  Svg s;
  const int height = c.height;
  double y = open_chart(s, c, height, "bars");
  std::vector<std::pair<std::string, std::string>> items;
  for (size_t i = 0; i < c.series.size(); ++i)
    items.emplace_back(c.series[i].name, c.series[i].color.empty() ? palette_color(i) : c.series[i].color);
  y = legend(s, 70, y, c.width - 20, items);

  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& se : c.series)
    for (const auto& v : se.values)
      if (v && finite(*v)) {
        lo = std::min(lo, *v);
        hi = std::max(hi, *v);
      }
  const bool any = finite(lo) && !c.categories.empty();
  const double plot_left = 64, plot_right = c.width - 16.0, plot_top = y + 6;
  const double plot_bottom = height - (c.x_label.empty() ? 34.0 : 50.0);
  if (!any) {
    s.line(plot_left, plot_top, plot_left, plot_bottom, "#444");
    s.line(plot_left, plot_bottom, plot_right, plot_bottom, "#444");
    empty_caption(s, plot_left + 1, plot_top, plot_right, plot_bottom - 1, c.empty_message);
    if (!c.x_label.empty()) s.text((plot_left + plot_right) / 2, height - 10, c.x_label, "middle");
    close_chart(s);
    return s.out;
  }
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  if (c.y_min) lo = *c.y_min;
  if (c.y_max) hi = *c.y_max;
  Axis a = make_axis(lo, hi, false, 5);
  if (c.y_min) a.lo = *c.y_min;
  if (c.y_max) a.hi = *c.y_max;
  a.ticks.erase(std::remove_if(a.ticks.begin(), a.ticks.end(),
                               [&](double t) { return t < a.lo - 1e-12 || t > a.hi + 1e-12; }),
                a.ticks.end());
  a.px0 = plot_bottom;
  a.px1 = plot_top;
  draw_y_axis(s, a, plot_left, plot_right, c.y_label, plot_top, plot_bottom);

  const size_t nc = c.categories.size();
  const size_t ns = std::max<size_t>(1, c.series.size());
  const double group_w = (plot_right - plot_left) / static_cast<double>(nc);
  const double inner = group_w * 0.82;
  const double bar_w = inner / static_cast<double>(ns);
  const double base = a.map(std::clamp(0.0, a.lo, a.hi));
  // Category labels: thin out when they would overlap.
  double max_label = 0;
  for (const auto& cat : c.categories) max_label = std::max(max_label, text_width(cat, 10));
  const size_t label_every = std::max<size_t>(1, static_cast<size_t>(std::ceil((max_label + 6) / group_w)));
  for (size_t i = 0; i < nc; ++i) {
    const double gx = plot_left + group_w * static_cast<double>(i);
    if (i % 2 == 1) s.rect(gx, plot_top, group_w, plot_bottom - plot_top, "#000000", "", "fill-opacity=\"0.03\"");
    for (size_t k = 0; k < c.series.size(); ++k) {
      const auto& se = c.series[k];
      if (i >= se.values.size() || !se.values[i] || !finite(*se.values[i])) continue;
      const double v = std::clamp(*se.values[i], a.lo, a.hi);
      const double yv = a.map(v);
      const double bx = gx + (group_w - inner) / 2 + bar_w * static_cast<double>(k);
      const std::string color = se.color.empty() ? palette_color(k) : se.color;
      s.rect(bx, std::min(yv, base), bar_w * 0.92, std::fabs(base - yv), color,
             c.categories[i] + " / " + se.name + ": " + fmt_label(*se.values[i], c.value_decimals));
    }
    if (i % label_every == 0) s.text(gx + group_w / 2, plot_bottom + 14, c.categories[i], "middle", 10, "", "#333");
    s.line(gx + group_w / 2, plot_bottom, gx + group_w / 2, plot_bottom + 3, "#444");
  }
  s.line(plot_left, base, plot_right, base, "#444");
  s.line(plot_left, plot_bottom, plot_right, plot_bottom, "#444");
  if (!c.x_label.empty()) s.text((plot_left + plot_right) / 2, height - 10, c.x_label, "middle");
  close_chart(s);
  return s.out;
}

// ---------------------------------------------------------------------------------------------
// Heatmap

std::string render_heatmap(const Heatmap& c) {
  const size_t nx = c.x_categories.size(), ny = c.y_categories.size();
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  bool any_missing = false;
  for (size_t i = 0; i < nx * ny; ++i) {
    if (i < c.values.size() && c.values[i] && finite(*c.values[i])) {
      lo = std::min(lo, *c.values[i]);
      hi = std::max(hi, *c.values[i]);
    } else {
      any_missing = true;
    }
  }
  const bool any = finite(lo) && nx > 0 && ny > 0;
  if (c.min) lo = *c.min;
  if (c.max) hi = *c.max;

  double y_label_w = 0;
  for (const auto& cat : c.y_categories) y_label_w = std::max(y_label_w, text_width(cat, 10));
  y_label_w = std::min(y_label_w, 160.0);
  const double plot_left = 30 + y_label_w + (c.y_label.empty() ? 0 : 8);
  const double colorbar_w = 90;
  const double plot_right = c.width - colorbar_w - 10.0;
  // Cell height from the requested height, kept readable.
  const double header = 8 + (c.title.empty() ? 0 : 20) + (c.subtitle.empty() ? 0 : 16) + 6 + 22;  // + x labels on top
  const double footer = c.x_label.empty() ? 14 : 30;
  double cell_h = ny > 0 ? (c.height - header - footer) / static_cast<double>(ny) : 0;
  cell_h = std::clamp(cell_h, 12.0, 40.0);
  const int height = any ? static_cast<int>(std::ceil(header + cell_h * static_cast<double>(ny) + footer)) : c.height;

  Svg s;
  double y = open_chart(s, c, height, "heatmap");
  if (!any) {
    const double bottom = height - footer;
    empty_caption(s, plot_left, y + 10, c.width - 16.0, bottom, c.empty_message);
    close_chart(s);
    return s.out;
  }
  const double plot_top = y + 22;
  const double cell_w = (plot_right - plot_left) / static_cast<double>(nx);
  // Column labels above the grid.
  for (size_t x = 0; x < nx; ++x)
    s.text(plot_left + cell_w * (static_cast<double>(x) + 0.5), plot_top - 6,
           truncate_label(c.x_categories[x], cell_w - 2), "middle", 10, "", "#333");
  // Row labels, thinned when rows are short.
  const size_t label_every = cell_h >= 11 ? 1 : static_cast<size_t>(std::ceil(11 / cell_h));
  for (size_t r = 0; r < ny; ++r)
    if (r % label_every == 0)
      s.text(plot_left - 6, plot_top + cell_h * (static_cast<double>(r) + 0.5) + 3.5,
             truncate_label(c.y_categories[r], y_label_w + 4), "end", 10, "", "#333");
  if (!c.y_label.empty()) {
    const double cy = plot_top + cell_h * static_cast<double>(ny) / 2;
    s.add("<text x=\"14\" y=\"" + fmt_coord(cy) + "\" text-anchor=\"middle\" font-size=\"11\" fill=\"#222\" "
          "transform=\"rotate(-90 14 " + fmt_coord(cy) + ")\">" + escape_xml(c.y_label) + "</text>\n");
  }
  if (any_missing) {
    s.add("<defs><pattern id=\"qf-hatch" + escape_xml(c.id) + "\" width=\"6\" height=\"6\" "
          "patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" "
          "fill=\"#eeeeee\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#c8c8c8\" stroke-width=\"2\"/>"
          "</pattern></defs>\n");
  }
  auto scale_t = [&](double v) {
    double t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    return c.reverse_scale ? 1 - t : t;
  };
  const bool text_fits = cell_h >= 13 && cell_w >= 28;
  for (size_t r = 0; r < ny; ++r)
    for (size_t x = 0; x < nx; ++x) {
      const size_t i = r * nx + x;
      const double cx = plot_left + cell_w * static_cast<double>(x), cy = plot_top + cell_h * static_cast<double>(r);
      const bool has = i < c.values.size() && c.values[i] && finite(*c.values[i]);
      const std::string text = i < c.cell_text.size() && !c.cell_text[i].empty()
                                   ? c.cell_text[i]
                                   : (has ? fmt_label(*c.values[i], c.cell_decimals) : std::string());
      const std::string tip = c.y_categories[r] + " / " + c.x_categories[x] + ": " + (has ? text : c.missing_label);
      if (!has) {
        s.rect(cx, cy, cell_w, cell_h, "url(#qf-hatch" + escape_xml(c.id) + ")", tip,
               "stroke=\"#ffffff\" stroke-width=\"1\"");
        continue;
      }
      const std::string color = sequential_color(scale_t(*c.values[i]));
      s.rect(cx, cy, cell_w, cell_h, color, tip, "stroke=\"#ffffff\" stroke-width=\"1\"");
      if (text_fits && text_width(text, 10) < cell_w - 4)
        s.text(cx + cell_w / 2, cy + cell_h / 2 + 3.5, text, "middle", 10, "", contrast_text_color(color));
    }
  if (!c.x_label.empty())
    s.text((plot_left + plot_right) / 2, plot_top + cell_h * static_cast<double>(ny) + 20, c.x_label, "middle");

  // Colour bar.
  const double bx = plot_right + 18, bw = 14, by0 = plot_top, by1 = plot_top + std::max(60.0, cell_h * static_cast<double>(ny));
  const int steps = 32;
  for (int k = 0; k < steps; ++k) {
    const double t0 = static_cast<double>(k) / steps;
    const double v = hi - (hi - lo) * (t0 + 0.5 / steps);  // top = high values
    s.rect(bx, by0 + (by1 - by0) * t0, bw, (by1 - by0) / steps + 0.5, sequential_color(scale_t(v)));
  }
  s.rect(bx, by0, bw, by1 - by0, "none", "", "stroke=\"#444\"");
  std::vector<double> ticks = hi > lo ? nice_ticks(lo, hi, 4) : std::vector<double>{lo};
  for (double t : ticks) {
    if (t < lo - 1e-12 || t > hi + 1e-12) continue;
    const double ty = hi > lo ? by1 - (t - lo) / (hi - lo) * (by1 - by0) : (by0 + by1) / 2;
    s.line(bx + bw, ty, bx + bw + 4, ty, "#444");
    s.text(bx + bw + 6, ty + 3.5, fmt_label(t), "start", 10, "", "#333");
  }
  if (!c.value_label.empty()) s.text(bx - 4, by0 - 8, c.value_label, "start", 10, "", "#333");
  if (any_missing) {
    s.rect(bx, by1 + 10, bw, 10, "url(#qf-hatch" + escape_xml(c.id) + ")", "", "stroke=\"#999\"");
    s.text(bx + bw + 4, by1 + 19, truncate_label(c.missing_label, colorbar_w - 20), "start", 9, "", "#555");
  }
  close_chart(s);
  return s.out;
}

// ---------------------------------------------------------------------------------------------
// Scatter / line chart

std::string render_scatter_chart(const ScatterChart& c) {
  Svg s;
  const int height = c.height;
  double y = open_chart(s, c, height, "scatter");
  std::vector<std::pair<std::string, std::string>> items;
  for (size_t i = 0; i < c.series.size(); ++i)
    if (!c.series[i].name.empty())
      items.emplace_back(c.series[i].name, c.series[i].color.empty() ? palette_color(i) : c.series[i].color);

  auto drawable = [&](const ScatterPoint& p) {
    return finite(p.x) && finite(p.y) && (!c.log_x || p.x > 0) && (!c.log_y || p.y > 0);
  };
  std::vector<std::pair<double, double>> all;
  std::vector<std::pair<size_t, size_t>> where;  // (series, point) of each entry in `all`
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  for (size_t si = 0; si < c.series.size(); ++si)
    for (size_t pi = 0; pi < c.series[si].points.size(); ++pi) {
      const ScatterPoint& p = c.series[si].points[pi];
      if (!drawable(p)) continue;
      all.emplace_back(p.x, p.y);
      where.emplace_back(si, pi);
      xlo = std::min(xlo, p.x);
      xhi = std::max(xhi, p.x);
      ylo = std::min(ylo, p.y);
      yhi = std::max(yhi, p.y);
    }
  std::vector<size_t> front;
  if (c.pareto && all.size() >= 1) {
    front = pareto_front(all);
    if (!front.empty()) items.emplace_back(c.pareto_label, "#C0392B");
  }
  y = legend(s, 70, y, c.width - 20, items, true);
  const double plot_left = 70, plot_right = c.width - 24.0, plot_top = y + 8;
  const double plot_bottom = height - (c.x_label.empty() ? 30.0 : 46.0);
  if (all.empty()) {
    s.line(plot_left, plot_top, plot_left, plot_bottom, "#444");
    s.line(plot_left, plot_bottom, plot_right, plot_bottom, "#444");
    empty_caption(s, plot_left + 1, plot_top, plot_right, plot_bottom - 1, c.empty_message);
    if (!c.x_label.empty()) s.text((plot_left + plot_right) / 2, height - 10, c.x_label, "middle");
    if (!c.y_label.empty()) {
      const double cy = (plot_top + plot_bottom) / 2;
      s.add("<text x=\"14\" y=\"" + fmt_coord(cy) + "\" text-anchor=\"middle\" font-size=\"11\" fill=\"#222\" "
            "transform=\"rotate(-90 14 " + fmt_coord(cy) + ")\">" + escape_xml(c.y_label) + "</text>\n");
    }
    close_chart(s);
    return s.out;
  }
  // Pad linear ranges by 5% so points do not sit on the frame.
  auto pad = [](double& lo, double& hi, bool log) {
    if (log) {
      if (lo == hi) {
        lo /= 2;
        hi *= 2;
      }
      return;
    }
    const double d = hi > lo ? (hi - lo) * 0.05 : (lo == 0 ? 1 : std::fabs(lo) * 0.1);
    lo -= d;
    hi += d;
  };
  pad(xlo, xhi, c.log_x);
  pad(ylo, yhi, c.log_y);
  Axis ax = make_axis(xlo, xhi, c.log_x, 6);
  Axis ay = make_axis(ylo, yhi, c.log_y, 5);
  ax.px0 = plot_left;
  ax.px1 = plot_right;
  ay.px0 = plot_bottom;
  ay.px1 = plot_top;
  draw_y_axis(s, ay, plot_left, plot_right, c.y_label, plot_top, plot_bottom);
  for (double t : ax.ticks) {
    const double x = ax.map(t);
    s.line(x, plot_top, x, plot_bottom, "#efefef");
    s.line(x, plot_bottom, x, plot_bottom + 4, "#444");
    s.text(x, plot_bottom + 15, fmt_label(t), "middle", 10, "", "#333");
  }
  s.line(plot_left, plot_bottom, plot_right, plot_bottom, "#444");
  if (!c.x_label.empty()) s.text((plot_left + plot_right) / 2, height - 10, c.x_label, "middle");

  // Pareto front: a step line under the points (minimisation: right then down).
  if (front.size() >= 1) {
    std::string pts;
    for (size_t k = 0; k < front.size(); ++k) {
      const auto [fx, fy] = all[front[k]];
      if (k > 0) {
        const double prev_y = all[front[k - 1]].second;
        pts += fmt_coord(ax.map(fx)) + "," + fmt_coord(ay.map(prev_y)) + " ";
      }
      pts += fmt_coord(ax.map(fx)) + "," + fmt_coord(ay.map(fy)) + " ";
    }
    if (!pts.empty()) pts.pop_back();
    s.add("<polyline class=\"qf-pareto\" points=\"" + pts +
          "\" fill=\"none\" stroke=\"#C0392B\" stroke-width=\"2\" stroke-dasharray=\"6 3\" stroke-opacity=\"0.85\"/>\n");
  }
  // Series lines.
  for (size_t si = 0; si < c.series.size(); ++si) {
    const ScatterSeries& se = c.series[si];
    if (!se.line) continue;
    std::string pts;
    for (const auto& p : se.points)
      if (drawable(p)) pts += fmt_coord(ax.map(p.x)) + "," + fmt_coord(ay.map(p.y)) + " ";
    if (pts.empty()) continue;
    pts.pop_back();
    const std::string color = se.color.empty() ? palette_color(si) : se.color;
    s.add("<polyline points=\"" + pts + "\" fill=\"none\" stroke=\"" + color + "\" stroke-width=\"1.5\"/>\n");
  }
  // Points, with the front ringed, then labels on top.
  std::vector<bool> on_front(all.size(), false);
  for (size_t k : front) on_front[k] = true;
  for (size_t k = 0; k < all.size(); ++k) {
    const auto [si, pi] = where[k];
    const ScatterPoint& p = c.series[si].points[pi];
    const std::string color = c.series[si].color.empty() ? palette_color(si) : c.series[si].color;
    const double px = ax.map(p.x), py = ay.map(p.y);
    if (on_front[k])
      s.add("<circle cx=\"" + fmt_coord(px) + "\" cy=\"" + fmt_coord(py) +
            "\" r=\"8\" fill=\"none\" stroke=\"#C0392B\" stroke-width=\"1.5\"/>\n");
    const std::string tip = (p.label.empty() ? c.series[si].name : p.label) + ": x=" + fmt_label(p.x, 4) +
                            ", y=" + fmt_label(p.y, 4);
    s.add("<circle cx=\"" + fmt_coord(px) + "\" cy=\"" + fmt_coord(py) + "\" r=\"" + (p.highlight ? "6" : "4") +
          "\" fill=\"" + color + "\"" + (p.highlight ? " stroke=\"#111\" stroke-width=\"2\"" : " fill-opacity=\"0.9\"") +
          "><title>" + escape_xml(tip) + "</title></circle>\n");
  }
  for (size_t k = 0; k < all.size(); ++k) {
    const auto [si, pi] = where[k];
    const ScatterPoint& p = c.series[si].points[pi];
    if (p.label.empty()) continue;
    const double px = ax.map(p.x), py = ay.map(p.y);
    // Labels go right of the point unless that would leave the plot.
    const bool left = px + 10 + text_width(p.label, 10) > plot_right;
    s.text(left ? px - 9 : px + 9, py - 6, p.label, left ? "end" : "start", 10,
           p.highlight ? "font-weight=\"bold\"" : "", "#222");
  }
  close_chart(s);
  return s.out;
}

}  // namespace qforge::svg
