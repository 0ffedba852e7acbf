// qforge inspect PATH: what a checkpoint holds (tensors, totals, metadata, model config).
//
// Every input kind is read into one InspectReport, which is then printed as a table or JSON, so a
// new container only needs its own reader function and a line in read_report().
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "commands.h"
#include "qforge/atomic_file.h"
#include "qforge/gguf.h"
#include "qforge/packed.h"
#include "qforge/safetensors.h"

namespace qforge::cli {
namespace {

using json = nlohmann::json;

struct InspectTensor {
  std::string name;
  std::string dtype;  // dtype name, or "packed" for a qforge quantized tensor
  Shape shape;
  uint64_t nbytes = 0;
  int64_t parameters = 0;
  std::string scheme;  // quantized tensors only
  double bits_per_weight = 0;
};

struct InspectReport {
  std::string path;
  std::string kind;  // "safetensors", "hf-directory", "qforge-packed"
  std::vector<std::string> files;
  uint64_t file_bytes = 0;
  std::vector<InspectTensor> tensors;
  std::vector<std::pair<std::string, std::string>> metadata;  // in the container's order
  json manifest;  // qforge-packed: format_version, qforge_version, command
  json config;    // model config summary (HF directory)
  json gguf;           // GGUF: version, alignment, data offset
  json gguf_metadata;  // GGUF: metadata with typed values (arrays of more than 64 items summarised)
};

double tensor_bits_per_weight(const SafetensorsTensorInfo& t) { return 8.0 * dtype_size(t.dtype); }

InspectTensor plain_entry(const SafetensorsTensorInfo& t) {
  InspectTensor e;
  e.name = t.name;
  e.dtype = dtype_name(t.dtype);
  e.shape = t.shape;
  e.nbytes = t.end - t.begin;
  e.parameters = shape_numel(t.shape);
  e.bits_per_weight = tensor_bits_per_weight(t);
  return e;
}

// The fields of an HF config.json that say what the model is.
json summarize_config(const json& c) {
  json s = json::object();
  for (const char* key : {"model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size",
                          "max_position_embeddings", "tie_word_embeddings", "rms_norm_eps", "torch_dtype", "dtype",
                          "rope_theta"}) {
    auto it = c.find(key);
    if (it != c.end() && !it->is_null()) s[key] = *it;
  }
  if (auto rp = c.find("rope_parameters"); rp != c.end() && rp->is_object())
    if (auto theta = rp->find("rope_theta"); theta != rp->end()) s["rope_theta"] = *theta;
  if (auto q = c.find("quantization_config"); q != c.end()) s["quantization_config"] = *q;
  return s;
}

Status read_config(const std::filesystem::path& dir, InspectReport* r) {
  auto path = dir / "config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return Status::ok();
  QFORGE_ASSIGN_OR_RETURN(std::string text, read_file(path.string()));
  json c = json::parse(text, nullptr, false);
  if (c.is_discarded() || !c.is_object()) return parse_error(path.string() + ": not a JSON object");
  r->config = summarize_config(c);
  return Status::ok();
}

Expected<InspectReport> read_safetensors_report(const std::string& path, bool raw) {
  InspectReport r;
  r.path = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::open(path));
    r.kind = "hf-directory";
    for (const auto& f : ckpt.files()) {
      r.files.push_back(std::filesystem::path(f.path()).filename().string());
      r.file_bytes += f.file_size();
    }
    for (const auto& name : ckpt.tensor_names())
      if (const auto* t = ckpt.find(name)) r.tensors.push_back(plain_entry(*t));
    r.metadata.assign(ckpt.metadata().begin(), ckpt.metadata().end());
    QFORGE_RETURN_IF_ERROR(read_config(path, &r));
    return r;
  }
  QFORGE_ASSIGN_OR_RETURN(PackedFile pf, PackedFile::open(path));
  r.files.push_back(std::filesystem::path(path).filename().string());
  r.file_bytes = pf.safetensors().file_size();
  const auto user = pf.user_metadata();
  r.metadata.assign(user.begin(), user.end());
  if (pf.has_manifest() && !raw) {
    r.kind = "qforge-packed";
    r.manifest = {{"format_version", kPackedFormatVersion},
                  {"qforge_version", pf.manifest_version()},
                  {"command", pf.manifest_command()},
                  {"quantized_tensors", pf.quantized().size()}};
    for (const auto& q : pf.quantized()) {
      InspectTensor e;
      e.name = q.name;
      e.dtype = "packed";
      e.shape = {q.rows, q.cols};
      e.nbytes = q.nbytes;
      e.parameters = q.rows * q.cols;
      e.scheme = q.scheme.name();
      e.bits_per_weight = q.bits_per_weight();
      r.tensors.push_back(std::move(e));
    }
    for (const auto& name : pf.plain_names())
      if (const auto* t = pf.safetensors().find(name)) r.tensors.push_back(plain_entry(*t));
  } else {
    r.kind = pf.has_manifest() ? "qforge-packed (raw)" : "safetensors";
    if (pf.has_manifest()) r.metadata.assign(pf.safetensors().metadata().begin(), pf.safetensors().metadata().end());
    for (const auto& t : pf.safetensors().tensors()) r.tensors.push_back(plain_entry(t));
  }
  QFORGE_RETURN_IF_ERROR(read_config(std::filesystem::path(path).parent_path(), &r));
  return r;
}

