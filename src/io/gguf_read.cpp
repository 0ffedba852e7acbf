// GGUF reader: validates untrusted files without trusting any count, length or offset.
//
// Every count is bounded by the bytes left in the file before anything is allocated (each
// key-value pair, tensor info or array element needs a known minimum number of bytes), so a
// header claiming 2^62 entries fails at once instead of allocating. Allocations stay within a
// small constant factor of the file size.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <numeric>

#include "qforge/gguf.h"

namespace qforge {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace {

constexpr uint64_t kMinKeyValueBytes = 8 + 1 + 4 + 1;        // key length, 1-byte key, type, u8 value
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 4 + 8;  // name length, 1-byte name, n_dims, type, offset

// Bytes the smallest encoding of one value of `type` occupies.
uint64_t min_value_bytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::u8:
    case GgufValueType::i8:
    case GgufValueType::boolean: return 1;
    case GgufValueType::u16:
    case GgufValueType::i16: return 2;
    case GgufValueType::u32:
    case GgufValueType::i32:
    case GgufValueType::f32: return 4;
    case GgufValueType::u64:
    case GgufValueType::i64:
    case GgufValueType::f64:
    case GgufValueType::string: return 8;
    case GgufValueType::array: return 4 + 8;
  }
  return 1;
}

std::string printable_bytes(const uint8_t* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += (p[i] >= 0x20 && p[i] < 0x7f) ? static_cast<char>(p[i]) : '?';
  return s;
}

}  // namespace

// Parses one GGUF image; friend of GgufFile.
class GgufParser {
 public:
  GgufParser(const uint8_t* data, size_t size, const std::string& label) : data_(data), size_(size), label_(label) {}

  Status parse(GgufFile* out);

 private:
  uint64_t remaining() const { return size_ - pos_; }

