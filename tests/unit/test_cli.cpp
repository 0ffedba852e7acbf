// The qforge command-line tool, run as a subprocess: usage errors, the demo, and the
// quantize -> dequantize round trip through files against the in-memory library calls.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qforge/format.h"
#include "qforge/gguf.h"
#include "qforge/packed.h"
#include "qforge/safetensors.h"
#include "test_support.h"

namespace qforge {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct CliRun {
  int code;
  std::string out;
};

CliRun qforge_cli(const std::string& args) {
  CliRun r;
  r.code = test::run_command(test::cli_path() + " " + args, &r.out);
  return r;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A one-layer Llama checkpoint (bf16, HF names, config.json) small enough for fast tests.
// hidden 128, intermediate 256: every linear weight has a multiple of 128 columns.
// With `nan_tensor`, that tensor's first element is NaN.
std::string write_tiny_llama(const std::string& dir, const std::string& nan_tensor = "") {
  fs::create_directories(dir);
  struct T {
    std::string name;
    Shape shape;
  };
  const std::vector<T> tensors = {
      {"model.embed_tokens.weight", {64, 128}},
      {"model.layers.0.input_layernorm.weight", {128}},
      {"model.layers.0.self_attn.q_proj.weight", {128, 128}},
      {"model.layers.0.self_attn.k_proj.weight", {64, 128}},
      {"model.layers.0.self_attn.v_proj.weight", {64, 128}},
      {"model.layers.0.self_attn.o_proj.weight", {128, 128}},
      {"model.layers.0.post_attention_layernorm.weight", {128}},
      {"model.layers.0.mlp.gate_proj.weight", {256, 128}},
      {"model.layers.0.mlp.up_proj.weight", {256, 128}},
      {"model.layers.0.mlp.down_proj.weight", {128, 256}},
      {"model.norm.weight", {128}},
  };
  SafetensorsWriter w(dir + "/model.safetensors");
  std::vector<std::vector<uint16_t>> storage;
  uint64_t s = 12345;
  for (const auto& t : tensors) {
    std::vector<uint16_t> v(static_cast<size_t>(shape_numel(t.shape)));
    for (auto& x : v) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      double u = static_cast<double>(s >> 11) * 0x1.0p-53 - 0.5;
      x = f32_to_bf16(static_cast<float>(t.shape.size() == 1 ? 1.0 + u * 0.1 : u * 0.1));
    }
    if (t.name == nan_tensor) v[0] = 0x7FC0;  // bf16 quiet NaN
    storage.push_back(std::move(v));
    EXPECT_TRUE(w.add(t.name, DType::bf16, t.shape, storage.back().data(), storage.back().size() * 2).is_ok());
  }
  EXPECT_TRUE(w.finish().is_ok());
  std::ofstream(dir + "/config.json") << R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
    "hidden_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 256, "vocab_size": 64, "tie_word_embeddings": true})";
  return dir;
}

TEST(Cli, HelpOfEveryCommand) {
  CliRun top = qforge_cli("--help");
  EXPECT_EQ(top.code, 0) << top.out;
  for (const char* cmd : {"inspect", "analyze", "quantize", "dequantize", "demo"}) {
    EXPECT_TRUE(contains(top.out, cmd)) << "top-level help does not list " << cmd << ":\n" << top.out;
    CliRun r = qforge_cli(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << cmd << ":\n" << r.out;
    EXPECT_TRUE(contains(r.out, "Usage")) << cmd << ":\n" << r.out;
  }
  EXPECT_TRUE(contains(qforge_cli("analyze --help").out, "--scheme"));
  EXPECT_TRUE(contains(qforge_cli("quantize --help").out, "--out"));
  EXPECT_TRUE(contains(qforge_cli("dequantize --help").out, "--dtype"));
  CliRun version = qforge_cli("--version");
  EXPECT_EQ(version.code, 0);
  EXPECT_TRUE(contains(version.out, QFORGE_VERSION)) << version.out;
}

TEST(Cli, UsageErrors) {
  CliRun none = qforge_cli("");
  EXPECT_NE(none.code, 0) << none.out;
  CliRun unknown_cmd = qforge_cli("frobnicate");
  EXPECT_NE(unknown_cmd.code, 0);
  EXPECT_TRUE(contains(unknown_cmd.out, "frobnicate")) << unknown_cmd.out;
  CliRun unknown_opt = qforge_cli("inspect x.safetensors --frobnicate");
  EXPECT_NE(unknown_opt.code, 0);
  EXPECT_TRUE(contains(unknown_opt.out, "--frobnicate")) << unknown_opt.out;
  CliRun missing_required = qforge_cli("quantize x.safetensors --scheme int8-ch-sym");
  EXPECT_NE(missing_required.code, 0);
  EXPECT_TRUE(contains(missing_required.out, "--out")) << missing_required.out;
  CliRun bad_dtype = qforge_cli("dequantize x.safetensors --out y.safetensors --dtype f64");
  EXPECT_NE(bad_dtype.code, 0);
  EXPECT_TRUE(contains(bad_dtype.out, "f64")) << bad_dtype.out;
  CliRun bad_threads = qforge_cli("analyze x --scheme nf4 --threads 0");
  EXPECT_NE(bad_threads.code, 0);
}

TEST(Cli, BadValuesNameTheOptionOrFile) {
  const std::string model = write_tiny_llama(test::temp_dir());
  CliRun bad_scheme = qforge_cli("analyze " + model + " --scheme int4-g128-zebra");
  EXPECT_EQ(bad_scheme.code, 1) << bad_scheme.out;
  EXPECT_TRUE(contains(bad_scheme.out, "qforge: error: --scheme 'int4-g128-zebra'")) << bad_scheme.out;
  CliRun bad_regex = qforge_cli("analyze " + model + " --scheme nf4 --filter '(['");
  EXPECT_EQ(bad_regex.code, 1) << bad_regex.out;
  EXPECT_TRUE(contains(bad_regex.out, "--filter '(['")) << bad_regex.out;
  CliRun missing = qforge_cli("inspect " + model + "/nope.safetensors");
  EXPECT_EQ(missing.code, 1);
  EXPECT_TRUE(contains(missing.out, "nope.safetensors")) << missing.out;
  CliRun missing_q = qforge_cli("quantize " + model + "/nope --scheme nf4 --out " + model + "/o.safetensors");
  EXPECT_EQ(missing_q.code, 1);
  EXPECT_TRUE(contains(missing_q.out, "nope")) << missing_q.out;
  EXPECT_FALSE(fs::exists(model + "/o.safetensors"));
  CliRun not_packed = qforge_cli("dequantize " + model + "/model.safetensors --out " + model + "/d.safetensors");
  EXPECT_EQ(not_packed.code, 1);
  EXPECT_TRUE(contains(not_packed.out, "not a qforge packed file")) << not_packed.out;
  CliRun nothing = qforge_cli("analyze " + model + " --scheme nf4 --filter 'no_such_tensor'");
  EXPECT_EQ(nothing.code, 1);
  EXPECT_TRUE(contains(nothing.out, "no_such_tensor")) << nothing.out;
}

TEST(Cli, Demo) {
  const std::string dir = test::temp_dir() + "/demo";
  CliRun r = qforge_cli("demo --out " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* s : {"int8-ch-sym", "int4-g128-asym", "int4-g128-sym", "int3-g128-asym", "nf4", "mxfp4", "nvfp4",
                        "fp8-e4m3-ch", "SQNR dB", "rel RMSE", "bits/w", "bit-identical"})
    EXPECT_TRUE(contains(r.out, s)) << "demo output lacks '" << s << "':\n" << r.out;
  EXPECT_TRUE(fs::exists(dir + "/model/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/model/config.json"));
  EXPECT_TRUE(fs::exists(dir + "/model-int4-g128-asym.safetensors"));

  // A second run (one thread) rewrites byte-identical files.
  const std::string model = read_bytes(dir + "/model/model.safetensors");
  const std::string packed = read_bytes(dir + "/model-int4-g128-asym.safetensors");
  ASSERT_EQ(qforge_cli("demo --threads 1 --out " + dir).code, 0);
  EXPECT_TRUE(model == read_bytes(dir + "/model/model.safetensors")) << "demo checkpoint differs between runs";
  EXPECT_TRUE(packed == read_bytes(dir + "/model-int4-g128-asym.safetensors")) << "demo packed file differs";
}

// quantize -> dequantize through files equals quantize -> dequantize in memory, bit for bit.
TEST(Cli, QuantizeDequantizeRoundTripIsBitExact) {
  const std::string dir = test::temp_dir();
  const std::string model = write_tiny_llama(dir + "/m");
  for (const char* scheme_name : {"int4-g64-asym", "nf4", "int8-ch-sym"}) {
    SCOPED_TRACE(scheme_name);
    const std::string packed = dir + "/q.safetensors", deq = dir + "/d.safetensors", deq16 = dir + "/d16.safetensors";
    CliRun q = qforge_cli("quantize " + model + " --scheme " + scheme_name + " --out " + packed);
    ASSERT_EQ(q.code, 0) << q.out;
    CliRun d = qforge_cli("dequantize " + packed + " --out " + deq + " --dtype f32");
    ASSERT_EQ(d.code, 0) << d.out;
    CliRun d16 = qforge_cli("dequantize " + packed + " --out " + deq16);
    ASSERT_EQ(d16.code, 0) << d16.out;

    Expected<SafetensorsCheckpoint> src = SafetensorsCheckpoint::open(model);
    Expected<SafetensorsFile> out = SafetensorsFile::open(deq);
    Expected<SafetensorsFile> out16 = SafetensorsFile::open(deq16);
    Expected<PackedFile> pf = PackedFile::open(packed);
    ASSERT_TRUE(src && out && out16 && pf);
    Scheme scheme = *Scheme::parse(scheme_name);
    int quantized = 0;
    for (const auto& name : src->tensor_names()) {
      Tensor s = *src->tensor(name);
      Tensor o = *out->tensor(name);
      Tensor o16 = *out16->tensor(name);
      const bool is_linear = name.find("_proj") != std::string::npos;
      EXPECT_EQ(pf->find_quantized(name) != nullptr, is_linear) << name;
      if (!is_linear) {  // copied unchanged, in both outputs
        EXPECT_EQ(o.dtype(), s.dtype());
        EXPECT_EQ(std::memcmp(o.data(), s.data(), s.nbytes()), 0) << name;
        EXPECT_EQ(std::memcmp(o16.data(), s.data(), s.nbytes()), 0) << name;
        continue;
      }
      ++quantized;
      Tensor f = *s.to_f32();
      QuantizedTensor qt = *quantize(scheme, f.data_as<float>(), s.dim(0), s.dim(1));
      std::vector<float> expected(static_cast<size_t>(s.numel()));
      ASSERT_TRUE(dequantize(qt, expected.data()).is_ok());
      ASSERT_EQ(o.dtype(), DType::f32);
      ASSERT_EQ(o.shape(), s.shape());
      EXPECT_EQ(std::memcmp(o.data(), expected.data(), expected.size() * 4), 0) << name;
      // Default dtype: the original bf16, i.e. the f32 result rounded to bf16.
      ASSERT_EQ(o16.dtype(), DType::bf16) << name;
      std::vector<uint16_t> expected16(expected.size());
      ASSERT_TRUE(convert_from_f32(DType::bf16, expected.data(), expected16.data(), expected.size()).is_ok());
      EXPECT_EQ(std::memcmp(o16.data(), expected16.data(), expected16.size() * 2), 0) << name;
    }
    EXPECT_EQ(quantized, 7);
  }
}

TEST(Cli, QuantizeIsDeterministic) {
  const std::string dir = test::temp_dir();
  const std::string model = write_tiny_llama(dir + "/m");
  const std::string out = dir + "/q.safetensors";
  ASSERT_EQ(qforge_cli("quantize " + model + " --scheme int4-g128-asym --out " + out + " --threads 2").code, 0);
  const std::string first = read_bytes(out);
  ASSERT_FALSE(first.empty());
  ASSERT_EQ(qforge_cli("quantize " + model + " --scheme int4-g128-asym --out " + out + " --threads 1").code, 0);
  EXPECT_TRUE(first == read_bytes(out)) << "two runs (2 threads, 1 thread) gave different files";
}

TEST(Cli, QuantizeFailuresLeaveNoFile) {
  const std::string dir = test::temp_dir();
  const std::string model = write_tiny_llama(dir + "/m");
  const std::string missing_dir = dir + "/no/such/dir/q.safetensors";
  CliRun r = qforge_cli("quantize " + model + " --scheme int4-g128-asym --out " + missing_dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.out, "qforge: error:")) << r.out;
  EXPECT_TRUE(contains(r.out, "no/such/dir")) << r.out;
  EXPECT_FALSE(fs::exists(dir + "/no"));

  CliRun same = qforge_cli("quantize " + model + "/model.safetensors --scheme nf4 --out " + model + "/model.safetensors");
  EXPECT_EQ(same.code, 1) << same.out;
  EXPECT_TRUE(contains(same.out, "is the input file")) << same.out;

  // A failure after work started (a NaN weight) names the tensor and leaves the directory as it was.
  const std::string bad = write_tiny_llama(dir + "/bad", "model.layers.0.mlp.up_proj.weight");
  const auto before = std::distance(fs::directory_iterator(bad), fs::directory_iterator{});
  CliRun nan = qforge_cli("quantize " + bad + " --scheme int4-g128-asym --out " + bad + "/q.safetensors");
  EXPECT_EQ(nan.code, 1) << nan.out;
  EXPECT_TRUE(contains(nan.out, "model.layers.0.mlp.up_proj.weight")) << nan.out;
  EXPECT_EQ(std::distance(fs::directory_iterator(bad), fs::directory_iterator{}), before)
      << "quantize left files behind in " << bad;
}

TEST(Cli, QuantizeSelection) {
  const std::string dir = test::temp_dir();
  const std::string model = write_tiny_llama(dir + "/m");
  const std::string out = dir + "/q.safetensors";
  // --filter replaces the default selection; --keep removes from it; non-2-D matches are reported.
  CliRun r = qforge_cli("quantize " + model + " --scheme int8-ch-sym --out " + out +
                     " --filter 'mlp|embed|norm' --keep 'down_proj'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "not 2-D")) << r.out;
  Expected<PackedFile> pf = PackedFile::open(out);
  ASSERT_TRUE(pf.has_value());
  std::vector<std::string> names;
  for (const auto& q : pf->quantized()) names.push_back(q.name);
  EXPECT_EQ(names, (std::vector<std::string>{"model.embed_tokens.weight", "model.layers.0.mlp.gate_proj.weight",
                                             "model.layers.0.mlp.up_proj.weight"}));
  // Weights the scheme cannot represent are kept, with a warning naming them.
  CliRun g = qforge_cli("quantize " + model + " --scheme int4-g256-asym --out " + out);
  ASSERT_EQ(g.code, 0) << g.out;
  EXPECT_TRUE(contains(g.out, "kept unquantized: model.layers.0.self_attn.q_proj.weight")) << g.out;
  Expected<PackedFile> pf2 = PackedFile::open(out);
  ASSERT_TRUE(pf2.has_value());
  ASSERT_EQ(pf2->quantized().size(), 1u);
  EXPECT_EQ(pf2->quantized()[0].name, "model.layers.0.mlp.down_proj.weight");
}

TEST(Cli, AnalyzeReportsSkipsAndWritesJson) {
  const std::string dir = test::temp_dir();
  const std::string model = write_tiny_llama(dir + "/m");
  const std::string json_path = dir + "/a.json";
  CliRun r = qforge_cli("analyze " + model + " --scheme int8-ch-sym,int4-g256-asym --json " + json_path);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "skipped")) << r.out;  // 128 columns are not a multiple of 256
  json j = json::parse(read_bytes(json_path));
  ASSERT_EQ(j["tensors"].size(), 7u);
  ASSERT_EQ(j["totals"].size(), 2u);
  EXPECT_EQ(j["totals"][0]["scheme"], "int8-ch-sym");
  EXPECT_EQ(j["totals"][0]["tensors"], 7);
  EXPECT_EQ(j["totals"][1]["tensors"], 1);  // only down_proj has 256 columns
  EXPECT_EQ(j["totals"][1]["skipped"], 6);
  // int8 per channel on weights spread over +-0.05: SQNR well above 30 dB, 8 bits + scale overhead.
  EXPECT_GT(j["totals"][0]["sqnr_db"].get<double>(), 30.0);
  EXPECT_GT(j["totals"][0]["bits_per_weight"].get<double>(), 8.0);
  EXPECT_LT(j["totals"][0]["bits_per_weight"].get<double>(), 8.5);
}

