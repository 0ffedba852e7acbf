// HF GPTQ / AWQ checkpoints: packing qforge int tensors into the formats' int32 words, unpacking
// them back, and writing the model directory (layouts: include/qforge/hf_quant.h, docs/formats.md).
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numeric>
#include <cmath>

#include "qforge/atomic_file.h"
#include "qforge/hf_quant.h"
#include "qforge/safetensors.h"

namespace qforge {
namespace {

bool is_int_format(FormatId id) { return id == FormatId::int_sym || id == FormatId::int_asym; }

uint32_t load_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
void store_le32(uint32_t v, uint8_t* p) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}
int32_t as_i32(uint32_t v) {
  int32_t r;
  std::memcpy(&r, &v, 4);
  return r;
}
uint32_t as_u32(int32_t v) {
  uint32_t r;
  std::memcpy(&r, &v, 4);
  return r;
}

// GPTQ packs n codes of `bits` as one little-endian bit stream in 32-bit words: exactly qforge's
// bit stream (format.h pack_bits) read four bytes at a time, so both directions go through it.
void stream_to_words(const uint8_t* codes, int64_t n, int bits, std::vector<uint8_t>& scratch, int32_t* words,
                     int64_t stride) {
  scratch.assign(packed_size(n, bits), 0);
  pack_bits(codes, n, bits, scratch.data());
  const int64_t n_words = n * bits / 32;
  for (int64_t w = 0; w < n_words; ++w) words[w * stride] = as_i32(load_le32(scratch.data() + 4 * w));
}
void words_to_stream(const int32_t* words, int64_t stride, int64_t n, int bits, std::vector<uint8_t>& scratch,
                     uint8_t* codes) {
  const int64_t n_words = n * bits / 32;
  scratch.assign(static_cast<size_t>(n_words) * 4, 0);
  for (int64_t w = 0; w < n_words; ++w) store_le32(as_u32(words[w * stride]), scratch.data() + 4 * w);
  unpack_bits(scratch.data(), n, bits, codes);
}

// AWQ GEMM: 8 nibbles per word along the output dimension in kAwqOrder.
int32_t awq_pack_word(const uint8_t* eight_codes) {
  uint32_t w = 0;
  for (int k = 0; k < 8; ++k) w |= static_cast<uint32_t>(eight_codes[kAwqOrder[k]] & 0xF) << (4 * k);
  return as_i32(w);
}
void awq_unpack_word(int32_t word, uint8_t* eight_codes) {
  const uint32_t w = as_u32(word);
  for (int k = 0; k < 8; ++k) eight_codes[kAwqOrder[k]] = static_cast<uint8_t>((w >> (4 * k)) & 0xF);
}

int64_t groups_of(const Scheme& s, int64_t cols) { return s.granularity == Granularity::group ? cols / s.group_size : 1; }

}  // namespace

const char* hf_quant_format_name(HfQuantFormat f) { return f == HfQuantFormat::gptq ? "gptq" : "awq"; }

Expected<HfQuantFormat> parse_hf_quant_format(const std::string& name) {
  if (name == "gptq") return HfQuantFormat::gptq;
  if (name == "awq") return HfQuantFormat::awq;
  return invalid_argument("unknown HF quantized format '" + name + "' (expected gptq or awq)");
}

Shape HfQuantLinear::qweight_shape() const {
  if (format == HfQuantFormat::gptq) return {in_features * bits / 32, out_features};
  return {in_features, out_features * bits / 32};
}
Shape HfQuantLinear::qzeros_shape() const { return {in_features / group_size, out_features * bits / 32}; }
Shape HfQuantLinear::scales_shape() const { return {in_features / group_size, out_features}; }

Status check_hf_quant_compatible(HfQuantFormat format, const Scheme& scheme, int64_t rows, int64_t cols) {
  const std::string what = std::string(hf_quant_format_name(format)) + " export of " + scheme.name() + " [" +
                           std::to_string(rows) + ", " + std::to_string(cols) + "]";
  if (!is_int_format(scheme.format))
    return unsupported(what + ": only int-sym and int-asym schemes have a " + hf_quant_format_name(format) + " layout");
  if (scheme.granularity == Granularity::tensor)
    return unsupported(what + ": per-tensor scales have no " + std::string(hf_quant_format_name(format)) +
                       " layout (use a group or per-channel scheme)");
  QFORGE_RETURN_IF_ERROR(validate_scheme(scheme, rows, cols).with_context(what));
  if (format == HfQuantFormat::gptq) {
    if (scheme.bits != 2 && scheme.bits != 3 && scheme.bits != 4 && scheme.bits != 8)
      return unsupported(what + ": GPTQ packs 2, 3, 4 or 8 bits");
    if ((cols * scheme.bits) % 32 != 0)
      return unsupported(what + ": in_features * bits must fill whole 32-bit words (in_features multiple of " +
                         std::to_string(32 / std::gcd(32, scheme.bits)) + ")");
    if ((rows * scheme.bits) % 32 != 0)
      return unsupported(what + ": out_features * bits must fill whole 32-bit words (qzeros)");
  } else {
    if (scheme.bits != 4) return unsupported(what + ": AWQ GEMM packs 4 bits only");
    if (rows % 8 != 0) return unsupported(what + ": out_features must be a multiple of 8");
  }
  return Status::ok();
}

