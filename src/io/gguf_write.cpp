// GGUF writer: deterministic bytes, ggml's layout (tensors in insertion order, each padded to the
// alignment), streamed through AtomicFile so no partial file is ever visible.
#include <algorithm>
#include <bit>
#include <cstring>

#include "qforge/atomic_file.h"
#include "qforge/gguf.h"

namespace qforge {

static_assert(std::endian::native == std::endian::little, "the GGUF writer assumes a little-endian host");

namespace {

constexpr uint32_t kWriteVersion = 3;

uint64_t align_up(uint64_t x, uint64_t align) { return (x + align - 1) / align * align; }

template <class T>
void put(std::vector<uint8_t>* buf, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  buf->insert(buf->end(), p, p + sizeof(T));
}

void put_string(std::vector<uint8_t>* buf, std::string_view s) {
  put<uint64_t>(buf, s.size());
  buf->insert(buf->end(), s.begin(), s.end());
}

// Validates what the reader would reject: arrays of arrays whose elements are not arrays, or
// nesting deeper than the reader accepts.
Status check_value(const GgufValue& v, int depth, const std::string& what) {
  if (!v.is_array() || v.element_type() != GgufValueType::array) return Status::ok();
  const auto& items = *v.array_if<GgufValue>();
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string item = what + "[" + std::to_string(i) + "]";
    if (depth + 1 >= kGgufMaxArrayDepth)
      return invalid_argument(item + ": arrays nested more than " + std::to_string(kGgufMaxArrayDepth) + " deep");
    if (!items[i].is_array())
      return invalid_argument(item + " is a " + items[i].type_description() +
                              " inside an array of arrays (every element must be an array)");
    QFORGE_RETURN_IF_ERROR(check_value(items[i], depth + 1, item));
  }
  return Status::ok();
}

template <class T>
void put_items(std::vector<uint8_t>* buf, const std::vector<T>& items) {
  if constexpr (std::is_same_v<T, std::string>) {
    for (const auto& s : items) put_string(buf, s);
  } else if constexpr (std::is_same_v<T, bool>) {
    for (bool b : items) buf->push_back(b ? 1 : 0);
  } else {
    const auto* p = reinterpret_cast<const uint8_t*>(items.data());
    buf->insert(buf->end(), p, p + items.size() * sizeof(T));
  }
}

// The payload of an array value: element type, count, elements (nested arrays: their payloads).
void put_array_payload(std::vector<uint8_t>* buf, const GgufValue& v) {
  const GgufValueType elem = v.element_type();
  put<uint32_t>(buf, static_cast<uint32_t>(elem));
  put<uint64_t>(buf, v.size());
  switch (elem) {
    case GgufValueType::u8: put_items(buf, *v.array_if<uint8_t>()); break;
    case GgufValueType::i8: put_items(buf, *v.array_if<int8_t>()); break;
    case GgufValueType::u16: put_items(buf, *v.array_if<uint16_t>()); break;
    case GgufValueType::i16: put_items(buf, *v.array_if<int16_t>()); break;
    case GgufValueType::u32: put_items(buf, *v.array_if<uint32_t>()); break;
    case GgufValueType::i32: put_items(buf, *v.array_if<int32_t>()); break;
    case GgufValueType::f32: put_items(buf, *v.array_if<float>()); break;
    case GgufValueType::boolean: put_items(buf, *v.array_if<bool>()); break;
    case GgufValueType::string: put_items(buf, *v.array_if<std::string>()); break;
    case GgufValueType::u64: put_items(buf, *v.array_if<uint64_t>()); break;
    case GgufValueType::i64: put_items(buf, *v.array_if<int64_t>()); break;
    case GgufValueType::f64: put_items(buf, *v.array_if<double>()); break;
    case GgufValueType::array:
      for (const GgufValue& item : *v.array_if<GgufValue>()) put_array_payload(buf, item);
      break;
  }
}

void put_value(std::vector<uint8_t>* buf, const GgufValue& v) {
  const GgufValueType type = v.type();
  put<uint32_t>(buf, static_cast<uint32_t>(type));
  switch (type) {
    case GgufValueType::u8: put(buf, *v.get_if<uint8_t>()); break;
    case GgufValueType::i8: put(buf, *v.get_if<int8_t>()); break;
    case GgufValueType::u16: put(buf, *v.get_if<uint16_t>()); break;
    case GgufValueType::i16: put(buf, *v.get_if<int16_t>()); break;
    case GgufValueType::u32: put(buf, *v.get_if<uint32_t>()); break;
    case GgufValueType::i32: put(buf, *v.get_if<int32_t>()); break;
    case GgufValueType::f32: put(buf, *v.get_if<float>()); break;
    case GgufValueType::boolean: buf->push_back(*v.get_if<bool>() ? 1 : 0); break;
    case GgufValueType::string: put_string(buf, *v.get_if<std::string>()); break;
    case GgufValueType::u64: put(buf, *v.get_if<uint64_t>()); break;
    case GgufValueType::i64: put(buf, *v.get_if<int64_t>()); break;
    case GgufValueType::f64: put(buf, *v.get_if<double>()); break;
    case GgufValueType::array: put_array_payload(buf, v); break;
  }
}

}  // namespace

