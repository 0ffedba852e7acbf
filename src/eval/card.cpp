// Quantization card: data, derived aggregates, JSON (writing and validating reading), files.
#include "qforge/card.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "qforge/atomic_file.h"
#include "qforge/backend.h"
#include "qforge/kernels.h"
#include "qforge/sha256.h"

namespace qforge {
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------
// WeightError

void WeightError::add(const WeightError& o) {
  signal += o.signal;
  noise += o.noise;
  max_abs = std::max(max_abs, o.max_abs);
  count += o.count;
}

double WeightError::rel_l2() const {
  if (noise == 0) return 0;
  if (signal == 0) return std::numeric_limits<double>::infinity();
  return std::sqrt(noise / signal);
}

std::optional<double> WeightError::sqnr_db() const {
  if (noise == 0 || signal == 0) return std::nullopt;
  return 10.0 * std::log10(signal / noise);
}

WeightError measure_weight_error(const float* ref, const float* approx, int64_t n) {
  WeightError e;
  e.count = n;
  for (int64_t i = 0; i < n; ++i) {
    const double r = ref[i], d = r - static_cast<double>(approx[i]);
    e.signal += r * r;
    e.noise += d * d;
    e.max_abs = std::max(e.max_abs, std::fabs(d));
  }
  return e;
}

// ---------------------------------------------------------------------------------------------
// Derived views

int64_t CardTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<CardTypeSummary> Card::types() const {
  std::map<std::string, CardTypeSummary> by;
  for (const CardTensor& t : tensors) {
    CardTypeSummary& s = by[t.type];
    s.type = t.type;
    s.tensors += 1;
    s.parameters += t.numel();
    s.bytes += t.bytes;
  }
  std::vector<CardTypeSummary> out;
  for (auto& [k, v] : by) out.push_back(v);
  // Largest share of the bytes first; ties by name.
  std::stable_sort(out.begin(), out.end(), [](const CardTypeSummary& a, const CardTypeSummary& b) {
    return a.bytes != b.bytes ? a.bytes > b.bytes : a.type < b.type;
  });
  return out;
}

std::vector<CardLayer> Card::layers() const {
  std::map<int, CardLayer> by;
  for (const CardTensor& t : tensors) {
    if (t.layer < 0) continue;
    CardLayer& l = by[t.layer];
    l.layer = t.layer;
    l.parameters += t.numel();
    l.bytes += t.bytes;
    if (t.quantized && t.error) {
      l.error.add(*t.error);
      l.quantized_tensors += 1;
    }
  }
  std::vector<CardLayer> out;
  for (auto& [k, v] : by) out.push_back(v);
  return out;
}

WeightError Card::total_error() const {
  WeightError e;
  for (const CardTensor& t : tensors)
    if (t.quantized && t.error) e.add(*t.error);
  return e;
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

ojson file_json(const CardFile& f) { return ojson{{"path", f.path}, {"bytes", f.bytes}, {"sha256", f.sha256}}; }

ojson files_json(const std::vector<CardFile>& files) {
  ojson a = ojson::array();
  for (const auto& f : files) a.push_back(file_json(f));
  return a;
}

ojson number_or_null(double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); }
template <class T>
ojson opt(const std::optional<T>& v) {
  return v ? ojson(*v) : ojson(nullptr);
}

ojson error_json(const WeightError& e) {
  ojson j;
  j["rel_l2"] = number_or_null(e.rel_l2());
  j["sqnr_db"] = opt(e.sqnr_db());
  j["max_abs"] = e.max_abs;
  j["signal"] = e.signal;
  j["noise"] = e.noise;
  j["count"] = e.count;
  return j;
}

}  // namespace

