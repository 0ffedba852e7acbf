// safetensors reading (strict validation of untrusted files), HF sharded checkpoints, and the
// streaming atomic writer. The layout and the validation rules are in include/qforge/safetensors.h
// and docs/formats.md, "safetensors".
#include "qforge/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string_view>
#include <system_error>
#include <utility>

#include "qforge/atomic_file.h"

namespace qforge {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; qforge reads and writes it as host bytes");

using json = nlohmann::json;

// Dtype names the safetensors spec defines that qforge has no DType for (the rest map through
// dtype_from_safetensors_name). They get `unsupported` rather than "unknown dtype".
constexpr std::string_view kSpecDtypesWithoutDType[] = {"U16", "U32", "U64", "F4", "F6_E2M3", "F6_E3M2", "C64"};

// Untrusted strings (tensor names, dtype strings) can be megabytes long; keep messages readable.
std::string quote_untrusted(std::string_view s) {
  constexpr size_t kMax = 96;
  if (s.size() <= kMax) return "'" + std::string(s) + "'";
  return "'" + std::string(s.substr(0, kMax)) + "...' (" + std::to_string(s.size()) + " bytes)";
}

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    uint32_t min_cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min_cp = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min_cp = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min_cp = 0x10000;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Parses JSON text, rejecting duplicate keys in any object (nlohmann would silently keep the
// last one, so two readers could disagree about which bytes a tensor has).
Status parse_json_strict(std::string_view text, const std::string& what, json* out) {
  struct Level {
    std::set<std::string> keys;
    std::string last_key;
  };
  std::vector<Level> levels;
  std::string duplicate;
  std::string duplicate_parent;
  bool duplicate_top_level = false;
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
        levels.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!levels.empty()) levels.pop_back();
        break;
      case json::parse_event_t::key: {
        if (levels.empty() || !parsed.is_string()) break;
        const auto& key = parsed.get_ref<const std::string&>();
        Level& level = levels.back();
        if (!level.keys.insert(key).second && duplicate.empty()) {
          duplicate = key;
          duplicate_top_level = levels.size() == 1;
          if (levels.size() >= 2) duplicate_parent = levels[levels.size() - 2].last_key;
        }
        level.last_key = key;
        break;
      }
      default:
        break;
    }
    return true;
  };
  // nlohmann stops at a NUL byte as if the input ended there, so "{...}\0garbage" would parse.
  // A NUL is never valid JSON (strings must escape it), so reject it up front.
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    return parse_error(what + " is not valid JSON: NUL byte at offset " + std::to_string(nul));
  try {
    *out = json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    return parse_error(what + " is not valid JSON: " + e.what());
  }
  if (!duplicate.empty()) {
    if (duplicate_top_level) return parse_error(what + ": duplicate key " + quote_untrusted(duplicate));
    return parse_error(what + ": duplicate key " + quote_untrusted(duplicate) + " inside " + quote_untrusted(duplicate_parent));
  }
  return Status::ok();
}

// Reads a JSON value that must be a non-negative integer representable in uint64.
Expected<uint64_t> json_to_u64(const json& v, const std::string& what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    if (v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());  // "-0"
    return parse_error(what + " is negative (" + v.dump() + ")");
  }
  // nlohmann parses integers beyond 64 bits as floats too.
  if (v.is_number_float()) return parse_error(what + " is not an integer below 2^64 (" + v.dump() + ")");
  return parse_error(what + " is not a number (" + std::string(v.type_name()) + ")");
}