GgufWriter::GgufWriter(std::string path) : path_(std::move(path)) {}

Status GgufWriter::set(std::string_view key, GgufValue value) {
  const std::string k(key);
  if (!gguf_key_is_valid(k))
    return invalid_argument(path_ + ": invalid GGUF key '" + k.substr(0, 80) + "' (" + std::to_string(k.size()) +
                            " bytes; keys are 1.." + std::to_string(kGgufMaxKeyBytes) + " bytes of printable ASCII)");
  if (k == "general.alignment") {
    const uint32_t* a = value.get_if<uint32_t>();
    if (a == nullptr)
      return invalid_argument(path_ + ": general.alignment must be a u32, got " + value.type_description());
    if (*a == 0 || (*a & (*a - 1)) != 0)
      return invalid_argument(path_ + ": general.alignment = " + std::to_string(*a) + " is not a power of two");
  }
  QFORGE_RETURN_IF_ERROR(check_value(value, 0, path_ + ": key '" + k + "'"));
  for (auto& kv : metadata_) {
    if (kv.key == k) {
      kv.value = std::move(value);
      return Status::ok();
    }
  }
  metadata_.push_back({k, std::move(value)});
  return Status::ok();
}

uint32_t GgufWriter::alignment() const {
  for (const auto& kv : metadata_)
    if (kv.key == "general.alignment") return *kv.value.get_if<uint32_t>();  // checked by set()
  return kGgufDefaultAlignment;
}

Status GgufWriter::check_tensor(const std::string& name, GgmlType type, const Shape& shape, std::vector<int64_t>* ne,
                                uint64_t* nbytes) const {
  const std::string what = path_ + ": tensor '" + name + "'";
  if (name.empty()) return invalid_argument(path_ + ": tensor name is empty");
  if (name.size() > kGgufMaxTensorNameBytes)
    return invalid_argument(what + ": name is " + std::to_string(name.size()) + " bytes, ggml allows at most " +
                            std::to_string(kGgufMaxTensorNameBytes));
  if (tensor_index_.count(name) != 0) return invalid_argument(what + " was added twice");
  if (find_ggml_type(static_cast<uint32_t>(type)) == nullptr)
    return invalid_argument(what + ": " + ggml_type_id_description(static_cast<uint32_t>(type)));
  if (shape.size() > kGgufMaxDims)
    return invalid_argument(what + ": shape " + shape_to_string(shape) + " has more than " +
                            std::to_string(kGgufMaxDims) + " dimensions");
  ne->assign(shape.rbegin(), shape.rend());
  auto size = ggml_tensor_nbytes(type, *ne);
  if (!size.has_value())
    return Status::error(size.status().code(), what + " (" + ggml_type_name(type) + ", shape " +
                                                   shape_to_string(shape) + "): " + size.status().message());
  *nbytes = *size;
  return Status::ok();
}