// Reads the first bytes to tell containers apart.
Expected<std::string> sniff(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return std::string("directory");
  if (!std::filesystem::exists(path, ec)) return io_error(path + ": no such file or directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) return io_error(path + ": cannot open: " + std::strerror(errno));
  char magic[4] = {};
  in.read(magic, 4);
  if (in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) return std::string("gguf");
  return std::string("safetensors");
}

// A GGUF value as JSON; arrays longer than 64 elements are summarised (type, count, first items).
json gguf_value_json(const GgufValue& v) {
  auto scalar = [](const GgufValue& x) -> json {
    if (auto p = x.get_if<std::string>()) return *p;
    if (auto p = x.get_if<bool>()) return *p;
    if (auto p = x.get_if<float>()) return *p;
    if (auto p = x.get_if<double>()) return *p;
    if (auto i = x.to_int(); i.has_value()) return *i;
    if (auto u = x.to_uint(); u.has_value()) return *u;
    return x.describe();
  };
  if (!v.is_array()) return scalar(v);
  constexpr size_t kFull = 64, kHead = 8;
  json items = json::array();
  auto add_items = [&](const auto& vec) {
    for (size_t i = 0; i < vec.size() && (vec.size() <= kFull || i < kHead); ++i) {
      using E = std::decay_t<decltype(vec[0])>;
      if constexpr (std::is_same_v<E, GgufValue>)
        items.push_back(gguf_value_json(vec[i]));
      else if constexpr (std::is_same_v<E, bool>)
        items.push_back(static_cast<bool>(vec[i]));
      else
        items.push_back(vec[i]);
    }
  };
  if (auto a = v.array_if<std::string>()) add_items(*a);
  else if (auto a = v.array_if<float>()) add_items(*a);
  else if (auto a = v.array_if<double>()) add_items(*a);
  else if (auto a = v.array_if<int32_t>()) add_items(*a);
  else if (auto a = v.array_if<uint32_t>()) add_items(*a);
  else if (auto a = v.array_if<int64_t>()) add_items(*a);
  else if (auto a = v.array_if<uint64_t>()) add_items(*a);
  else if (auto a = v.array_if<int16_t>()) add_items(*a);
  else if (auto a = v.array_if<uint16_t>()) add_items(*a);
  else if (auto a = v.array_if<int8_t>()) add_items(*a);
  else if (auto a = v.array_if<uint8_t>()) add_items(*a);
  else if (auto a = v.array_if<bool>()) add_items(*a);
  else if (auto a = v.array_if<GgufValue>()) add_items(*a);
  if (v.size() <= kFull) return items;
  return json{{"type", v.type_description()}, {"count", v.size()}, {"first", items}};
}

Expected<InspectReport> read_gguf_report(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(GgufFile f, GgufFile::open(path));
  InspectReport r;
  r.path = path;
  r.kind = "gguf v" + std::to_string(f.version());
  r.files.push_back(std::filesystem::path(path).filename().string());
  r.file_bytes = f.file_size();
  for (const auto& t : f.tensors()) {
    InspectTensor e;
    e.name = t.name;
    e.dtype = ggml_type_name(t.type);
    e.shape = t.shape;
    e.nbytes = t.nbytes;
    e.parameters = t.numel();
    e.bits_per_weight = e.parameters > 0 ? 8.0 * static_cast<double>(t.nbytes) / static_cast<double>(e.parameters) : 0;
    if (ggml_type_info(t.type).quantized) e.scheme = e.dtype;  // counted as quantized in the totals
    r.tensors.push_back(std::move(e));
  }
  r.gguf = {{"version", f.version()}, {"alignment", f.alignment()}, {"data_offset", f.data_offset()}};
  r.gguf_metadata = json::object();
  for (const auto& kv : f.metadata()) {
    r.metadata.emplace_back(kv.key, kv.value.describe());
    r.gguf_metadata[kv.key] = gguf_value_json(kv.value);
  }
  return r;
}

Expected<InspectReport> read_report(const std::string& path, bool raw) {
  QFORGE_ASSIGN_OR_RETURN(std::string kind, sniff(path));
  if (kind == "gguf") return read_gguf_report(path);
  return read_safetensors_report(path, raw);
}

std::string shorten(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(0, n - 3) + "..."; }

void print_report(const InspectReport& r, std::FILE* out) {
  std::fprintf(out, "%s (%s", r.path.c_str(), r.kind.c_str());
  if (r.files.size() > 1) std::fprintf(out, ", %zu files", r.files.size());
  std::fprintf(out, ", %s)\n\n", format_bytes(r.file_bytes).c_str());

  const bool packed = r.kind == "qforge-packed";
  const bool gguf = r.kind.rfind("gguf", 0) == 0;
  Table t;
  t.add_column("tensor", Table::Align::left);
  t.add_column(gguf ? "type" : "dtype", Table::Align::left);
  t.add_column("shape", Table::Align::left);
  t.add_column("bytes");
  if (packed) t.add_column("scheme", Table::Align::left);
  if (packed || gguf) t.add_column("bits/w");
  std::vector<const InspectTensor*> sorted;
  for (const auto& e : r.tensors) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(),
            [](const InspectTensor* a, const InspectTensor* b) { return natural_less(a->name, b->name); });
  int64_t params = 0, q_params = 0;
  uint64_t bytes = 0, q_bytes = 0;
  std::map<std::string, int64_t> by_dtype;
  for (const auto* e : sorted) {
    std::vector<std::string> row = {e->name, e->dtype, shape_to_string(e->shape), std::to_string(e->nbytes)};
    if (packed) row.push_back(e->scheme);
    if (packed || gguf) row.push_back(format_fixed(e->bits_per_weight, 3));
    t.add_row(std::move(row));
    params += e->parameters;
    bytes += e->nbytes;
    by_dtype[e->dtype] += e->parameters;
    if (!e->scheme.empty()) {
      q_params += e->parameters;
      q_bytes += e->nbytes;
    }
  }
  t.print(out);
  std::fprintf(out, "\ntotal: %zu tensors, %s parameters (%lld), %s of tensor data\n", r.tensors.size(),
               format_count(static_cast<uint64_t>(params)).c_str(), static_cast<long long>(params),
               format_bytes(bytes).c_str());
  std::string dtypes;
  for (const auto& [d, n] : by_dtype) dtypes += (dtypes.empty() ? "" : ", ") + d + " " + format_count(static_cast<uint64_t>(n));
  std::fprintf(out, "parameters by %s: %s\n", gguf ? "type" : "dtype", dtypes.c_str());
  if (gguf && params > 0)
    std::fprintf(out, "%s parameters in block types; %.4f bits/parameter over all tensor data; alignment %d, data at "
                 "byte %llu\n",
                 format_count(static_cast<uint64_t>(q_params)).c_str(),
                 8.0 * static_cast<double>(bytes) / static_cast<double>(params), r.gguf.value("alignment", 0),
                 static_cast<unsigned long long>(r.gguf.value("data_offset", uint64_t{0})));
  if (packed && q_params > 0) {
    std::fprintf(out, "quantized: %s parameters in %s, %.3f bits/weight; whole file %.3f bits/parameter\n",
                 format_count(static_cast<uint64_t>(q_params)).c_str(), format_bytes(q_bytes).c_str(),
                 8.0 * static_cast<double>(q_bytes) / static_cast<double>(q_params),
                 8.0 * static_cast<double>(bytes) / static_cast<double>(params));
    std::fprintf(out, "made by qforge %s: %s\n", r.manifest.value("qforge_version", "").c_str(),
                 r.manifest.value("command", "").c_str());
  }
  if (!r.metadata.empty()) {
    std::fprintf(out, "\nmetadata:\n");
    for (const auto& [k, v] : r.metadata) std::fprintf(out, "  %s = %s\n", k.c_str(), shorten(v, 200).c_str());
  }
  if (!r.config.empty()) {
    std::fprintf(out, "\nconfig.json:\n");
    for (const auto& [k, v] : r.config.items()) std::fprintf(out, "  %s = %s\n", k.c_str(), shorten(v.dump(), 200).c_str());
  }
}

