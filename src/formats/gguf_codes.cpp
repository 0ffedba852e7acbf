// Element-code writers of the GGUF block formats (gguf_codes.h); bit placements from
// gguf_blocks.h, each the inverse of the matching decoder in gguf_legacy.cpp / gguf_kquants.cpp.
#include "formats/gguf_codes.h"

#include <cstddef>
#include <cstring>

#include "formats/gguf_blocks.h"

namespace qforge::formats {
namespace {

using namespace gguf;

// Q4_0 / Q4_1 nibbles: element j < 16 in the low nibble of qs[j], j >= 16 in the high nibble of qs[j - 16].
void set_nibbles32(uint8_t* qs, const uint8_t* c) {
  for (int j = 0; j < kQK / 2; ++j) qs[j] = static_cast<uint8_t>((c[j] & 0xF) | ((c[j + 16] & 0xF) << 4));
}
// Q5_0 / Q5_1: low 4 bits as above, bit 4 of element j at bit j of qh (little-endian uint32).
void set_q5_32(uint8_t* qh, uint8_t* qs, const uint8_t* c) {
  set_nibbles32(qs, c);
  uint32_t h = 0;
  for (int j = 0; j < kQK; ++j) h |= static_cast<uint32_t>((c[j] >> 4) & 1) << j;
  for (int b = 0; b < 4; ++b) qh[b] = static_cast<uint8_t>(h >> (8 * b));
}

void set_q4_0(uint8_t* p, const uint8_t* c) { set_nibbles32(p + offsetof(BlockQ4_0, qs), c); }
void set_q4_1(uint8_t* p, const uint8_t* c) { set_nibbles32(p + offsetof(BlockQ4_1, qs), c); }
void set_q5_0(uint8_t* p, const uint8_t* c) { set_q5_32(p + offsetof(BlockQ5_0, qh), p + offsetof(BlockQ5_0, qs), c); }
void set_q5_1(uint8_t* p, const uint8_t* c) { set_q5_32(p + offsetof(BlockQ5_1, qh), p + offsetof(BlockQ5_1, qs), c); }
void set_q8_0(uint8_t* p, const uint8_t* c) {
  uint8_t* qs = p + offsetof(BlockQ8_0, qs);
  for (int j = 0; j < kQK; ++j) qs[j] = static_cast<uint8_t>(c[j] - 128);  // int8 q = c - 128, two's complement
}

// Q2_K / Q3_K low 2 bits: element e at byte 32 (e / 128) + e % 32 of qs, bits 2 ((e % 128) / 32).
void set_2bit_k(uint8_t* qs, const uint8_t* c) {
  std::memset(qs, 0, kQK_K / 4);
  for (int e = 0; e < kQK_K; ++e)
    qs[32 * (e / 128) + e % 32] |= static_cast<uint8_t>((c[e] & 3) << (2 * ((e % 128) / 32)));
}
void set_q2_k(uint8_t* p, const uint8_t* c) { set_2bit_k(p + offsetof(BlockQ2_K, qs), c); }
// Q3_K: value (c & 3) - 4 * !h with h = bit 2 of c, stored at bit e / 32 of hmask[e % 32].
void set_q3_k(uint8_t* p, const uint8_t* c) {
  set_2bit_k(p + offsetof(BlockQ3_K, qs), c);
  uint8_t* hm = p + offsetof(BlockQ3_K, hmask);
  std::memset(hm, 0, kQK_K / 8);
  for (int e = 0; e < kQK_K; ++e) hm[e % 32] |= static_cast<uint8_t>(((c[e] >> 2) & 1) << (e / 32));
}
// Q4_K: element e in qs[32 (e / 64) + e % 32], low nibble when e % 64 < 32.
void set_4bit_k(uint8_t* qs, const uint8_t* c) {
  std::memset(qs, 0, kQK_K / 2);
  for (int e = 0; e < kQK_K; ++e)
    qs[32 * (e / 64) + e % 32] |= static_cast<uint8_t>((c[e] & 0xF) << ((e % 64) < 32 ? 0 : 4));
}
void set_q4_k(uint8_t* p, const uint8_t* c) { set_4bit_k(p + offsetof(BlockQ4_K, qs), c); }
// Q5_K: as Q4_K, bit 4 at bit e / 32 of qh[e % 32].
void set_q5_k(uint8_t* p, const uint8_t* c) {
  set_4bit_k(p + offsetof(BlockQ5_K, qs), c);
  uint8_t* qh = p + offsetof(BlockQ5_K, qh);
  std::memset(qh, 0, kQK_K / 8);
  for (int e = 0; e < kQK_K; ++e) qh[e % 32] |= static_cast<uint8_t>(((c[e] >> 4) & 1) << (e / 32));
}
// Q6_K: e = 128 n + 32 g + l: low 4 bits in ql[64 n + 32 (g & 1) + l] (nibble g >> 1), high 2
// bits at bits 2 g of qh[32 n + l].
void set_q6_k(uint8_t* p, const uint8_t* c) {
  uint8_t* ql = p + offsetof(BlockQ6_K, ql);
  uint8_t* qh = p + offsetof(BlockQ6_K, qh);
  std::memset(ql, 0, kQK_K / 2);
  std::memset(qh, 0, kQK_K / 4);
  for (int e = 0; e < kQK_K; ++e) {
    const int n = e / 128, g = (e % 128) / 32, l = e % 32;
    ql[64 * n + 32 * (g & 1) + l] |= static_cast<uint8_t>((c[e] & 0xF) << (4 * (g >> 1)));
    qh[32 * n + l] |= static_cast<uint8_t>(((c[e] >> 4) & 3) << (2 * g));
  }
}

constexpr GgufCodeLayout kLayouts[] = {
    {FormatId::gguf_q4_0, kQK, kQK, 16, set_q4_0},     {FormatId::gguf_q4_1, kQK, kQK, 16, set_q4_1},
    {FormatId::gguf_q5_0, kQK, kQK, 32, set_q5_0},     {FormatId::gguf_q5_1, kQK, kQK, 32, set_q5_1},
    {FormatId::gguf_q8_0, kQK, kQK, 256, set_q8_0},    {FormatId::gguf_q2_k, kQK_K, 16, 4, set_q2_k},
    {FormatId::gguf_q3_k, kQK_K, 16, 8, set_q3_k},     {FormatId::gguf_q4_k, kQK_K, 32, 16, set_q4_k},
    {FormatId::gguf_q5_k, kQK_K, 32, 32, set_q5_k},    {FormatId::gguf_q6_k, kQK_K, 16, 64, set_q6_k},
};

}  // namespace

const GgufCodeLayout* gguf_code_layout(FormatId format) {
  for (const GgufCodeLayout& l : kLayouts)
    if (l.format == format) return &l;
  return nullptr;
}

}  // namespace qforge::formats