  Status error(uint64_t at, const std::string& message, ErrorCode code = ErrorCode::parse_error) const {
    return Status::error(code, label_ + ": " + message + " (at byte " + std::to_string(at) + ")");
  }
  Status need(uint64_t n, const std::string& what) const {
    if (n <= remaining()) return Status::ok();
    return error(pos_, "file truncated: " + what + " needs " + std::to_string(n) + " bytes, only " +
                           std::to_string(remaining()) + " left");
  }
  template <class T>
  Status read(T* out, const std::string& what) {
    QFORGE_RETURN_IF_ERROR(need(sizeof(T), what));
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::ok();
  }
  // `index` >= 0 names an array element ("what[index]"); the name is only built on error, since
  // vocabularies hold 10^5 strings.
  static std::string element(const std::string& what, int64_t index) {
    return index < 0 ? what : what + "[" + std::to_string(index) + "]";
  }
  Status read_string(std::string* out, const std::string& what, uint64_t max_bytes, int64_t index = -1) {
    const uint64_t at = pos_;
    uint64_t len = 0;
    if (remaining() < sizeof len) return need(sizeof len, element(what, index) + " length");
    std::memcpy(&len, data_ + pos_, sizeof len);
    pos_ += sizeof len;
    if (len > remaining())
      return error(at, element(what, index) + " length " + std::to_string(len) + " runs past the end of the file (" +
                           std::to_string(remaining()) + " bytes left)");
    if (len > max_bytes)
      return error(at, element(what, index) + " is " + std::to_string(len) + " bytes long, more than the limit of " +
                           std::to_string(max_bytes));
    out->assign(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return Status::ok();
  }
  Status read_value_type(GgufValueType* out, const std::string& what) {
    const uint64_t at = pos_;
    uint32_t t = 0;
    QFORGE_RETURN_IF_ERROR(read(&t, what));
    if (!gguf_value_type_is_valid(t))
      return error(at, what + " " + std::to_string(t) + " is not a GGUF value type (0..12)");
    *out = static_cast<GgufValueType>(t);
    return Status::ok();
  }
  template <class T>
  Status read_scalars(uint64_t count, std::vector<T>* out) {
    // The caller has checked count * sizeof(T) <= remaining().
    out->resize(static_cast<size_t>(count));
    if (count > 0) std::memcpy(out->data(), data_ + pos_, static_cast<size_t>(count) * sizeof(T));
    pos_ += count * sizeof(T);
    return Status::ok();
  }
  Status read_bool(bool* out, const std::string& what, int64_t index = -1) {
    const uint64_t at = pos_;
    if (remaining() < 1) return need(1, element(what, index));
    const uint8_t b = data_[pos_++];
    if (b > 1)
      return error(at, element(what, index) + " is a bool with byte value " + std::to_string(b) + " (must be 0 or 1)");
    *out = b != 0;
    return Status::ok();
  }
  Status read_value(GgufValueType type, int depth, const std::string& what, GgufValue* out);
  Status read_array(int depth, const std::string& what, GgufValue* out);
  Status read_tensor_info(uint64_t index, GgufTensorInfo* info, uint64_t* info_at);

  const uint8_t* data_;
  size_t size_;
  const std::string& label_;
  uint64_t pos_ = 0;
};

Status GgufParser::read_value(GgufValueType type, int depth, const std::string& what, GgufValue* out) {
  switch (type) {
    case GgufValueType::u8: { uint8_t v{}; QFORGE_RETURN_IF_ERROR(read(&v, what)); *out = GgufValue(v); return Status::ok(); }
    case GgufValueType::i8: { int8_t v{}; QFORGE_RETURN_IF_ERROR(read(&v, what)); *out = GgufValue(v); return Status::ok(); }
    case GgufValueType::u16: { uint16_t v{}; QFORGE_RETURN_IF_ERROR(read(&v, what)); *out = GgufValue(v); return Status::ok(); }
    case GgufValueType::i16: { int16_t v{}; QFORGE_RETURN_IF_ERROR(read(&v, what)); *out = GgufValue(v); return Status::ok(); }
    case GgufValueType::u32: { uint32_t v{}; QFORGE_RETURN_IF_ERROR(read(&v, what)); *out = GgufValue(v); return Status::ok(); }
    case GgufValueType::i32: { int32_t v{}; QFORGE_RETURN_IF_ERROR(read(&v, what)); *out = GgufValue(v); return Status::ok(); }
    case GgufValueType::f32: { float v{}; QFORGE_RETURN_IF_ERROR(read(&v, what)); *out = GgufValue(v); return Status::ok(); }
    case GgufValueType::u64: { uint64_t v{}; QFORGE_RETURN_IF_ERROR(read(&v, what)); *out = GgufValue(v); return Status::ok(); }
    case GgufValueType::i64: { int64_t v{}; QFORGE_RETURN_IF_ERROR(read(&v, what)); *out = GgufValue(v); return Status::ok(); }
    case GgufValueType::f64: { double v{}; QFORGE_RETURN_IF_ERROR(read(&v, what)); *out = GgufValue(v); return Status::ok(); }
    case GgufValueType::boolean: { bool v{}; QFORGE_RETURN_IF_ERROR(read_bool(&v, what)); *out = GgufValue(v); return Status::ok(); }
    case GgufValueType::string: {
      std::string s;
      QFORGE_RETURN_IF_ERROR(read_string(&s, what, remaining()));
      *out = GgufValue(std::move(s));
      return Status::ok();
    }
    case GgufValueType::array: return read_array(depth, what, out);
  }
  return error(pos_, what + ": invalid value type");
}

Status GgufParser::read_array(int depth, const std::string& what, GgufValue* out) {
  if (depth >= kGgufMaxArrayDepth)
    return error(pos_, what + ": arrays nested more than " + std::to_string(kGgufMaxArrayDepth) + " deep");
  GgufValueType elem = GgufValueType::u8;
  QFORGE_RETURN_IF_ERROR(read_value_type(&elem, what + " element type"));
  const uint64_t count_at = pos_;
  uint64_t count = 0;
  QFORGE_RETURN_IF_ERROR(read(&count, what + " element count"));
  const uint64_t min_bytes = min_value_bytes(elem);
  if (count > remaining() / min_bytes)
    return error(count_at, what + ": array of " + std::to_string(count) + " " + gguf_value_type_name(elem) +
                               " elements needs at least " + std::to_string(min_bytes) + " bytes each, only " +
                               std::to_string(remaining()) + " bytes left");
  switch (elem) {
    case GgufValueType::u8: { std::vector<uint8_t> v; QFORGE_RETURN_IF_ERROR(read_scalars(count, &v)); *out = GgufValue::array(std::move(v)); return Status::ok(); }
    case GgufValueType::i8: { std::vector<int8_t> v; QFORGE_RETURN_IF_ERROR(read_scalars(count, &v)); *out = GgufValue::array(std::move(v)); return Status::ok(); }
    case GgufValueType::u16: { std::vector<uint16_t> v; QFORGE_RETURN_IF_ERROR(read_scalars(count, &v)); *out = GgufValue::array(std::move(v)); return Status::ok(); }
    case GgufValueType::i16: { std::vector<int16_t> v; QFORGE_RETURN_IF_ERROR(read_scalars(count, &v)); *out = GgufValue::array(std::move(v)); return Status::ok(); }
    case GgufValueType::u32: { std::vector<uint32_t> v; QFORGE_RETURN_IF_ERROR(read_scalars(count, &v)); *out = GgufValue::array(std::move(v)); return Status::ok(); }
    case GgufValueType::i32: { std::vector<int32_t> v; QFORGE_RETURN_IF_ERROR(read_scalars(count, &v)); *out = GgufValue::array(std::move(v)); return Status::ok(); }
    case GgufValueType::f32: { std::vector<float> v; QFORGE_RETURN_IF_ERROR(read_scalars(count, &v)); *out = GgufValue::array(std::move(v)); return Status::ok(); }
    case GgufValueType::u64: { std::vector<uint64_t> v; QFORGE_RETURN_IF_ERROR(read_scalars(count, &v)); *out = GgufValue::array(std::move(v)); return Status::ok(); }
    case GgufValueType::i64: { std::vector<int64_t> v; QFORGE_RETURN_IF_ERROR(read_scalars(count, &v)); *out = GgufValue::array(std::move(v)); return Status::ok(); }
    case GgufValueType::f64: { std::vector<double> v; QFORGE_RETURN_IF_ERROR(read_scalars(count, &v)); *out = GgufValue::array(std::move(v)); return Status::ok(); }
    case GgufValueType::boolean: {
      std::vector<bool> v(static_cast<size_t>(count));
      for (uint64_t i = 0; i < count; ++i) {
        bool b = false;
        QFORGE_RETURN_IF_ERROR(read_bool(&b, what, static_cast<int64_t>(i)));
        v[static_cast<size_t>(i)] = b;
      }
      *out = GgufValue::array(std::move(v));
      return Status::ok();
    }
    case GgufValueType::string: {
      std::vector<std::string> v(static_cast<size_t>(count));
      for (uint64_t i = 0; i < count; ++i)
        QFORGE_RETURN_IF_ERROR(read_string(&v[static_cast<size_t>(i)], what, remaining(), static_cast<int64_t>(i)));
      *out = GgufValue::array(std::move(v));
      return Status::ok();
    }
    case GgufValueType::array: {
      std::vector<GgufValue> v(static_cast<size_t>(count));
      for (uint64_t i = 0; i < count; ++i)
        QFORGE_RETURN_IF_ERROR(read_array(depth + 1, what + "[" + std::to_string(i) + "]", &v[static_cast<size_t>(i)]));
      *out = GgufValue::array_of_arrays(std::move(v));
      return Status::ok();
    }
  }
  return error(count_at, what + ": invalid element type");
}

Status GgufParser::read_tensor_info(uint64_t index, GgufTensorInfo* info, uint64_t* info_at) {
  *info_at = pos_;
  const std::string what = "tensor #" + std::to_string(index);
  QFORGE_RETURN_IF_ERROR(read_string(&info->name, what + " name", kGgufMaxTensorNameBytes));
  if (info->name.empty()) return error(*info_at, what + " has an empty name");
  const std::string tname = "tensor '" + info->name + "'";

  const uint64_t dims_at = pos_;
  uint32_t n_dims = 0;
  QFORGE_RETURN_IF_ERROR(read(&n_dims, tname + " n_dims"));
  if (n_dims > kGgufMaxDims)
    return error(dims_at, tname + " has " + std::to_string(n_dims) + " dimensions, more than ggml's " +
                              std::to_string(kGgufMaxDims));
  info->ne.resize(n_dims);
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t at = pos_;
    uint64_t v = 0;
    QFORGE_RETURN_IF_ERROR(read(&v, tname + " ne[" + std::to_string(d) + "]"));
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return error(at, tname + " ne[" + std::to_string(d) + "] = " + std::to_string(v) + " does not fit in int64");
    info->ne[d] = static_cast<int64_t>(v);
  }
  info->shape.assign(info->ne.rbegin(), info->ne.rend());