std::string card_to_json(const Card& c) {
  ojson j;
  j["schema"] = kCardSchemaId;
  j["schema_version"] = c.schema_version;
  j["source"] = {{"path", c.source.path},
                 {"kind", c.source.kind},
                 {"files", files_json(c.source.files)},
                 {"total_bytes", c.source.total_bytes},
                 {"architecture", c.source.architecture},
                 {"parameters", c.source.parameters},
                 {"layers", c.source.layers}};
  j["output"] = {{"path", c.output.path},
                 {"format", c.output.format},
                 {"files", files_json(c.output.files)},
                 {"total_bytes", c.output.total_bytes},
                 {"tensor_bytes", c.output.tensor_bytes},
                 {"bits_per_weight", c.output.bits_per_weight},
                 {"quantized_bits_per_weight", c.output.quantized_bits_per_weight},
                 {"size_ratio", c.output.size_ratio}};
  j["tool"] = {{"name", "qforge"},
               {"version", c.tool.version},
               {"command", c.tool.command},
               {"seed", opt(c.tool.seed)},
               {"machine", {{"cpu", c.tool.machine.cpu}, {"isa", c.tool.machine.isa}, {"gpu", c.tool.machine.gpu}}}};
  if (c.scheme) {
    j["scheme"] = {{"name", c.scheme->name},           {"family", c.scheme->family},
                   {"bits", c.scheme->bits},           {"granularity", c.scheme->granularity},
                   {"group_size", c.scheme->group_size}, {"symmetric", c.scheme->symmetric}};
  } else {
    j["scheme"] = nullptr;
  }
  const CardMethod& m = c.method;
  ojson mj;
  mj["name"] = m.name;
  mj["error_reference"] = m.error_reference;
  mj["filter"] = m.filter;
  mj["keep"] = m.keep;
  mj["gptq"] = m.gptq ? ojson{{"damp", m.gptq->damp},
                              {"block_size", m.gptq->block_size},
                              {"act_order", m.gptq->act_order},
                              {"static_groups", m.gptq->static_groups},
                              {"sequential", m.gptq->sequential},
                              {"mse_clip", m.gptq->mse_clip},
                              {"refit_passes", m.gptq->refit_passes}}
                      : ojson(nullptr);
  mj["awq"] = m.awq ? ojson{{"grid", m.awq->grid},
                            {"clip", m.awq->clip},
                            {"clip_grid", m.awq->clip_grid},
                            {"max_shrink", m.awq->max_shrink}}
                    : ojson(nullptr);
  mj["smoothquant"] = m.smoothquant_alpha ? ojson{{"alpha", *m.smoothquant_alpha}} : ojson(nullptr);
  mj["activations"] =
      m.activations ? ojson{{"scheme", m.activations->scheme}, {"observer", m.activations->observer}} : ojson(nullptr);
  if (m.gguf) {
    const CardGguf& g = *m.gguf;
    mj["gguf"] = {{"preset", g.preset},
                  {"default_type", g.default_type},
                  {"pure", g.pure},
                  {"allow_fallback", g.allow_fallback},
                  {"overrides", g.overrides},
                  {"output_tensor_type", g.output_tensor_type},
                  {"token_embedding_type", g.token_embedding_type},
                  {"imatrix", g.imatrix ? file_json(*g.imatrix) : ojson(nullptr)}};
  } else {
    mj["gguf"] = nullptr;
  }
  mj["batch_windows"] = m.batch_windows;
  mj["hidden_dtype"] = m.hidden_dtype;
  j["method"] = mj;
  if (c.calibration) {
    const CardCalibration& k = *c.calibration;
    j["calibration"] = {{"file", file_json(k.file)},   {"file_tokens", k.file_tokens}, {"windows", k.windows},
                        {"ctx", k.ctx},                 {"tokens_used", k.tokens_used}, {"seed", k.seed}};
  } else {
    j["calibration"] = nullptr;
  }

  // Derived summaries, for readers of the JSON (recomputed from `tensors` when a card is read).
  ojson types = ojson::array();
  for (const auto& t : c.types())
    types.push_back({{"type", t.type},
                     {"tensors", t.tensors},
                     {"parameters", t.parameters},
                     {"bytes", t.bytes},
                     {"bits_per_weight", t.parameters > 0 ? 8.0 * static_cast<double>(t.bytes) / t.parameters : 0.0}});
  ojson layers = ojson::array();
  for (const auto& l : c.layers())
    layers.push_back({{"layer", l.layer},
                      {"parameters", l.parameters},
                      {"bytes", l.bytes},
                      {"bits_per_weight", l.parameters > 0 ? 8.0 * static_cast<double>(l.bytes) / l.parameters : 0.0},
                      {"quantized_tensors", l.quantized_tensors},
                      {"error", l.quantized_tensors > 0 ? error_json(l.error) : ojson(nullptr)}});
  const WeightError total = c.total_error();
  j["summary"] = {{"types", types}, {"layers", layers}, {"error", total.count > 0 ? error_json(total) : ojson(nullptr)}};

  ojson tensors = ojson::array();
  for (const CardTensor& t : c.tensors) {
    ojson tj;
    tj["name"] = t.name;
    tj["role"] = t.role;
    tj["layer"] = t.layer;
    tj["shape"] = t.shape;
    tj["source_dtype"] = t.source_dtype;
    tj["type"] = t.type;
    tj["quantized"] = t.quantized;
    tj["bits_per_weight"] = t.bits_per_weight;
    tj["bytes"] = t.bytes;
    tj["source_bytes"] = t.source_bytes;
    tj["reason_kind"] = t.reason_kind;
    tj["reason"] = t.reason;
    tj["error"] = t.error ? error_json(*t.error) : ojson(nullptr);
    tj["error_note"] = t.error_note;
    tensors.push_back(std::move(tj));
  }
  j["tensors"] = tensors;
  j["notes"] = c.notes;
  const CardEvaluation& e = c.evaluation;
  ojson ej;
  ej["measured"] = e.measured;
  ej["reason"] = e.measured ? ojson(nullptr) : ojson(e.reason);
  auto num = [&](double v) { return e.measured ? number_or_null(v) : ojson(nullptr); };
  auto integer = [&](int64_t v) { return e.measured ? ojson(v) : ojson(nullptr); };
  ej["text"] = e.measured ? file_json(e.text) : ojson(nullptr);
  ej["protocol"] = e.measured ? ojson(e.protocol) : ojson(nullptr);
  ej["ctx"] = integer(e.ctx);
  ej["windows"] = integer(e.windows);
  ej["windows_total"] = integer(e.windows_total);
  ej["tokens_scored"] = integer(e.tokens_scored);
  ej["ppl"] = num(e.ppl);
  ej["ppl_source"] = num(e.ppl_source);
  ej["ln_ppl_ratio"] = num(e.ln_ppl_ratio);
  ej["kld"] = e.measured ? ojson{{"mean", number_or_null(e.kld_mean)},
                                 {"median", number_or_null(e.kld_median)},
                                 {"p90", number_or_null(e.kld_p90)},
                                 {"p99", number_or_null(e.kld_p99)},
                                 {"max", number_or_null(e.kld_max)}}
                         : ojson(nullptr);
  ej["top1_agreement"] = num(e.top1_agreement);
  ej["delta_p_rms"] = num(e.delta_p_rms);
  j["evaluation"] = ej;
  j["speed"] = {{"measured", c.speed.measured},
                {"reason", c.speed.measured ? ojson(nullptr) : ojson(c.speed.reason)},
                {"prefill_tokens_per_second", opt(c.speed.prefill_tokens_per_second)},
                {"decode_tokens_per_second", opt(c.speed.decode_tokens_per_second)},
                {"peak_rss_bytes", opt(c.speed.peak_rss_bytes)}};
  if (c.sweep_json) j["sweep"] = ojson::parse(*c.sweep_json);
  return j.dump(2) + "\n";
}