TEST(Cli, InspectPackedFile) {
  const std::string dir = test::temp_dir();
  const std::string model = write_tiny_llama(dir + "/m");
  const std::string out = dir + "/q.safetensors";
  ASSERT_EQ(qforge_cli("quantize " + model + " --scheme nf4 --out " + out).code, 0);
  CliRun r = qforge_cli("inspect " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "qforge-packed")) << r.out;
  EXPECT_TRUE(contains(r.out, "nf4")) << r.out;
  CliRun again = qforge_cli("analyze " + out + " --scheme nf4");
  EXPECT_EQ(again.code, 1);
  EXPECT_TRUE(contains(again.out, "is a qforge packed file")) << again.out;
  CliRun j = qforge_cli("inspect --json " + out);
  ASSERT_EQ(j.code, 0) << j.out;
  json report = json::parse(j.out);
  int quantized = 0;
  for (const auto& t : report["tensors"])
    if (t.contains("scheme")) {
      EXPECT_EQ(t["scheme"], "nf4");
      EXPECT_EQ(t["dtype"], "packed");
      ++quantized;
    }
  EXPECT_EQ(quantized, 7);
  EXPECT_EQ(report["totals"]["parameters"], 64 * 128 + 3 * 128 + 2 * 128 * 128 + 2 * 64 * 128 + 3 * 256 * 128);
  CliRun dir_report = qforge_cli("inspect " + model);
  ASSERT_EQ(dir_report.code, 0);
  EXPECT_TRUE(contains(dir_report.out, "num_key_value_heads")) << dir_report.out;
}

