// Fuzzes the safetensors header parser: any input must give either an error with a message or a
// file whose every tensor view lies inside the input (ASan catches a byte read out of bounds).
#include <cstddef>
#include <cstdint>

#include "qforge/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = qforge::SafetensorsFile::parse(data, size, "fuzz-input");
  if (!file.has_value()) {
    if (file.status().message().empty()) __builtin_trap();  // errors must say what is wrong
    return 0;
  }
  uint8_t acc = 0;
  for (const auto& info : file->tensors()) {
    if (info.begin > info.end || file->data_offset() + info.end > size) __builtin_trap();
    if (file->find(info.name) != &info) __builtin_trap();
    auto tensor = file->tensor(info.name);
    if (!tensor.has_value()) __builtin_trap();  // every listed tensor must be retrievable
    if (tensor->nbytes() != info.end - info.begin) __builtin_trap();
    const auto* bytes = static_cast<const uint8_t*>(tensor->data());
    for (size_t i = 0; i < tensor->nbytes(); ++i) acc ^= bytes[i];
  }
  volatile uint8_t sink = acc;
  (void)sink;
  return 0;
}
