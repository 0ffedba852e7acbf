#include "qforge/tensor.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace qforge {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {
Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}
}  // namespace

Tensor Tensor::zeros(DType dtype, Shape shape) {
  size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  std::shared_ptr<uint8_t[]> buf(new uint8_t[bytes == 0 ? 1 : bytes]());
  return view(dtype, std::move(shape), buf.get(), std::shared_ptr<void>(buf, buf.get()));
}

Tensor Tensor::view(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner) {
  Shape strides = contiguous_strides(shape);
  return view(dtype, std::move(shape), std::move(strides), data, std::move(owner));
}

Tensor Tensor::view(DType dtype, Shape shape, Shape strides, void* data, std::shared_ptr<void> owner) {
  QFORGE_CHECK(shape.size() == strides.size());
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.strides_ = std::move(strides);
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

Tensor Tensor::from_f32(Shape shape, const std::vector<float>& values) {
  QFORGE_CHECK(shape_numel(shape) == static_cast<int64_t>(values.size()));
  Tensor t = zeros(DType::f32, std::move(shape));
  std::memcpy(t.data_, values.data(), values.size() * sizeof(float));
  return t;
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  QFORGE_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0]);
  Shape shape = shape_;
  shape[0] = end - begin;
  auto* base = static_cast<uint8_t*>(data_) + begin * strides_[0] * static_cast<int64_t>(dtype_size(dtype_));
  return view(dtype_, std::move(shape), strides_, base, owner_);
}

Expected<Tensor> Tensor::reshape(Shape shape) const {
  if (!is_contiguous()) return invalid_argument("reshape of a non-contiguous tensor");
  if (shape_numel(shape) != numel())
    return invalid_argument("cannot reshape " + shape_to_string(shape_) + " to " + shape_to_string(shape));
  return view(dtype_, std::move(shape), data_, owner_);
}

Tensor Tensor::contiguous() const {
  Tensor out = zeros(dtype_, shape_);
  const size_t elem = dtype_size(dtype_);
  if (is_contiguous()) {
    std::memcpy(out.data_, data_, nbytes());
    return out;
  }
  // Walk every index of the strided source in row-major order.
  const int64_t n = numel();
  std::vector<int64_t> index(shape_.size(), 0);
  auto* dst = static_cast<uint8_t*>(out.data_);
  const auto* src = static_cast<const uint8_t*>(data_);
  for (int64_t i = 0; i < n; ++i) {
    int64_t offset = 0;
    for (size_t d = 0; d < shape_.size(); ++d) offset += index[d] * strides_[d];
    std::memcpy(dst + i * static_cast<int64_t>(elem), src + offset * static_cast<int64_t>(elem), elem);
    for (size_t d = shape_.size(); d-- > 0;) {
      if (++index[d] < shape_[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

Expected<Tensor> Tensor::to_f32() const {
  Tensor src = is_contiguous() ? *this : contiguous();
  Tensor out = zeros(DType::f32, shape_);
  QFORGE_RETURN_IF_ERROR(convert_to_f32(dtype_, src.data_, out.data_as<float>(), static_cast<size_t>(numel())));
  return out;
}

Expected<Tensor> Tensor::to(DType dtype) const {
  if (dtype == dtype_) return contiguous();
  QFORGE_ASSIGN_OR_RETURN(Tensor f, to_f32());
  if (dtype == DType::f32) return f;
  Tensor out = zeros(dtype, shape_);
  QFORGE_RETURN_IF_ERROR(convert_from_f32(dtype, f.data_as<float>(), out.data_, static_cast<size_t>(numel())));
  return out;
}

Expected<std::shared_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return io_error(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return io_error(path + ": not a regular file");
  }
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = static_cast<size_t>(st.st_size);
  if (m->size_ > 0) {
    void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      return io_error(path + ": cannot mmap: " + std::strerror(e));
    }
    m->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return m;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace qforge