Expected<HfQuantLinear> pack_hf_quant(HfQuantFormat format, const QuantizedTensor& q, int64_t* zero_point_zero_groups) {
  QFORGE_RETURN_IF_ERROR(check_hf_quant_compatible(format, q.scheme, q.rows, q.cols));
  const PlaneSizes sizes = scheme_plane_sizes(q.scheme, q.rows, q.cols);
  if (q.codes.size() != sizes.codes || q.scales.size() != sizes.scales || q.zeros.size() != sizes.zeros)
    return invalid_argument("pack_hf_quant: plane sizes do not match " + q.scheme.name());
  const int bits = q.scheme.bits;
  const int64_t out = q.rows, in = q.cols;
  const int64_t groups = groups_of(q.scheme, in);
  const bool asym = q.scheme.format == FormatId::int_asym;
  const int mid = 1 << (bits - 1);
  const int mask = (1 << bits) - 1;
  const size_t row_bytes = q.packed_row_bytes();

  HfQuantLinear t;
  t.format = format;
  t.bits = bits;
  t.group_size = in / groups;
  t.in_features = in;
  t.out_features = out;
  // Scales: qforge [out, groups] -> [groups, out].
  t.scales.resize(static_cast<size_t>(groups * out));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < groups; ++g) {
      uint16_t h;
      std::memcpy(&h, q.scales.data() + 2 * (o * groups + g), 2);
      t.scales[static_cast<size_t>(g * out + o)] = h;
    }
  auto zero_of = [&](int64_t o, int64_t g) -> int { return asym ? q.zeros[static_cast<size_t>(o * groups + g)] : mid; };
  int64_t zz = 0;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < groups; ++g) zz += zero_of(o, g) == 0;
  if (zero_point_zero_groups) *zero_point_zero_groups = format == HfQuantFormat::gptq ? zz : 0;

  std::vector<uint8_t> scratch, codes(static_cast<size_t>(std::max(in, out)));
  if (format == HfQuantFormat::gptq) {
    const int64_t words_per_col = in * bits / 32;
    t.qweight.resize(static_cast<size_t>(words_per_col * out));
    // The qforge row o is already column o's bit stream: copy its words.
    for (int64_t o = 0; o < out; ++o) {
      const uint8_t* row = q.codes.data() + o * row_bytes;
      for (int64_t w = 0; w < words_per_col; ++w) t.qweight[static_cast<size_t>(w * out + o)] = as_i32(load_le32(row + 4 * w));
    }
    const int64_t zwords = out * bits / 32;
    t.qzeros.resize(static_cast<size_t>(groups * zwords));
    for (int64_t g = 0; g < groups; ++g) {
      // GPTQ v1 stores zero - 1; wrapped to the code width so neighbours are never corrupted.
      for (int64_t o = 0; o < out; ++o) codes[static_cast<size_t>(o)] = static_cast<uint8_t>((zero_of(o, g) - 1) & mask);
      stream_to_words(codes.data(), out, bits, scratch, t.qzeros.data() + g * zwords, 1);
    }
    t.g_idx.resize(static_cast<size_t>(in));
    for (int64_t i = 0; i < in; ++i) t.g_idx[static_cast<size_t>(i)] = static_cast<int32_t>(i / t.group_size);
  } else {
    const int64_t wpr = out / 8;
    t.qweight.assign(static_cast<size_t>(in * wpr), 0);
    std::vector<uint8_t> all(static_cast<size_t>(out * in));  // codes [out, in]
    for (int64_t o = 0; o < out; ++o) unpack_bits(q.codes.data() + o * row_bytes, in, bits, all.data() + o * in);
    uint8_t eight[8];
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < wpr; ++j) {
        for (int k = 0; k < 8; ++k) eight[k] = all[static_cast<size_t>((8 * j + k) * in + i)];
        t.qweight[static_cast<size_t>(i * wpr + j)] = awq_pack_word(eight);
      }
    t.qzeros.assign(static_cast<size_t>(groups * wpr), 0);
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t j = 0; j < wpr; ++j) {
        for (int k = 0; k < 8; ++k) eight[k] = static_cast<uint8_t>(zero_of(8 * j + k, g));
        t.qzeros[static_cast<size_t>(g * wpr + j)] = awq_pack_word(eight);
      }
  }
  return t;
}

