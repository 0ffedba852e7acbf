// The quantization card: weight-error math, JSON round trip and validation (our reader and the
// JSON Schema through valijson), rendering, and `qforge quantize` / `qforge card` end to end
// (a synthetic checkpoint needing no fixtures, and ref-llama-18m / stories260K from ../shared).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "card_test_support.h"
#include "qforge/card.h"
#include "qforge/safetensors.h"
#include "qforge/sha256.h"
#include "qforge/tensor.h"
#include "test_support.h"

namespace qforge {
namespace {
namespace fs = std::filesystem;
using test::read_text;
using test::schema_errors;
using test::synthetic_card;

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Library

TEST(CardError, MatchesTheDefinitions) {
  const std::vector<float> ref = {3, -4, 0, 1};
  const std::vector<float> approx = {3, -3.5f, 0.25f, 1};
  const WeightError e = measure_weight_error(ref.data(), approx.data(), 4);
  EXPECT_DOUBLE_EQ(e.signal, 26.0);
  EXPECT_DOUBLE_EQ(e.noise, 0.25 + 0.0625);
  EXPECT_DOUBLE_EQ(e.max_abs, 0.5);
  EXPECT_EQ(e.count, 4);
  EXPECT_DOUBLE_EQ(e.rel_l2(), std::sqrt(0.3125 / 26.0));
  ASSERT_TRUE(e.sqnr_db().has_value());
  EXPECT_NEAR(*e.sqnr_db(), 10 * std::log10(26.0 / 0.3125), 1e-12);
  const WeightError exact = measure_weight_error(ref.data(), ref.data(), 4);
  EXPECT_EQ(exact.rel_l2(), 0.0);
  EXPECT_FALSE(exact.sqnr_db().has_value());  // infinite: exact
  WeightError sum = e;
  sum.add(exact);
  EXPECT_DOUBLE_EQ(sum.signal, 52.0);
  EXPECT_DOUBLE_EQ(sum.noise, e.noise);
  EXPECT_EQ(sum.count, 8);
}

TEST(Card, AggregatesPerLayerAndType) {
  const Card c = synthetic_card(false, false);
  const std::vector<CardLayer> layers = c.layers();
  ASSERT_EQ(layers.size(), 2u);
  WeightError l0;
  for (const auto& t : c.tensors)
    if (t.layer == 0 && t.quantized) l0.add(*t.error);
  EXPECT_DOUBLE_EQ(layers[0].error.noise, l0.noise);
  EXPECT_EQ(layers[0].quantized_tensors, 3);
  int64_t params = 0;
  for (const auto& t : c.types()) params += t.parameters;
  EXPECT_EQ(params, c.source.parameters);
}

TEST(Card, JsonRoundTripIsExactAndValidatesAgainstTheSchema) {
  for (bool eval : {false, true})
    for (bool sweep : {false, true}) {
      const Card c = synthetic_card(eval, sweep);
      const std::string json = card_to_json(c);
      EXPECT_EQ(schema_errors(json), "") << "eval=" << eval << " sweep=" << sweep;
      Expected<Card> back = card_from_json(json, "x.card.json");
      ASSERT_TRUE(back.has_value()) << back.status().message();
      EXPECT_EQ(card_to_json(*back), json);
      EXPECT_EQ(render_card_markdown(*back), render_card_markdown(c));
      EXPECT_EQ(render_card_html(*back), render_card_html(c));
    }
}

TEST(Card, GptqParametersRoundTripAndOlderCardsStillRead) {
  Card c = synthetic_card(false, false);
  c.method.name = "gptq";
  c.method.gptq = CardGptq{0.01, 128, true, true, true, true, 4};
  const std::string json = card_to_json(c);
  EXPECT_EQ(schema_errors(json), "");
  Expected<Card> back = card_from_json(json, "x.card.json");
  ASSERT_TRUE(back.has_value()) << back.status().message();
  ASSERT_TRUE(back->method.gptq.has_value());
  EXPECT_TRUE(back->method.gptq->mse_clip);
  EXPECT_EQ(back->method.gptq->refit_passes, 4);
  EXPECT_NE(render_card_markdown(*back).find("4 passes"), std::string::npos);
  // A card written before clipping and refit were recorded: both read as off.
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(json);
  j["method"]["gptq"].erase("mse_clip");
  j["method"]["gptq"].erase("refit_passes");
  EXPECT_EQ(schema_errors(j.dump()), "");
  Expected<Card> old = card_from_json(j.dump(), "old.card.json");
  ASSERT_TRUE(old.has_value()) << old.status().message();
  EXPECT_FALSE(old->method.gptq->mse_clip);
  EXPECT_EQ(old->method.gptq->refit_passes, 0);
  j["method"]["gptq"]["refit_passes"] = -1;
  Expected<Card> bad = card_from_json(j.dump(), "bad.card.json");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.status().message().find("refit_passes"), std::string::npos) << bad.status().message();
}

TEST(Card, RenderingIsDeterministicEscapedAndHasThreeCharts) {
  const Card c = synthetic_card(true, true);
  const std::string html = render_card_html(c);
  EXPECT_EQ(html, render_card_html(synthetic_card(true, true)));
  EXPECT_EQ(count(html, "<svg "), 3u);
  for (const char* id : {"qf-chart-error", "qf-chart-bits", "qf-chart-pareto"})
    EXPECT_NE(html.find(std::string("id=\"") + id + "\""), std::string::npos) << id;
  EXPECT_EQ(html.find("<script"), std::string::npos);      // self-contained, static
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));  // no links but the SVG namespace
  EXPECT_EQ(html.find("<html>"), std::string::npos);       // the note's "<html>" is escaped
  EXPECT_NE(html.find("a note with &lt;html&gt; &amp; &quot;quotes&quot;"), std::string::npos);
  EXPECT_NE(html.find("Test CPU &lt;x86&gt;"), std::string::npos);
  EXPECT_NE(html.find("qf-pareto"), std::string::npos);  // the sweep's front is drawn
  const std::string md = render_card_markdown(c);
  EXPECT_NE(md.find("| KLD mean | 3.100e-02 |"), std::string::npos) << md;
  EXPECT_NE(md.find("a note with \\<html\\> & \"quotes\""), std::string::npos);
}