// ---------------------------------------------------------------------------------------------
// Reading (validating)

namespace {

class Reader {
 public:
  explicit Reader(std::string label) : label_(std::move(label)) {}

  Status fail(const std::string& path, const std::string& what) const {
    return parse_error(label_ + ": " + (path.empty() ? "top level" : path) + ": " + what);
  }
  Expected<const ojson*> field(const ojson& obj, const std::string& path, const char* key) const {
    if (!obj.is_object()) return fail(path, "expected an object");
    auto it = obj.find(key);
    if (it == obj.end()) return fail(join(path, key), "missing");
    return &*it;
  }
  Expected<std::string> str(const ojson& obj, const std::string& path, const char* key) const {
    QFORGE_ASSIGN_OR_RETURN(const ojson* v, field(obj, path, key));
    if (!v->is_string()) return fail(join(path, key), "expected a string, got " + std::string(v->type_name()));
    return v->get<std::string>();
  }
  Expected<std::optional<std::string>> opt_str(const ojson& obj, const std::string& path, const char* key) const {
    QFORGE_ASSIGN_OR_RETURN(const ojson* v, field(obj, path, key));
    if (v->is_null()) return std::optional<std::string>();
    if (!v->is_string()) return fail(join(path, key), "expected a string or null, got " + std::string(v->type_name()));
    return std::optional<std::string>(v->get<std::string>());
  }
  Expected<bool> boolean(const ojson& obj, const std::string& path, const char* key) const {
    QFORGE_ASSIGN_OR_RETURN(const ojson* v, field(obj, path, key));
    if (!v->is_boolean()) return fail(join(path, key), "expected true or false, got " + std::string(v->type_name()));
    return v->get<bool>();
  }
  Expected<uint64_t> uint(const ojson& obj, const std::string& path, const char* key) const {
    QFORGE_ASSIGN_OR_RETURN(const ojson* v, field(obj, path, key));
    if (!v->is_number_unsigned() && !(v->is_number_integer() && v->get<int64_t>() >= 0))
      return fail(join(path, key), "expected an unsigned integer, got " + describe(*v));
    return v->get<uint64_t>();
  }
  Expected<int64_t> integer(const ojson& obj, const std::string& path, const char* key) const {
    QFORGE_ASSIGN_OR_RETURN(const ojson* v, field(obj, path, key));
    if (!v->is_number_integer()) return fail(join(path, key), "expected an integer, got " + describe(*v));
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      return fail(join(path, key), "integer out of range");
    return v->get<int64_t>();
  }
  Expected<double> number(const ojson& obj, const std::string& path, const char* key) const {
    QFORGE_ASSIGN_OR_RETURN(const ojson* v, field(obj, path, key));
    if (!v->is_number()) return fail(join(path, key), "expected a number, got " + describe(*v));
    return v->get<double>();
  }
  Expected<std::optional<double>> opt_number(const ojson& obj, const std::string& path, const char* key) const {
    QFORGE_ASSIGN_OR_RETURN(const ojson* v, field(obj, path, key));
    if (v->is_null()) return std::optional<double>();
    if (!v->is_number()) return fail(join(path, key), "expected a number or null, got " + describe(*v));
    return std::optional<double>(v->get<double>());
  }
  Expected<const ojson*> object(const ojson& obj, const std::string& path, const char* key, bool nullable) const {
    QFORGE_ASSIGN_OR_RETURN(const ojson* v, field(obj, path, key));
    if (nullable && v->is_null()) return static_cast<const ojson*>(nullptr);
    if (!v->is_object())
      return fail(join(path, key), std::string("expected an object") + (nullable ? " or null" : "") + ", got " +
                                       describe(*v));
    return v;
  }
  Expected<const ojson*> array(const ojson& obj, const std::string& path, const char* key) const {
    QFORGE_ASSIGN_OR_RETURN(const ojson* v, field(obj, path, key));
    if (!v->is_array()) return fail(join(path, key), "expected an array, got " + describe(*v));
    return v;
  }
  Status one_of(const std::string& value, const std::string& path, std::initializer_list<const char*> allowed) const {
    std::string list;
    for (const char* a : allowed) {
      if (value == a) return Status::ok();
      list += (list.empty() ? "" : ", ") + std::string(a);
    }
    return fail(path, "'" + value + "' is not one of: " + list);
  }
  static std::string join(const std::string& path, const std::string& key) { return path.empty() ? key : path + "." + key; }
  static std::string index(const std::string& path, size_t i) { return path + "[" + std::to_string(i) + "]"; }

