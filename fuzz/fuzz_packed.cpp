// Fuzzes the qforge packed-layout reader: a safetensors file whose "qforge" manifest and planes
// are arbitrary must give an error with a message, or quantized tensors that load and dequantize
// without touching memory outside their planes (ASan/UBSan catch that).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "qforge/format.h"
#include "qforge/packed.h"
#include "qforge/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = qforge::SafetensorsFile::parse(data, size, "fuzz-input");
  if (!file.has_value()) return 0;  // the safetensors parser has its own fuzz target
  auto packed = qforge::PackedFile::from_safetensors(std::move(file).value());
  if (!packed.has_value()) {
    if (packed.status().message().empty()) __builtin_trap();  // errors must say what is wrong
    return 0;
  }
  float acc = 0;
  for (const auto& info : packed->quantized()) {
    auto q = packed->load_quantized(info.name);
    if (!q.has_value()) __builtin_trap();  // validated at open: must load
    if (q->nbytes() != info.nbytes) __builtin_trap();
    // Plane sizes were checked against the shape, so rows * cols is bounded by the input size.
    std::vector<float> out(static_cast<size_t>(q->rows) * static_cast<size_t>(q->cols));
    if (!qforge::dequantize(*q, out.data()).is_ok()) __builtin_trap();  // same checks as open
    for (float v : out) acc += v;
  }
  for (const auto& name : packed->plain_names())
    if (!packed->plain(name).has_value()) __builtin_trap();
  volatile float sink = acc;
  (void)sink;
  return 0;
}
