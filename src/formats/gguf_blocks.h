// GGUF (ggml) block layouts, byte for byte as ggml stores them in GGUF files.
//
// Every struct is a plain little-endian record with no padding: its size is pinned by a
// static_assert and its field offsets by offsetof checks, so a block can be memcpy'd to and from
// the `codes` plane of a QuantizedTensor. f16 fields (d, dmin, m) hold IEEE binary16 bits.
// docs/formats.md, "GGUF block formats" describes each field and how the values are reconstructed.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qforge::formats::gguf {

inline constexpr int kQK = 32;         // block length of the legacy formats (Q4_0 ... Q8_0, IQ4_NL)
inline constexpr int kQK_K = 256;      // super-block length of the K-quants and TQ formats
inline constexpr int kKScaleSize = 12; // packed 6-bit scales/mins of Q4_K, Q5_K (and Q3_K's scales)

// y = d * (q - 8), q = 4-bit code. Element j < 16 in the low nibble of qs[j], j >= 16 in the high
// nibble of qs[j - 16].
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// y = d * q + m, q = 4-bit code (same nibble order as Q4_0).
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_1) == 20);

// y = d * (q - 16), q = 5 bits: low 4 bits as in Q4_0, bit 4 of element j is bit j of qh
// read as a little-endian uint32.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_0) == 22);

// y = d * q + m, q = 5 bits packed as in Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_1) == 24);

// y = d * q, q signed 8-bit.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_0) == 34);

// y = d * kIq4nlValues[q], q = 4-bit index (same nibble order as Q4_0).
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockIQ4_NL) == 18);
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// 16 sub-blocks of 16: y = (d * sc) * q - (dmin * m), sc = scales[j] & 15, m = scales[j] >> 4,
// q = 2 bits. Element e: byte 32 * (e / 128) + e % 32 of qs, bits 2 * ((e % 128) / 32).
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84);

// 16 sub-blocks of 16: y = (d * (sc - 32)) * (q - 4 * !h), sc = 6-bit scale, q = 2 bits placed as
// in Q2_K, h = bit (e / 32) of hmask[e % 32]. Scale j: low 4 bits in scales[j % 8] (nibble j / 8),
// high 2 bits at bits 2 * (j / 4) of scales[8 + j % 4].
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[kKScaleSize];
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110);

// 8 sub-blocks of 32: y = (d * sc) * q - (dmin * m), sc and m 6-bit (get_scale_min_k4 packing),
// q = 4 bits: element e in qs[32 * (e / 64) + e % 32], low nibble when (e % 64) < 32.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);

// As Q4_K with a fifth bit: bit (e / 32) of qh[e % 32] adds 16 to q.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);

// 16 sub-blocks of 16: y = (d * sc) * (q - 32), sc signed 8-bit, q = 6 bits. For element
// e = 128 n + 32 g + l: low 4 bits from ql[64 n + 32 (g & 1) + l] (nibble g >> 1), high 2 bits
// at bits 2 g of qh[32 n + l].
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210);

// Intermediate format of ggml's dot products: y = d * q, d an f32, bsums[j] = sum of q over
// elements 16 j .. 16 j + 15.
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};
static_assert(sizeof(BlockQ8_K) == 292);

// Ternary, 1.6875 bits per weight: y = d * (t - 1), t in {0, 1, 2}. qs packs 5 trits per byte
// (elements 0..159: byte e % 32, trit e / 32; 160..239: byte 32 + (e - 160) % 16, trit
// (e - 160) / 16), qh 4 trits per byte (240..255: byte (e - 240) % 4, trit (e - 240) / 4).
// A byte holds ceil(256 * v / 243) for v = sum of t_n * 3^(4 - n); trit n is recovered as
// ((uint8_t)(byte * 3^n) * 3) >> 8. In qh the fifth (least significant) trit is 0.
struct BlockTQ1_0 {
  uint8_t qs[(kQK_K - 4 * kQK_K / 64) / 5];
  uint8_t qh[kQK_K / 64];
  uint16_t d;
};
static_assert(sizeof(BlockTQ1_0) == 54);

// Ternary, 2.0625 bits per weight: y = d * (q - 1), q = 2 bits. Element e = 128 j + 32 l + m is
// in qs[32 j + m] at bits 2 l.
struct BlockTQ2_0 {
  uint8_t qs[kQK_K / 4];
  uint16_t d;
};
static_assert(sizeof(BlockTQ2_0) == 66);

static_assert(offsetof(BlockQ4_1, qs) == 4 && offsetof(BlockQ5_0, qs) == 6 && offsetof(BlockQ5_1, qs) == 8);
static_assert(offsetof(BlockQ2_K, d) == 80 && offsetof(BlockQ3_K, scales) == 96 && offsetof(BlockQ3_K, d) == 108);
static_assert(offsetof(BlockQ4_K, qs) == 16 && offsetof(BlockQ5_K, qh) == 16 && offsetof(BlockQ5_K, qs) == 48);
static_assert(offsetof(BlockQ6_K, qh) == 128 && offsetof(BlockQ6_K, scales) == 192 && offsetof(BlockQ6_K, d) == 208);
static_assert(offsetof(BlockQ8_K, bsums) == 260 && offsetof(BlockTQ1_0, qh) == 48 && offsetof(BlockTQ1_0, d) == 52);
static_assert(offsetof(BlockTQ2_0, d) == 64);

// The 6-bit (scale, min) pair of sub-block j (0..7) of a Q4_K / Q5_K block (ggml's
// get_scale_min_k4): j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 in the nibbles of
// byte j + 4 with their top 2 bits in the top bits of bytes j - 4 and j.
inline void unpack_scale_min_k4(int j, const uint8_t* s, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// Inverse of unpack_scale_min_k4 for all 8 pairs (values 0..63).
inline void pack_scale_min_k4(const uint8_t sc[8], const uint8_t m[8], uint8_t s[kKScaleSize]) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

// Q3_K's 16 6-bit scales (stored value = scale + 32, 0..63).
inline uint8_t unpack_scale_q3_k(int j, const uint8_t* s) {
  const int low = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
  const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return static_cast<uint8_t>(low | (high << 4));
}

inline void pack_scales_q3_k(const uint8_t v[16], uint8_t s[kKScaleSize]) {
  for (int j = 0; j < 8; ++j) s[j] = static_cast<uint8_t>((v[j] & 0xF) | ((v[j + 8] & 0xF) << 4));
  for (int k = 0; k < 4; ++k) {
    uint8_t b = 0;
    for (int i = 0; i < 4; ++i) b = static_cast<uint8_t>(b | (((v[k + 4 * i] >> 4) & 3) << (2 * i)));
    s[8 + k] = b;
  }
}

// One TQ1_0 trit (0..2) at position n (0 = most significant) of a packed byte.
inline int tq1_trit(uint8_t byte, int n) {
  static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
  const uint8_t q = static_cast<uint8_t>(byte * kPow3[n]);  // wraps mod 256 by design
  return (static_cast<uint16_t>(q) * 3) >> 8;
}

// Packs up to 5 trits (t[0] most significant; missing trailing trits are 0) into one byte.
inline uint8_t tq1_pack(const int* t, int count) {
  int v = 0;
  for (int n = 0; n < 5; ++n) v = v * 3 + (n < count ? t[n] : 0);
  return static_cast<uint8_t>((v * 256 + 242) / 243);  // ceil(256 v / 243)
}

}  // namespace qforge::formats::gguf
