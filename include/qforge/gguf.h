// GGUF v3 container: a strict, zero-copy reader for untrusted files and a streaming, atomic,
// deterministic writer. Block formats (what the bytes of a Q4_K tensor mean) live in the format
// table (qforge/format.h); this header only knows each ggml type's block length and block size,
// which is what the container needs to validate tensor byte sizes.
//
// File layout (all little-endian; docs/formats.md, "GGUF container" has the field-by-field version):
//   u32 magic "GGUF" | u32 version (3; 2 accepted) | u64 tensor_count | u64 metadata_kv_count
//   metadata_kv_count x { string key | u32 value_type | value }
//   tensor_count x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   zero padding to general.alignment (default 32) | data section (each tensor at data + offset)
// string = u64 byte length + bytes (no NUL); array value = u32 element type + u64 count + elements.
// ne[0] is the fastest-varying dimension: a row-major [rows, cols] weight has ne = {cols, rows}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "qforge/dtype.h"
#include "qforge/status.h"
#include "qforge/tensor.h"

namespace qforge {

// ---------------------------------------------------------------------------------------------
// ggml tensor types (file-format metadata, not quantization formats)

// Ids as in ggml.h; append-only there, retired ids kept as comments.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  // Q4_2 = 4, Q4_3 = 5: removed from ggml
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  // Q4_0_4_4 = 31, Q4_0_4_8 = 32, Q4_0_8_8 = 33: removed from GGUF files (repacked at load time)
  TQ1_0 = 34,
  TQ2_0 = 35,
  // IQ4_NL_4_4 = 36, IQ4_NL_4_8 = 37, IQ4_NL_8_8 = 38: removed from GGUF files
  MXFP4 = 39,
  NVFP4 = 40,  // 4 x (16 E2M1 codes + one UE4M3 scale); no per-tensor scale
  Q1_0 = 41,
};

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;     // "Q4_K", "F16", ... (gguf-py spelling)
  int64_t block_size;   // elements per block; 1 for plain types
  uint32_t type_size;   // bytes per block
  bool quantized;
};

// Every ggml type id qforge knows, in id order (removed ids are absent).
std::span<const GgmlTypeInfo> all_ggml_types();
// The type's row, or null for an unknown or removed id.
const GgmlTypeInfo* find_ggml_type(uint32_t id);
const GgmlTypeInfo& ggml_type_info(GgmlType type);  // `type` must be a known id
const char* ggml_type_name(GgmlType type);
// "Q4_K (12)", "removed type Q4_0_4_4 (31)", "unknown type 99".
std::string ggml_type_id_description(uint32_t id);
// Case-insensitive ("q4_k" and "Q4_K" both work).
std::optional<GgmlType> ggml_type_from_name(std::string_view name);
// Bytes of a tensor with dims `ne` (ggml order). Errors: ne[0] not a multiple of the block
// size, a negative dim, or an element/byte count that overflows.
Expected<uint64_t> ggml_tensor_nbytes(GgmlType type, std::span<const int64_t> ne);
// Plain element types map to qforge dtypes (F32, F16, BF16, F64, I8, I16, I32, I64).
std::optional<DType> ggml_type_to_dtype(GgmlType type);
std::optional<GgmlType> ggml_type_from_dtype(DType dtype);

// ---------------------------------------------------------------------------------------------
// Metadata values

enum class GgufValueType : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};
const char* gguf_value_type_name(GgufValueType type);  // "u32", "string", "array", ...
bool gguf_value_type_is_valid(uint32_t id);

// One metadata value: a scalar, a string, or an array of one element type. Arrays of arrays are
// allowed (each inner array has its own element type). Note: llama.cpp's own loader rejects
// nested arrays, so qforge writes them only when asked to.
class GgufValue {
 public:
  GgufValue() : data_(uint8_t{0}) {}
  explicit GgufValue(uint8_t v) : data_(v) {}
  explicit GgufValue(int8_t v) : data_(v) {}
  explicit GgufValue(uint16_t v) : data_(v) {}
  explicit GgufValue(int16_t v) : data_(v) {}
  explicit GgufValue(uint32_t v) : data_(v) {}
  explicit GgufValue(int32_t v) : data_(v) {}
  explicit GgufValue(float v) : data_(v) {}
  explicit GgufValue(bool v) : data_(v) {}
  explicit GgufValue(std::string v) : data_(std::move(v)) {}
  explicit GgufValue(const char* v) : data_(std::string(v)) {}
  explicit GgufValue(uint64_t v) : data_(v) {}
  explicit GgufValue(int64_t v) : data_(v) {}
  explicit GgufValue(double v) : data_(v) {}
  // An array of scalars or strings; element type from T.
  template <class T>
  static GgufValue array(std::vector<T> items) {
    GgufValue v;
    v.data_ = std::move(items);
    return v;
  }
  // An array whose elements are arrays (each must be an array; GgufWriter checks).
  static GgufValue array_of_arrays(std::vector<GgufValue> items) { return array(std::move(items)); }