Expected<QuantizedTensor> unpack_hf_quant(const HfQuantLinear& t, bool symmetric, bool channel, const std::string& label) {
  const HfQuantFormat format = t.format;
  const int bits = t.bits;
  const int64_t in = t.in_features, out = t.out_features;
  if (in <= 0 || out <= 0 || t.group_size <= 0 || in % t.group_size != 0)
    return invalid_argument(label + ": bad shape (in " + std::to_string(in) + ", out " + std::to_string(out) +
                            ", group_size " + std::to_string(t.group_size) + ")");
  Scheme scheme;
  scheme.format = FormatId::int_asym;
  scheme.bits = bits;
  if (channel) {
    if (t.group_size != in) return invalid_argument(label + ": per-channel scheme with group_size != in_features");
    scheme.granularity = Granularity::channel;
  } else {
    scheme.granularity = Granularity::group;
    scheme.group_size = t.group_size;
  }
  QFORGE_RETURN_IF_ERROR(check_hf_quant_compatible(format, scheme, out, in).with_context(label));
  const int64_t groups = in / t.group_size;
  const int64_t zwords = out * bits / 32;
  const bool gptq = format == HfQuantFormat::gptq;
  const size_t qweight_n = static_cast<size_t>(gptq ? in * bits / 32 * out : in * (out / 8));
  if (t.qweight.size() != qweight_n) return invalid_argument(label + ": qweight has " + std::to_string(t.qweight.size()) +
                                                             " values, expected " + std::to_string(qweight_n));
  if (t.qzeros.size() != static_cast<size_t>(groups * zwords))
    return invalid_argument(label + ": qzeros has " + std::to_string(t.qzeros.size()) + " values, expected " +
                            std::to_string(groups * zwords));
  if (t.scales.size() != static_cast<size_t>(groups * out))
    return invalid_argument(label + ": scales has " + std::to_string(t.scales.size()) + " values, expected " +
                            std::to_string(groups * out));
  if (gptq) {
    if (t.g_idx.size() != static_cast<size_t>(in))
      return invalid_argument(label + ": g_idx has " + std::to_string(t.g_idx.size()) + " values, expected " +
                              std::to_string(in));
    for (int64_t i = 0; i < in; ++i)
      if (t.g_idx[static_cast<size_t>(i)] != i / t.group_size)
        return unsupported(label + ": g_idx[" + std::to_string(i) + "] = " + std::to_string(t.g_idx[static_cast<size_t>(i)]) +
                           ", not i / group_size: act-order checkpoints without static groups are not supported");
  }
  for (size_t k = 0; k < t.scales.size(); ++k) {
    const float s = f16_to_f32(t.scales[k]);
    if (!std::isfinite(s)) return invalid_argument(label + ": scale " + std::to_string(k) + " is not finite");
  }

  // Zero-points [out, groups].
  const int mask = (1 << bits) - 1;
  const int mid = 1 << (bits - 1);
  std::vector<uint8_t> zeros(static_cast<size_t>(out * groups));
  std::vector<uint8_t> scratch, codes(static_cast<size_t>(std::max(in, out)));
  uint8_t eight[8];
  for (int64_t g = 0; g < groups; ++g) {
    if (gptq) {
      words_to_stream(t.qzeros.data() + g * zwords, 1, out, bits, scratch, codes.data());
      for (int64_t o = 0; o < out; ++o)
        zeros[static_cast<size_t>(o * groups + g)] = static_cast<uint8_t>((codes[static_cast<size_t>(o)] + 1) & mask);
    } else {
      for (int64_t j = 0; j < out / 8; ++j) {
        awq_unpack_word(t.qzeros[static_cast<size_t>(g * zwords + j)], eight);
        for (int k = 0; k < 8; ++k) zeros[static_cast<size_t>((8 * j + k) * groups + g)] = eight[k];
      }
    }
  }
  const bool all_mid = std::all_of(zeros.begin(), zeros.end(), [&](uint8_t z) { return z == mid; });
  QuantizedTensor q;
  if (symmetric && all_mid) scheme.format = FormatId::int_sym;
  q.scheme = scheme;
  q.rows = out;
  q.cols = in;
  const PlaneSizes sizes = scheme_plane_sizes(scheme, out, in);
  q.codes.assign(sizes.codes, 0);
  q.scales.resize(sizes.scales);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < groups; ++g) std::memcpy(q.scales.data() + 2 * (o * groups + g), &t.scales[static_cast<size_t>(g * out + o)], 2);
  if (scheme.format == FormatId::int_asym) q.zeros = std::move(zeros);
  const size_t row_bytes = q.packed_row_bytes();
  if (gptq) {
    const int64_t words_per_col = in * bits / 32;
    for (int64_t o = 0; o < out; ++o)
      for (int64_t w = 0; w < words_per_col; ++w)
        store_le32(as_u32(t.qweight[static_cast<size_t>(w * out + o)]), q.codes.data() + o * row_bytes + 4 * w);
  } else {
    const int64_t wpr = out / 8;
    std::vector<uint8_t> all(static_cast<size_t>(out * in));
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < wpr; ++j) {
        awq_unpack_word(t.qweight[static_cast<size_t>(i * wpr + j)], eight);
        for (int k = 0; k < 8; ++k) all[static_cast<size_t>((8 * j + k) * in + i)] = eight[k];
      }
    for (int64_t o = 0; o < out; ++o) pack_bits(all.data() + o * in, in, bits, q.codes.data() + o * row_bytes);
  }
  return q;
}

