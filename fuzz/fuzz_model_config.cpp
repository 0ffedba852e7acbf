// Fuzzes config.json parsing and tensor-name resolution: any input must give an error with a
// message or a config that passes validation; no input may crash or hang.
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "qforge/model.h"
#include "qforge/tensor_roles.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (qforge::Architecture arch : qforge::all_architectures()) {
    for (auto naming : {qforge::TensorNaming::hf, qforge::TensorNaming::gguf}) {
      auto r = qforge::resolve_tensor_role(arch, text, naming);
      if (!r.has_value() && r.status().message().empty()) __builtin_trap();
      if (r.has_value()) {
        auto name = qforge::tensor_name_for_role(arch, r->role, r->layer, r->is_bias, naming);
        if (!name.has_value()) __builtin_trap();  // every resolved tensor has a canonical name
      }
    }
  }
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto config = qforge::parse_model_config(j, "fuzz-input");
  if (!config.has_value()) {
    if (config.status().message().empty()) __builtin_trap();
    return 0;
  }
  if (!qforge::validate_model_config(*config).is_ok()) __builtin_trap();
  return 0;
}