  GgufValueType type() const;
  bool is_array() const { return type() == GgufValueType::array; }
  // Arrays only: the element type and the number of elements.
  GgufValueType element_type() const;
  size_t size() const;

  // Exact-type access: null when the value is not of C++ type T (T = uint8_t ... double, bool,
  // std::string).
  template <class T>
  const T* get_if() const { return std::get_if<T>(&data_); }
  // Arrays with element type T (T = a scalar type, bool, std::string, or GgufValue for arrays
  // of arrays): null otherwise.
  template <class T>
  const std::vector<T>* array_if() const { return std::get_if<std::vector<T>>(&data_); }

  // Converting getters; errors read "has type string, expected ..." (GgufFile prefixes the key).
  Expected<uint64_t> to_uint() const;  // any integer type holding a value >= 0
  Expected<int64_t> to_int() const;    // any integer type holding a value that fits in i64
  Expected<double> to_float() const;   // f32 or f64
  Expected<bool> to_bool() const;
  Expected<std::string> to_str() const;  // string only
  // The type as people read it: "u32", "string", "array of string", "array of array".
  std::string type_description() const;
  // Short human-readable rendering for inspect output: `42`, `"llama"`, `[string x 32000: "<unk>", ...]`.
  std::string describe(size_t max_items = 8) const;

  bool operator==(const GgufValue& other) const;

 private:
  std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string, uint64_t,
               int64_t, double, std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>,
               std::vector<int16_t>, std::vector<uint32_t>, std::vector<int32_t>, std::vector<float>,
               std::vector<bool>, std::vector<std::string>, std::vector<uint64_t>, std::vector<int64_t>,
               std::vector<double>, std::vector<GgufValue>>
      data_;
};

// Keys are 1..65535 bytes of printable ASCII (0x20..0x7e); the spec asks for ASCII and
// `lower_snake_case.segments`, which qforge does not enforce because published files bend it.
bool gguf_key_is_valid(std::string_view key);

struct GgufKeyValue {
  std::string key;
  GgufValue value;
};

// ---------------------------------------------------------------------------------------------
// Reader

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // ggml order: ne[0] varies fastest
  Shape shape;              // row-major order (reversed ne), as the rest of qforge uses
  uint64_t offset = 0;      // relative to the data section; a multiple of the alignment
  uint64_t nbytes = 0;
  int64_t numel() const { return shape_numel(shape); }
};

// Limits of the reader (beyond "everything must lie inside the file").
inline constexpr uint32_t kGgufMaxDims = 4;           // GGML_MAX_DIMS
inline constexpr size_t kGgufMaxTensorNameBytes = 63;  // GGML_MAX_NAME - 1 (ggml stores a NUL)
inline constexpr size_t kGgufMaxKeyBytes = 65535;      // the spec's key limit
inline constexpr int kGgufMaxArrayDepth = 8;           // arrays of arrays nested deeper are rejected
inline constexpr uint32_t kGgufDefaultAlignment = 32;

class GgufFile {
 public:
  // Maps the file and validates everything but the tensor bytes themselves. Errors name the file,
  // the key or tensor, and the byte offset.
  static Expected<GgufFile> open(const std::string& path);
  // Parses a buffer the caller keeps alive for the object's lifetime (fuzzing, tests).
  static Expected<GgufFile> parse(const uint8_t* data, size_t size, const std::string& label);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section
  size_t file_size() const { return size_; }

  // Metadata in file order.
  const std::vector<GgufKeyValue>& metadata() const { return metadata_; }
  const GgufValue* find(std::string_view key) const;
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  // Typed getters: an error names the file and key when the key is missing or has another type,
  // e.g. "m.gguf: key 'llama.block_count' has type string, expected an unsigned integer ...".
  Expected<std::string> get_string(std::string_view key) const;
  Expected<uint64_t> get_uint(std::string_view key) const;  // any integer type, value >= 0
  Expected<uint32_t> get_u32(std::string_view key) const;   // any integer type, value in u32 range
  Expected<int64_t> get_int(std::string_view key) const;
  Expected<double> get_float(std::string_view key) const;   // f32 or f64
  Expected<bool> get_bool(std::string_view key) const;
  // Arrays with element type T exactly (T = a scalar type, std::string, or GgufValue); the span
  // points into this object.
  template <class T>
  Expected<std::span<const T>> get_array(std::string_view key) const {
    QFORGE_ASSIGN_OR_RETURN(const GgufValue* v, require(key));
    if (const auto* a = v->array_if<T>()) return std::span<const T>(*a);
    return type_error(key, *v, "an array of " + std::string(array_element_name<T>()));
  }
  // Any integer array converted to i64 (token types are i32 in some files, u32 in others).
  Expected<std::vector<int64_t>> get_int_array(std::string_view key) const;
  Expected<std::vector<float>> get_float_array(std::string_view key) const;  // f32 or f64 arrays

