// Bit packing of the codes plane: little-endian bit stream, 1..8 bits per code.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "qforge/format.h"

namespace qforge {
namespace {

// Reference: set each bit of the stream one at a time.
std::vector<uint8_t> pack_reference(const std::vector<uint8_t>& codes, int bits) {
  std::vector<uint8_t> out((codes.size() * bits + 7) / 8, 0);
  for (size_t i = 0; i < codes.size(); ++i)
    for (int b = 0; b < bits; ++b)
      if ((codes[i] >> b) & 1) {
        const size_t k = i * bits + b;
        out[k / 8] |= static_cast<uint8_t>(1u << (k % 8));
      }
  return out;
}

std::vector<uint8_t> random_codes(size_t n, int bits, std::mt19937_64& rng, bool garbage_high_bits = false) {
  std::vector<uint8_t> codes(n);
  for (auto& c : codes) {
    const uint8_t v = static_cast<uint8_t>(rng());
    c = garbage_high_bits ? v : static_cast<uint8_t>(v & ((1u << bits) - 1));
  }
  return codes;
}

TEST(Packing, PackedSize) {
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t n = 0; n <= 67; ++n) EXPECT_EQ(packed_size(n, bits), static_cast<size_t>((n * bits + 7) / 8));
  EXPECT_EQ(packed_size(4096, 4), 2048u);
  EXPECT_EQ(packed_size(33, 3), 13u);
  EXPECT_EQ(packed_size(-1, 4), 0u);
  EXPECT_EQ(packed_size(int64_t{1} << 40, 8), size_t{1} << 40);
}

TEST(Packing, InverseAndBitOrderForEveryWidthAndOddLengths) {
  std::mt19937_64 rng(1);
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t n = 0; n <= 67; ++n) {
      SCOPED_TRACE("bits " + std::to_string(bits) + ", n " + std::to_string(n));
      const auto codes = random_codes(static_cast<size_t>(n), bits, rng);
      // Exactly packed_size bytes: a sanitizer build catches any access past them.
      std::vector<uint8_t> packed(packed_size(n, bits), 0xAA);
      pack_bits(codes.data(), n, bits, packed.data());
      ASSERT_EQ(packed, pack_reference(codes, bits));  // also: unused high bits of the last byte are 0
      std::vector<uint8_t> back(static_cast<size_t>(n), 0xEE);
      unpack_bits(packed.data(), n, bits, back.data());
      ASSERT_EQ(back, codes);
    }
  }
}

TEST(Packing, OnlyTheLowBitsOfEachCodeCount) {
  std::mt19937_64 rng(2);
  for (int bits = 1; bits <= 8; ++bits) {
    const auto garbage = random_codes(61, bits, rng, /*garbage_high_bits=*/true);
    std::vector<uint8_t> masked(garbage);
    for (auto& c : masked) c = static_cast<uint8_t>(c & ((1u << bits) - 1));
    std::vector<uint8_t> a(packed_size(61, bits)), b(a.size());
    pack_bits(garbage.data(), 61, bits, a.data());
    pack_bits(masked.data(), 61, bits, b.data());
    EXPECT_EQ(a, b) << "bits " << bits;
  }
}

TEST(Packing, KnownStreams) {
  const uint8_t three[] = {1, 2, 3};
  uint8_t out[2] = {0xFF, 0xFF};
  pack_bits(three, 3, 3, out);  // 001 | 010 << 3 | 011 << 6 = 0b1101_0001, then bit 8 = 0
  EXPECT_EQ(out[0], 0xD1);
  EXPECT_EQ(out[1], 0x00);
  const uint8_t nibbles[] = {0x1, 0x2, 0x3};
  pack_bits(nibbles, 3, 4, out);  // low nibble first
  EXPECT_EQ(out[0], 0x21);
  EXPECT_EQ(out[1], 0x03);
  const uint8_t bits1[] = {1, 0, 0, 0, 0, 0, 0, 1, 1};
  pack_bits(bits1, 9, 1, out);
  EXPECT_EQ(out[0], 0x81);
  EXPECT_EQ(out[1], 0x01);
}

TEST(Packing, LargeRandom) {
  std::mt19937_64 rng(3);
  for (int bits = 1; bits <= 8; ++bits) {
    const int64_t n = 100003;
    const auto codes = random_codes(static_cast<size_t>(n), bits, rng);
    std::vector<uint8_t> packed(packed_size(n, bits));
    pack_bits(codes.data(), n, bits, packed.data());
    ASSERT_EQ(packed, pack_reference(codes, bits)) << "bits " << bits;
    std::vector<uint8_t> back(static_cast<size_t>(n));
    unpack_bits(packed.data(), n, bits, back.data());
    ASSERT_EQ(back, codes) << "bits " << bits;
  }
}

// Rows of a QuantizedTensor start on byte boundaries: row r's codes unpack from r * packed_row_bytes.
TEST(Packing, QuantizedRowsStartOnByteBoundaries) {
  const int64_t rows = 5, cols = 33;
  std::vector<float> w(rows * cols);
  std::mt19937_64 rng(4);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& x : w) x = u(rng);
  for (int bits = 2; bits <= 8; ++bits) {
    auto q = quantize(Scheme::parse("int" + std::to_string(bits) + "-ch-asym").value(), w.data(), rows, cols);
    ASSERT_TRUE(q.has_value());
    const size_t stride = q->packed_row_bytes();
    ASSERT_EQ(stride, packed_size(cols, bits));
    ASSERT_EQ(q->codes.size(), stride * rows);
    std::vector<float> y(w.size());
    ASSERT_TRUE(dequantize(*q, y.data()).is_ok());
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<uint8_t> codes(cols);
      unpack_bits(q->codes.data() + r * stride, cols, bits, codes.data());
      const float scale = f16_to_f32(static_cast<uint16_t>(q->scales[2 * r] | (q->scales[2 * r + 1] << 8)));
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(y[r * cols + c], static_cast<float>(codes[c] - q->zeros[r]) * scale) << "bits " << bits << " row " << r;
    }
  }
}

}  // namespace
}  // namespace qforge
