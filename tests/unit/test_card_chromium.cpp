// The HTML quantization card opened in headless Chromium (Debian's `chromium`, installed by
// scripts/setup.sh): the page must render its title and three non-empty SVG charts, and a
// screenshot is saved as a test artifact in <build>/test-artifacts/ (QFORGE_TEST_ARTIFACTS
// overrides the directory). Skips with a message when chromium is not installed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "card_test_support.h"
#include "qforge/card.h"
#include "test_support.h"

namespace qforge {
namespace {
namespace fs = std::filesystem;

std::string chromium_binary() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (fs::exists(p)) return p;
  return "";
}

std::string artifact_dir() {
  const char* env = std::getenv("QFORGE_TEST_ARTIFACTS");
  const fs::path dir = env != nullptr && *env ? fs::path(env) : fs::path(test::cli_path()).parent_path() / "test-artifacts";
  fs::create_directories(dir);
  return dir.string();
}

std::string chromium_flags() {
  // A private profile directory: headless Chromium needs a writable one and must not share it.
  return "--headless --no-sandbox --disable-gpu --no-first-run --disable-dev-shm-usage --hide-scrollbars "
         "--user-data-dir='" + test::temp_dir() + "/profile'";
}

int run_chromium(const std::string& args, std::string* out) {
  // `timeout` bounds a hung browser; stderr (dbus noise) goes with stdout for failure messages.
  return test::run_command("timeout 120 '" + chromium_binary() + "' " + chromium_flags() + " " + args + " 2>&1", out);
}

// The card page plus a probe script that writes, for each <svg>, its laid-out size and number of
// drawn elements into a <pre id="probe"> element, so --dump-dom shows what was actually rendered.
// The card itself stays script-free; only this test copy gets the probe.
std::string with_probe(const std::string& html) {
  const std::string probe = R"(<pre id="probe"></pre><script>
window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('svg').forEach(function (s) {
    var r = s.getBoundingClientRect();
    var drawn = s.querySelectorAll('rect,line,circle,polyline,path,text').length;
    out.push((s.id || 'svg') + ' ' + Math.round(r.width) + 'x' + Math.round(r.height) + ' ' + drawn);
  });
  document.getElementById('probe').textContent = 'PROBE ' + document.title + '\n' + out.join('\n') + '\nEND';
});
</script>
)";
  std::string page = html;
  const size_t end = page.rfind("</body>");
  page.insert(end == std::string::npos ? page.size() : end, probe);
  return page;
}

// `title`: the page title as text (the DOM serializer escapes only &, < and > in it).
void check_rendered(const std::string& card_html, const std::string& name, const std::string& title) {
  std::string dom_title;
  for (char c : title) dom_title += c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : std::string(1, c);
  const std::string dir = test::temp_dir();
  const std::string probe_page = dir + "/" + name + ".probe.html";
  std::ofstream(probe_page) << with_probe(card_html);
  std::string dom;
  ASSERT_EQ(run_chromium("--window-size=1280,2000 --virtual-time-budget=5000 --dump-dom 'file://" + probe_page + "'", &dom), 0) << dom;
  EXPECT_NE(dom.find("<title>" + dom_title + "</title>"), std::string::npos) << "title not in the rendered DOM";
  const size_t begin = dom.find("PROBE ");
  ASSERT_NE(begin, std::string::npos) << "the probe did not run; DOM:\n" << dom.substr(0, 2000);
  const std::string probe = dom.substr(begin, dom.find("END", begin) - begin);
  EXPECT_NE(probe.find("PROBE " + dom_title), std::string::npos) << probe;  // document.title, serialized
  std::regex line(R"((qf-chart-\w+) (\d+)x(\d+) (\d+))");
  int charts = 0;
  for (auto it = std::sregex_iterator(probe.begin(), probe.end(), line); it != std::sregex_iterator(); ++it) {
    ++charts;
    const int w = std::stoi((*it)[2]), h = std::stoi((*it)[3]), drawn = std::stoi((*it)[4]);
    // Laid out at (nearly) their 1080-unit width, and drawn: an empty chart still has its frame,
    // axes, title and caption (9 elements); charts with data have many more.
    EXPECT_GT(w, 900) << (*it)[1] << " rendered " << w << "x" << h;
    EXPECT_GT(h, 100) << (*it)[1] << " rendered " << w << "x" << h;
    EXPECT_GE(drawn, 8) << (*it)[1] << " has only " << drawn << " drawn elements";
  }
  EXPECT_EQ(charts, 3) << probe;

  // The screenshot of the card itself (no probe), kept as an artifact.
  const std::string page = dir + "/" + name + ".card.html";
  std::ofstream(page) << card_html;
  const std::string png = artifact_dir() + "/" + name + ".png";
  fs::remove(png);
  std::string out;
  ASSERT_EQ(run_chromium("--window-size=1280,2000 --screenshot='" + png + "' 'file://" + page + "'", &out), 0) << out;
  ASSERT_TRUE(fs::exists(png)) << out;
  const std::string bytes = test::read_text(png);
  ASSERT_GT(bytes.size(), 24u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  // IHDR width and height (big-endian) are the window size.
  auto be32 = [&](size_t at) {
    return (static_cast<uint32_t>(static_cast<uint8_t>(bytes[at])) << 24) |
           (static_cast<uint32_t>(static_cast<uint8_t>(bytes[at + 1])) << 16) |
           (static_cast<uint32_t>(static_cast<uint8_t>(bytes[at + 2])) << 8) | static_cast<uint8_t>(bytes[at + 3]);
  };
  EXPECT_EQ(be32(16), 1280u);
  EXPECT_EQ(be32(20), 2000u);
  // A blank 1280x2000 page compresses to a few KB; charts, tables and text do not.
  EXPECT_GT(bytes.size(), 40000u) << png << " looks blank";
  std::printf("screenshot: %s (%zu bytes)\n", png.c_str(), bytes.size());
}

TEST(CardChromium, CardWithDataRendersTitleAndThreeCharts) {
  if (chromium_binary().empty()) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it): skipping";
  const Card card = test::synthetic_card(true, true);
  check_rendered(render_card_html(card), "card-synthetic", "Quantization card: o <&> \".safetensors");
}

TEST(CardChromium, CardWithoutMeasurementsStillRendersThreeCharts) {
  if (chromium_binary().empty()) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it): skipping";
  Card card = test::synthetic_card(false, false);
  card.output.path = "plain.safetensors";
  check_rendered(render_card_html(card), "card-not-measured", "Quantization card: plain.safetensors");
}

// The card of a real quantization, when the fixtures are there.
TEST(CardChromium, RefLlamaCard) {
  if (chromium_binary().empty()) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it): skipping";
  QFORGE_REQUIRE_SHARED("models/ref-llama-18m");
  const std::string out = test::temp_dir() + "/ref-llama-18m-q4km.gguf";
  std::string log;
  ASSERT_EQ(test::run_command("OMP_WAIT_POLICY=passive '" + test::cli_path() + "' quantize '" + test::shared_dir() +
                                  "/models/ref-llama-18m' --format gguf --type Q4_K_M --out '" + out + "' 2>&1",
                              &log),
            0)
      << log;
  check_rendered(test::read_text(out + ".card.html"), "card-ref-llama-18m-q4_k_m",
                 "Quantization card: ref-llama-18m-q4km.gguf");
}

}  // namespace
}  // namespace qforge