TEST(Card, MissingDataStillRendersEveryChartWithACaption) {
  Card c = synthetic_card(false, false);
  for (auto& t : c.tensors) t.error.reset();
  const std::string html = render_card_html(c);
  EXPECT_EQ(count(html, "<svg "), 3u);
  EXPECT_GE(count(html, "qf-empty"), 2u);  // error bars and the size-KLD chart
  EXPECT_NE(html.find("KLD not measured"), std::string::npos);
  const std::string json = card_to_json(c);
  EXPECT_EQ(schema_errors(json), "");
  const nlohmann::json j = nlohmann::json::parse(json);
  EXPECT_TRUE(j["evaluation"]["kld"].is_null());
  EXPECT_TRUE(j["evaluation"]["ppl"].is_null());
  EXPECT_EQ(j["evaluation"]["reason"], "not requested");
  EXPECT_TRUE(j["speed"]["decode_tokens_per_second"].is_null());
}

// Each corruption must be refused by our reader with the file and field named, and by the schema.
TEST(Card, BadInputIsRejectedNamingTheField) {
  const std::string good = card_to_json(synthetic_card(true, false));
  struct Case {
    const char* what;
    std::function<void(nlohmann::ordered_json&)> edit;
    const char* field;
  };
  const std::vector<Case> cases = {
      {"missing source", [](auto& j) { j.erase("source"); }, "source: missing"},
      {"bytes as string", [](auto& j) { j["tensors"][2]["bytes"] = "12"; }, "tensors[2].bytes"},
      {"negative bytes", [](auto& j) { j["output"]["total_bytes"] = -5; }, "output.total_bytes"},
      {"bad sha", [](auto& j) { j["source"]["files"][1]["sha256"] = "XYZ"; }, "source.files[1].sha256"},
      {"future version", [](auto& j) { j["schema_version"] = 99; }, "schema_version"},
      {"unknown method", [](auto& j) { j["method"]["name"] = "magic"; }, "method.name"},
      {"unknown reason", [](auto& j) { j["tensors"][0]["reason_kind"] = "vibes"; }, "tensors[0].reason_kind"},
      {"inconsistent sqnr", [](auto& j) { j["tensors"][2]["error"]["sqnr_db"] = 99.0; }, "tensors[2].error.sqnr_db"},
      {"kld missing", [](auto& j) { j["evaluation"]["kld"] = nullptr; }, "evaluation.kld"},
  };
  for (const Case& k : cases) {
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(good);
    k.edit(j);
    const std::string text = j.dump(2);
    Expected<Card> r = card_from_json(text, "bad.card.json");
    ASSERT_FALSE(r.has_value()) << k.what;
    EXPECT_NE(r.status().message().find("bad.card.json: "), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(k.field), std::string::npos) << k.what << ": " << r.status().message();
    if (std::string(k.what) != "inconsistent sqnr") {  // a cross-field check the schema cannot express
      EXPECT_NE(schema_errors(text), "") << k.what << " passed the JSON Schema";
    }
  }
  EXPECT_FALSE(card_from_json("{", "x.json").has_value());
  EXPECT_FALSE(card_from_json("[]", "x.json").has_value());
}