json report_json(const InspectReport& r) {
  json j;
  j["path"] = r.path;
  j["kind"] = r.kind;
  j["files"] = r.files;
  j["file_bytes"] = r.file_bytes;
  json tensors = json::array();
  int64_t params = 0;
  uint64_t bytes = 0;
  for (const auto& e : r.tensors) {
    json t = {{"name", e.name}, {"dtype", e.dtype}, {"shape", e.shape}, {"bytes", e.nbytes}};
    if (!e.scheme.empty()) {
      t["scheme"] = e.scheme;
      t["bits_per_weight"] = e.bits_per_weight;
    }
    tensors.push_back(std::move(t));
    params += e.parameters;
    bytes += e.nbytes;
  }
  j["tensors"] = std::move(tensors);
  j["totals"] = {{"tensors", r.tensors.size()}, {"parameters", params}, {"bytes", bytes}};
  json metadata = json::object();
  for (const auto& [k, v] : r.metadata) metadata[k] = v;
  j["metadata"] = std::move(metadata);
  if (!r.manifest.empty()) j["manifest"] = r.manifest;
  if (!r.gguf.empty()) {
    j["gguf"] = r.gguf;
    j["gguf_metadata"] = r.gguf_metadata;
  }
  if (!r.config.empty()) j["config"] = r.config;
  return j;
}

}  // namespace

void add_inspect_command(CLI::App& app, int* exit_code) {
  struct Options {
    std::string path;
    bool json = false;
    bool raw = false;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("inspect", "List a checkpoint's tensors, totals, metadata and model config");
  cmd->add_option("path", opt->path, "A .safetensors file (plain or qforge packed), an HF model directory or a .gguf file")
      ->required();
  cmd->add_flag("--json", opt->json, "Print the report as JSON on stdout");
  cmd->add_flag("--raw", opt->raw, "For qforge packed files: list the stored planes instead of the quantized tensors");
  cmd->callback([opt, exit_code] {
    Expected<InspectReport> r = read_report(opt->path, opt->raw);
    if (!r) {
      *exit_code = report_error(r.status());
      return;
    }
    if (opt->json)
      std::printf("%s\n", report_json(*r).dump(2).c_str());
    else
      print_report(*r, stdout);
    *exit_code = 0;
  });
}

}  // namespace qforge::cli