  const uint64_t type_at = pos_;
  uint32_t type_id = 0;
  QFORGE_RETURN_IF_ERROR(read(&type_id, tname + " type"));
  const GgmlTypeInfo* type = find_ggml_type(type_id);
  if (type == nullptr) {
    const bool removed = ggml_type_id_description(type_id).starts_with("removed");
    return error(type_at, tname + " has " + ggml_type_id_description(type_id) +
                              (removed ? " (llama.cpp no longer stores it in files; re-convert the model)"
                                       : " (newer than the ggml types this qforge knows)"),
                 ErrorCode::unsupported);
  }
  info->type = type->type;
  auto nbytes = ggml_tensor_nbytes(info->type, info->ne);
  if (!nbytes.has_value())
    return error(dims_at, tname + " (" + type->name + ", ne " + shape_to_string(Shape(info->ne)) +
                              "): " + nbytes.status().message());
  info->nbytes = *nbytes;
  return read(&info->offset, tname + " offset");
}

Status GgufParser::parse(GgufFile* out) {
  // Header.
  if (size_ < 4) return error(0, "too small to be a GGUF file (" + std::to_string(size_) + " bytes)");
  if (std::memcmp(data_, "GGUF", 4) != 0) {
    const char* legacy = nullptr;
    if (std::memcmp(data_, "lmgg", 4) == 0 || std::memcmp(data_, "fmgg", 4) == 0 || std::memcmp(data_, "tjgg", 4) == 0)
      legacy = " (a pre-GGUF GGML/GGMF/GGJT file: convert it with a current llama.cpp)";
    return error(0, "bad magic '" + printable_bytes(data_, 4) + "', expected 'GGUF'" + (legacy ? legacy : ""));
  }
  pos_ = 4;
  uint32_t version = 0;
  QFORGE_RETURN_IF_ERROR(read(&version, "version"));
  if (version == 1)
    return error(4, "GGUF version 1 is not supported (it used 32-bit counts and lengths; re-convert the model "
                    "with a current llama.cpp)", ErrorCode::unsupported);
  if (version != 2 && version != 3) {
    if (version != 0 && (version & 0xFFFFu) == 0 && __builtin_bswap32(version) <= 3)
      return error(4, "version field reads " + std::to_string(version) + ": a big-endian GGUF file, which qforge "
                      "does not support", ErrorCode::unsupported);
    return error(4, "GGUF version " + std::to_string(version) + " is not supported (qforge reads versions 2 and 3)",
                 ErrorCode::unsupported);
  }
  uint64_t tensor_count = 0, kv_count = 0;
  QFORGE_RETURN_IF_ERROR(read(&tensor_count, "tensor_count"));
  QFORGE_RETURN_IF_ERROR(read(&kv_count, "metadata_kv_count"));
  if (kv_count > remaining() / kMinKeyValueBytes)
    return error(16, "metadata_kv_count " + std::to_string(kv_count) + " cannot fit: each key-value pair needs at least " +
                         std::to_string(kMinKeyValueBytes) + " bytes and only " + std::to_string(remaining()) + " follow");
  if (tensor_count > remaining() / kMinTensorInfoBytes)
    return error(8, "tensor_count " + std::to_string(tensor_count) + " cannot fit: each tensor info needs at least " +
                        std::to_string(kMinTensorInfoBytes) + " bytes and only " + std::to_string(remaining()) + " follow");

  // Metadata.
  out->version_ = version;
  out->metadata_.reserve(static_cast<size_t>(kv_count));
  std::vector<uint64_t> kv_at_of(static_cast<size_t>(kv_count));
  for (uint64_t i = 0; i < kv_count; ++i) {
    const uint64_t kv_at = pos_;
    kv_at_of[static_cast<size_t>(i)] = kv_at;
    GgufKeyValue kv;
    QFORGE_RETURN_IF_ERROR(read_string(&kv.key, "key #" + std::to_string(i), kGgufMaxKeyBytes));
    if (kv.key.empty()) return error(kv_at, "key #" + std::to_string(i) + " is empty");
    if (!gguf_key_is_valid(kv.key))
      return error(kv_at, "key #" + std::to_string(i) + " has a byte outside printable ASCII (GGUF keys are ASCII)");
    if (out->key_index_.count(kv.key) != 0) return error(kv_at, "duplicate key '" + kv.key + "'");
    const std::string what = "key '" + kv.key + "'";
    GgufValueType type = GgufValueType::u8;
    QFORGE_RETURN_IF_ERROR(read_value_type(&type, what + " value type"));
    QFORGE_RETURN_IF_ERROR(read_value(type, 0, what + " value", &kv.value));
    out->key_index_.emplace(kv.key, out->metadata_.size());
    out->metadata_.push_back(std::move(kv));
  }

  out->alignment_ = kGgufDefaultAlignment;
  if (auto it = out->key_index_.find("general.alignment"); it != out->key_index_.end()) {
    const GgufValue& a = out->metadata_[it->second].value;
    const uint64_t at = kv_at_of[it->second];
    const uint32_t* v = a.get_if<uint32_t>();
    if (v == nullptr) return error(at, "key 'general.alignment' has type " + a.type_description() + ", expected u32");
    if (*v == 0 || (*v & (*v - 1)) != 0)
      return error(at, "general.alignment = " + std::to_string(*v) + " is not a power of two");
    out->alignment_ = *v;
  }

  // Tensor infos.
  std::vector<uint64_t> info_at(static_cast<size_t>(tensor_count));
  out->tensors_.resize(static_cast<size_t>(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo& t = out->tensors_[static_cast<size_t>(i)];
    QFORGE_RETURN_IF_ERROR(read_tensor_info(i, &t, &info_at[static_cast<size_t>(i)]));
    if (!out->tensor_index_.emplace(t.name, static_cast<size_t>(i)).second)
      return error(info_at[static_cast<size_t>(i)], "duplicate tensor name '" + t.name + "'");
  }

  // Data section: starts at the next multiple of the alignment after the tensor infos.
  const uint64_t align = out->alignment_;
  const uint64_t infos_end = pos_;
  const uint64_t data_offset = (infos_end + align - 1) / align * align;  // no overflow: both < 2^32 + file size
  if (data_offset > size_) {
    if (tensor_count > 0)
      return error(infos_end, "the data section would start at byte " + std::to_string(data_offset) +
                                  " (alignment " + std::to_string(align) + "), past the end of the file (" +
                                  std::to_string(size_) + " bytes)");
    out->data_offset_ = size_;  // a metadata-only file need not carry the final padding
  } else {
    out->data_offset_ = data_offset;
  }
  const uint64_t data_size = size_ - out->data_offset_;

  for (size_t i = 0; i < out->tensors_.size(); ++i) {
    const GgufTensorInfo& t = out->tensors_[i];
    const uint64_t offset_at = info_at[i] + 8 + t.name.size() + 4 + 8 * t.ne.size() + 4;
    if (t.offset % align != 0)
      return error(offset_at, "tensor '" + t.name + "' offset " + std::to_string(t.offset) +
                                  " is not a multiple of the alignment " + std::to_string(align));
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      return error(offset_at, "tensor '" + t.name + "' (" + std::to_string(t.nbytes) + " bytes at data offset " +
                                  std::to_string(t.offset) + ") runs past the end of the data section (" +
                                  std::to_string(data_size) + " bytes)", ErrorCode::out_of_range);
  }
  // No two tensors may share bytes.
  std::vector<size_t> order(out->tensors_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto& ta = out->tensors_[a];
    const auto& tb = out->tensors_[b];
    return ta.offset != tb.offset ? ta.offset < tb.offset : ta.nbytes < tb.nbytes;
  });
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensorInfo& prev = out->tensors_[order[k - 1]];
    const GgufTensorInfo& cur = out->tensors_[order[k]];
    if (prev.offset + prev.nbytes > cur.offset)
      return error(info_at[order[k]], "tensor '" + cur.name + "' (data offset " + std::to_string(cur.offset) +
                                          ") overlaps tensor '" + prev.name + "' (data offset " +
                                          std::to_string(prev.offset) + ", " + std::to_string(prev.nbytes) + " bytes)");
  }
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------

