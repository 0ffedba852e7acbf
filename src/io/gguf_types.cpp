// ggml type table and GGUF metadata values.
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>

#include "qforge/gguf.h"

namespace qforge {

namespace {

// Block lengths and sizes from the block structs in ggml-common.h (QK_K = 256; ggml_half = 2 bytes):
// e.g. block_q4_K = {d, dmin, scales[12], qs[128]} = 144 bytes per 256 elements.
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {GgmlType::F32, "F32", 1, 4, false},
    {GgmlType::F16, "F16", 1, 2, false},
    {GgmlType::Q4_0, "Q4_0", 32, 18, true},
    {GgmlType::Q4_1, "Q4_1", 32, 20, true},
    {GgmlType::Q5_0, "Q5_0", 32, 22, true},
    {GgmlType::Q5_1, "Q5_1", 32, 24, true},
    {GgmlType::Q8_0, "Q8_0", 32, 34, true},
    {GgmlType::Q8_1, "Q8_1", 32, 36, true},
    {GgmlType::Q2_K, "Q2_K", 256, 84, true},
    {GgmlType::Q3_K, "Q3_K", 256, 110, true},
    {GgmlType::Q4_K, "Q4_K", 256, 144, true},
    {GgmlType::Q5_K, "Q5_K", 256, 176, true},
    {GgmlType::Q6_K, "Q6_K", 256, 210, true},
    {GgmlType::Q8_K, "Q8_K", 256, 292, true},
    {GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66, true},
    {GgmlType::IQ2_XS, "IQ2_XS", 256, 74, true},
    {GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98, true},
    {GgmlType::IQ1_S, "IQ1_S", 256, 50, true},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 18, true},
    {GgmlType::IQ3_S, "IQ3_S", 256, 110, true},
    {GgmlType::IQ2_S, "IQ2_S", 256, 82, true},
    {GgmlType::IQ4_XS, "IQ4_XS", 256, 136, true},
    {GgmlType::I8, "I8", 1, 1, false},
    {GgmlType::I16, "I16", 1, 2, false},
    {GgmlType::I32, "I32", 1, 4, false},
    {GgmlType::I64, "I64", 1, 8, false},
    {GgmlType::F64, "F64", 1, 8, false},
    {GgmlType::IQ1_M, "IQ1_M", 256, 56, true},
    {GgmlType::BF16, "BF16", 1, 2, false},
    {GgmlType::TQ1_0, "TQ1_0", 256, 54, true},
    {GgmlType::TQ2_0, "TQ2_0", 256, 66, true},
    {GgmlType::MXFP4, "MXFP4", 32, 17, true},
    {GgmlType::NVFP4, "NVFP4", 64, 36, true},
    {GgmlType::Q1_0, "Q1_0", 128, 18, true},
};

constexpr uint32_t kGgmlTypeSlots = 42;  // one past the largest known id

struct TypeSlots {
  const GgmlTypeInfo* by_id[kGgmlTypeSlots] = {};
  constexpr TypeSlots() {
    for (const auto& t : kGgmlTypes) by_id[static_cast<uint32_t>(t.type)] = &t;
  }
};
constexpr TypeSlots kSlots;

