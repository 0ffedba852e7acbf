// Helpers of the quantization card tests: a synthetic in-memory card and JSON Schema validation
// of card JSON against docs/card.schema.json with valijson (Debian libvalijson-dev).
#pragma once

#define VALIJSON_USE_EXCEPTIONS 1
#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "qforge/card.h"

namespace qforge::test {

inline std::string repo_root() { return QFORGE_SOURCE_DIR; }  // tests/CMakeLists.txt

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Validates `json_text` against docs/card.schema.json; returns "" when valid, else every error
// with its JSON path.
inline std::string schema_errors(const std::string& json_text) {
  static const nlohmann::json schema_doc = nlohmann::json::parse(read_text(repo_root() + "/docs/card.schema.json"));
  valijson::Schema schema;
  valijson::SchemaParser parser;
  valijson::adapters::NlohmannJsonAdapter schema_adapter(schema_doc);
  parser.populateSchema(schema_adapter, schema);
  const nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, false);
  if (doc.is_discarded()) return "not JSON";
  valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter doc_adapter(doc);
  if (validator.validate(schema, doc_adapter, &results)) return "";
  std::string out;
  valijson::ValidationResults::Error e;
  while (results.popError(e)) {
    std::string path;
    for (const auto& p : e.context) path += p;
    out += path + ": " + e.description + "\n";
  }
  return out.empty() ? "invalid" : out;
}

// A deterministic pseudo-random weight in [-1, 1).
inline float synthetic_weight(uint64_t i) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B14E07ull;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return static_cast<float>(static_cast<double>(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

// A card of a two-layer model with measured weight errors (from a 4-bit-like rounding of
// synthetic weights), one kept embedding and a norm; `with_eval` adds a measured evaluation and
// `with_sweep` a sweep section.
inline Card synthetic_card(bool with_eval, bool with_sweep) {
  Card c;
  c.source.path = "models/tiny";
  c.source.kind = "hf-directory";
  c.source.files = {{"models/tiny/config.json", 300, std::string(64, 'a')},
                    {"models/tiny/model.safetensors", 200000, std::string(64, 'b')}};
  c.source.total_bytes = 200300;
  c.source.architecture = "llama";
  c.source.layers = 2;
  c.tool.version = "test";
  c.tool.command = "qforge quantize models/tiny --scheme int4-g32-asym --out 'o <&> \".safetensors'";
  c.tool.machine = {"Test CPU <x86>", "avx2", "none"};
  c.scheme = CardScheme{"int4-g32-asym", "int-asym", 4, "group", 32, false};
  c.method.name = "rtn";
  auto add = [&](const std::string& name, const std::string& role, int layer, std::vector<int64_t> shape, bool q,
                 double bits, int step_div) {
    CardTensor t;
    t.name = name;
    t.role = role;
    t.layer = layer;
    t.shape = shape;
    t.source_dtype = "bf16";
    t.quantized = q;
    t.type = q ? "int4-g32-asym" : "bf16";
    t.bits_per_weight = bits;
    t.bytes = static_cast<uint64_t>(std::llround(bits * static_cast<double>(t.numel()) / 8));
    t.source_bytes = static_cast<uint64_t>(t.numel() * 2);
    t.reason_kind = q ? "scheme" : (shape.size() < 2 ? "non-weight" : "not-selected");
    t.reason = q ? "the requested scheme" : "kept";
    std::vector<float> ref(static_cast<size_t>(t.numel())), approx(ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ref[i] = synthetic_weight(i + std::hash<std::string>{}(name) % 1000);
      approx[i] = q ? std::round(ref[i] * 7.0f / static_cast<float>(step_div)) * static_cast<float>(step_div) / 7.0f
                    : ref[i];
    }
    t.error = measure_weight_error(ref.data(), approx.data(), t.numel());
    c.tensors.push_back(t);
    c.source.parameters += t.numel();
  };
  add("model.embed_tokens.weight", "token_embedding", -1, {64, 32}, false, 16, 1);
  for (int L = 0; L < 2; ++L) {
    const std::string p = "model.layers." + std::to_string(L) + ".";
    add(p + "input_layernorm.weight", "attn_norm", L, {32}, false, 16, 1);
    add(p + "self_attn.q_proj.weight", "attn_q", L, {32, 32}, true, 4.5, 1 + L);
    add(p + "self_attn.k_proj.weight", "attn_k", L, {16, 32}, true, 4.5, 1);
    add(p + "mlp.down_proj.weight", "mlp_down", L, {32, 64}, true, 4.5, 2);
  }
  uint64_t bytes = 0;
  for (const auto& t : c.tensors) bytes += t.bytes;
  c.output = {"out/o <&> \".safetensors", "qforge-packed", {{"out/o.safetensors", bytes + 800, std::string(64, 'c')}},
              bytes + 800, bytes, 8.0 * static_cast<double>(bytes) / static_cast<double>(c.source.parameters), 4.5,
              200300.0 / static_cast<double>(bytes + 800)};
  c.notes = {"a note with <html> & \"quotes\""};
  if (with_eval) {
    CardEvaluation& e = c.evaluation;
    e.measured = true;
    e.text = {"heldout.txt", 1000, std::string(64, 'd')};
    e.protocol = "qforge-ppl-v1";
    e.ctx = 64;
    e.windows = 2;
    e.windows_total = 10;
    e.tokens_scored = 126;
    e.ppl = 12.5;
    e.ppl_source = 12.0;
    e.ln_ppl_ratio = std::log(12.5 / 12.0);
    e.kld_mean = 0.031;
    e.kld_median = 0.012;
    e.kld_p90 = 0.08;
    e.kld_p99 = 0.2;
    e.kld_max = 0.9;
    e.top1_agreement = 0.93;
    e.delta_p_rms = 0.05;
  } else {
    c.evaluation.reason = "not requested";
  }
  c.speed.reason = "not measured";
  if (with_sweep)
    c.sweep_json = R"({"points":[{"label":"int2","bits_per_weight":2.5,"kld_mean":0.9},)"
                   R"({"label":"int3","bits_per_weight":3.5,"kld_mean":0.2},)"
                   R"({"label":"int4 - this one","bits_per_weight":4.5,"kld_mean":0.031,"this":true},)"
                   R"({"label":"odd","bits_per_weight":5.0,"kld_mean":0.05},)"
                   R"({"label":"int8","bits_per_weight":8.5,"kld_mean":0.001}]})";
  return c;
}

}  // namespace qforge::test
