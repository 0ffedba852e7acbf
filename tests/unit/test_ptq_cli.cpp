// qforge quantize --calib (GPTQ and RTN through the pipeline), --resume after a real crash, and
// qforge imatrix, on a tiny HF checkpoint (hf-goldens/llama-gqa-untied, 512-token vocabulary, with
// stories260K's tok512 tokenizer) and a generated calibration text.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "qforge/card.h"
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

std::string calib_cmd(const Fixture& f, const std::string& out, const std::string& args) {
  return quote(cli_path()) + " quantize " + quote(f.model) + " " + args + " --calib " + quote(f.calib) +
         " --tokenizer " + quote(f.tokenizer) + " --calib-windows 6 --calib-ctx 48 --out " + quote(out) + " 2>&1";
}

TEST(PtqCli, AwqAndSmoothQuantResumeAfterCrashAreByteIdentical) {
  // The block state of methods that rewrite the block (norm folds, activation scales) is saved
  // with the quantized weights, so a resumed run reproduces the uninterrupted one byte for byte
  // (packed and GGUF output).
  QFORGE_REQUIRE_SHARED("models/hf-goldens/llama-gqa-untied");
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const Fixture f = make_fixture();
  int i = 0;
  for (const std::string args : {"--method awq --scheme int4-g32-asym --keep lm_head",
                                 "--method awq+gptq --scheme int3-g32-asym --act-scheme int8-token-dyn",
                                 "--method smoothquant --scheme int8-ch-sym --act-scheme int8-tensor-static",
                                 "--method awq+gptq --format gguf --type Q4_0 --no-vocab --allow-fallback"}) {
    const std::string ext = args.find("gguf") != std::string::npos ? ".gguf" : ".safetensors";
    const std::string a = f.dir + "/a" + std::to_string(i) + ext, b = f.dir + "/b" + std::to_string(i) + ext;
    ++i;
    std::string log;
    ASSERT_EQ(run_command(calib_cmd(f, a, args), &log), 0) << args << "\n" << log;
    EXPECT_NE(run_command("QFORGE_QUANTIZE_CRASH_AFTER_BLOCK=0 " + calib_cmd(f, b, args), &log), 0) << log;
    EXPECT_FALSE(fs::exists(b)) << args;
    ASSERT_TRUE(fs::exists(b + ".qforge-resume/state.json")) << args << "\n" << log;
    ASSERT_EQ(run_command(calib_cmd(f, b, args + " --resume"), &log), 0) << args << "\n" << log;
    EXPECT_NE(log.find("resuming after block 0"), std::string::npos) << log;
    const std::string bytes_a = read_bytes(a), bytes_b = read_bytes(b);
    ASSERT_FALSE(bytes_a.empty());
    EXPECT_TRUE(bytes_a == bytes_b) << args << ": resumed output differs (" << bytes_a.size() << " vs "
                                    << bytes_b.size() << " bytes)";
  }
}

TEST(PtqCli, GptqClipAndRefitAreRecordedAndResumeByteIdentical) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens/llama-gqa-untied");
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const Fixture f = make_fixture();
  const std::string args = "--method gptq --scheme int4-g32-asym --act-order --gptq-clip --gptq-refit";
  const std::string a = f.dir + "/refit-a.safetensors", b = f.dir + "/refit-b.safetensors";
  std::string log;
  ASSERT_EQ(run_command(calib_cmd(f, a, args), &log), 0) << log;
  EXPECT_NE(run_command("QFORGE_QUANTIZE_CRASH_AFTER_BLOCK=0 " + calib_cmd(f, b, args), &log), 0) << log;
  ASSERT_NE(run_command(calib_cmd(f, b, "--method gptq --scheme int4-g32-asym --act-order --gptq-clip --resume"), &log), 0);
  EXPECT_NE(log.find("different run"), std::string::npos) << log;  // the refit is part of the fingerprint
  ASSERT_EQ(run_command(calib_cmd(f, b, args + " --resume"), &log), 0) << log;
  EXPECT_TRUE(read_bytes(a) == read_bytes(b)) << "resumed output differs";

  auto pf = PackedFile::open(a);
  ASSERT_TRUE(pf.has_value()) << pf.status().message();
  const auto meta = pf->user_metadata();
  ASSERT_TRUE(meta.count("gptq.refit_passes"));
  EXPECT_EQ(meta.at("gptq.refit_passes"), "4");
  EXPECT_NE(pf->manifest_command().find("--gptq-clip"), std::string::npos) << pf->manifest_command();
  EXPECT_NE(pf->manifest_command().find("--gptq-refit"), std::string::npos) << pf->manifest_command();
  Expected<Card> card = card_from_json(read_bytes(a + ".card.json"), "card");
  ASSERT_TRUE(card.has_value()) << card.status().message();
  ASSERT_TRUE(card->method.gptq.has_value());
  EXPECT_TRUE(card->method.gptq->act_order);
  EXPECT_TRUE(card->method.gptq->mse_clip);
  EXPECT_EQ(card->method.gptq->refit_passes, 4);
}

