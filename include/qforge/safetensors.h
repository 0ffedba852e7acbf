// safetensors I/O: zero-copy mmapped reading with strict validation of untrusted files, HF sharded
// checkpoints (model.safetensors.index.json), and a streaming, atomic writer.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
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

  const std::string& path() const { return path_; }
  // Tensors in data-offset order.
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsTensorInfo* find(const std::string& name) const;
  // Zero-copy view into the mapping (keeps the mapping alive).
  Expected<Tensor> tensor(const std::string& name) const;
  size_t file_size() const { return size_; }

 private:
  std::string path_;
  std::shared_ptr<MappedFile> mapping_;  // null when parsed from a caller's buffer
  const uint8_t* data_ = nullptr;        // start of the whole file
  size_t size_ = 0;
  uint64_t data_offset_ = 0;             // 8 + header length
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint: a single .safetensors file, or an HF model directory holding model.safetensors or
// shards listed in model.safetensors.index.json.
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
// writes the header and the data to "<path>.tmp.<pid>" and renames it over `path`. Nothing is
// left at `path` on any error.
class SafetensorsWriter {
 public:
  explicit SafetensorsWriter(std::string path);
  void set_metadata(const std::string& key, const std::string& value);
  // Bytes the caller keeps alive until finish().
  Status add(const std::string& name, DType dtype, const Shape& shape, const void* data, size_t nbytes);
  // Bytes produced on demand during finish() into a buffer of exactly the tensor's size, so
  // large outputs stream without holding everything in memory.
  Status add_lazy(const std::string& name, DType dtype, const Shape& shape,
                  std::function<Status(uint8_t* out, size_t nbytes)> produce);
  Status finish();

 private:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    size_t nbytes;
    const void* data;
    std::function<Status(uint8_t*, size_t)> produce;
  };
  std::string path_;
  std::map<std::string, std::string> metadata_;
  std::vector<Entry> entries_;
};

}  // namespace qforge
