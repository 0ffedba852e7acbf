// libFuzzer target for the GGUF reader: parse, then walk every metadata value and touch every
// byte of every tensor, so a validation gap shows up as an ASan report rather than a silent
// out-of-bounds read. Accepted inputs are also re-written and re-parsed: the writer must accept
// whatever the reader accepted and produce an image that reads back the same.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "qforge/gguf.h"

namespace {

uint64_t walk(const qforge::GgufValue& v, uint64_t acc) {
  using qforge::GgufValue;
  acc = acc * 31 + static_cast<uint32_t>(v.type());
  if (const auto* s = v.get_if<std::string>()) {
    for (char c : *s) acc = acc * 131 + static_cast<uint8_t>(c);
  } else if (const auto* items = v.array_if<GgufValue>()) {
    for (const auto& item : *items) acc = walk(item, acc);
  } else if (const auto* strings = v.array_if<std::string>()) {
    for (const auto& s : *strings) acc = acc * 7 + s.size() + (s.empty() ? 0 : static_cast<uint8_t>(s.back()));
  } else if (v.is_array()) {
    acc += v.size();
  }
  (void)v.describe(4);
  (void)v.to_uint();
  (void)v.to_float();
  return acc;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A heap copy of exactly `size` bytes so ASan sees reads past the end.
  std::vector<uint8_t> buf(data, data + size);
  auto file = qforge::GgufFile::parse(buf.data(), buf.size(), "fuzz.gguf");
  if (!file.has_value()) {
    if (file.status().message().empty()) std::abort();  // every rejection must explain itself
    return 0;
  }
  uint64_t acc = 0;
  for (const auto& kv : file->metadata()) acc = walk(kv.value, acc + kv.key.size());
  for (const auto& t : file->tensors()) {
    for (uint8_t b : file->tensor_bytes(t)) acc += b;
    auto tensor = file->tensor(t);
    if (tensor.has_value() && tensor->nbytes() > 0) acc += static_cast<const uint8_t*>(tensor->data())[tensor->nbytes() - 1];
  }

  // Round trip through the writer.
  qforge::GgufWriter writer("unused.gguf");
  for (const auto& kv : file->metadata())
    if (!writer.set(kv.key, kv.value).is_ok()) std::abort();  // the reader accepted it, so must the writer
  for (const auto& t : file->tensors()) {
    auto bytes = file->tensor_bytes(t);
    if (!writer.add_tensor(t.name, t.type, t.shape, bytes.data(), bytes.size()).is_ok()) std::abort();
  }
  auto image = writer.to_bytes();
  if (!image.has_value()) std::abort();
  auto again = qforge::GgufFile::parse(image->data(), image->size(), "rewritten.gguf");
  if (!again.has_value() || again->metadata().size() != file->metadata().size() ||
      again->tensors().size() != file->tensors().size())
    std::abort();
  for (size_t i = 0; i < file->metadata().size(); ++i)
    if (again->metadata()[i].key != file->metadata()[i].key) std::abort();
  for (size_t i = 0; i < file->tensors().size(); ++i) {
    auto a = file->tensor_bytes(file->tensors()[i]);
    auto b = again->tensor_bytes(again->tensors()[i]);
    if (a.size() != b.size() || (a.size() > 0 && std::memcmp(a.data(), b.data(), a.size()) != 0)) std::abort();
  }
  return static_cast<int>(acc & 0);
}