// ---------------------------------------------------------------------------------------------
// Command line

struct CliRun {
  int code = 0;
  std::string out;
};
CliRun qforge_cli(const std::string& args) {
  CliRun r;
  r.code = test::run_command("OMP_WAIT_POLICY=passive '" + test::cli_path() + "' " + args + " 2>&1", &r.out);
  return r;
}

// A two-layer Llama checkpoint (bf16, HF names, config.json), no fixtures needed.
std::string write_tiny_llama(const std::string& dir) {
  fs::create_directories(dir);
  std::vector<std::pair<std::string, Shape>> tensors = {{"model.embed_tokens.weight", {64, 64}},
                                                        {"model.norm.weight", {64}}};
  for (int L = 0; L < 2; ++L) {
    const std::string p = "model.layers." + std::to_string(L) + ".";
    for (const char* n : {"input_layernorm", "post_attention_layernorm"}) tensors.push_back({p + n + ".weight", {64}});
    for (const char* n : {"self_attn.q_proj", "self_attn.o_proj"}) tensors.push_back({p + n + ".weight", {64, 64}});
    for (const char* n : {"self_attn.k_proj", "self_attn.v_proj"}) tensors.push_back({p + n + ".weight", {32, 64}});
    for (const char* n : {"mlp.gate_proj", "mlp.up_proj"}) tensors.push_back({p + n + ".weight", {128, 64}});
    tensors.push_back({p + "mlp.down_proj.weight", {64, 128}});
  }
  SafetensorsWriter w(dir + "/model.safetensors");
  std::vector<std::vector<uint16_t>> storage;
  uint64_t seed = 1;
  for (const auto& [name, shape] : tensors) {
    std::vector<uint16_t> v(static_cast<size_t>(shape_numel(shape)));
    for (auto& x : v) {
      const float f = shape.size() == 1 ? 1.0f + 0.1f * test::synthetic_weight(seed++) : 0.1f * test::synthetic_weight(seed++);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      x = static_cast<uint16_t>(bits >> 16);
    }
    storage.push_back(std::move(v));
    EXPECT_TRUE(w.add(name, DType::bf16, shape, storage.back().data(), storage.back().size() * 2).is_ok());
  }
  EXPECT_TRUE(w.finish().is_ok());
  std::ofstream(dir + "/config.json") << R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "vocab_size": 64, "tie_word_embeddings": true})";
  return dir;
}

void expect_card_files(const std::string& base) {
  for (const char* ext : {".card.json", ".card.md", ".card.html"})
    EXPECT_TRUE(fs::exists(base + ext)) << base + ext << " missing";
}

