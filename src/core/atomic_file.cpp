#include "qforge/atomic_file.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

namespace qforge {

Expected<AtomicFile> AtomicFile::create(const std::string& path) {
  static std::atomic<int> counter{0};
  AtomicFile f;
  f.path_ = path;
  f.temp_path_ = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  f.file_ = std::fopen(f.temp_path_.c_str(), "wb");
  if (f.file_ == nullptr) return io_error(path + ": cannot create '" + f.temp_path_ + "': " + std::strerror(errno));
  return f;
}

AtomicFile::AtomicFile(AtomicFile&& o) noexcept
    : path_(std::move(o.path_)), temp_path_(std::move(o.temp_path_)), file_(o.file_), offset_(o.offset_),
      committed_(o.committed_) {
  o.file_ = nullptr;
  o.committed_ = true;  // the moved-from object owns nothing
}

AtomicFile::~AtomicFile() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_ && !temp_path_.empty()) std::remove(temp_path_.c_str());
}

Status AtomicFile::write(const void* data, size_t n) {
  if (file_ == nullptr) return io_error(path_ + ": write after close");
  if (n == 0) return Status::ok();
  if (std::fwrite(data, 1, n, file_) != n)
    return io_error(path_ + ": write failed at offset " + std::to_string(offset_) + ": " + std::strerror(errno));
  offset_ += n;
  return Status::ok();
}

Status AtomicFile::write_zeros(size_t n) {
  static const std::vector<uint8_t> zeros(4096, 0);
  while (n > 0) {
    size_t k = n < zeros.size() ? n : zeros.size();
    QFORGE_RETURN_IF_ERROR(write(zeros.data(), k));
    n -= k;
  }
  return Status::ok();
}

Status AtomicFile::commit() {
  if (file_ == nullptr) return io_error(path_ + ": commit after close");
  bool ok = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  int err = errno;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok) return io_error(path_ + ": cannot finish writing: " + std::strerror(err));
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0)
    return io_error(path_ + ": cannot rename temp file into place: " + std::strerror(errno));
  committed_ = true;
  return Status::ok();
}

Status write_file_atomic(const std::string& path, const std::string& bytes) {
  QFORGE_ASSIGN_OR_RETURN(AtomicFile f, AtomicFile::create(path));
  QFORGE_RETURN_IF_ERROR(f.write(bytes.data(), bytes.size()));
  return f.commit();
}

Expected<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return io_error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return io_error(path + ": read failed");
  return ss.str();
}

}  // namespace qforge
