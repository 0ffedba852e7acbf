// SHA-256 (FIPS 180-4), streaming. Used for model cards, metadata and reproducibility checks.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "qforge/status.h"

namespace qforge {

class Sha256 {
 public:
  using Digest = std::array<uint8_t, 32>;

  Sha256() { reset(); }
  void reset();
  void update(const void* data, size_t size);
  void update(std::string_view text) { update(text.data(), text.size()); }
  // Pads, returns the digest and resets the object so it can hash a new message.
  Digest final();
  // final() as 64 lowercase hex characters.
  std::string final_hex();

 private:
  void compress(const uint8_t* block);
  std::array<uint32_t, 8> state_{};
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string to_hex(const uint8_t* bytes, size_t size);
// One-shot hex digest of a byte string.
std::string sha256_hex(std::string_view data);
// Hex digest of a file, read in chunks (constant memory); errors name the file.
Expected<std::string> sha256_file(const std::string& path);

}  // namespace qforge