// Product of the dims times the element size, or an error when it cannot be represented. Zero dims
// are skipped when checking for overflow: the shape must stay usable by code that computes strides
// and prefix products in int64, so [0, 2^40, 2^40] is rejected although it holds no bytes.
Expected<uint64_t> checked_nbytes(const Shape& shape, size_t elem_size, const std::string& what) {
  uint64_t nonzero = elem_size;
  bool has_zero = false;
  for (int64_t d : shape) {
    if (d < 0) return parse_error(what + ": shape " + shape_to_string(shape) + " has a negative dimension");
    if (d == 0) {
      has_zero = true;
      continue;
    }
    if (__builtin_mul_overflow(nonzero, static_cast<uint64_t>(d), &nonzero) ||
        nonzero > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return parse_error(what + ": shape " + shape_to_string(shape) + " x " + std::to_string(elem_size) +
                         "-byte elements overflows 63 bits");
  }
  return has_zero ? 0 : nonzero;
}

Expected<DType> parse_dtype(const json& v, const std::string& what) {
  if (!v.is_string()) return parse_error(what + ": \"dtype\" is not a string (" + std::string(v.type_name()) + ")");
  const auto& name = v.get_ref<const std::string&>();
  if (auto t = dtype_from_safetensors_name(name)) return *t;
  for (std::string_view known : kSpecDtypesWithoutDType)
    if (name == known) return unsupported(what + ": dtype " + quote_untrusted(name) + " is valid safetensors but not supported by qforge");
  return parse_error(what + ": unknown dtype " + quote_untrusted(name));
}

Expected<SafetensorsTensorInfo> parse_entry(const std::string& name, const json& v, const std::string& what) {
  if (!v.is_object()) return parse_error(what + ": entry is not an object (" + std::string(v.type_name()) + ")");
  for (const auto& item : v.items()) {
    const std::string& key = item.key();
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      return parse_error(what + ": unexpected field " + quote_untrusted(key));
  }
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!v.contains(field)) return parse_error(what + ": missing field \"" + field + "\"");

  SafetensorsTensorInfo info;
  info.name = name;
  QFORGE_ASSIGN_OR_RETURN(info.dtype, parse_dtype(v.at("dtype"), what));

  const json& shape = v.at("shape");
  if (!shape.is_array()) return parse_error(what + ": \"shape\" is not an array (" + std::string(shape.type_name()) + ")");
  info.shape.reserve(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    QFORGE_ASSIGN_OR_RETURN(uint64_t d, json_to_u64(shape[i], what + ": shape dimension " + std::to_string(i)));
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return parse_error(what + ": shape dimension " + std::to_string(i) + " (" + std::to_string(d) + ") is too large");
    info.shape.push_back(static_cast<int64_t>(d));
  }

  const json& offsets = v.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2)
    return parse_error(what + ": \"data_offsets\" is not an array of 2 integers: " +
                       (offsets.is_array() ? std::to_string(offsets.size()) + " elements" : std::string(offsets.type_name())));
  QFORGE_ASSIGN_OR_RETURN(info.begin, json_to_u64(offsets[0], what + ": data_offsets[0]"));
  QFORGE_ASSIGN_OR_RETURN(info.end, json_to_u64(offsets[1], what + ": data_offsets[1]"));
  return info;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

Expected<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapping, MappedFile::open(path));
  SafetensorsFile f;
  f.path_ = path;
  f.data_ = mapping->data();
  f.size_ = mapping->size();
  f.mapping_ = std::move(mapping);
  QFORGE_RETURN_IF_ERROR(f.parse_header());
  return f;
}

Expected<SafetensorsFile> SafetensorsFile::parse(const uint8_t* data, size_t size, const std::string& label) {
  SafetensorsFile f;
  f.path_ = label;
  f.data_ = data;
  f.size_ = size;
  QFORGE_RETURN_IF_ERROR(f.parse_header());
  return f;
}