Status GgufWriter::add_tensor(std::string name, GgmlType type, const Shape& shape, const void* data, size_t nbytes) {
  Entry e{std::move(name), type, {}, 0, data, nullptr};
  QFORGE_RETURN_IF_ERROR(check_tensor(e.name, type, shape, &e.ne, &e.nbytes));
  if (e.nbytes != nbytes)
    return invalid_argument(path_ + ": tensor '" + e.name + "' (" + ggml_type_name(type) + ", shape " +
                            shape_to_string(shape) + ") needs " + std::to_string(e.nbytes) + " bytes, got " +
                            std::to_string(nbytes));
  if (data == nullptr && nbytes > 0) return invalid_argument(path_ + ": tensor '" + e.name + "' has no data");
  tensor_index_.emplace(e.name, tensors_.size());
  tensors_.push_back(std::move(e));
  return Status::ok();
}

Status GgufWriter::add_tensor_lazy(std::string name, GgmlType type, const Shape& shape,
                                   std::function<Status(uint8_t* out, size_t nbytes)> produce) {
  if (!produce) return invalid_argument(path_ + ": tensor '" + name + "' has no producer");
  Entry e{std::move(name), type, {}, 0, nullptr, std::move(produce)};
  QFORGE_RETURN_IF_ERROR(check_tensor(e.name, type, shape, &e.ne, &e.nbytes));
  tensor_index_.emplace(e.name, tensors_.size());
  tensors_.push_back(std::move(e));
  return Status::ok();
}

Status GgufWriter::write_to(const Sink& sink) {
  static const uint8_t kZeros[256] = {};
  auto write_zeros = [&](uint64_t n) -> Status {
    while (n > 0) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof kZeros));
      QFORGE_RETURN_IF_ERROR(sink(kZeros, k));
      n -= k;
    }
    return Status::ok();
  };
  const uint64_t align = alignment();

  std::vector<uint8_t> head;
  head.reserve(1 << 16);
  put<uint32_t>(&head, 0x46554747u);  // "GGUF" in little-endian byte order
  put<uint32_t>(&head, kWriteVersion);
  put<uint64_t>(&head, tensors_.size());
  put<uint64_t>(&head, metadata_.size());
  for (const auto& kv : metadata_) {
    put_string(&head, kv.key);
    put_value(&head, kv.value);
  }
  uint64_t offset = 0;
  for (const Entry& e : tensors_) {
    put_string(&head, e.name);
    put<uint32_t>(&head, static_cast<uint32_t>(e.ne.size()));
    for (int64_t d : e.ne) put<uint64_t>(&head, static_cast<uint64_t>(d));
    put<uint32_t>(&head, static_cast<uint32_t>(e.type));
    put<uint64_t>(&head, offset);
    offset += align_up(e.nbytes, align);
  }
  QFORGE_RETURN_IF_ERROR(sink(head.data(), head.size()));
  // A metadata-only file ends with its last key (as gguf-py writes vocab-only files); otherwise
  // the data section starts at the next multiple of the alignment.
  if (!tensors_.empty()) QFORGE_RETURN_IF_ERROR(write_zeros(align_up(head.size(), align) - head.size()));

  std::vector<uint8_t> buffer;  // reused by lazy producers
  for (const Entry& e : tensors_) {
    const uint8_t* bytes = static_cast<const uint8_t*>(e.data);
    if (e.produce) {
      // Never hand a producer a null pointer, even for a 0-byte tensor.
      buffer.assign(std::max<size_t>(static_cast<size_t>(e.nbytes), 1), 0);
      Status st = e.produce(buffer.data(), static_cast<size_t>(e.nbytes));
      if (!st.is_ok()) return st.with_context(path_ + ": tensor '" + e.name + "'");
      bytes = buffer.data();
    }
    QFORGE_RETURN_IF_ERROR(sink(bytes, static_cast<size_t>(e.nbytes)));
    QFORGE_RETURN_IF_ERROR(write_zeros(align_up(e.nbytes, align) - e.nbytes));
  }
  return Status::ok();
}

Status GgufWriter::finish() {
  QFORGE_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::create(path_));
  QFORGE_RETURN_IF_ERROR(write_to([&](const void* data, size_t n) { return file.write(data, n); }));
  return file.commit();
}

Expected<std::vector<uint8_t>> GgufWriter::to_bytes() {
  std::vector<uint8_t> out;
  QFORGE_RETURN_IF_ERROR(write_to([&](const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    out.insert(out.end(), p, p + n);
    return Status::ok();
  }));
  return out;
}

}  // namespace qforge