 private:
  static std::string describe(const ojson& v) {
    if (v.is_number()) return "a non-integer or negative number (" + v.dump() + ")";
    return v.type_name();
  }
  std::string label_;
};

Expected<CardFile> read_file_entry(const Reader& r, const ojson& o, const std::string& path) {
  CardFile f;
  QFORGE_ASSIGN_OR_RETURN(f.path, r.str(o, path, "path"));
  QFORGE_ASSIGN_OR_RETURN(f.bytes, r.uint(o, path, "bytes"));
  QFORGE_ASSIGN_OR_RETURN(f.sha256, r.str(o, path, "sha256"));
  if (f.sha256.size() != 64 || f.sha256.find_first_not_of("0123456789abcdef") != std::string::npos)
    return r.fail(Reader::join(path, "sha256"), "expected 64 lowercase hex digits");
  return f;
}

Expected<std::vector<CardFile>> read_files(const Reader& r, const ojson& o, const std::string& path, const char* key) {
  QFORGE_ASSIGN_OR_RETURN(const ojson* a, r.array(o, path, key));
  std::vector<CardFile> out;
  for (size_t i = 0; i < a->size(); ++i) {
    QFORGE_ASSIGN_OR_RETURN(CardFile f, read_file_entry(r, (*a)[i], Reader::index(Reader::join(path, key), i)));
    out.push_back(std::move(f));
  }
  return out;
}

Expected<std::optional<WeightError>> read_error(const Reader& r, const ojson& o, const std::string& path,
                                                const char* key) {
  QFORGE_ASSIGN_OR_RETURN(const ojson* e, r.object(o, path, key, true));
  if (e == nullptr) return std::optional<WeightError>();
  const std::string p = Reader::join(path, key);
  WeightError w;
  QFORGE_ASSIGN_OR_RETURN(w.signal, r.number(*e, p, "signal"));
  QFORGE_ASSIGN_OR_RETURN(w.noise, r.number(*e, p, "noise"));
  QFORGE_ASSIGN_OR_RETURN(w.max_abs, r.number(*e, p, "max_abs"));
  QFORGE_ASSIGN_OR_RETURN(w.count, r.integer(*e, p, "count"));
  if (w.signal < 0 || w.noise < 0 || w.max_abs < 0 || w.count < 0)
    return r.fail(p, "signal, noise, max_abs and count must be >= 0");
  QFORGE_ASSIGN_OR_RETURN(std::optional<double> rel, r.opt_number(*e, p, "rel_l2"));
  QFORGE_ASSIGN_OR_RETURN(std::optional<double> sqnr, r.opt_number(*e, p, "sqnr_db"));
  // The stored derived values must agree with the sums they are derived from.
  const double want_rel = w.rel_l2();
  if (std::isfinite(want_rel) != rel.has_value() || (rel && std::fabs(*rel - want_rel) > 1e-9 * std::max(1.0, want_rel)))
    return r.fail(Reader::join(p, "rel_l2"), "does not match sqrt(noise / signal)");
  const std::optional<double> want_sqnr = w.sqnr_db();
  if (want_sqnr.has_value() != sqnr.has_value() || (sqnr && std::fabs(*sqnr - *want_sqnr) > 1e-9 * std::max(1.0, std::fabs(*want_sqnr))))
    return r.fail(Reader::join(p, "sqnr_db"), "does not match 10 log10(signal / noise)");
  return std::optional<WeightError>(w);
}

}  // namespace