Status SafetensorsFile::parse_header() {
  const std::string& file = path_;
  if (size_ < 8)
    return parse_error(file + ": file is " + std::to_string(size_) +
                       " bytes, shorter than the 8-byte header length field (truncated or not safetensors)");
  const uint64_t header_len = read_u64_le(data_);
  if (header_len == 0) return parse_error(file + ": header length is 0");
  if (header_len > kMaxHeaderBytes)
    return parse_error(file + ": header length " + std::to_string(header_len) + " exceeds the limit of " +
                       std::to_string(kMaxHeaderBytes) + " bytes (corrupt or not safetensors)");
  if (header_len > size_ - 8)
    return parse_error(file + ": header length " + std::to_string(header_len) + " exceeds the " +
                       std::to_string(size_ - 8) + " bytes after the length field (truncated file)");
  data_offset_ = 8 + header_len;
  const uint64_t data_size = size_ - data_offset_;

  const std::string_view text(reinterpret_cast<const char*>(data_ + 8), header_len);
  if (text[0] != '{') return parse_error(file + ": header does not start with '{'");
  if (!is_valid_utf8(text)) return parse_error(file + ": header is not valid UTF-8");
  json header;
  QFORGE_RETURN_IF_ERROR(parse_json_strict(text, file + ": header", &header));
  if (!header.is_object()) return parse_error(file + ": header is not a JSON object");

  tensors_.clear();
  index_.clear();
  metadata_.clear();
  tensors_.reserve(header.size());
  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    if (name == "__metadata__") {
      const json& meta = item.value();
      if (!meta.is_object())
        return parse_error(file + ": \"__metadata__\" is not an object (" + std::string(meta.type_name()) + ")");
      for (const auto& kv : meta.items()) {
        if (!kv.value().is_string())
          return parse_error(file + ": metadata value of " + quote_untrusted(kv.key()) + " is not a string (" +
                             std::string(kv.value().type_name()) + ")");
        metadata_.emplace(kv.key(), kv.value().get<std::string>());
      }
      continue;
    }
    const std::string what = file + ": tensor " + quote_untrusted(name);
    QFORGE_ASSIGN_OR_RETURN(SafetensorsTensorInfo info, parse_entry(name, item.value(), what));
    QFORGE_ASSIGN_OR_RETURN(uint64_t nbytes, checked_nbytes(info.shape, dtype_size(info.dtype), what));
    const std::string range = "data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) + "]";
    if (info.begin > info.end) return parse_error(what + ": " + range + " has begin > end");
    if (info.end > data_size)
      return out_of_range(what + ": " + range + " lies outside the data section (" + std::to_string(data_size) +
                          " bytes; truncated file?)");
    if (info.end - info.begin != nbytes)
      return parse_error(what + ": shape " + shape_to_string(info.shape) + " x " + dtype_safetensors_name(info.dtype) +
                         " needs " + std::to_string(nbytes) + " bytes but " + range + " span " +
                         std::to_string(info.end - info.begin));
    tensors_.push_back(std::move(info));
  }

  std::sort(tensors_.begin(), tensors_.end(), [](const SafetensorsTensorInfo& a, const SafetensorsTensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  // Non-empty ranges must be disjoint; empty ones hold no bytes and cannot clash with anything.
  const SafetensorsTensorInfo* prev = nullptr;
  for (const auto& t : tensors_) {
    if (t.begin == t.end) continue;
    if (prev != nullptr && t.begin < prev->end)
      return parse_error(file + ": tensor " + quote_untrusted(t.name) + " (bytes [" + std::to_string(t.begin) + ", " +
                         std::to_string(t.end) + ")) overlaps tensor " + quote_untrusted(prev->name) + " (bytes [" +
                         std::to_string(prev->begin) + ", " + std::to_string(prev->end) + "))");
    prev = &t;
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  return Status::ok();
}

const SafetensorsTensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Expected<Tensor> SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsTensorInfo* info = find(name);
  if (info == nullptr) return invalid_argument(path_ + ": no tensor " + quote_untrusted(name));
  const uint8_t* bytes = tensor_bytes(*info);
  const size_t elem = dtype_size(info->dtype);
  if (reinterpret_cast<uintptr_t>(bytes) % elem != 0) {
    Tensor copy = Tensor::zeros(info->dtype, info->shape);
    std::memcpy(copy.data(), bytes, info->end - info->begin);
    return copy;
  }
  // Read-only memory: Tensor has no const view, so callers must not write through it.
  return Tensor::view(info->dtype, info->shape, const_cast<uint8_t*>(bytes), mapping_);
}

// ---------------------------------------------------------------------------------------------
// SafetensorsCheckpoint

namespace {

namespace fs = std::filesystem;

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr uint64_t kMaxIndexBytes = 256ull << 20;

// Shard names come from an untrusted index: only plain relative paths inside the directory.
Status check_shard_name(const std::string& index_path, const std::string& tensor, const std::string& shard) {
  const std::string what = index_path + ": shard " + quote_untrusted(shard) + " (of tensor " + quote_untrusted(tensor) + ")";
  if (shard.empty()) return parse_error(index_path + ": empty shard name for tensor " + quote_untrusted(tensor));
  if (shard.find('\0') != std::string::npos) return parse_error(what + " contains a NUL character");
  const fs::path p(shard);
  if (p.is_absolute() || p.has_root_name() || p.has_root_directory())
    return parse_error(what + " is an absolute path; shards must lie inside the checkpoint directory");
  for (const auto& part : p)
    if (part == "..") return parse_error(what + " escapes the checkpoint directory ('..')");
  return Status::ok();
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

}  // namespace

Expected<SafetensorsCheckpoint> SafetensorsCheckpoint::open(const std::string& path) {
  SafetensorsCheckpoint ckpt;
  ckpt.path_ = path;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return io_error(path + ": no such file or directory");

  auto add_single = [&ckpt](const std::string& file) -> Status {
    QFORGE_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(file));
    for (const auto& t : f.tensors()) ckpt.file_of_.emplace(t.name, 0);
    ckpt.files_.push_back(std::move(f));
    return Status::ok();
  };

  if (!fs::is_directory(st)) {
    QFORGE_RETURN_IF_ERROR(add_single(path));
    return ckpt;
  }

  const fs::path dir(path);
  const fs::path index_path = dir / kIndexName;
  if (!is_file(index_path)) {
    if (is_file(dir / kSingleName)) {
      QFORGE_RETURN_IF_ERROR(add_single((dir / kSingleName).string()));
      return ckpt;
    }
    std::vector<std::string> found;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
      if (it->path().extension() == ".safetensors" && is_file(it->path())) found.push_back(it->path().string());
    if (ec) return io_error(path + ": cannot list directory: " + ec.message());
    std::sort(found.begin(), found.end());
    if (found.empty()) return io_error(path + ": no " + kIndexName + ", " + kSingleName + " or *.safetensors file");
    if (found.size() > 1)
      return invalid_argument(path + ": " + std::to_string(found.size()) + " *.safetensors files but no " + kIndexName +
                              " saying which tensors each holds; add the index or pass one file");
    QFORGE_RETURN_IF_ERROR(add_single(found[0]));
    return ckpt;
  }

  // Sharded checkpoint.
  const std::string index_file = index_path.string();
  const uint64_t index_size = fs::file_size(index_path, ec);
  if (ec) return io_error(index_file + ": cannot stat: " + ec.message());
  if (index_size > kMaxIndexBytes) return parse_error(index_file + ": " + std::to_string(index_size) + " bytes is too large for an index");
  QFORGE_ASSIGN_OR_RETURN(std::string index_text, read_file(index_file));
  json index;
  QFORGE_RETURN_IF_ERROR(parse_json_strict(index_text, index_file, &index));
  if (!index.is_object()) return parse_error(index_file + ": not a JSON object");
  if (!index.contains("weight_map")) return parse_error(index_file + ": missing \"weight_map\"");
  const json& weight_map = index.at("weight_map");
  if (!weight_map.is_object()) return parse_error(index_file + ": \"weight_map\" is not an object");
  if (weight_map.empty()) return parse_error(index_file + ": \"weight_map\" lists no tensors");

  // Shards in sorted order (HF's model-0000k-of-0000n names sort naturally); files_ index by name.
  std::map<std::string, size_t> shard_index;
  for (const auto& item : weight_map.items()) {
    if (!item.value().is_string())
      return parse_error(index_file + ": shard of tensor " + quote_untrusted(item.key()) + " is not a string");
    const std::string& shard = item.value().get_ref<const std::string&>();
    QFORGE_RETURN_IF_ERROR(check_shard_name(index_file, item.key(), shard));
    shard_index.emplace(shard, 0);
  }
  std::vector<std::string> shard_names;
  for (auto& [shard, i] : shard_index) {
    i = shard_names.size();
    shard_names.push_back(shard);
    const fs::path shard_path = dir / shard;
    if (!is_file(shard_path))
      return io_error(index_file + ": shard " + quote_untrusted(shard) + " listed in the index is missing (" + shard_path.string() + ")");
    QFORGE_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(shard_path.string()));
    ckpt.files_.push_back(std::move(f));
  }
  for (const auto& item : weight_map.items()) {
    const std::string& shard = item.value().get_ref<const std::string&>();
    const size_t i = shard_index.at(shard);
    if (ckpt.files_[i].find(item.key()) == nullptr)
      return parse_error(index_file + ": tensor " + quote_untrusted(item.key()) + " is listed in shard " + quote_untrusted(shard) +
                         " but that shard does not hold it");
    ckpt.file_of_.emplace(item.key(), i);
  }
  // Tensors a shard holds but the index does not list: included when only one shard has them.
  std::map<std::string, size_t> unlisted;
  for (size_t i = 0; i < ckpt.files_.size(); ++i) {
    for (const auto& t : ckpt.files_[i].tensors()) {
      if (weight_map.contains(t.name)) continue;
      auto [it, inserted] = unlisted.emplace(t.name, i);
      if (!inserted)
        return parse_error(index_file + ": tensor " + quote_untrusted(t.name) + " is not in the weight_map and is held by both " +
                           quote_untrusted(shard_names[it->second]) + " and " + quote_untrusted(shard_names[i]) + " (ambiguous)");
    }
  }
  ckpt.file_of_.insert(unlisted.begin(), unlisted.end());
  return ckpt;
}

