// qforge quantize --calib (GPTQ and RTN through the pipeline), --resume after a real crash, and
// qforge imatrix, on a tiny HF checkpoint (hf-goldens/llama-gqa-untied, 512-token vocabulary, with
// stories260K's tok512 tokenizer) and a generated calibration text.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "qforge/imatrix.h"
#include "qforge/model.h"
#include "qforge/packed.h"
#include "qforge/ptq.h"
#include "qforge/tokenizer.h"
#include "test_support.h"

namespace qforge {
namespace {

namespace fs = std::filesystem;
using test::cli_path;
using test::run_command;
using test::shared_dir;
using test::temp_dir;

std::string quote(const std::string& s) { return "'" + s + "'"; }

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Fixture {
  std::string model, tokenizer, calib, dir;
};

Fixture make_fixture() {
  Fixture f;
  f.model = shared_dir() + "/models/hf-goldens/llama-gqa-untied";
  f.tokenizer = shared_dir() + "/models/stories260K/tok512.bin";
  f.dir = temp_dir();
  f.calib = f.dir + "/calib.txt";
  std::ofstream out(f.calib);
  const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "to", "see", "her", "friend",
                         "in", "park", "where", "birds", "sang", "happy", "songs"};
  uint32_t s = 12345;
  for (int i = 0; i < 3000; ++i) {
    s = s * 1103515245u + 12345u;
    out << words[(s >> 16) % 20] << ((i % 13 == 12) ? ".\n" : " ");
  }
  return f;
}

std::string quantize_cmd(const Fixture& f, const std::string& out, const std::string& extra) {
  return quote(cli_path()) + " quantize " + quote(f.model) + " --method gptq --scheme int4-g32-asym --calib " +
         quote(f.calib) + " --tokenizer " + quote(f.tokenizer) + " --calib-windows 6 --calib-ctx 48 --out " +
         quote(out) + " " + extra + " 2>&1";
}

TEST(PtqCli, GptqResumeAfterCrashIsByteIdentical) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens/llama-gqa-untied");
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const Fixture f = make_fixture();
  const std::string a = f.dir + "/a.safetensors", b = f.dir + "/b.safetensors";
  std::string log;
  ASSERT_EQ(run_command(quantize_cmd(f, a, "--act-order"), &log), 0) << log;

  // Killed (SIGKILL) right after block 0's state was saved: no output, the state is kept.
  const int crashed = run_command("QFORGE_QUANTIZE_CRASH_AFTER_BLOCK=0 " + quantize_cmd(f, b, "--act-order"), &log);
  EXPECT_NE(crashed, 0) << log;
  EXPECT_FALSE(fs::exists(b));
  ASSERT_TRUE(fs::exists(b + ".qforge-resume/state.json")) << log;
  // A different run's options are refused.
  ASSERT_NE(run_command(quantize_cmd(f, b, "--resume"), &log), 0);
  EXPECT_NE(log.find("different run"), std::string::npos) << log;
  ASSERT_EQ(run_command(quantize_cmd(f, b, "--act-order --resume"), &log), 0) << log;
  EXPECT_NE(log.find("resuming after block 0"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(b + ".qforge-resume"));
  const std::string bytes_a = read_bytes(a), bytes_b = read_bytes(b);
  ASSERT_FALSE(bytes_a.empty());
  EXPECT_TRUE(bytes_a == bytes_b) << "resumed output differs (" << bytes_a.size() << " vs " << bytes_b.size() << " bytes)";

  auto pf = PackedFile::open(a);
  ASSERT_TRUE(pf.has_value()) << pf.status().message();
  EXPECT_EQ(pf->quantized().size(), 2u * 7u);  // 7 linears per block (the default selection keeps the head)
  const auto meta = pf->user_metadata();
  ASSERT_TRUE(meta.count("calibration.sha256"));
  EXPECT_EQ(meta.at("calibration.sha256").size(), 64u);
  EXPECT_EQ(meta.at("calibration.windows"), "6");
  EXPECT_EQ(meta.at("calibration.tokens"), "288");
  EXPECT_EQ(meta.at("quantize.method"), "gptq");
  EXPECT_EQ(meta.at("gptq.act_order"), "true");
  EXPECT_NE(pf->manifest_command().find("--act-order"), std::string::npos);
}

TEST(PtqCli, GptqBeatsRtnOnTheCalibrationWindows) {
  // The quantized models' last hidden states on the calibration windows, against the f32 model's:
  // GPTQ minimises exactly this kind of error block by block, so it must be below RTN's.
  QFORGE_REQUIRE_SHARED("models/hf-goldens/llama-gqa-untied");
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const Fixture f = make_fixture();
  const std::string g = f.dir + "/g.safetensors", r = f.dir + "/r.safetensors";
  std::string log;
  ASSERT_EQ(run_command(quantize_cmd(f, g, ""), &log), 0) << log;
  const std::string rtn_cmd = quote(cli_path()) + " quantize " + quote(f.model) +
                              " --method rtn --scheme int4-g32-asym --calib " + quote(f.calib) + " --tokenizer " +
                              quote(f.tokenizer) + " --calib-windows 6 --calib-ctx 48 --out " + quote(r) + " 2>&1";
  ASSERT_EQ(run_command(rtn_cmd, &log), 0) << log;

  TokenizerOptions to;
  to.vocab_size = 512;
  auto tok = load_tokenizer(f.tokenizer, to);
  ASSERT_TRUE(tok.has_value());
  CalibrationOptions co;
  co.windows = 6;
  co.ctx = 48;
  auto calib = load_calibration_set(f.calib, **tok, co);
  ASSERT_TRUE(calib.has_value());
  auto final_hidden = [&](const std::string& path) {
    ModelLoadOptions lo;
    lo.config = f.model;
    auto m = Model::load(path, lo);
    EXPECT_TRUE(m.has_value()) << path << ": " << m.status().message();
    std::vector<float> h(static_cast<size_t>(calib->tokens_used() * m->config().hidden_size));
    EXPECT_TRUE(m->embed_tokens(calib->tokens.data(), calib->windows, calib->ctx, h));
    for (int L = 0; L < m->config().num_layers; ++L) EXPECT_TRUE(m->forward_layer(L, h, calib->windows, calib->ctx));
    return h;
  };
  const auto ref = final_hidden(f.model), hg = final_hidden(g), hr = final_hidden(r);
  double eg = 0, er = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    eg += (hg[i] - ref[i]) * (hg[i] - ref[i]);
    er += (hr[i] - ref[i]) * (hr[i] - ref[i]);
  }
  EXPECT_LT(eg, er) << "GPTQ squared error " << eg << ", RTN " << er;
}

