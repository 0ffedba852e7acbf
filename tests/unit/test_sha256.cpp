#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "qforge/sha256.h"
#include "test_support.h"

namespace qforge {
namespace {

// FIPS 180-4 examples (NIST "SHA256.pdf" example values and the one-million-'a' vector).
constexpr const char* kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr const char* kAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr const char* k448Bit = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
constexpr const char* k448Message = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
constexpr const char* k896Bit = "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1";
constexpr const char* k896Message =
    "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
constexpr const char* kMillionA = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

TEST(Sha256, NistVectors) {
  EXPECT_EQ(sha256_hex(""), kEmpty);
  EXPECT_EQ(sha256_hex("abc"), kAbc);
  EXPECT_EQ(sha256_hex(k448Message), k448Bit);
  EXPECT_EQ(sha256_hex(k896Message), k896Bit);
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), kMillionA);
}

TEST(Sha256, StreamingMatchesOneShotAtEverySplit) {
  const std::string msg = k896Message;
  for (size_t split = 0; split <= msg.size(); ++split) {
    Sha256 h;
    h.update(msg.substr(0, split));
    h.update(msg.substr(split));
    EXPECT_EQ(h.final_hex(), k896Bit) << "split at " << split;
  }
  // Byte-at-a-time streaming of one million 'a' in odd-sized pieces.
  Sha256 h;
  std::string piece(997, 'a');
  size_t left = 1000000;
  while (left > 0) {
    size_t n = std::min(left, piece.size());
    h.update(piece.data(), n);
    left -= n;
  }
  EXPECT_EQ(h.final_hex(), kMillionA);
}

TEST(Sha256, FinalResetsForReuse) {
  Sha256 h;
  h.update("abc");
  EXPECT_EQ(h.final_hex(), kAbc);
  EXPECT_EQ(h.final_hex(), kEmpty);  // nothing fed since final()
  h.update("abc");
  EXPECT_EQ(h.final_hex(), kAbc);
}

TEST(Sha256, PaddingBoundaries) {
  // Lengths around the 55/56/64-byte padding edges must agree between one-shot and streaming.
  for (size_t len : {55u, 56u, 57u, 63u, 64u, 65u, 119u, 120u, 128u}) {
    std::string msg(len, 'x');
    Sha256 h;
    for (char c : msg) h.update(&c, 1);
    EXPECT_EQ(h.final_hex(), sha256_hex(msg)) << "length " << len;
  }
}

TEST(Sha256, FileMatchesMemoryAndErrorsNameTheFile) {
  std::string path = test::temp_dir() + "/million_a.bin";
  {
    FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::string a(1000000, 'a');
    ASSERT_EQ(std::fwrite(a.data(), 1, a.size(), f), a.size());
    std::fclose(f);
  }
  auto digest = sha256_file(path);
  ASSERT_TRUE(digest.has_value()) << digest.status().to_string();
  EXPECT_EQ(*digest, kMillionA);

  std::string missing = test::temp_dir() + "/does_not_exist.bin";
  auto err = sha256_file(missing);
  ASSERT_FALSE(err.has_value());
  EXPECT_EQ(err.status().code(), ErrorCode::io_error);
  EXPECT_NE(err.status().message().find(missing), std::string::npos) << err.status().to_string();

  std::string dir = test::temp_dir();
  auto dir_err = sha256_file(dir);
  ASSERT_FALSE(dir_err.has_value());
  EXPECT_NE(dir_err.status().message().find(dir), std::string::npos) << dir_err.status().to_string();
}

}  // namespace
}  // namespace qforge