Expected<GgufFile> GgufFile::parse(const uint8_t* data, size_t size, const std::string& label) {
  GgufFile f;
  f.path_ = label;
  f.data_ = data;
  f.size_ = size;
  GgufParser parser(data, size, f.path_);
  QFORGE_RETURN_IF_ERROR(parser.parse(&f));
  return f;
}

Expected<GgufFile> GgufFile::open(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapping, MappedFile::open(path));
  QFORGE_ASSIGN_OR_RETURN(GgufFile f, parse(mapping->data(), mapping->size(), path));
  f.mapping_ = std::move(mapping);
  return f;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &metadata_[it->second].value;
}

Expected<const GgufValue*> GgufFile::require(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return parse_error(path_ + ": metadata key '" + std::string(key) + "' not found");
  return v;
}

Status GgufFile::type_error(std::string_view key, const GgufValue& v, const std::string& expected) const {
  return parse_error(path_ + ": key '" + std::string(key) + "' has type " + v.type_description() + ", expected " +
                     expected);
}

namespace {
template <class T>
Expected<T> with_key(const std::string& path, std::string_view key, Expected<T> r) {
  if (r.has_value()) return r;
  return Status::error(r.status().code(), path + ": key '" + std::string(key) + "' " + r.status().message());
}
}  // namespace