TEST(PtqCli, ImatrixRoundTripsThroughTheReader) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens/llama-gqa-untied");
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const Fixture f = make_fixture();
  const std::string im = f.dir + "/imatrix.gguf";
  std::string log;
  ASSERT_EQ(run_command(quote(cli_path()) + " imatrix " + quote(f.model) + " --calib " + quote(f.calib) +
                            " --tokenizer " + quote(f.tokenizer) + " --calib-windows 5 --calib-ctx 40 --out " +
                            quote(im) + " 2>&1",
                        &log),
            0)
      << log;
  auto imx = Imatrix::load(im);
  ASSERT_TRUE(imx.has_value()) << imx.status().message();
  EXPECT_EQ(imx->chunk_count(), 5);
  EXPECT_EQ(imx->chunk_size(), 40);
  ASSERT_EQ(imx->datasets().size(), 1u);
  EXPECT_EQ(imx->datasets()[0], "calib.txt");
  EXPECT_EQ(imx->entries().size(), 14u);

  // The importance equals the mean x² the pipeline collects from the same windows.
  auto m = Model::load(f.model);
  ASSERT_TRUE(m.has_value());
  TokenizerOptions to;
  to.vocab_size = 512;
  auto tok = load_tokenizer(f.tokenizer, to);
  CalibrationOptions co;
  co.windows = 5;
  co.ctx = 40;
  auto calib = load_calibration_set(f.calib, **tok, co);
  ASSERT_TRUE(calib.has_value());
  auto p = CalibrationPipeline::create(*m, *calib);
  ASSERT_TRUE(p.has_value());
  StatsRequest req;
  req.moments = true;
  for (int L = 0; L < 2; ++L) {
    auto groups = (*p)->collect(L, req);
    ASSERT_TRUE(groups.has_value());
    for (const InputGroup& g : *groups)
      for (const LinearSite& site : g.sites) {
        const std::string name = tensor_name_for_role(m->config().arch, site.role, L, false, TensorNaming::gguf).value();
        const ImatrixEntry* e = imx->find(name);
        ASSERT_NE(e, nullptr) << name;
        ASSERT_EQ(e->n_cols, g.stats.in_features) << name;
        const auto ms = g.stats.mean_sq();
        for (int64_t c = 0; c < e->n_cols; ++c)
          EXPECT_NEAR(e->importance[static_cast<size_t>(c)], ms[static_cast<size_t>(c)], 1e-5 * std::max(1.0, ms[static_cast<size_t>(c)]))
              << name << " column " << c;
      }
    ASSERT_TRUE((*p)->advance(L));
  }

  // And the GGUF quantizer takes it.
  const std::string gguf = f.dir + "/q.gguf";
  ASSERT_EQ(run_command(quote(cli_path()) + " quantize " + quote(f.model) + " --format gguf --type Q4_K_M --imatrix " +
                            quote(im) + " --no-vocab --allow-fallback --out " + quote(gguf) +
                            " 2>&1",
                        &log),
            0)
      << log;
  EXPECT_TRUE(fs::exists(gguf));
}

TEST(PtqCli, RejectsBadCombinations) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens/llama-gqa-untied");
  const Fixture f = make_fixture();
  std::string log;
  const std::string base = quote(cli_path()) + " quantize " + quote(f.model) + " --scheme int4-g32-asym --out " +
                           quote(f.dir + "/x.safetensors");
  EXPECT_NE(run_command(base + " --method gptq 2>&1", &log), 0);
  EXPECT_NE(log.find("needs --calib"), std::string::npos) << log;
  EXPECT_NE(run_command(base + " --act-order 2>&1", &log), 0);
  EXPECT_NE(run_command(base + " --calib " + quote(f.calib) + " --method rtn --damp 0.1 2>&1", &log), 0);
  EXPECT_NE(log.find("--method gptq"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(f.dir + "/x.safetensors"));
}

}  // namespace
}  // namespace qforge
