// DType names and sizes. The numeric conversions live in float_convert.cpp.
#include "qforge/dtype.h"

#include <array>

namespace qforge {
namespace {

struct DTypeInfo {
  DType type;
  size_t size;
  const char* name;
  const char* safetensors_name;
  bool is_float;
};

// One row per dtype; the enum value is the index.
constexpr std::array<DTypeInfo, 13> kDTypes = {{
    {DType::f32, 4, "f32", "F32", true},
    {DType::f16, 2, "f16", "F16", true},
    {DType::bf16, 2, "bf16", "BF16", true},
    {DType::f8_e4m3fn, 1, "f8_e4m3fn", "F8_E4M3", true},
    {DType::f8_e5m2, 1, "f8_e5m2", "F8_E5M2", true},
    {DType::f8_e8m0, 1, "f8_e8m0", "F8_E8M0", true},
    {DType::i8, 1, "i8", "I8", false},
    {DType::u8, 1, "u8", "U8", false},
    {DType::i16, 2, "i16", "I16", false},
    {DType::i32, 4, "i32", "I32", false},
    {DType::i64, 8, "i64", "I64", false},
    {DType::boolean, 1, "bool", "BOOL", false},
    {DType::f64, 8, "f64", "F64", true},
}};

const DTypeInfo& info(DType t) {
  auto i = static_cast<size_t>(t);
  QFORGE_CHECK(i < kDTypes.size() && kDTypes[i].type == t);
  return kDTypes[i];
}

}  // namespace

size_t dtype_size(DType t) { return info(t).size; }
const char* dtype_name(DType t) { return info(t).name; }
const char* dtype_safetensors_name(DType t) { return info(t).safetensors_name; }
bool dtype_is_float(DType t) { return info(t).is_float; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.type;
  return std::nullopt;
}

std::optional<DType> dtype_from_safetensors_name(std::string_view name) {
  for (const auto& d : kDTypes)
    if (name == d.safetensors_name) return d.type;
  return std::nullopt;
}

}  // namespace qforge
