// qforge demo: writes a deterministic synthetic Llama-shaped checkpoint, measures the error of
// several schemes on it, quantizes it to a packed file and dequantizes it back, checking that the
// file round trip gives exactly the in-memory result.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "commands.h"
#include "qforge/atomic_file.h"
#include "qforge/packed.h"
#include "qforge/parallel.h"
#include "qforge/safetensors.h"

namespace qforge::cli {
namespace {

// Shape of the synthetic model: a small Llama with grouped-query attention.
struct DemoConfig {
  int64_t hidden = 512;
  int64_t layers = 4;
  int64_t heads = 8;
  int64_t kv_heads = 4;
  int64_t intermediate = 1408;
  int64_t vocab = 4096;
  int64_t head_dim() const { return hidden / heads; }
};

const std::vector<std::string> kDemoSchemes = {"int8-ch-sym",    "int4-g128-asym", "int4-g128-sym", "int3-g128-asym",
                                               "nf4",            "mxfp4",          "nvfp4",         "fp8-e4m3-ch"};
const char* kDemoQuantizeScheme = "int4-g128-asym";

// splitmix64 seeds xoshiro256**; both are fully specified here so the checkpoint is the same on
// every platform (std::normal_distribution is not).
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (auto& s : s_) s = splitmix64(seed);
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in (0, 1): never 0, so log() is finite.
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; }
  // Box-Muller (one value per call; the sine half is dropped to keep the stream simple).
  double normal() { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()); }
  // Student-t with 4 degrees of freedom: Z / sqrt(V / 4), V ~ chi^2(4) = -2 ln(U1 U2).
  double student_t4() {
    double z = normal();
    double v = -2.0 * std::log(uniform() * uniform());
    return z / std::sqrt(v / 4.0);
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

struct DemoTensor {
  std::string name;
  Shape shape;
  enum class Kind { linear, embedding, norm } kind;
  std::vector<int64_t> outlier_columns;  // linear only
  std::vector<uint16_t> bf16;
};

// Heavy-tailed weights like trained LLMs: Student-t(4) scaled to std 1/sqrt(fan_in), a few input
// channels (columns) 10-30x larger, as activation outliers leave in the weights that read them.
void fill(DemoTensor& t, uint64_t seed) {
  uint64_t mix = seed ^ fnv1a(t.name);
  Rng rng(splitmix64(mix));
  const int64_t n = shape_numel(t.shape);
  t.bf16.resize(static_cast<size_t>(n));
  if (t.kind == DemoTensor::Kind::norm) {
    for (int64_t i = 0; i < n; ++i) t.bf16[static_cast<size_t>(i)] = f32_to_bf16(static_cast<float>(1.0 + 0.05 * rng.normal()));
    return;
  }
  const int64_t rows = t.shape[0], cols = t.shape[1];
  const double t4_std = std::sqrt(2.0);  // std of Student-t(4) = sqrt(4 / (4 - 2))
  const double scale = t.kind == DemoTensor::Kind::embedding ? 0.02 / t4_std : 1.0 / std::sqrt(double(cols)) / t4_std;
  std::vector<double> column_scale(static_cast<size_t>(cols), 1.0);
  for (int64_t c : t.outlier_columns) column_scale[static_cast<size_t>(c)] = 10.0 + 20.0 * rng.uniform();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      t.bf16[static_cast<size_t>(r * cols + c)] =
          f32_to_bf16(static_cast<float>(rng.student_t4() * scale * column_scale[static_cast<size_t>(c)]));
}

std::vector<int64_t> pick_columns(Rng& rng, int64_t cols, int count) {
  std::vector<int64_t> out;
  while (static_cast<int>(out.size()) < count) {
    int64_t c = rng.below(cols);
    if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<DemoTensor> demo_tensors(const DemoConfig& cfg, uint64_t seed) {
  std::vector<DemoTensor> ts;
  using K = DemoTensor::Kind;
  ts.push_back({"model.embed_tokens.weight", {cfg.vocab, cfg.hidden}, K::embedding, {}, {}});
  uint64_t layout_state = seed ^ 0x6f75746c69657273ull;  // "outliers"
  Rng layout(splitmix64(layout_state));
  const int64_t kv = cfg.kv_heads * cfg.head_dim();
  for (int64_t l = 0; l < cfg.layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    // The residual stream's outlier channels are shared by every projection reading it.
    std::vector<int64_t> hidden_outliers = pick_columns(layout, cfg.hidden, 4);
    ts.push_back({p + "input_layernorm.weight", {cfg.hidden}, K::norm, {}, {}});
    ts.push_back({p + "self_attn.q_proj.weight", {cfg.hidden, cfg.hidden}, K::linear, hidden_outliers, {}});
    ts.push_back({p + "self_attn.k_proj.weight", {kv, cfg.hidden}, K::linear, hidden_outliers, {}});
    ts.push_back({p + "self_attn.v_proj.weight", {kv, cfg.hidden}, K::linear, hidden_outliers, {}});
    ts.push_back({p + "self_attn.o_proj.weight", {cfg.hidden, cfg.hidden}, K::linear, pick_columns(layout, cfg.hidden, 2), {}});
    ts.push_back({p + "post_attention_layernorm.weight", {cfg.hidden}, K::norm, {}, {}});
    ts.push_back({p + "mlp.gate_proj.weight", {cfg.intermediate, cfg.hidden}, K::linear, hidden_outliers, {}});
    ts.push_back({p + "mlp.up_proj.weight", {cfg.intermediate, cfg.hidden}, K::linear, hidden_outliers, {}});
    ts.push_back({p + "mlp.down_proj.weight", {cfg.hidden, cfg.intermediate}, K::linear,
                  pick_columns(layout, cfg.intermediate, 4), {}});
  }
  ts.push_back({"model.norm.weight", {cfg.hidden}, K::norm, {}, {}});
  return ts;
}

struct DemoCheckpoint {
  int64_t parameters = 0;
  uint64_t bytes = 0;
};

Expected<DemoCheckpoint> write_demo_checkpoint(const std::string& dir, uint64_t seed) {
  DemoConfig cfg;
  std::vector<DemoTensor> ts = demo_tensors(cfg, seed);
  const int64_t n = static_cast<int64_t>(ts.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) fill(ts[static_cast<size_t>(i)], seed);

  DemoCheckpoint out;
  SafetensorsWriter writer((std::filesystem::path(dir) / "model.safetensors").string());
  writer.set_metadata("format", "pt");
  for (const auto& t : ts) {
    QFORGE_RETURN_IF_ERROR(writer.add(t.name, DType::bf16, t.shape, t.bf16.data(), t.bf16.size() * sizeof(uint16_t)));
    out.parameters += shape_numel(t.shape);
    out.bytes += t.bf16.size() * sizeof(uint16_t);
  }
  QFORGE_RETURN_IF_ERROR(writer.finish());

  nlohmann::ordered_json config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", cfg.hidden},
      {"num_hidden_layers", cfg.layers},
      {"num_attention_heads", cfg.heads},
      {"num_key_value_heads", cfg.kv_heads},
      {"head_dim", cfg.head_dim()},
      {"intermediate_size", cfg.intermediate},
      {"vocab_size", cfg.vocab},
      {"hidden_act", "silu"},
      {"max_position_embeddings", 2048},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"tie_word_embeddings", true},
      {"torch_dtype", "bfloat16"},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"qforge_demo", {{"seed", seed}, {"note", "synthetic weights: Student-t(4) with outlier input channels"}}},
  };
  QFORGE_RETURN_IF_ERROR(write_file_atomic((std::filesystem::path(dir) / "config.json").string(), config.dump(2) + "\n"));
  return out;
}