const char* removed_type_name(uint32_t id) {
  switch (id) {
    case 4: return "Q4_2";
    case 5: return "Q4_3";
    case 31: return "Q4_0_4_4";
    case 32: return "Q4_0_4_8";
    case 33: return "Q4_0_8_8";
    case 36: return "IQ4_NL_4_4";
    case 37: return "IQ4_NL_4_8";
    case 38: return "IQ4_NL_8_8";
    default: return nullptr;
  }
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

std::span<const GgmlTypeInfo> all_ggml_types() { return kGgmlTypes; }

const GgmlTypeInfo* find_ggml_type(uint32_t id) { return id < kGgmlTypeSlots ? kSlots.by_id[id] : nullptr; }

const GgmlTypeInfo& ggml_type_info(GgmlType type) {
  const GgmlTypeInfo* info = find_ggml_type(static_cast<uint32_t>(type));
  QFORGE_CHECK_MSG(info != nullptr, "ggml_type_info: unknown GgmlType value");
  return *info;
}

const char* ggml_type_name(GgmlType type) {
  const GgmlTypeInfo* info = find_ggml_type(static_cast<uint32_t>(type));
  return info ? info->name : "unknown";
}

std::string ggml_type_id_description(uint32_t id) {
  if (const GgmlTypeInfo* info = find_ggml_type(id)) return std::string(info->name) + " (" + std::to_string(id) + ")";
  if (const char* removed = removed_type_name(id))
    return "removed type " + std::string(removed) + " (" + std::to_string(id) + ")";
  return "unknown type " + std::to_string(id);
}

std::optional<GgmlType> ggml_type_from_name(std::string_view name) {
  for (const auto& t : kGgmlTypes) {
    std::string_view n = t.name;
    if (n.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < n.size() && same; ++i)
      same = std::toupper(static_cast<unsigned char>(n[i])) == std::toupper(static_cast<unsigned char>(name[i]));
    if (same) return t.type;
  }
  return std::nullopt;
}

Expected<uint64_t> ggml_tensor_nbytes(GgmlType type, std::span<const int64_t> ne) {
  const GgmlTypeInfo* info = find_ggml_type(static_cast<uint32_t>(type));
  if (info == nullptr) return invalid_argument("ggml type id " + std::to_string(static_cast<uint32_t>(type)) + " is not known");
  // The product of the non-zero dimensions must fit too: an empty tensor's shape still feeds code
  // that multiplies dimensions in another order (strides, numel), which must not overflow either.
  uint64_t nonzero = 1;
  bool has_zero = false;
  for (size_t i = 0; i < ne.size(); ++i) {
    if (ne[i] < 0) return invalid_argument("dimension ne[" + std::to_string(i) + "] = " + std::to_string(ne[i]) + " is negative");
    const uint64_t d = static_cast<uint64_t>(ne[i]);
    if (d == 0) {
      has_zero = true;
      continue;
    }
    if (mul_overflows(nonzero, d, &nonzero) || nonzero > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return out_of_range("element count overflows int64");
  }
  const uint64_t numel = has_zero ? 0 : nonzero;
  const int64_t ne0 = ne.empty() ? 1 : ne[0];
  if (ne0 % info->block_size != 0)
    return invalid_argument("ne[0] = " + std::to_string(ne0) + " (the row length) is not a multiple of " +
                            info->name + "'s block size " + std::to_string(info->block_size));
  uint64_t nbytes = 0;
  if (mul_overflows(numel / static_cast<uint64_t>(info->block_size), info->type_size, &nbytes) ||
      nbytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return out_of_range("byte size overflows int64");
  return nbytes;
}

std::optional<DType> ggml_type_to_dtype(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return DType::f32;
    case GgmlType::F16: return DType::f16;
    case GgmlType::BF16: return DType::bf16;
    case GgmlType::F64: return DType::f64;
    case GgmlType::I8: return DType::i8;
    case GgmlType::I16: return DType::i16;
    case GgmlType::I32: return DType::i32;
    case GgmlType::I64: return DType::i64;
    default: return std::nullopt;
  }
}

std::optional<GgmlType> ggml_type_from_dtype(DType dtype) {
  for (const auto& t : kGgmlTypes) {
    auto d = ggml_type_to_dtype(t.type);
    if (d && *d == dtype) return t.type;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------

const char* gguf_value_type_name(GgufValueType type) {
  switch (type) {
    case GgufValueType::u8: return "u8";
    case GgufValueType::i8: return "i8";
    case GgufValueType::u16: return "u16";
    case GgufValueType::i16: return "i16";
    case GgufValueType::u32: return "u32";
    case GgufValueType::i32: return "i32";
    case GgufValueType::f32: return "f32";
    case GgufValueType::boolean: return "bool";
    case GgufValueType::string: return "string";
    case GgufValueType::array: return "array";
    case GgufValueType::u64: return "u64";
    case GgufValueType::i64: return "i64";
    case GgufValueType::f64: return "f64";
  }
  return "invalid";
}

bool gguf_value_type_is_valid(uint32_t id) { return id <= static_cast<uint32_t>(GgufValueType::f64); }

bool gguf_key_is_valid(std::string_view key) {
  if (key.empty() || key.size() > kGgufMaxKeyBytes) return false;
  for (char c : key)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

namespace {

// Variant alternative index -> GGUF type: scalars and string first (0..11), arrays after (12..24).
constexpr GgufValueType kScalarTypes[] = {
    GgufValueType::u8,  GgufValueType::i8,      GgufValueType::u16,    GgufValueType::i16,
    GgufValueType::u32, GgufValueType::i32,     GgufValueType::f32,    GgufValueType::boolean,
    GgufValueType::string, GgufValueType::u64,  GgufValueType::i64,    GgufValueType::f64,
};
constexpr size_t kFirstArrayIndex = 12;
constexpr GgufValueType kArrayElementTypes[] = {
    GgufValueType::u8,  GgufValueType::i8,      GgufValueType::u16,    GgufValueType::i16,
    GgufValueType::u32, GgufValueType::i32,     GgufValueType::f32,    GgufValueType::boolean,
    GgufValueType::string, GgufValueType::u64,  GgufValueType::i64,    GgufValueType::f64,
    GgufValueType::array,
};

std::string quote(const std::string& s, size_t max_bytes = 48) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < max_bytes; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_bytes) out += "...";
  return out + "\"";
}

template <class T>
std::string scalar_text(const T& v) {
  if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
  else if constexpr (std::is_same_v<T, std::string>) return quote(v);
  else if constexpr (std::is_floating_point_v<T>) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
    return buf;
  } else return std::to_string(v);
}

}  // namespace

GgufValueType GgufValue::type() const {
  size_t i = data_.index();
  return i < kFirstArrayIndex ? kScalarTypes[i] : GgufValueType::array;
}

GgufValueType GgufValue::element_type() const {
  QFORGE_CHECK_MSG(is_array(), "GgufValue::element_type() on a non-array");
  return kArrayElementTypes[data_.index() - kFirstArrayIndex];
}

size_t GgufValue::size() const {
  return std::visit(
      [](const auto& v) -> size_t {
        using T = std::decay_t<decltype(v)>;
        if constexpr (requires { v.size(); } && !std::is_same_v<T, std::string>) return v.size();
        else return 0;
      },
      data_);
}

std::string GgufValue::type_description() const {
  if (!is_array()) return gguf_value_type_name(type());
  return std::string("array of ") + gguf_value_type_name(element_type());
}

Expected<uint64_t> GgufValue::to_uint() const {
  return std::visit(
      [this](const auto& v) -> Expected<uint64_t> {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if constexpr (std::is_signed_v<T>) {
            if (v < 0) return parse_error("has negative value " + std::to_string(v) + " (type " + type_description() + "), expected a value >= 0");
          }
          return static_cast<uint64_t>(v);
        } else {
          return parse_error("has type " + type_description() + ", expected an unsigned integer (u8/u16/u32/u64, or a signed integer >= 0)");
        }
      },
      data_);
}

Expected<int64_t> GgufValue::to_int() const {
  return std::visit(
      [this](const auto& v) -> Expected<int64_t> {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if constexpr (std::is_same_v<T, uint64_t>) {
            if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
              return parse_error("has u64 value " + std::to_string(v) + ", which does not fit in i64");
          }
          return static_cast<int64_t>(v);
        } else {
          return parse_error("has type " + type_description() + ", expected an integer (u8..u64 or i8..i64)");
        }
      },
      data_);
}