Expected<std::string> GgufFile::get_string(std::string_view key) const {
  QFORGE_ASSIGN_OR_RETURN(const GgufValue* v, require(key));
  return with_key(path_, key, v->to_str());
}

Expected<uint64_t> GgufFile::get_uint(std::string_view key) const {
  QFORGE_ASSIGN_OR_RETURN(const GgufValue* v, require(key));
  return with_key(path_, key, v->to_uint());
}

Expected<uint32_t> GgufFile::get_u32(std::string_view key) const {
  QFORGE_ASSIGN_OR_RETURN(uint64_t v, get_uint(key));
  if (v > std::numeric_limits<uint32_t>::max())
    return parse_error(path_ + ": key '" + std::string(key) + "' = " + std::to_string(v) + " does not fit in u32");
  return static_cast<uint32_t>(v);
}

Expected<int64_t> GgufFile::get_int(std::string_view key) const {
  QFORGE_ASSIGN_OR_RETURN(const GgufValue* v, require(key));
  return with_key(path_, key, v->to_int());
}

Expected<double> GgufFile::get_float(std::string_view key) const {
  QFORGE_ASSIGN_OR_RETURN(const GgufValue* v, require(key));
  return with_key(path_, key, v->to_float());
}

Expected<bool> GgufFile::get_bool(std::string_view key) const {
  QFORGE_ASSIGN_OR_RETURN(const GgufValue* v, require(key));
  return with_key(path_, key, v->to_bool());
}