TEST(PtqCli, GptqIntoGgufReloadsMatchesPackedAndBeatsRtn) {
  // GPTQ into Q4_0 blocks through --format gguf: the file loads, its block linears are the ones
  // the same GPTQ run writes into qforge's packed layout (--scheme q4_0; the GGUF file's q/k rows
  // are permuted for llama.cpp's RoPE, which the loader undoes), so both evaluate alike, and its
  // error on the calibration windows is below round-to-nearest GGUF of the same type.
  QFORGE_REQUIRE_SHARED("models/hf-goldens/llama-gqa-untied");
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const Fixture f = make_fixture();
  const std::string g = f.dir + "/g.gguf", r = f.dir + "/r.gguf", p = f.dir + "/p.safetensors";
  const std::string keep_f32 = " --pure --output-tensor-type F32 --token-embedding-type F32 --no-vocab";  // tok512 is no SentencePiece model
  std::string log;
  ASSERT_EQ(run_command(calib_cmd(f, g, "--method gptq --format gguf --type Q4_0" + keep_f32), &log), 0) << log;
  ASSERT_EQ(run_command(calib_cmd(f, p, "--method gptq --scheme q4_0 --keep lm_head"), &log), 0) << log;
  ASSERT_EQ(run_command(quote(cli_path()) + " quantize " + quote(f.model) + " --format gguf --type Q4_0" + keep_f32 +
                            " --out " + quote(r) + " 2>&1",
                        &log),
            0)
      << log;

  TokenizerOptions to;
  to.vocab_size = 512;
  auto tok = load_tokenizer(f.tokenizer, to);
  ASSERT_TRUE(tok.has_value());
  CalibrationOptions co;
  co.windows = 6;
  co.ctx = 48;
  auto calib = load_calibration_set(f.calib, **tok, co);
  ASSERT_TRUE(calib.has_value());
  auto load = [&](const std::string& path) {
    ModelLoadOptions lo;
    lo.config = f.model;
    auto m = Model::load(path, lo);
    EXPECT_TRUE(m.has_value()) << path << ": " << m.status().message();
    return std::move(*m);
  };
  auto final_hidden = [&](Model& m) {
    std::vector<float> h(static_cast<size_t>(calib->tokens_used() * m.config().hidden_size));
    EXPECT_TRUE(m.embed_tokens(calib->tokens.data(), calib->windows, calib->ctx, h));
    for (int L = 0; L < m.config().num_layers; ++L) EXPECT_TRUE(m.forward_layer(L, h, calib->windows, calib->ctx));
    return h;
  };
  // Mean negative log-likelihood of the next token over the windows.
  auto nll = [&](Model& m) {
    auto logits = m.forward_batch(calib->tokens.data(), calib->windows, calib->ctx);
    EXPECT_TRUE(logits.has_value());
    const int64_t V = m.config().vocab_size;
    const float* lp = logits->data_as<float>();
    double sum = 0;
    int64_t n = 0;
    for (int64_t w = 0; w < calib->windows; ++w)
      for (int64_t t = 0; t + 1 < calib->ctx; ++t) {
        const float* row = lp + (w * calib->ctx + t) * V;
        double mx = row[0], z = 0;
        for (int64_t v = 1; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
        for (int64_t v = 0; v < V; ++v) z += std::exp(row[v] - mx);
        sum += mx + std::log(z) - row[calib->tokens[static_cast<size_t>(w * calib->ctx + t + 1)]];
        ++n;
      }
    return sum / static_cast<double>(n);
  };
  Model mref = load(f.model), mg = load(g), mr = load(r), mp = load(p);
  const auto ref = final_hidden(mref), hg = final_hidden(mg), hr = final_hidden(mr), hp = final_hidden(mp);
  double eg = 0, er = 0, dgp = 0, np = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    eg += (hg[i] - ref[i]) * (hg[i] - ref[i]);
    er += (hr[i] - ref[i]) * (hr[i] - ref[i]);
    dgp += (hg[i] - hp[i]) * (hg[i] - hp[i]);
    np += hp[i] * hp[i];
  }
  EXPECT_LT(eg, er) << "GPTQ-GGUF squared error " << eg << ", RTN-GGUF " << er;
  // Same weights, different RoPE layout and summation order: float rounding only.
  EXPECT_LT(std::sqrt(dgp / np), 1e-5) << "GGUF vs packed relative difference of the final hidden states";
  const double ppl_g = std::exp(nll(mg)), ppl_p = std::exp(nll(mp));
  EXPECT_LT(std::fabs(ppl_g / ppl_p - 1), 1e-4) << "perplexity GGUF " << ppl_g << " vs packed " << ppl_p;
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
  // GGUF output: calibrated methods need --calib; SmoothQuant / activation quantization have no
  // GGUF form.
  const std::string gguf = quote(cli_path()) + " quantize " + quote(f.model) +
                           " --format gguf --type Q4_0 --no-vocab --allow-fallback --out " + quote(f.dir + "/x.gguf");
  EXPECT_NE(run_command(gguf + " --method gptq 2>&1", &log), 0);
  EXPECT_NE(log.find("need --calib"), std::string::npos) << log;
  EXPECT_NE(run_command(gguf + " --method smoothquant --calib " + quote(f.calib) + " --tokenizer " + quote(f.tokenizer) +
                            " --calib-windows 2 --calib-ctx 16 2>&1",
                        &log),
            0);
  EXPECT_NE(log.find("GGUF has no activation quantization"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(f.dir + "/x.gguf"));
}

}  // namespace
}  // namespace qforge