Expected<Card> card_from_json(const std::string& text, const std::string& label) {
  ojson j = ojson::parse(text, nullptr, false);
  if (j.is_discarded()) return parse_error(label + ": not valid JSON");
  Reader r(label);
  if (!j.is_object()) return r.fail("", "expected a JSON object");
  Card c;
  QFORGE_ASSIGN_OR_RETURN(std::string schema, r.str(j, "", "schema"));
  if (schema != kCardSchemaId) return r.fail("schema", "expected '" + std::string(kCardSchemaId) + "', got '" + schema + "'");
  QFORGE_ASSIGN_OR_RETURN(int64_t version, r.integer(j, "", "schema_version"));
  if (version != kCardSchemaVersion)
    return r.fail("schema_version", "version " + std::to_string(version) + " is not supported (this qforge reads " +
                                        std::to_string(kCardSchemaVersion) + ")");
  c.schema_version = static_cast<int>(version);

  QFORGE_ASSIGN_OR_RETURN(const ojson* s, r.object(j, "", "source", false));
  QFORGE_ASSIGN_OR_RETURN(c.source.path, r.str(*s, "source", "path"));
  QFORGE_ASSIGN_OR_RETURN(c.source.kind, r.str(*s, "source", "kind"));
  QFORGE_RETURN_IF_ERROR(r.one_of(c.source.kind, "source.kind", {"hf-directory", "safetensors", "llama2c", "gguf"}));
  QFORGE_ASSIGN_OR_RETURN(c.source.files, read_files(r, *s, "source", "files"));
  QFORGE_ASSIGN_OR_RETURN(c.source.total_bytes, r.uint(*s, "source", "total_bytes"));
  QFORGE_ASSIGN_OR_RETURN(c.source.architecture, r.str(*s, "source", "architecture"));
  QFORGE_ASSIGN_OR_RETURN(c.source.parameters, r.integer(*s, "source", "parameters"));
  QFORGE_ASSIGN_OR_RETURN(c.source.layers, r.integer(*s, "source", "layers"));

  QFORGE_ASSIGN_OR_RETURN(const ojson* o, r.object(j, "", "output", false));
  QFORGE_ASSIGN_OR_RETURN(c.output.path, r.str(*o, "output", "path"));
  QFORGE_ASSIGN_OR_RETURN(c.output.format, r.str(*o, "output", "format"));
  QFORGE_RETURN_IF_ERROR(r.one_of(c.output.format, "output.format", {"qforge-packed", "gguf", "gptq", "awq"}));
  QFORGE_ASSIGN_OR_RETURN(c.output.files, read_files(r, *o, "output", "files"));
  QFORGE_ASSIGN_OR_RETURN(c.output.total_bytes, r.uint(*o, "output", "total_bytes"));
  QFORGE_ASSIGN_OR_RETURN(c.output.tensor_bytes, r.uint(*o, "output", "tensor_bytes"));
  QFORGE_ASSIGN_OR_RETURN(c.output.bits_per_weight, r.number(*o, "output", "bits_per_weight"));
  QFORGE_ASSIGN_OR_RETURN(c.output.quantized_bits_per_weight, r.number(*o, "output", "quantized_bits_per_weight"));
  QFORGE_ASSIGN_OR_RETURN(c.output.size_ratio, r.number(*o, "output", "size_ratio"));

  QFORGE_ASSIGN_OR_RETURN(const ojson* t, r.object(j, "", "tool", false));
  QFORGE_ASSIGN_OR_RETURN(std::string tool_name, r.str(*t, "tool", "name"));
  if (tool_name != "qforge") return r.fail("tool.name", "expected 'qforge'");
  QFORGE_ASSIGN_OR_RETURN(c.tool.version, r.str(*t, "tool", "version"));
  QFORGE_ASSIGN_OR_RETURN(c.tool.command, r.str(*t, "tool", "command"));
  {
    QFORGE_ASSIGN_OR_RETURN(const ojson* seed, r.field(*t, "tool", "seed"));
    if (!seed->is_null()) {
      QFORGE_ASSIGN_OR_RETURN(uint64_t v, r.uint(*t, "tool", "seed"));
      c.tool.seed = v;
    }
  }
  QFORGE_ASSIGN_OR_RETURN(const ojson* mach, r.object(*t, "tool", "machine", false));
  QFORGE_ASSIGN_OR_RETURN(c.tool.machine.cpu, r.str(*mach, "tool.machine", "cpu"));
  QFORGE_ASSIGN_OR_RETURN(c.tool.machine.isa, r.str(*mach, "tool.machine", "isa"));
  QFORGE_ASSIGN_OR_RETURN(c.tool.machine.gpu, r.str(*mach, "tool.machine", "gpu"));

  QFORGE_ASSIGN_OR_RETURN(const ojson* sc, r.object(j, "", "scheme", true));
  if (sc != nullptr) {
    CardScheme k;
    QFORGE_ASSIGN_OR_RETURN(k.name, r.str(*sc, "scheme", "name"));
    QFORGE_ASSIGN_OR_RETURN(k.family, r.str(*sc, "scheme", "family"));
    QFORGE_ASSIGN_OR_RETURN(int64_t bits, r.integer(*sc, "scheme", "bits"));
    if (bits < 1 || bits > 32) return r.fail("scheme.bits", "expected 1..32");
    k.bits = static_cast<int>(bits);
    QFORGE_ASSIGN_OR_RETURN(k.granularity, r.str(*sc, "scheme", "granularity"));
    QFORGE_RETURN_IF_ERROR(r.one_of(k.granularity, "scheme.granularity", {"tensor", "channel", "group"}));
    QFORGE_ASSIGN_OR_RETURN(k.group_size, r.integer(*sc, "scheme", "group_size"));
    QFORGE_ASSIGN_OR_RETURN(k.symmetric, r.boolean(*sc, "scheme", "symmetric"));
    c.scheme = k;
  }

  QFORGE_ASSIGN_OR_RETURN(const ojson* m, r.object(j, "", "method", false));
  CardMethod& cm = c.method;
  QFORGE_ASSIGN_OR_RETURN(cm.name, r.str(*m, "method", "name"));
  QFORGE_RETURN_IF_ERROR(
      r.one_of(cm.name, "method.name", {"rtn", "gptq", "awq", "awq+gptq", "smoothquant", "gguf-preset"}));
  QFORGE_ASSIGN_OR_RETURN(cm.error_reference, r.str(*m, "method", "error_reference"));
  QFORGE_RETURN_IF_ERROR(r.one_of(cm.error_reference, "method.error_reference", {"source", "rescaled"}));
  QFORGE_ASSIGN_OR_RETURN(cm.filter, r.str(*m, "method", "filter"));
  QFORGE_ASSIGN_OR_RETURN(cm.keep, r.str(*m, "method", "keep"));
  QFORGE_ASSIGN_OR_RETURN(const ojson* g, r.object(*m, "method", "gptq", true));
  if (g != nullptr) {
    CardGptq v;
    QFORGE_ASSIGN_OR_RETURN(v.damp, r.number(*g, "method.gptq", "damp"));
    QFORGE_ASSIGN_OR_RETURN(v.block_size, r.integer(*g, "method.gptq", "block_size"));
    QFORGE_ASSIGN_OR_RETURN(v.act_order, r.boolean(*g, "method.gptq", "act_order"));
    QFORGE_ASSIGN_OR_RETURN(v.static_groups, r.boolean(*g, "method.gptq", "static_groups"));
    QFORGE_ASSIGN_OR_RETURN(v.sequential, r.boolean(*g, "method.gptq", "sequential"));
    // Recorded since the card's first version; optional so older cards still read.
    if (g->contains("mse_clip")) {
      QFORGE_ASSIGN_OR_RETURN(v.mse_clip, r.boolean(*g, "method.gptq", "mse_clip"));
    }
    if (g->contains("refit_passes")) {
      QFORGE_ASSIGN_OR_RETURN(v.refit_passes, r.integer(*g, "method.gptq", "refit_passes"));
      if (v.refit_passes < 0) return r.fail("method.gptq.refit_passes", "must be >= 0");
    }
    cm.gptq = v;
  }
  QFORGE_ASSIGN_OR_RETURN(const ojson* a, r.object(*m, "method", "awq", true));
  if (a != nullptr) {
    CardAwq v;
    QFORGE_ASSIGN_OR_RETURN(int64_t grid, r.integer(*a, "method.awq", "grid"));
    QFORGE_ASSIGN_OR_RETURN(v.clip, r.boolean(*a, "method.awq", "clip"));
    QFORGE_ASSIGN_OR_RETURN(int64_t clip_grid, r.integer(*a, "method.awq", "clip_grid"));
    QFORGE_ASSIGN_OR_RETURN(v.max_shrink, r.number(*a, "method.awq", "max_shrink"));
    v.grid = static_cast<int>(std::clamp<int64_t>(grid, 0, 1 << 20));
    v.clip_grid = static_cast<int>(std::clamp<int64_t>(clip_grid, 0, 1 << 20));
    cm.awq = v;
  }
  QFORGE_ASSIGN_OR_RETURN(const ojson* sq, r.object(*m, "method", "smoothquant", true));
  if (sq != nullptr) {
    QFORGE_ASSIGN_OR_RETURN(double alpha, r.number(*sq, "method.smoothquant", "alpha"));
    cm.smoothquant_alpha = alpha;
  }
  QFORGE_ASSIGN_OR_RETURN(const ojson* act, r.object(*m, "method", "activations", true));
  if (act != nullptr) {
    CardActivations v;
    QFORGE_ASSIGN_OR_RETURN(v.scheme, r.str(*act, "method.activations", "scheme"));
    QFORGE_ASSIGN_OR_RETURN(v.observer, r.str(*act, "method.activations", "observer"));
    cm.activations = v;
  }
  QFORGE_ASSIGN_OR_RETURN(const ojson* gg, r.object(*m, "method", "gguf", true));
  if (gg != nullptr) {
    CardGguf v;
    const std::string p = "method.gguf";
    QFORGE_ASSIGN_OR_RETURN(v.preset, r.str(*gg, p, "preset"));
    QFORGE_ASSIGN_OR_RETURN(v.default_type, r.str(*gg, p, "default_type"));
    QFORGE_ASSIGN_OR_RETURN(v.pure, r.boolean(*gg, p, "pure"));
    QFORGE_ASSIGN_OR_RETURN(v.allow_fallback, r.boolean(*gg, p, "allow_fallback"));
    QFORGE_ASSIGN_OR_RETURN(const ojson* ov, r.array(*gg, p, "overrides"));
    for (size_t i = 0; i < ov->size(); ++i) {
      if (!(*ov)[i].is_string()) return r.fail(Reader::index(p + ".overrides", i), "expected a string");
      v.overrides.push_back((*ov)[i].get<std::string>());
    }
    QFORGE_ASSIGN_OR_RETURN(v.output_tensor_type, r.str(*gg, p, "output_tensor_type"));
    QFORGE_ASSIGN_OR_RETURN(v.token_embedding_type, r.str(*gg, p, "token_embedding_type"));
    QFORGE_ASSIGN_OR_RETURN(const ojson* im, r.object(*gg, p, "imatrix", true));
    if (im != nullptr) {
      QFORGE_ASSIGN_OR_RETURN(CardFile f, read_file_entry(r, *im, p + ".imatrix"));
      v.imatrix = f;
    }
    cm.gguf = v;
  }
  QFORGE_ASSIGN_OR_RETURN(cm.batch_windows, r.integer(*m, "method", "batch_windows"));
  QFORGE_ASSIGN_OR_RETURN(cm.hidden_dtype, r.str(*m, "method", "hidden_dtype"));

  QFORGE_ASSIGN_OR_RETURN(const ojson* cal, r.object(j, "", "calibration", true));
  if (cal != nullptr) {
    CardCalibration k;
    QFORGE_ASSIGN_OR_RETURN(const ojson* f, r.object(*cal, "calibration", "file", false));
    QFORGE_ASSIGN_OR_RETURN(k.file, read_file_entry(r, *f, "calibration.file"));
    QFORGE_ASSIGN_OR_RETURN(k.file_tokens, r.integer(*cal, "calibration", "file_tokens"));
    QFORGE_ASSIGN_OR_RETURN(k.windows, r.integer(*cal, "calibration", "windows"));
    QFORGE_ASSIGN_OR_RETURN(k.ctx, r.integer(*cal, "calibration", "ctx"));
    QFORGE_ASSIGN_OR_RETURN(k.tokens_used, r.integer(*cal, "calibration", "tokens_used"));
    QFORGE_ASSIGN_OR_RETURN(k.seed, r.uint(*cal, "calibration", "seed"));
    c.calibration = k;
  }
  // "summary" is derived from the tensors; it must be present (schema) but is recomputed.
  QFORGE_RETURN_IF_ERROR(r.object(j, "", "summary", false).status());

  QFORGE_ASSIGN_OR_RETURN(const ojson* ts, r.array(j, "", "tensors"));
  std::set<std::string> names;
  for (size_t i = 0; i < ts->size(); ++i) {
    const std::string p = Reader::index("tensors", i);
    const ojson& tj = (*ts)[i];
    CardTensor x;
    QFORGE_ASSIGN_OR_RETURN(x.name, r.str(tj, p, "name"));
    if (!names.insert(x.name).second) return r.fail(p + ".name", "duplicate tensor '" + x.name + "'");
    QFORGE_ASSIGN_OR_RETURN(x.role, r.str(tj, p, "role"));
    QFORGE_ASSIGN_OR_RETURN(int64_t layer, r.integer(tj, p, "layer"));
    if (layer < -1 || layer > (1 << 20)) return r.fail(p + ".layer", "expected -1 or a layer index");
    x.layer = static_cast<int>(layer);
    QFORGE_ASSIGN_OR_RETURN(const ojson* shape, r.array(tj, p, "shape"));
    for (size_t d = 0; d < shape->size(); ++d) {
      const ojson& v = (*shape)[d];
      if (!v.is_number_integer() || v.get<int64_t>() < 0) return r.fail(Reader::index(p + ".shape", d), "expected a dimension >= 0");
      x.shape.push_back(v.get<int64_t>());
    }
    QFORGE_ASSIGN_OR_RETURN(x.source_dtype, r.str(tj, p, "source_dtype"));
    QFORGE_ASSIGN_OR_RETURN(x.type, r.str(tj, p, "type"));
    QFORGE_ASSIGN_OR_RETURN(x.quantized, r.boolean(tj, p, "quantized"));
    QFORGE_ASSIGN_OR_RETURN(x.bits_per_weight, r.number(tj, p, "bits_per_weight"));
    QFORGE_ASSIGN_OR_RETURN(x.bytes, r.uint(tj, p, "bytes"));
    QFORGE_ASSIGN_OR_RETURN(x.source_bytes, r.uint(tj, p, "source_bytes"));
    QFORGE_ASSIGN_OR_RETURN(x.reason_kind, r.str(tj, p, "reason_kind"));
    QFORGE_RETURN_IF_ERROR(r.one_of(x.reason_kind, p + ".reason_kind",
                                    {"scheme", "preset-default", "preset-rule", "override", "pure", "not-selected",
                                     "keep-regex", "incompatible", "fallback", "non-weight", "preset-float"}));
    QFORGE_ASSIGN_OR_RETURN(x.reason, r.str(tj, p, "reason"));
    QFORGE_ASSIGN_OR_RETURN(x.error, read_error(r, tj, p, "error"));
    QFORGE_ASSIGN_OR_RETURN(x.error_note, r.str(tj, p, "error_note"));
    c.tensors.push_back(std::move(x));
  }
  QFORGE_ASSIGN_OR_RETURN(const ojson* notes, r.array(j, "", "notes"));
  for (size_t i = 0; i < notes->size(); ++i) {
    if (!(*notes)[i].is_string()) return r.fail(Reader::index("notes", i), "expected a string");
    c.notes.push_back((*notes)[i].get<std::string>());
  }

  QFORGE_ASSIGN_OR_RETURN(const ojson* ev, r.object(j, "", "evaluation", false));
  CardEvaluation& e = c.evaluation;
  QFORGE_ASSIGN_OR_RETURN(e.measured, r.boolean(*ev, "evaluation", "measured"));
  if (!e.measured) {
    QFORGE_ASSIGN_OR_RETURN(e.reason, r.str(*ev, "evaluation", "reason"));
    for (const char* k : {"text", "protocol", "ctx", "windows", "windows_total", "tokens_scored", "ppl", "ppl_source",
                          "ln_ppl_ratio", "kld", "top1_agreement", "delta_p_rms"}) {
      QFORGE_ASSIGN_OR_RETURN(const ojson* v, r.field(*ev, "evaluation", k));
      if (!v->is_null()) return r.fail(std::string("evaluation.") + k, "must be null when measured is false");
    }
  } else {
    const std::string p = "evaluation";
    QFORGE_ASSIGN_OR_RETURN(const ojson* tx, r.object(*ev, p, "text", false));
    QFORGE_ASSIGN_OR_RETURN(e.text, read_file_entry(r, *tx, p + ".text"));
    QFORGE_ASSIGN_OR_RETURN(e.protocol, r.str(*ev, p, "protocol"));
    QFORGE_ASSIGN_OR_RETURN(e.ctx, r.integer(*ev, p, "ctx"));
    QFORGE_ASSIGN_OR_RETURN(e.windows, r.integer(*ev, p, "windows"));
    QFORGE_ASSIGN_OR_RETURN(e.windows_total, r.integer(*ev, p, "windows_total"));
    QFORGE_ASSIGN_OR_RETURN(e.tokens_scored, r.integer(*ev, p, "tokens_scored"));
    QFORGE_ASSIGN_OR_RETURN(e.ppl, r.number(*ev, p, "ppl"));
    QFORGE_ASSIGN_OR_RETURN(e.ppl_source, r.number(*ev, p, "ppl_source"));
    QFORGE_ASSIGN_OR_RETURN(e.ln_ppl_ratio, r.number(*ev, p, "ln_ppl_ratio"));
    QFORGE_ASSIGN_OR_RETURN(const ojson* k, r.object(*ev, p, "kld", false));
    QFORGE_ASSIGN_OR_RETURN(e.kld_mean, r.number(*k, p + ".kld", "mean"));
    QFORGE_ASSIGN_OR_RETURN(e.kld_median, r.number(*k, p + ".kld", "median"));
    QFORGE_ASSIGN_OR_RETURN(e.kld_p90, r.number(*k, p + ".kld", "p90"));
    QFORGE_ASSIGN_OR_RETURN(e.kld_p99, r.number(*k, p + ".kld", "p99"));
    QFORGE_ASSIGN_OR_RETURN(e.kld_max, r.number(*k, p + ".kld", "max"));
    QFORGE_ASSIGN_OR_RETURN(e.top1_agreement, r.number(*ev, p, "top1_agreement"));
    QFORGE_ASSIGN_OR_RETURN(e.delta_p_rms, r.number(*ev, p, "delta_p_rms"));
  }
  QFORGE_ASSIGN_OR_RETURN(const ojson* sp, r.object(j, "", "speed", false));
  QFORGE_ASSIGN_OR_RETURN(c.speed.measured, r.boolean(*sp, "speed", "measured"));
  if (!c.speed.measured) {
    QFORGE_ASSIGN_OR_RETURN(c.speed.reason, r.str(*sp, "speed", "reason"));
  }
  QFORGE_ASSIGN_OR_RETURN(c.speed.prefill_tokens_per_second, r.opt_number(*sp, "speed", "prefill_tokens_per_second"));
  QFORGE_ASSIGN_OR_RETURN(c.speed.decode_tokens_per_second, r.opt_number(*sp, "speed", "decode_tokens_per_second"));
  {
    QFORGE_ASSIGN_OR_RETURN(const ojson* rss, r.field(*sp, "speed", "peak_rss_bytes"));
    if (!rss->is_null()) {
      QFORGE_ASSIGN_OR_RETURN(uint64_t v, r.uint(*sp, "speed", "peak_rss_bytes"));
      c.speed.peak_rss_bytes = v;
    }
  }
  if (auto it = j.find("sweep"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return r.fail("sweep", "expected an object or null");
    QFORGE_ASSIGN_OR_RETURN(const ojson* pts, r.array(*it, "sweep", "points"));
    for (size_t i = 0; i < pts->size(); ++i) {
      const std::string p = Reader::index("sweep.points", i);
      QFORGE_RETURN_IF_ERROR(r.str((*pts)[i], p, "label").status());
      QFORGE_RETURN_IF_ERROR(r.number((*pts)[i], p, "bits_per_weight").status());
      QFORGE_RETURN_IF_ERROR(r.opt_number((*pts)[i], p, "kld_mean").status());
    }
    c.sweep_json = it->dump();
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Files

std::string card_base_path(const std::string& output) {
  std::string base = output;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  return base;
}

Status write_card_files(const Card& card, const std::string& base) {
  QFORGE_RETURN_IF_ERROR(write_file_atomic(base + ".card.json", card_to_json(card)));
  QFORGE_RETURN_IF_ERROR(write_file_atomic(base + ".card.md", render_card_markdown(card)));
  QFORGE_RETURN_IF_ERROR(write_file_atomic(base + ".card.html", render_card_html(card)));
  return Status::ok();
}

Expected<std::vector<CardFile>> describe_files(const std::vector<std::string>& paths) {
  std::vector<CardFile> out;
  for (const std::string& p : paths) {
    CardFile f;
    f.path = p;
    std::error_code ec;
    f.bytes = static_cast<uint64_t>(fs::file_size(p, ec));
    if (ec) return io_error("cannot stat " + p + ": " + ec.message());
    QFORGE_ASSIGN_OR_RETURN(f.sha256, sha256_file(p));
    out.push_back(std::move(f));
  }
  return out;
}

Expected<std::vector<CardFile>> describe_path(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return describe_files({path});
  std::vector<std::string> paths;
  for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec))
    if (it->is_regular_file(ec)) paths.push_back(it->path().string());
  if (ec) return io_error("cannot list " + path + ": " + ec.message());
  std::sort(paths.begin(), paths.end());
  return describe_files(paths);
}

CardMachine card_machine() {
  CardMachine m;
  m.cpu = "unknown";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string v = line.substr(colon + 1);
        const size_t b = v.find_first_not_of(" \t");
        m.cpu = b == std::string::npos ? "unknown" : v.substr(b);
      }
      break;
    }
  }
  m.isa = kernels::isa_name(kernels::active_isa());
  const BackendInfo cuda = find_backend("cuda");
  m.gpu = cuda.available && !cuda.device.empty() ? cuda.device : "none";
  return m;
}

}  // namespace qforge