Expected<std::vector<int64_t>> GgufFile::get_int_array(std::string_view key) const {
  QFORGE_ASSIGN_OR_RETURN(const GgufValue* v, require(key));
  auto convert = [](const auto& items) {
    std::vector<int64_t> out(items.size());
    for (size_t i = 0; i < items.size(); ++i) out[i] = static_cast<int64_t>(items[i]);
    return out;
  };
  if (const auto* a = v->array_if<uint8_t>()) return convert(*a);
  if (const auto* a = v->array_if<int8_t>()) return convert(*a);
  if (const auto* a = v->array_if<uint16_t>()) return convert(*a);
  if (const auto* a = v->array_if<int16_t>()) return convert(*a);
  if (const auto* a = v->array_if<uint32_t>()) return convert(*a);
  if (const auto* a = v->array_if<int32_t>()) return convert(*a);
  if (const auto* a = v->array_if<int64_t>()) return *a;
  if (const auto* a = v->array_if<uint64_t>()) {
    for (size_t i = 0; i < a->size(); ++i)
      if ((*a)[i] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return parse_error(path_ + ": key '" + std::string(key) + "' element " + std::to_string(i) + " = " +
                           std::to_string((*a)[i]) + " does not fit in i64");
    return convert(*a);
  }
  return type_error(key, *v, "an integer array");
}

Expected<std::vector<float>> GgufFile::get_float_array(std::string_view key) const {
  QFORGE_ASSIGN_OR_RETURN(const GgufValue* v, require(key));
  if (const auto* a = v->array_if<float>()) return *a;
  if (const auto* a = v->array_if<double>()) return std::vector<float>(a->begin(), a->end());
  return type_error(key, *v, "an array of f32 or f64");
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::span<const uint8_t> GgufFile::tensor_bytes(const GgufTensorInfo& info) const {
  return {data_ + data_offset_ + info.offset, static_cast<size_t>(info.nbytes)};
}

Expected<Tensor> GgufFile::tensor(std::string_view name) const {
  const GgufTensorInfo* info = find_tensor(name);
  if (info == nullptr) return invalid_argument(path_ + ": no tensor named '" + std::string(name) + "'");
  return tensor(*info);
}

Expected<Tensor> GgufFile::tensor(const GgufTensorInfo& info) const {
  std::optional<DType> dtype = ggml_type_to_dtype(info.type);
  if (!dtype)
    return unsupported(path_ + ": tensor '" + info.name + "' has block type " + ggml_type_name(info.type) +
                       ", which has no plain element type (dequantize it through the format table)");
  std::span<const uint8_t> bytes = tensor_bytes(info);
  const auto address = reinterpret_cast<uintptr_t>(bytes.data());
  if (address % dtype_size(*dtype) != 0) {
    // A small custom alignment (or a caller's unaligned buffer): copy rather than hand out a
    // misaligned pointer.
    Tensor copy = Tensor::zeros(*dtype, info.shape);
    if (!bytes.empty()) std::memcpy(copy.data(), bytes.data(), bytes.size());
    return copy;
  }
  void* data = const_cast<uint8_t*>(bytes.data());  // read-only mapping; Tensor has no const view
  return Tensor::view(*dtype, info.shape, data, mapping_);
}

}  // namespace qforge