// "model.layers.3.mlp.up_proj.weight" -> "mlp.up_proj"
std::string projection_kind(const std::string& name) {
  std::string s = name;
  auto pos = s.find("layers.");
  if (pos != std::string::npos) {
    auto dot = s.find('.', pos + 7);
    if (dot != std::string::npos) s = s.substr(dot + 1);
  }
  if (s.size() > 7 && s.compare(s.size() - 7, 7, ".weight") == 0) s.resize(s.size() - 7);
  return s;
}

// SQNR per projection kind (summed over layers) for each scheme: where the error comes from.
void print_by_kind(const AnalyzeResult& r, std::FILE* out) {
  std::vector<std::string> kinds;
  std::map<std::string, std::vector<AnalyzeTotals>> by_kind;
  for (const auto& t : r.tensors) {
    std::string k = projection_kind(t.name);
    if (!by_kind.count(k)) {
      kinds.push_back(k);
      by_kind[k].assign(r.schemes.size(), AnalyzeTotals{});
    }
    for (size_t s = 0; s < r.schemes.size(); ++s) {
      const AnalyzeCell& c = t.cells[s];
      if (c.skipped) continue;
      by_kind[k][s].signal += c.signal;
      by_kind[k][s].noise += c.noise;
    }
  }
  Table table;
  table.add_column("SQNR dB", Table::Align::left);
  for (const auto& s : r.schemes) table.add_column(s.name());
  for (const auto& k : kinds) {
    std::vector<std::string> row = {k};
    for (size_t s = 0; s < r.schemes.size(); ++s) row.push_back(format_fixed(by_kind[k][s].sqnr_db(), 2));
    table.add_row(std::move(row));
  }
  table.print(out);
}

