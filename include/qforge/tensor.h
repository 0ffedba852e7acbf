// Tensor: shape, strides (in elements), dtype, and a data pointer whose lifetime is held by an
// owner (a heap buffer or a memory-mapped file), so tensors can view mmapped data without copying.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qforge/dtype.h"
#include "qforge/status.h"

namespace qforge {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);  // product of dims; 1 for a scalar
std::string shape_to_string(const Shape& shape);  // "[4096, 11008]"

class Tensor {
 public:
  Tensor() = default;
  // Allocates a zero-filled contiguous tensor.
  static Tensor zeros(DType dtype, Shape shape);
  // Wraps existing memory; `owner` keeps it alive (may be null for memory the caller keeps alive).
  static Tensor view(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner);
  static Tensor view(DType dtype, Shape shape, Shape strides, void* data, std::shared_ptr<void> owner);
  // Copies a vector of floats into a new contiguous f32 tensor.
  static Tensor from_f32(Shape shape, const std::vector<float>& values);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim(int i) const { return shape_.at(static_cast<size_t>(i < 0 ? i + ndim() : i)); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool empty() const { return data_ == nullptr; }
  bool is_contiguous() const;

  void* data() { return data_; }
  const void* data() const { return data_; }
  template <class T> T* data_as() { return static_cast<T*>(data_); }
  template <class T> const T* data_as() const { return static_cast<const T*>(data_); }
  const std::shared_ptr<void>& owner() const { return owner_; }

  // A view of rows [begin, end) along dimension 0; shares storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Same storage, new shape; requires a contiguous tensor and equal element count.
  Expected<Tensor> reshape(Shape shape) const;
  // A contiguous copy (same dtype).
  Tensor contiguous() const;
  // A contiguous f32 copy (converting from any dtype).
  Expected<Tensor> to_f32() const;
  // A contiguous copy converted to `dtype` (via f32 for non-f32 sources).
  Expected<Tensor> to(DType dtype) const;

 private:
  DType dtype_ = DType::f32;
  Shape shape_;
  Shape strides_;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
};

// A read-only memory mapping of a whole file; shared so tensors can keep it alive.
class MappedFile {
 public:
  static Expected<std::shared_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace qforge
