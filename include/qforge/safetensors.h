// safetensors I/O: zero-copy mmapped reading with strict validation of untrusted files, HF sharded
// checkpoints (model.safetensors.index.json), and a streaming, atomic writer.
//
// File layout (docs/formats.md, "safetensors" has the full rules):
//   [0, 8)        u64 little-endian N: header length in bytes (1 <= N <= 100,000,000)
//   [8, 8+N)      UTF-8 JSON object starting with '{', optionally padded with trailing spaces:
//                 {"__metadata__": {"k": "v", ...},                       (optional, strings only)
//                  "name": {"dtype": "BF16", "shape": [d0, d1, ...],
//                           "data_offsets": [begin, end]}, ...}
//   [8+N, EOF)    data section; [begin, end) are relative to its start, little-endian, row-major.
// Reader policy: every range lies inside the data section, matches shape x dtype size exactly and
// overlaps no other non-empty range; gaps and unindexed trailing bytes are accepted (the writer
// never produces them). Duplicate JSON keys at any level are rejected.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "qforge/status.h"
#include "qforge/tensor.h"

namespace qforge {

struct SafetensorsTensorInfo {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data section
  uint64_t end = 0;
};

// One .safetensors file.
class SafetensorsFile {
 public:
  // Maps the file and validates the header; errors name the file (and tensor).
  static Expected<SafetensorsFile> open(const std::string& path);
  // Parses a buffer the caller keeps alive for the object's lifetime (fuzzing, tests).
  static Expected<SafetensorsFile> parse(const uint8_t* data, size_t size, const std::string& label);

  // The largest header accepted (the reference implementation's limit).
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  const std::string& path() const { return path_; }
  // Tensors in data-offset order.
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsTensorInfo* find(const std::string& name) const;
  // Zero-copy view into the mapping (keeps the mapping alive). The memory is read-only: never
  // write through it. When the bytes are not aligned to the element size (possible in files not
  // written by qforge or HF), the tensor is an aligned copy instead, so typed access is never UB.
  Expected<Tensor> tensor(const std::string& name) const;
  // The raw bytes of a tensor inside the file (no copy, no alignment guarantee).
  const uint8_t* tensor_bytes(const SafetensorsTensorInfo& info) const { return data_ + data_offset_ + info.begin; }
  size_t file_size() const { return size_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section

 private:
  Status parse_header();

  std::string path_;
  std::shared_ptr<MappedFile> mapping_;  // null when parsed from a caller's buffer
  const uint8_t* data_ = nullptr;        // start of the whole file
  size_t size_ = 0;
  uint64_t data_offset_ = 0;             // 8 + header length
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint: a single .safetensors file, or an HF model directory holding model.safetensors, or
// shards listed in model.safetensors.index.json, or exactly one *.safetensors file. With an index,
// only the shards named in its weight_map are opened; each listed tensor must be in its shard, and
// a tensor a shard holds but the index does not list is included as well (transformers loads every
// key of every shard) unless another shard also holds it (ambiguous: error). Shard names must be
// relative paths without ".." components (symlinks are followed: the HF cache uses them).
class SafetensorsCheckpoint {
 public:
  static Expected<SafetensorsCheckpoint> open(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> tensor_names() const;  // sorted
  const SafetensorsTensorInfo* find(const std::string& name) const;
  Expected<Tensor> tensor(const std::string& name) const;
  const std::vector<SafetensorsFile>& files() const { return files_; }
  // Metadata of the first file (HF writes the same "format" key to every shard).
  const std::map<std::string, std::string>& metadata() const;

 private:
  std::string path_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> file_of_;  // tensor name -> index into files_
};

// Streaming, atomic writer: tensors are declared with their bytes or a producer, then finish()
// writes the header and the data to a temp file (AtomicFile) and renames it over `path`. Nothing
// is left at `path` on any error.
// Output is deterministic (same tensors + metadata -> byte-identical file, whatever the order of
// add calls): data is laid out by element size descending, then name (as HF safetensors does), so
// with the header padded to a multiple of 8 every tensor is aligned to its element size; offsets
// are contiguous from 0; header keys are "__metadata__" (when set) then tensors in data order.
// Note: HF transformers refuses files whose metadata lacks "format" ("pt") once any metadata is set.
class SafetensorsWriter {
 public:
  explicit SafetensorsWriter(std::string path);
  // Keys and values must be valid UTF-8; setting a key twice keeps the last value.
  void set_metadata(const std::string& key, const std::string& value);
  // Bytes the caller keeps alive until finish().
  Status add(const std::string& name, DType dtype, const Shape& shape, const void* data, size_t nbytes);
  // A tensor (kept alive by the writer; non-contiguous tensors are copied while writing).
  Status add(const std::string& name, const Tensor& tensor);
  // Bytes produced on demand during finish() into a buffer of exactly the tensor's size, so
  // large outputs stream without holding everything in memory.
  Status add_lazy(const std::string& name, DType dtype, const Shape& shape,
                  std::function<Status(uint8_t* out, size_t nbytes)> produce);
  Status finish();
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    size_t nbytes;
    const void* data;
    std::function<Status(uint8_t*, size_t)> produce;
    Tensor keep_alive;
  };
  Status check_new(const std::string& name, DType dtype, const Shape& shape, size_t nbytes) const;
  std::string path_;
  std::map<std::string, std::string> metadata_;
  std::vector<Entry> entries_;
  std::set<std::string> names_;
};

}  // namespace qforge