std::vector<std::string> SafetensorsCheckpoint::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(file_of_.size());
  for (const auto& [name, i] : file_of_) names.push_back(name);
  return names;
}

const SafetensorsTensorInfo* SafetensorsCheckpoint::find(const std::string& name) const {
  auto it = file_of_.find(name);
  return it == file_of_.end() ? nullptr : files_[it->second].find(name);
}

Expected<Tensor> SafetensorsCheckpoint::tensor(const std::string& name) const {
  auto it = file_of_.find(name);
  if (it == file_of_.end()) return invalid_argument(path_ + ": no tensor " + quote_untrusted(name));
  return files_[it->second].tensor(name);
}

const std::map<std::string, std::string>& SafetensorsCheckpoint::metadata() const {
  static const std::map<std::string, std::string> empty;
  return files_.empty() ? empty : files_.front().metadata();
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

SafetensorsWriter::SafetensorsWriter(std::string path) : path_(std::move(path)) {}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

Status SafetensorsWriter::check_new(const std::string& name, DType dtype, const Shape& shape, size_t nbytes) const {
  const std::string what = path_ + ": tensor " + quote_untrusted(name);
  if (name.empty()) return invalid_argument(path_ + ": empty tensor name");
  if (name == "__metadata__") return invalid_argument(what + ": the name is reserved for metadata");
  if (!is_valid_utf8(name)) return invalid_argument(what + ": name is not valid UTF-8");
  if (names_.count(name) != 0) return invalid_argument(what + ": added twice");
  auto expected = checked_nbytes(shape, dtype_size(dtype), what);
  if (!expected.has_value()) return invalid_argument(expected.status().message());
  if (*expected != nbytes)
    return invalid_argument(what + ": shape " + shape_to_string(shape) + " x " + dtype_safetensors_name(dtype) +
                            " needs " + std::to_string(*expected) + " bytes, got " + std::to_string(nbytes));
  return Status::ok();
}

Status SafetensorsWriter::add(const std::string& name, DType dtype, const Shape& shape, const void* data, size_t nbytes) {
  QFORGE_RETURN_IF_ERROR(check_new(name, dtype, shape, nbytes));
  if (data == nullptr && nbytes > 0) return invalid_argument(path_ + ": tensor " + quote_untrusted(name) + ": null data");
  entries_.push_back(Entry{name, dtype, shape, nbytes, data, nullptr, Tensor()});
  names_.insert(name);
  return Status::ok();
}

Status SafetensorsWriter::add(const std::string& name, const Tensor& tensor) {
  const size_t nbytes = tensor.nbytes();
  QFORGE_RETURN_IF_ERROR(check_new(name, tensor.dtype(), tensor.shape(), nbytes));
  if (tensor.empty() && nbytes > 0) return invalid_argument(path_ + ": tensor " + quote_untrusted(name) + ": no data");
  Entry e{name, tensor.dtype(), tensor.shape(), nbytes, nullptr, nullptr, tensor};
  if (tensor.is_contiguous()) {
    e.data = tensor.data();
  } else {
    e.produce = [tensor](uint8_t* out, size_t n) -> Status {
      Tensor c = tensor.contiguous();
      std::memcpy(out, c.data(), n);
      return Status::ok();
    };
  }
  entries_.push_back(std::move(e));
  names_.insert(name);
  return Status::ok();
}

Status SafetensorsWriter::add_lazy(const std::string& name, DType dtype, const Shape& shape,
                                   std::function<Status(uint8_t* out, size_t nbytes)> produce) {
  if (!produce) return invalid_argument(path_ + ": tensor " + quote_untrusted(name) + ": no producer");
  auto nbytes = checked_nbytes(shape, dtype_size(dtype), path_ + ": tensor " + quote_untrusted(name));
  if (!nbytes.has_value()) return invalid_argument(nbytes.status().message());
  if (*nbytes > std::numeric_limits<size_t>::max()) return invalid_argument(path_ + ": tensor " + quote_untrusted(name) + " is too large");
  QFORGE_RETURN_IF_ERROR(check_new(name, dtype, shape, static_cast<size_t>(*nbytes)));
  entries_.push_back(Entry{name, dtype, shape, static_cast<size_t>(*nbytes), nullptr, std::move(produce), Tensor()});
  names_.insert(name);
  return Status::ok();
}

Status SafetensorsWriter::finish() {
  for (const auto& [key, value] : metadata_)
    if (!is_valid_utf8(key) || !is_valid_utf8(value))
      return invalid_argument(path_ + ": metadata " + quote_untrusted(key) + " is not valid UTF-8");

  // Largest elements first, then by name: every tensor stays aligned to its element size.
  std::vector<const Entry*> order;
  order.reserve(entries_.size());
  for (const auto& e : entries_) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    const size_t sa = dtype_size(a->dtype), sb = dtype_size(b->dtype);
    if (sa != sb) return sa > sb;
    return a->name < b->name;
  });

  // The header is assembled by hand (an ordered_json object would make it quadratic in tensors).
  std::string header;
  try {
    header = "{";
    bool first = true;
    if (!metadata_.empty()) {
      header += "\"__metadata__\":" + json(metadata_).dump();
      first = false;
    }
    uint64_t offset = 0;
    for (const Entry* e : order) {
      if (!first) header += ",";
      first = false;
      nlohmann::ordered_json entry = nlohmann::ordered_json::object();
      entry["dtype"] = dtype_safetensors_name(e->dtype);
      entry["shape"] = nlohmann::ordered_json::array();
      for (int64_t d : e->shape) entry["shape"].push_back(static_cast<uint64_t>(d));
      uint64_t end = 0;
      if (__builtin_add_overflow(offset, static_cast<uint64_t>(e->nbytes), &end) ||
          end > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return invalid_argument(path_ + ": tensors total more than 2^63 bytes");
      entry["data_offsets"] = nlohmann::ordered_json::array({offset, end});
      offset = end;
      header += json(e->name).dump() + ":" + entry.dump();
    }
    header += "}";
  } catch (const std::exception& ex) {
    return Status::error(ErrorCode::internal, path_ + ": cannot build the header: " + ex.what());
  }
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > SafetensorsFile::kMaxHeaderBytes)
    return invalid_argument(path_ + ": header of " + std::to_string(header.size()) + " bytes exceeds the " +
                            std::to_string(SafetensorsFile::kMaxHeaderBytes) + "-byte limit readers enforce");

  QFORGE_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::create(path_));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  QFORGE_RETURN_IF_ERROR(file.write(len, sizeof(len)));
  QFORGE_RETURN_IF_ERROR(file.write(header.data(), header.size()));

  // One buffer, sized for the largest lazy tensor, is reused: memory stays bounded.
  std::vector<uint8_t> buffer;
  for (const Entry* e : order) {
    if (!e->produce) {
      QFORGE_RETURN_IF_ERROR(file.write(e->data, e->nbytes));
      continue;
    }
    const std::string what = path_ + ": tensor " + quote_untrusted(e->name);
    try {
      // At least one byte so producers never see a null pointer, even for empty tensors.
      if (buffer.size() < std::max<size_t>(e->nbytes, 1)) buffer.resize(std::max<size_t>(e->nbytes, 1));
      // Zeroed so that a producer that leaves bytes unset still gives deterministic output.
      std::fill_n(buffer.begin(), e->nbytes, uint8_t{0});
      Status s = e->produce(buffer.data(), e->nbytes);
      if (!s.is_ok()) return s.with_context(what);
    } catch (const std::exception& ex) {
      return Status::error(ErrorCode::internal, what + ": producer failed: " + ex.what());
    }
    QFORGE_RETURN_IF_ERROR(file.write(buffer.data(), e->nbytes));
  }
  return file.commit();
}

}  // namespace qforge