// Checks that every tensor of the dequantized file equals the in-memory quantize -> dequantize of
// the source (bit for bit), and that unquantized tensors were copied unchanged.
Expected<int64_t> verify_round_trip(const std::string& source_dir, const std::string& dequant_path,
                                    const std::string& packed_path, const Scheme& scheme) {
  QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint src, SafetensorsCheckpoint::open(source_dir));
  QFORGE_ASSIGN_OR_RETURN(SafetensorsFile deq, SafetensorsFile::open(dequant_path));
  QFORGE_ASSIGN_OR_RETURN(PackedFile packed, PackedFile::open(packed_path));
  if (deq.tensors().size() != src.tensor_names().size())
    return Status::error(ErrorCode::internal, "round trip: " + std::to_string(deq.tensors().size()) +
                                                  " tensors in the dequantized file, source has " +
                                                  std::to_string(src.tensor_names().size()));
  int64_t checked = 0;
  for (const auto& name : src.tensor_names()) {
    QFORGE_ASSIGN_OR_RETURN(Tensor s, src.tensor(name));
    QFORGE_ASSIGN_OR_RETURN(Tensor d, deq.tensor(name));
    if (packed.find_quantized(name) == nullptr) {
      if (d.dtype() != s.dtype() || d.shape() != s.shape() || std::memcmp(d.data(), s.data(), s.nbytes()) != 0)
        return Status::error(ErrorCode::internal, "round trip: unquantized tensor '" + name + "' changed");
      continue;
    }
    QFORGE_ASSIGN_OR_RETURN(Tensor f, s.to_f32());
    QFORGE_ASSIGN_OR_RETURN(QuantizedTensor q, quantize(scheme, f.data_as<float>(), s.dim(0), s.dim(1)));
    std::vector<float> expected(static_cast<size_t>(s.numel()));
    QFORGE_RETURN_IF_ERROR(dequantize(q, expected.data()));
    if (d.dtype() != DType::f32 || d.shape() != s.shape())
      return Status::error(ErrorCode::internal, "round trip: tensor '" + name + "' has dtype " +
                                                    dtype_name(d.dtype()) + " shape " + shape_to_string(d.shape()));
    if (std::memcmp(d.data(), expected.data(), expected.size() * sizeof(float)) != 0)
      return Status::error(ErrorCode::internal,
                           "round trip: tensor '" + name + "' differs from the in-memory quantize/dequantize");
    ++checked;
  }
  return checked;
}