TEST(Cli, InspectGguf) {
  const std::string path = test::temp_dir() + "/m.gguf";
  GgufWriter w(path);
  ASSERT_TRUE(w.set_string("general.architecture", "llama").is_ok());
  ASSERT_TRUE(w.set_u32("llama.block_count", 1).is_ok());
  std::vector<float> f32(2 * 64, 0.5f);
  ASSERT_TRUE(w.add_tensor("output_norm.weight", GgmlType::F32, {2, 64}, f32.data(), f32.size() * 4).is_ok());
  std::vector<uint8_t> q8(2 * 2 * 34, 0);  // two rows of two Q8_0 blocks (32 weights in 34 bytes)
  ASSERT_TRUE(w.add_tensor("blk.0.attn_q.weight", GgmlType::Q8_0, {2, 64}, q8.data(), q8.size()).is_ok());
  ASSERT_TRUE(w.finish().is_ok());
  CliRun r = qforge_cli("inspect " + path);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* s : {"gguf v3", "blk.0.attn_q.weight", "Q8_0", "8.500", "F32", "[2, 64]", "llama.block_count"})
    EXPECT_TRUE(contains(r.out, s)) << "missing '" << s << "':\n" << r.out;
  CliRun j = qforge_cli("inspect --json " + path);
  ASSERT_EQ(j.code, 0) << j.out;
  json report = json::parse(j.out);
  EXPECT_EQ(report["totals"]["tensors"], 2);
  EXPECT_EQ(report["totals"]["parameters"], 256);
  EXPECT_EQ(report["metadata"]["general.architecture"], "\"llama\"");
}

TEST(Cli, InspectVocabOnlyGguf) {
  QFORGE_REQUIRE_SHARED("tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf");
  CliRun r = qforge_cli("inspect " + test::shared_dir() + "/tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "tokenizer.ggml.tokens")) << r.out;
  EXPECT_TRUE(contains(r.out, "total: 0 tensors")) << r.out;
}

TEST(Cli, AnalyzeRefLlama) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m");
  CliRun r = qforge_cli("analyze " + test::shared_dir() + "/models/ref-llama-25m --scheme int8-ch-sym");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "56 tensors x 1 schemes")) << r.out;
  EXPECT_TRUE(contains(r.out, "model.layers.7.mlp.down_proj.weight")) << r.out;
  EXPECT_FALSE(contains(r.out, "embed_tokens")) << "embeddings are not linear weights";
}

}  // namespace
}  // namespace qforge