// Quantizes, validates the card, re-renders it with `qforge card`, and checks that a second run
// writes byte-identical cards.
void check_quantize_card(const std::string& args, const std::string& out, const std::string& expect_format) {
  CliRun r = qforge_cli(args);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("card: " + out + ".card.{json,md,html}"), std::string::npos) << r.out;
  expect_card_files(out);
  const std::string json = read_text(out + ".card.json");
  const std::string md = read_text(out + ".card.md"), html = read_text(out + ".card.html");
  EXPECT_EQ(schema_errors(json), "");
  Expected<Card> card = card_from_json(json, out + ".card.json");
  ASSERT_TRUE(card.has_value()) << card.status().message();
  EXPECT_EQ(card->output.format, expect_format);
  EXPECT_GT(card->output.bits_per_weight, 0);
  EXPECT_GT(card->output.size_ratio, 1.0);
  // Every quantized tensor has a weight error, and quantization is lossy.
  int quantized = 0;
  for (const auto& t : card->tensors)
    if (t.quantized) {
      ++quantized;
      ASSERT_TRUE(t.error.has_value()) << t.name;
      EXPECT_GT(t.error->noise, 0) << t.name;
      EXPECT_LT(t.error->rel_l2(), 0.5) << t.name;
    }
  EXPECT_GT(quantized, 0);
  // The command line is recorded as typed.
  EXPECT_NE(card->tool.command.find("quantize"), std::string::npos);
  // `qforge card` renders the same Markdown and HTML from the JSON.
  CliRun again = qforge_cli("card '" + out + ".card.json' --out-md '" + out + ".re.md' --out-html '" + out + ".re.html'");
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_TRUE(read_text(out + ".re.md") == md) << "qforge card re-rendered different Markdown";
  EXPECT_TRUE(read_text(out + ".re.html") == html) << "qforge card re-rendered different HTML";
  // Determinism: the same command again gives byte-identical cards.
  if (fs::is_directory(out)) fs::remove_all(out);  // HF exports refuse an existing --out directory
  CliRun second = qforge_cli(args);
  ASSERT_EQ(second.code, 0) << second.out;
  EXPECT_TRUE(read_text(out + ".card.json") == json) << "card JSON differs between identical runs";
  EXPECT_TRUE(read_text(out + ".card.md") == md) << "card Markdown differs between identical runs";
  EXPECT_TRUE(read_text(out + ".card.html") == html) << "card HTML differs between identical runs";
}

TEST(CardCli, PackedQuantizeOfASyntheticCheckpoint) {
  const std::string dir = test::temp_dir();
  const std::string model = write_tiny_llama(dir + "/tiny");
  const std::string out = dir + "/tiny-int4.safetensors";
  check_quantize_card("quantize '" + model + "' --scheme int4-g32-asym --keep 'layers\\.1\\.mlp\\.down' --out '" + out +
                          "' --threads 2",
                      out, "qforge-packed");
  Expected<Card> card = card_from_json(read_text(out + ".card.json"), "card");
  ASSERT_TRUE(card.has_value());
  EXPECT_EQ(card->source.architecture, "llama");
  EXPECT_EQ(card->source.layers, 2);
  EXPECT_FALSE(card->evaluation.measured);
  EXPECT_FALSE(card->speed.measured);
  EXPECT_FALSE(card->tool.seed.has_value());
  // Kept tensors and why.
  bool saw_keep = false, saw_embedding = false;
  for (const auto& t : card->tensors) {
    if (t.name == "model.layers.1.mlp.down_proj.weight") {
      saw_keep = true;
      EXPECT_FALSE(t.quantized);
      EXPECT_EQ(t.reason_kind, "keep-regex");
      ASSERT_TRUE(t.error.has_value());
      EXPECT_EQ(t.error->noise, 0.0);  // a byte copy
    }
    if (t.name == "model.embed_tokens.weight") {
      saw_embedding = true;
      EXPECT_EQ(t.reason_kind, "not-selected");
      EXPECT_EQ(t.type, "bf16");
    }
    if (t.quantized) {
      EXPECT_EQ(t.type, "int4-g32-asym");
    }
  }
  EXPECT_TRUE(saw_keep);
  EXPECT_TRUE(saw_embedding);
  // The source files are hashed: the card's SHA-256 of model.safetensors is the file's.
  bool hashed = false;
  for (const auto& f : card->source.files)
    if (f.path == model + "/model.safetensors") {
      hashed = true;
      EXPECT_EQ(f.sha256, sha256_hex(read_text(f.path)));
      EXPECT_EQ(f.bytes, fs::file_size(f.path));
    }
  EXPECT_TRUE(hashed);
  // Output size and bits/weight follow from the file and the tensors.
  EXPECT_EQ(card->output.total_bytes, fs::file_size(out));
  uint64_t bytes = 0;
  for (const auto& t : card->tensors) bytes += t.bytes;
  EXPECT_EQ(card->output.tensor_bytes, bytes);
  EXPECT_NEAR(card->output.bits_per_weight, 8.0 * static_cast<double>(bytes) / card->source.parameters, 1e-12);
}

