// Sensitivity measurement (qforge/sensitivity.h): the cached block-wise re-run equals evaluating a
// GGUF file in which only that tensor is quantized, and coarse types cost more than fine ones.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <string>

#include "qforge/atomic_file.h"
#include "qforge/eval.h"
#include "qforge/gguf_convert.h"
#include "qforge/gguf_quantize.h"
#include "qforge/model.h"
#include "qforge/sensitivity.h"
#include "qforge/tokenizer.h"
#include "test_support.h"

namespace qforge {
namespace {

constexpr const char* kModel = "models/ref-llama-18m";


struct Fixture {
  std::string dir;
  Model model;
  GgufModelInput input;
  EvalWindows windows;
};

// ref-llama-18m as f32, its GGUF view, and `n` windows of `ctx` tokens from the start of
// calibration.txt (a prefix of the text keeps tokenization fast).
Fixture load_fixture(int64_t ctx, int64_t n) {
  const std::string dir = test::shared_dir() + "/" + kModel;
  auto model = Model::load(dir);
  EXPECT_TRUE(model.has_value()) << model.status().to_string();
  GgufModelInputOptions names;
  names.no_vocab = true;
  auto input = GgufModelInput::open(dir, names);
  EXPECT_TRUE(input.has_value()) << input.status().to_string();
  auto tok = load_tokenizer(dir);
  EXPECT_TRUE(tok.has_value()) << tok.status().to_string();
  auto text = read_file(dir + "/calibration.txt");
  EXPECT_TRUE(text.has_value());
  const std::vector<int32_t> ids = (*tok)->encode(text->substr(0, static_cast<size_t>(ctx * n * 8)), {});
  auto w = make_eval_windows(ids, *(*tok)->bos_id(), ctx, "calibration.txt");
  EXPECT_TRUE(w.has_value()) << w.status().to_string();
  EXPECT_GE(w->count, n);
  return Fixture{dir, std::move(*model), std::move(*input), std::move(*w)};
}

const SensitivityUnit* find_unit(const SensitivityReport& r, const std::string& name) {
  for (const SensitivityUnit& u : r.units)
    if (u.name == name) return &u;
  return nullptr;
}

TEST(Sensitivity, MatchesEvaluatingAGgufWithOnlyThatTensorQuantized) {
  QFORGE_REQUIRE_SHARED(kModel);
  QFORGE_SKIP_UNDER_SANITIZERS("quantizes a whole model several times");
  Fixture f = load_fixture(64, 2);
  SensitivityOptions o;
  o.types = {GgmlType::Q3_K};
  o.windows = 2;
  o.filter = std::regex("^(blk\\.5\\.attn_k|blk\\.7\\.ffn_down|token_embd)\\.");
  auto report = measure_sensitivity(f.model, f.input, f.windows, o);
  ASSERT_TRUE(report.has_value()) << report.status().to_string();
  EXPECT_EQ(report->units.size(), 3u);

  // A linear in the middle (attention, whose Q/K rows GGUF permutes), an MLP linear, and the tied
  // embedding (lookup table and output head at once).
  for (const std::string name : {"blk.5.attn_k.weight", "blk.7.ffn_down.weight", "token_embd.weight"}) {
    SCOPED_TRACE(name);
    const SensitivityUnit* unit = find_unit(*report, name);
    ASSERT_NE(unit, nullptr);
    GgufQuantizeOptions qo;
    qo.preset = &gguf_preset(GgufPresetId::F32);
    auto ov = parse_gguf_type_override("^" + std::string(name == "token_embd.weight" ? "token_embd" : name.substr(0, name.size() - 7)) +
                                           "\\.weight$=Q3_K",
                                       "test");
    ASSERT_TRUE(ov.has_value()) << ov.status().to_string();
    qo.overrides.push_back(std::move(*ov));
    auto plan = plan_gguf_quantization(f.input, qo);
    ASSERT_TRUE(plan.has_value()) << plan.status().to_string();
    int quantized = 0;
    for (const GgufTensorPlan& p : plan->tensors) quantized += p.type == GgmlType::Q3_K;
    ASSERT_EQ(quantized, 1);
    const std::string path = test::temp_dir() + "/one-tensor.gguf";
    Progress::Options quiet;
    quiet.quiet = true;
    auto written = write_gguf_model(f.input, *plan, qo, path, quiet);
    ASSERT_TRUE(written.has_value()) << written.status().to_string();
    auto q = Model::load_gguf(path);
    ASSERT_TRUE(q.has_value()) << q.status().to_string();
    EvalOptions eo;
    eo.max_windows = 2;
    auto ev = evaluate(*q, f.windows, eo, {.model = &f.model});
    ASSERT_TRUE(ev.has_value()) << ev.status().to_string();
    const double file_kld = ev->kld->kld.mean, cached_kld = unit->cells[0].kld;
    // Same weights, same math; only f32 rounding (summation order, the permuted Q/K rows) differs,
    // which moves logits by ~1e-6 relative: far below the KLD of a 3-bit tensor.
    EXPECT_GT(file_kld, 0.0);
    EXPECT_NEAR(cached_kld, file_kld, 1e-3 * file_kld + 1e-9) << "cached re-run " << cached_kld << " vs GGUF file " << file_kld;
    EXPECT_NEAR(unit->cells[0].top1, ev->kld->top1_agreement, 1.0 / 126 + 1e-12);
  }
  // The reference perplexity of the cached pass is the model's own.
  EvalOptions eo;
  eo.max_windows = 2;
  auto ref = evaluate(f.model, f.windows, eo);
  ASSERT_TRUE(ref.has_value());
  EXPECT_NEAR(report->ref_ppl, ref->ppl.ppl, 1e-4 * ref->ppl.ppl);
  EXPECT_LT(report->layer_passes, report->naive_layer_passes);
}

TEST(Sensitivity, TwoBitsCostMoreThanEightForEveryGroup) {
  QFORGE_REQUIRE_SHARED(kModel);
  QFORGE_SKIP_UNDER_SANITIZERS("quantizes a whole model several times");
  Fixture f = load_fixture(64, 1);
  SensitivityOptions o;
  o.types = {GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q2_K};
  // Every group of layers 0, 5 and 11 (the whole model takes minutes on a busy machine; the CLI
  // test covers all groups and the embedding, the test above the embedding's two roles).
  o.filter = std::regex("^blk\\.(0|5|11)\\.");
  o.granularity = SensitivityGranularity::group;
  o.windows = 1;
  int64_t last_done = 0, last_total = 0;
  o.on_progress = [&](int64_t done, int64_t total) {
    EXPECT_EQ(done, last_done + 1);
    last_done = done;
    last_total = total;
  };
  auto r = measure_sensitivity(f.model, f.input, f.windows, o);
  ASSERT_TRUE(r.has_value()) << r.status().to_string();
  ASSERT_EQ(r->units.size(), 3u * 2u);
  EXPECT_EQ(last_done, last_total);
  EXPECT_EQ(last_total, static_cast<int64_t>(r->units.size() * 3));
  for (const SensitivityUnit& u : r->units) {
    SCOPED_TRACE(u.name);
    ASSERT_EQ(u.cells.size(), 3u);
    EXPECT_GT(u.cells[2].kld, u.cells[0].kld);
    EXPECT_GT(u.cells[0].sqnr_db, u.cells[2].sqnr_db);
    EXPECT_GT(u.cells[2].proxy, u.cells[0].proxy);
    EXPECT_LT(u.cells[0].bytes, u.cells[0].bytes + 1);
    EXPECT_GT(u.cells[0].bytes, u.cells[1].bytes);
    EXPECT_GT(u.cells[1].bytes, u.cells[2].bytes);
  }
  // Q8_0 keeps the model nearly intact: a whole-group KLD far below Q2_K's.
  EXPECT_LT(find_unit(*r, "blk.0.ffn")->cells[0].kld, 0.01 * find_unit(*r, "blk.0.ffn")->cells[2].kld);

  // JSON round trip.
  auto back = sensitivity_from_json(sensitivity_to_json(*r), "test");
  ASSERT_TRUE(back.has_value()) << back.status().to_string();
  ASSERT_EQ(back->units.size(), r->units.size());
  for (size_t i = 0; i < r->units.size(); ++i)
    for (size_t t = 0; t < 3; ++t) {
      EXPECT_EQ(back->units[i].cells[t].kld, r->units[i].cells[t].kld);
      EXPECT_EQ(back->units[i].cells[t].bytes, r->units[i].cells[t].bytes);
    }
  EXPECT_EQ(back->types, r->types);
  EXPECT_FALSE(sensitivity_from_json(nlohmann::ordered_json::parse("{\"format\":\"other\"}"), "x").has_value());
}

TEST(Sensitivity, RejectsTypesThatAreNotBlockFormats) {
  EXPECT_FALSE(gguf_block_type_scheme(GgmlType::F16).has_value());
  EXPECT_FALSE(gguf_block_type_scheme(GgmlType::Q8_K).has_value());
  ASSERT_TRUE(gguf_block_type_scheme(GgmlType::Q4_K).has_value());
  std::vector<float> w(256 * 2);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(0.37 * static_cast<double>(i));
  auto q = gguf_quantize_dequantize(GgmlType::Q8_0, w.data(), 2, 256);
  ASSERT_TRUE(q.has_value());
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR((*q)[i], w[i], 1.0 / 127 + 1e-3);  // absmax 1, 8-bit steps (f16 scale)
  EXPECT_FALSE(gguf_quantize_dequantize(GgmlType::Q4_K, w.data(), 4, 128).has_value());  // 128 columns: not a K-block
}

}  // namespace
}  // namespace qforge