  // Tensors in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  // The tensor's bytes inside the mapping (zero-copy).
  std::span<const uint8_t> tensor_bytes(const GgufTensorInfo& info) const;
  // A plain-typed tensor (F32, F16, BF16, F64, I8..I64) as a row-major qforge Tensor: a view into
  // the mapping that keeps it alive, or a copy when the data is not aligned for its element type.
  // Quantized types are an error naming the type.
  Expected<Tensor> tensor(std::string_view name) const;
  Expected<Tensor> tensor(const GgufTensorInfo& info) const;

 private:
  friend class GgufParser;
  Expected<const GgufValue*> require(std::string_view key) const;
  Status type_error(std::string_view key, const GgufValue& v, const std::string& expected) const;
  template <class T>
  static const char* array_element_name() {
    if constexpr (std::is_same_v<T, uint8_t>) return "u8";
    else if constexpr (std::is_same_v<T, int8_t>) return "i8";
    else if constexpr (std::is_same_v<T, uint16_t>) return "u16";
    else if constexpr (std::is_same_v<T, int16_t>) return "i16";
    else if constexpr (std::is_same_v<T, uint32_t>) return "u32";
    else if constexpr (std::is_same_v<T, int32_t>) return "i32";
    else if constexpr (std::is_same_v<T, float>) return "f32";
    else if constexpr (std::is_same_v<T, uint64_t>) return "u64";
    else if constexpr (std::is_same_v<T, int64_t>) return "i64";
    else if constexpr (std::is_same_v<T, double>) return "f64";
    else if constexpr (std::is_same_v<T, std::string>) return "string";
    else if constexpr (std::is_same_v<T, GgufValue>) return "array";
    else static_assert(sizeof(T) == 0, "unsupported GGUF array element type (bool arrays: use find())");
  }

  std::string path_;
  std::shared_ptr<MappedFile> mapping_;  // null when parsed from a caller's buffer
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 3;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<GgufKeyValue> metadata_;
  std::map<std::string, size_t, std::less<>> key_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// ---------------------------------------------------------------------------------------------
// Writer

// Collects metadata (in insertion order; llama.cpp expects general.architecture first) and
// tensors, then finish() writes header, tensor infos with aligned offsets, padding and data to
// "<path>.tmp.*" and renames it over `path`: nothing is left at `path` on any error. Output is
// byte-for-byte deterministic and laid out as ggml's own writer does (each tensor padded to the
// alignment, in the order added). The alignment is general.alignment if set (u32, a power of two),
// else 32.
class GgufWriter {
 public:
  explicit GgufWriter(std::string path);

  // Sets `key`; an existing key keeps its position and gets the new value. Keys must pass
  // gguf_key_is_valid(); general.alignment must be a u32 power of two.
  Status set(std::string_view key, GgufValue value);
  Status set_string(std::string_view key, std::string value) { return set(key, GgufValue(std::move(value))); }
  Status set_u32(std::string_view key, uint32_t value) { return set(key, GgufValue(value)); }
  Status set_i32(std::string_view key, int32_t value) { return set(key, GgufValue(value)); }
  Status set_u64(std::string_view key, uint64_t value) { return set(key, GgufValue(value)); }
  Status set_f32(std::string_view key, float value) { return set(key, GgufValue(value)); }
  Status set_bool(std::string_view key, bool value) { return set(key, GgufValue(value)); }
  Status set_string_array(std::string_view key, std::vector<std::string> values) {
    return set(key, GgufValue::array(std::move(values)));
  }
  const std::vector<GgufKeyValue>& metadata() const { return metadata_; }

  // A tensor with row-major `shape` (stored reversed as ggml's ne) whose `nbytes` bytes the caller
  // keeps alive until finish(). nbytes must equal the size implied by type and shape.
  Status add_tensor(std::string name, GgmlType type, const Shape& shape, const void* data, size_t nbytes);
  // Bytes produced on demand during finish() into a buffer of exactly the tensor's size, so large
  // outputs stream without holding every tensor in memory.
  Status add_tensor_lazy(std::string name, GgmlType type, const Shape& shape,
                         std::function<Status(uint8_t* out, size_t nbytes)> produce);
  size_t tensor_count() const { return tensors_.size(); }

  uint32_t alignment() const;
  // Writes the file atomically.
  Status finish();
  // The same bytes finish() would write, in memory (tests, fuzz seeds, small files).
  Expected<std::vector<uint8_t>> to_bytes();

 private:
  struct Entry {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t nbytes;
    const void* data;
    std::function<Status(uint8_t*, size_t)> produce;
  };
  using Sink = std::function<Status(const void* data, size_t n)>;
  Status write_to(const Sink& sink);
  Status check_tensor(const std::string& name, GgmlType type, const Shape& shape, std::vector<int64_t>* ne,
                      uint64_t* nbytes) const;

  std::string path_;
  std::vector<GgufKeyValue> metadata_;
  std::vector<Entry> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace qforge