TEST(CardCli, CardCommandRejectsBadInputNamingFileAndField) {
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/bad.card.json";
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(card_to_json(synthetic_card(false, false)));
  j["output"]["size_ratio"] = "big";
  std::ofstream(path) << j.dump(2);
  CliRun r = qforge_cli("card '" + path + "'");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find(path + ": output.size_ratio: expected a number"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir + "/bad.card.md"));
  EXPECT_FALSE(fs::exists(dir + "/bad.card.html"));
  CliRun missing = qforge_cli("card '" + dir + "/nope.card.json'");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.out.find("nope.card.json"), std::string::npos) << missing.out;
  // Default outputs: .json replaced by .md / .html.
  std::ofstream(dir + "/good.card.json") << card_to_json(synthetic_card(true, true));
  ASSERT_EQ(qforge_cli("card '" + dir + "/good.card.json'").code, 0);
  EXPECT_TRUE(fs::exists(dir + "/good.card.md"));
  EXPECT_TRUE(fs::exists(dir + "/good.card.html"));
  // --card-ctx without --card-eval is a usage error.
  CliRun usage = qforge_cli("quantize x --scheme int4-g32-asym --out y --card-ctx 64");
  EXPECT_EQ(usage.code, 2) << usage.out;
}

TEST(CardCli, PackedQuantizeOfRefLlamaWithEvaluation) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-18m");
  const std::string model = test::shared_dir() + "/models/ref-llama-18m";
  const std::string out = test::temp_dir() + "/m.safetensors";
  check_quantize_card("quantize '" + model + "' --scheme int4-g128-asym --out '" + out + "' --card-eval '" + model +
                          "/heldout.txt' --card-ctx 64 --card-windows 2",
                      out, "qforge-packed");
  Expected<Card> card = card_from_json(read_text(out + ".card.json"), "card");
  ASSERT_TRUE(card.has_value());
  const CardEvaluation& e = card->evaluation;
  ASSERT_TRUE(e.measured);
  EXPECT_EQ(e.ctx, 64);
  EXPECT_EQ(e.windows, 2);
  EXPECT_EQ(e.tokens_scored, 2 * 63);
  EXPECT_GT(e.kld_mean, 0);
  EXPECT_LE(e.kld_median, e.kld_p99);
  EXPECT_LE(e.kld_p99, e.kld_max);
  EXPECT_GT(e.top1_agreement, 0.5);  // int4-g128 keeps most argmaxes of a trained model
  EXPECT_LE(e.top1_agreement, 1.0);
  EXPECT_NEAR(e.ln_ppl_ratio, std::log(e.ppl / e.ppl_source), 1e-6);
  EXPECT_EQ(card->source.parameters, 17635584);  // the model card's 17.6M
  EXPECT_EQ(card->source.layers, 12);
}