int run_demo(const std::string& out_dir, uint64_t seed, bool full) {
  const double start = now_seconds();
  set_progress_enabled(false);  // the demo prints its own summary of each step
  Expected<std::vector<Scheme>> schemes = parse_schemes(kDemoSchemes, "demo scheme");
  if (!schemes) return report_error(schemes.status());
  namespace fs = std::filesystem;
  const std::string model_dir = (fs::path(out_dir) / "model").string();
  std::error_code ec;
  fs::create_directories(model_dir, ec);
  if (ec) return report_error(io_error("--out '" + out_dir + "': cannot create directory '" + model_dir + "': " + ec.message()));

  std::printf("qforge demo: a synthetic Llama-shaped model, quantized and measured\n\n");
  Expected<DemoCheckpoint> ck = write_demo_checkpoint(model_dir, seed);
  if (!ck) return report_error(ck.status());
  DemoConfig cfg;
  std::printf("[1/4] wrote %s: %s parameters in bf16 (%s), seed %llu\n", model_dir.c_str(),
              format_count(static_cast<uint64_t>(ck->parameters)).c_str(), format_bytes(ck->bytes).c_str(),
              static_cast<unsigned long long>(seed));
  std::printf("      hidden %lld, %lld layers, %lld heads (%lld KV), MLP %lld, vocab %lld; Student-t(4) weights\n"
              "      with 2-4 outlier input channels (10-30x) per projection\n\n",
              (long long)cfg.hidden, (long long)cfg.layers, (long long)cfg.heads, (long long)cfg.kv_heads,
              (long long)cfg.intermediate, (long long)cfg.vocab);

  Expected<SafetensorsCheckpoint> ckpt = SafetensorsCheckpoint::open(model_dir);
  if (!ckpt) return report_error(ckpt.status());
  Expected<std::vector<SelectedTensor>> names = select_tensors(*ckpt, Selection{});
  if (!names) return report_error(names.status());
  double t0 = now_seconds();
  Expected<AnalyzeResult> analysis = analyze_tensors(*ckpt, *names, *schemes);
  if (!analysis) return report_error(analysis.status());
  std::printf("[2/4] analyze: %zu linear weights x %zu schemes, round-to-nearest, in %s\n\n", names->size(),
              schemes->size(), format_seconds(now_seconds() - t0).c_str());
  if (full) {
    print_analyze_tensors(*analysis, stdout);
    std::printf("\n");
  }
  print_analyze_totals(*analysis, stdout);
  std::printf("\n");
  print_by_kind(*analysis, stdout);
  std::printf("\n");

  QuantizeRequest req;
  req.input = model_dir;
  req.output = (fs::path(out_dir) / (std::string("model-") + kDemoQuantizeScheme + ".safetensors")).string();
  req.scheme = *Scheme::parse(kDemoQuantizeScheme);
  Expected<QuantizeSummary> qs = quantize_checkpoint(req);
  if (!qs) return report_error(qs.status());
  std::printf("[3/4] quantize --scheme %s --out %s\n", kDemoQuantizeScheme, req.output.c_str());
  print_quantize_summary(req, *qs, stdout, "      ");
  std::printf("\n");

  const std::string dequant_path =
      (fs::path(out_dir) / (std::string("model-") + kDemoQuantizeScheme + "-dequantized.safetensors")).string();
  Expected<DequantizeSummary> ds = dequantize_file(req.output, dequant_path, DType::f32);
  if (!ds) return report_error(ds.status());
  Expected<int64_t> checked = verify_round_trip(model_dir, dequant_path, req.output, req.scheme);
  if (!checked) return report_error(checked.status());
  std::printf("[4/4] dequantize --dtype f32 --out %s (%s)\n"
              "      round trip: %lld quantized tensors bit-identical to the in-memory quantize/dequantize,\n"
              "      %lld other tensors unchanged\n\n",
              dequant_path.c_str(), format_bytes(ds->output_bytes).c_str(), static_cast<long long>(*checked),
              static_cast<long long>(ds->plain_tensors));

  std::printf("done in %s. Next:\n", format_seconds(now_seconds() - start).c_str());
  std::printf("  qforge inspect %s\n", req.output.c_str());
  std::printf("  qforge analyze %s --scheme int4-g64-asym --scheme nf4\n", model_dir.c_str());
  return 0;
}

}  // namespace

void add_demo_command(CLI::App& app, int* exit_code) {
  struct Options {
    std::string out = "qforge-demo";
    uint64_t seed = 42;
    bool full = false;
    int threads = 0;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "demo", "Build a synthetic Llama-shaped checkpoint, compare schemes on it, quantize and dequantize it");
  cmd->add_option("-o,--out", opt->out, "Directory for the demo's files (created)")->capture_default_str();
  cmd->add_option("--seed", opt->seed, "Seed of the synthetic weights")->capture_default_str();
  cmd->add_flag("--full", opt->full, "Also print the per-tensor error table");
  cmd->add_option("-j,--threads", opt->threads, "Worker threads (default: OpenMP's choice)")
      ->check(CLI::Range(1, 1024));
  cmd->callback([opt, exit_code] {
    std::optional<ScopedThreadLimit> limit;
    if (opt->threads > 0) limit.emplace(opt->threads);
    *exit_code = run_demo(opt->out, opt->seed, opt->full);
  });
}

}  // namespace qforge::cli