namespace {

namespace fs = std::filesystem;

// Files of an HF model directory that travel with the weights.
constexpr const char* kCopiedFiles[] = {"tokenizer.model",     "tokenizer.json",    "tokenizer_config.json",
                                        "special_tokens_map.json", "added_tokens.json", "vocab.json",
                                        "merges.txt",          "vocab.txt",         "generation_config.json"};

Status copy_file_atomic(const fs::path& from, const fs::path& to) {
  QFORGE_ASSIGN_OR_RETURN(std::string bytes, read_file(from.string()));
  return write_file_atomic(to.string(), bytes);
}

std::string strip_weight_suffix(const std::string& name) {
  const std::string suffix = ".weight";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return name.substr(0, name.size() - suffix.size());
  return name;
}

// Removes a directory tree we created, on every exit path that does not commit it.
class TempDir {
 public:
  explicit TempDir(fs::path p) : path_(std::move(p)) {}
  ~TempDir() {
    if (!committed_) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  const fs::path& path() const { return path_; }
  void commit() { committed_ = true; }

 private:
  fs::path path_;
  bool committed_ = false;
};

}  // namespace

Expected<HfQuantExportSummary> export_hf_quantized(const std::string& out_dir,
                                                   const std::map<std::string, QuantizedTensor>& quantized,
                                                   const std::map<std::string, Tensor>& plain,
                                                   const HfQuantExportOptions& options) {
  const char* fmt = hf_quant_format_name(options.format);
  if (quantized.empty()) return invalid_argument(std::string(fmt) + " export: no quantized tensors");
  const Scheme scheme = quantized.begin()->second.scheme;
  for (const auto& [name, q] : quantized) {
    if (!(q.scheme == scheme))
      return invalid_argument(std::string(fmt) + " export: tensor '" + name + "' has scheme " + q.scheme.name() +
                              ", others " + scheme.name() + " (one quantization_config describes all)");
    QFORGE_RETURN_IF_ERROR(check_hf_quant_compatible(options.format, q.scheme, q.rows, q.cols).with_context("tensor '" + name + "'"));
  }
  std::error_code ec;
  const fs::path out(out_dir);
  if (fs::exists(out, ec) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec)))
    return invalid_argument(out_dir + ": exists and is not an empty directory (an HF export writes a new directory)");

  // config.json of the source with quantization_config added.
  const fs::path src(options.source_dir);
  QFORGE_ASSIGN_OR_RETURN(std::string config_text, read_file((src / "config.json").string()));
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(config_text, nullptr, false);
  if (config.is_discarded() || !config.is_object())
    return parse_error((src / "config.json").string() + ": not a JSON object");
  nlohmann::ordered_json qforge_meta = nlohmann::ordered_json::object();
  if (!options.qforge_metadata_json.empty()) {
    qforge_meta = nlohmann::ordered_json::parse(options.qforge_metadata_json, nullptr, false);
    if (qforge_meta.is_discarded() || !qforge_meta.is_object())
      return invalid_argument("qforge metadata for the export is not a JSON object");
  }
  qforge_meta["scheme"] = scheme.name();
  const int64_t group_size = scheme.granularity == Granularity::group ? scheme.group_size : -1;
  const bool sym = scheme.format == FormatId::int_sym;
  const bool lm_head = quantized.count("lm_head.weight") > 0;
  nlohmann::ordered_json qc;
  if (options.format == HfQuantFormat::gptq) {
    qc = {{"quant_method", "gptq"}, {"checkpoint_format", "gptq"}, {"bits", scheme.bits},
          {"group_size", group_size}, {"desc_act", options.desc_act}, {"static_groups", options.desc_act},
          {"sym", sym},             {"true_sequential", true},        {"lm_head", lm_head}};
  } else {
    nlohmann::ordered_json not_converted = nullptr;
    qc = {{"quant_method", "awq"}, {"version", "gemm"},         {"bits", scheme.bits},
          {"group_size", group_size}, {"zero_point", true}, {"modules_to_not_convert", not_converted}};
  }
  qc["qforge"] = qforge_meta;
  config["quantization_config"] = qc;

  // Build beside the target, then rename.
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  TempDir tmp(parent / (out.filename().string() + ".tmp." + std::to_string(::getpid())));
  fs::remove_all(tmp.path(), ec);
  if (!fs::create_directories(tmp.path(), ec) || ec)
    return io_error(tmp.path().string() + ": cannot create directory (" + ec.message() + ")");

  HfQuantExportSummary summary;
  SafetensorsWriter writer((tmp.path() / "model.safetensors").string());
  for (const auto& [k, v] : options.metadata) writer.set_metadata(k, v);
  writer.set_metadata("format", "pt");  // transformers refuses files with metadata but no format
  // Packed tensors must outlive finish(): keep them here.
  std::vector<std::unique_ptr<HfQuantLinear>> packed;
  for (const auto& [name, q] : quantized) {
    int64_t zz = 0;
    QFORGE_ASSIGN_OR_RETURN(HfQuantLinear t, pack_hf_quant(options.format, q, &zz));
    summary.zero_point_zero_groups += zz;
    packed.push_back(std::make_unique<HfQuantLinear>(std::move(t)));
    const HfQuantLinear& p = *packed.back();
    const std::string prefix = strip_weight_suffix(name);
    QFORGE_RETURN_IF_ERROR(writer.add(prefix + ".qweight", DType::i32, p.qweight_shape(), p.qweight.data(), p.qweight.size() * 4));
    QFORGE_RETURN_IF_ERROR(writer.add(prefix + ".qzeros", DType::i32, p.qzeros_shape(), p.qzeros.data(), p.qzeros.size() * 4));
    QFORGE_RETURN_IF_ERROR(writer.add(prefix + ".scales", DType::f16, p.scales_shape(), p.scales.data(), p.scales.size() * 2));
    if (options.format == HfQuantFormat::gptq)
      QFORGE_RETURN_IF_ERROR(writer.add(prefix + ".g_idx", DType::i32, {p.in_features}, p.g_idx.data(), p.g_idx.size() * 4));
    summary.quantized += 1;
  }
  for (const auto& [name, t] : plain) {
    if (quantized.count(name))
      return invalid_argument(std::string(fmt) + " export: tensor '" + name + "' given both quantized and plain");
    QFORGE_RETURN_IF_ERROR(writer.add(name, t));
    summary.plain += 1;
  }
  QFORGE_RETURN_IF_ERROR(writer.finish());
  QFORGE_RETURN_IF_ERROR(write_file_atomic((tmp.path() / "config.json").string(), config.dump(2) + "\n"));
  for (const char* f : kCopiedFiles) {
    if (fs::exists(src / f, ec)) QFORGE_RETURN_IF_ERROR(copy_file_atomic(src / f, tmp.path() / f));
  }
  summary.bytes = 0;
  for (const auto& e : fs::directory_iterator(tmp.path(), ec))
    if (e.is_regular_file(ec)) summary.bytes += e.file_size(ec);
  if (fs::exists(out, ec)) fs::remove(out, ec);  // an empty directory (checked above)
  fs::rename(tmp.path(), out, ec);
  if (ec) return io_error(out_dir + ": cannot rename the finished export into place (" + ec.message() + ")");
  tmp.commit();
  return summary;
}

}  // namespace qforge