TEST(CardCli, GgufPresetOfStories260K) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  const std::string dir = test::shared_dir() + "/models/stories260K";
  const std::string out = test::temp_dir() + "/s.gguf";
  check_quantize_card("quantize '" + dir + "/stories260K.bin' --tokenizer '" + dir +
                          "/tok512.bin' --format gguf --type Q8_0 --allow-fallback --out '" + out + "'",
                      out, "gguf");
  Expected<Card> card = card_from_json(read_text(out + ".card.json"), "card");
  ASSERT_TRUE(card.has_value());
  ASSERT_TRUE(card->method.gguf.has_value());
  EXPECT_EQ(card->method.gguf->preset, "Q8_0");
  EXPECT_EQ(card->source.kind, "llama2c");
  EXPECT_EQ(card->source.files.size(), 2u);  // the checkpoint and the tokenizer it read
  for (const auto& t : card->tensors) {
    if (t.type == "Q8_0") {
      // Q8_0: |error| <= d/2 per element with d = absmax/127, so the relative error is small.
      EXPECT_LT(t.error->rel_l2(), 0.01) << t.name;
    }
    if (t.shape.size() == 1) {
      EXPECT_EQ(t.reason_kind, "non-weight") << t.name;
    }
    // stories260K's 172-column ffn_down cannot be Q8_0: F16 with the reason recorded.
    if (t.name == "blk.0.ffn_down.weight") {
      EXPECT_EQ(t.type, "F16");
      EXPECT_EQ(t.reason_kind, "fallback");
      EXPECT_FALSE(t.quantized);
      EXPECT_NE(t.reason.find("172 columns"), std::string::npos) << t.reason;
    }
  }
}

TEST(CardCli, CalibratedAwqRecordsTheRescaledReference) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-18m");
  const std::string model = test::shared_dir() + "/models/ref-llama-18m";
  const std::string out = test::temp_dir() + "/awq";
  check_quantize_card("quantize '" + model + "' --method awq --scheme int4-g128-asym --calib '" + model +
                          "/calibration.txt' --calib-windows 2 --calib-ctx 64 --awq-grid 4 --format awq --out '" + out + "'",
                      out, "awq");
  Expected<Card> card = card_from_json(read_text(out + ".card.json"), "card");
  ASSERT_TRUE(card.has_value());
  EXPECT_EQ(card->method.name, "awq");
  EXPECT_EQ(card->method.error_reference, "rescaled");
  ASSERT_TRUE(card->method.awq.has_value());
  EXPECT_EQ(card->method.awq->grid, 4);
  ASSERT_TRUE(card->calibration.has_value());
  EXPECT_EQ(card->calibration->windows, 2);
  EXPECT_EQ(card->calibration->ctx, 64);
  EXPECT_EQ(card->calibration->file.sha256, sha256_hex(read_text(model + "/calibration.txt")));
  ASSERT_TRUE(card->tool.seed.has_value());
  // The card sits beside the output directory, which holds only the export.
  for (const auto& f : card->output.files) EXPECT_EQ(f.path.rfind(out + "/", 0), 0u) << f.path;
  EXPECT_FALSE(fs::exists(out + "/" + "awq.card.json"));
}

TEST(CardCli, CalibratedGgufRecordsMethodAndCalibration) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-18m");
  const std::string model = test::shared_dir() + "/models/ref-llama-18m";
  const std::string out = test::temp_dir() + "/g.gguf";
  check_quantize_card("quantize '" + model + "' --format gguf --type Q4_K_M --calib '" + model +
                          "/calibration.txt' --calib-windows 2 --calib-ctx 64 --seed 7 --out '" + out + "'",
                      out, "gguf");
  Expected<Card> card = card_from_json(read_text(out + ".card.json"), "card");
  ASSERT_TRUE(card.has_value());
  EXPECT_EQ(card->method.name, "gptq");
  ASSERT_TRUE(card->method.gptq.has_value());
  ASSERT_TRUE(card->method.gguf.has_value());
  EXPECT_EQ(card->method.gguf->preset, "Q4_K_M");
  ASSERT_TRUE(card->calibration.has_value());
  EXPECT_EQ(card->calibration->seed, 7u);
  EXPECT_EQ(card->calibration->tokens_used, 2 * 64);
  ASSERT_TRUE(card->tool.seed.has_value());
  EXPECT_EQ(*card->tool.seed, 7u);
  // The tokenizer GGUF conversion read is one of the source files.
  bool tokenizer = false;
  for (const auto& f : card->source.files) tokenizer |= f.path == model + "/tokenizer.model";
  EXPECT_TRUE(tokenizer);
}

}  // namespace
}  // namespace qforge
