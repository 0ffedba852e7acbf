// The SVG chart module (include/qforge/svg_chart.h): helpers, determinism, escaping, empty charts.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "qforge/svg_chart.h"

namespace qforge::svg {
namespace {

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

TEST(SvgChart, EscapesXml) {
  EXPECT_EQ(escape_xml("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
  EXPECT_EQ(escape_xml(std::string("x\x01y")), "x?y");
}

TEST(SvgChart, NumberFormatting) {
  EXPECT_EQ(fmt_coord(1.5), "1.5");
  EXPECT_EQ(fmt_coord(2.0), "2");
  EXPECT_EQ(fmt_coord(-0.0001), "0");
  EXPECT_EQ(fmt_coord(NAN), "0");
  EXPECT_EQ(fmt_label(0.000012345), "1.23e-05");
  EXPECT_EQ(fmt_label(12.345), "12.3");
  EXPECT_EQ(fmt_label(0.25), "0.25");
  EXPECT_EQ(fmt_label(INFINITY), "inf");
  EXPECT_EQ(fmt_label(0), "0");
}

TEST(SvgChart, NiceTicksCoverTheRange) {
  for (auto [lo, hi] : {std::pair{0.0, 1.0}, {3.2, 47.9}, {-5.0, 12.0}, {0.001, 0.0013}, {7.0, 7.0}}) {
    std::vector<double> t = nice_ticks(lo, hi, 5);
    ASSERT_GE(t.size(), 2u);
    EXPECT_LE(t.front(), lo) << lo << ".." << hi;
    EXPECT_GE(t.back(), hi) << lo << ".." << hi;
    EXPECT_LE(t.size(), 12u);
    for (size_t i = 1; i < t.size(); ++i) EXPECT_GT(t[i], t[i - 1]);
  }
  std::vector<double> lt = log_ticks(0.003, 0.4);
  EXPECT_LE(lt.front(), 0.003);
  EXPECT_GE(lt.back(), 0.4);
}

TEST(SvgChart, ParetoFrontMinimisesBoth) {
  // (size, kld): (1,5) (2,3) (3,4) dominated by (2,3), (4,1), (5,1) dominated by (4,1).
  std::vector<std::pair<double, double>> p = {{3, 4}, {1, 5}, {4, 1}, {2, 3}, {5, 1}, {NAN, 0}};
  std::vector<size_t> f = pareto_front(p);
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0], 1u);
  EXPECT_EQ(f[1], 3u);
  EXPECT_EQ(f[2], 2u);
}

TEST(SvgChart, BarChartDrawsOneRectPerValueAndIsDeterministic) {
  BarChart c;
  c.title = "SQNR <per> layer";
  c.y_label = "dB";
  c.categories = {"0", "1", "2"};
  c.series = {{"attn_q", {20.0, 21.0, 22.0}, ""}, {"mlp_down", {19.0, std::nullopt, 18.0}, ""}};
  const std::string a = render_bar_chart(c), b = render_bar_chart(c);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.rfind("<svg", 0), 0u);
  EXPECT_NE(a.find("SQNR &lt;per&gt; layer"), std::string::npos);
  EXPECT_EQ(a.find("SQNR <per>"), std::string::npos);
  // 5 bars with tooltips.
  EXPECT_EQ(count(a, "</title></rect>"), 5u);
}

TEST(SvgChart, EmptyChartsStillRenderWithCaption) {
  BarChart b;
  b.empty_message = "not measured: no data";
  Heatmap h;
  h.empty_message = "nothing";
  ScatterChart s;
  s.empty_message = "no sweep";
  for (const std::string& svg : {render_bar_chart(b), render_heatmap(h), render_scatter_chart(s)}) {
    EXPECT_EQ(svg.rfind("<svg", 0), 0u);
    EXPECT_NE(svg.find("qf-empty"), std::string::npos);
    EXPECT_NE(svg.find("</svg>"), std::string::npos);
  }
}

TEST(SvgChart, HeatmapCellsAndColourBar) {
  Heatmap h;
  h.x_categories = {"q", "k"};
  h.y_categories = {"0", "1", "2"};
  h.values = {4.5, 4.5, 6.5, std::nullopt, 4.5, 8.5};
  h.value_label = "bits/weight";
  const std::string svg = render_heatmap(h);
  EXPECT_EQ(count(svg, "</title></rect>"), 6u);  // 5 cells + 1 missing, each with a tooltip
  EXPECT_NE(svg.find("not applicable"), std::string::npos);
  EXPECT_NE(svg.find(sequential_color(1.0)), std::string::npos);  // the max cell
}

TEST(SvgChart, ScatterWithParetoAndLogAxis) {
  ScatterChart s;
  s.log_y = true;
  s.pareto = true;
  s.series = {{"sweep", {{1, 0.5, "Q2_K", false}, {2, 0.05, "Q4_K_M", true}, {3, 0.06, "odd", false}, {4, 0.01, "Q8_0", false}}, false, ""}};
  const std::string svg = render_scatter_chart(s);
  EXPECT_NE(svg.find("qf-pareto"), std::string::npos);
  EXPECT_NE(svg.find("Q4_K_M"), std::string::npos);
  EXPECT_EQ(count(svg, "r=\"8\""), 3u);  // three front points ringed
}

}  // namespace
}  // namespace qforge::svg