Expected<double> GgufValue::to_float() const {
  if (const float* f = get_if<float>()) return static_cast<double>(*f);
  if (const double* d = get_if<double>()) return *d;
  return parse_error("has type " + type_description() + ", expected a float (f32 or f64)");
}

Expected<bool> GgufValue::to_bool() const {
  if (const bool* b = get_if<bool>()) return *b;
  return parse_error("has type " + type_description() + ", expected bool");
}

Expected<std::string> GgufValue::to_str() const {
  if (const std::string* s = get_if<std::string>()) return *s;
  return parse_error("has type " + type_description() + ", expected string");
}

std::string GgufValue::describe(size_t max_items) const {
  return std::visit(
      [this, max_items](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::vector<GgufValue>>) {
          std::string s = "[array x " + std::to_string(v.size());
          for (size_t i = 0; i < v.size() && i < max_items; ++i) s += (i ? ", " : ": ") + v[i].describe(max_items);
          return s + (v.size() > max_items ? ", ...]" : "]");
        } else if constexpr (requires { typename T::value_type; } && !std::is_same_v<T, std::string>) {
          std::string s = "[" + std::string(gguf_value_type_name(element_type())) + " x " + std::to_string(v.size());
          for (size_t i = 0; i < v.size() && i < max_items; ++i) {
            s += i ? ", " : ": ";
            s += scalar_text(static_cast<typename T::value_type>(v[i]));
          }
          return s + (v.size() > max_items ? ", ...]" : "]");
        } else {
          return scalar_text(v);
        }
      },
      data_);
}

bool GgufValue::operator==(const GgufValue& other) const { return data_ == other.data_; }

}  // namespace qforge
