// Writes a file atomically: data goes to "<path>.tmp.<pid>.<n>" and commit() fsyncs and renames it
// over `path`. If commit() is never reached (error, exception, cancel) the temp file is removed, so
// no partial output is ever visible at `path`.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "qforge/status.h"

namespace qforge {

class AtomicFile {
 public:
  static Expected<AtomicFile> create(const std::string& path);
  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&&) = delete;
  AtomicFile(const AtomicFile&) = delete;
  ~AtomicFile();  // removes the temp file unless committed

  Status write(const void* data, size_t n);
  Status write_zeros(size_t n);  // padding
  uint64_t offset() const { return offset_; }
  const std::string& path() const { return path_; }
  Status commit();  // flush, fsync, rename; errors (e.g. disk full) name the file

 private:
  AtomicFile() = default;
  std::string path_;
  std::string temp_path_;
  FILE* file_ = nullptr;
  uint64_t offset_ = 0;
  bool committed_ = false;
};

// Convenience: writes `bytes` to `path` atomically.
Status write_file_atomic(const std::string& path, const std::string& bytes);
// Reads a whole (small) file; errors name the file.
Expected<std::string> read_file(const std::string& path);

}  // namespace qforge
