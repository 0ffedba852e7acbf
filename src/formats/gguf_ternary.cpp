// GGUF ternary formats (super-blocks of 256, one f16 scale): TQ1_0 (base-3, 5 trits per byte)
// and TQ2_0 (2 bits per value). y = d * t, t in {-1, 0, +1}.
//
// Dequantization follows ggml's dequantize_row_tq1_0 / tq2_0 exactly. Quantization searches d
// (ggml uses d = absmax): candidates absmax / (1 + delta) and weighted least-squares refits
// d = sum w |x| / count over the non-zero codes, see gguf_search.h. Ternary data {-a, 0, a}
// with a representable in f16 round-trips exactly (the d = absmax candidate).
#include <cmath>
#include <cstring>

#include "formats/gguf_blocks.h"
#include "formats/gguf_impl.h"
#include "formats/gguf_search.h"
#include "qforge/dtype.h"

namespace qforge::formats {

using namespace gguf;

namespace {

// Plain encoding: d = A (f16), t = round(x / d): every |x| <= A is within d / 2 of a level.
constexpr double kTernaryBound = 1.25 * (1 + 1.0 / 2048) / 2;

SymmetricSearch ternary_search() {
  SymmetricSearch s;
  s.levels.lo = -1;
  s.levels.hi = 1;
  s.delta_min = -0.3f;  // d from absmax / 0.7 down to absmax / 2.5 (the bound cuts the far end)
  s.delta_max = 1.5f;
  s.delta_step = 0.05f;
  return s;
}

template <class Block>
Block load_block(const uint8_t* p) {
  Block b;
  std::memcpy(&b, p, sizeof(Block));
  return b;
}

template <class Block>
void store_block(const Block& b, uint8_t* p) {
  std::memcpy(p, &b, sizeof(Block));
}

bool encode_tq1_0(const float* x, const float* w, float max_err, uint8_t* out) {
  uint8_t t[kQK_K];  // 0, 1, 2 = -1, 0, +1
  const SymmetricResult r = search_symmetric(x, w, kQK_K, ternary_search(), ScaleStore::f16, max_err, t);
  if (!std::isfinite(r.d)) return false;
  BlockTQ1_0 b{};
  int trits[5];
  for (int m = 0; m < 32; ++m) {  // elements 0..159: byte m holds 32 n + m, n = 0..4
    for (int n = 0; n < 5; ++n) trits[n] = t[32 * n + m];
    b.qs[m] = tq1_pack(trits, 5);
  }
  for (int m = 0; m < 16; ++m) {  // elements 160..239: byte 32 + m holds 160 + 16 n + m
    for (int n = 0; n < 5; ++n) trits[n] = t[160 + 16 * n + m];
    b.qs[32 + m] = tq1_pack(trits, 5);
  }
  for (int j = 0; j < 4; ++j) {  // elements 240..255: qh[j] holds 240 + 4 n + j, n = 0..3
    for (int n = 0; n < 4; ++n) trits[n] = t[240 + 4 * n + j];
    b.qh[j] = tq1_pack(trits, 4);
  }
  b.d = f32_to_f16(r.d);
  store_block(b, out);
  return true;
}

bool encode_tq2_0(const float* x, const float* w, float max_err, uint8_t* out) {
  uint8_t t[kQK_K];
  const SymmetricResult r = search_symmetric(x, w, kQK_K, ternary_search(), ScaleStore::f16, max_err, t);
  if (!std::isfinite(r.d)) return false;
  BlockTQ2_0 b{};
  for (int e = 0; e < kQK_K; ++e) {
    const int j = e / 128, l = (e % 128) / 32, m = e % 32;
    b.qs[32 * j + m] = static_cast<uint8_t>(b.qs[32 * j + m] | (t[e] << (2 * l)));
  }
  b.d = f32_to_f16(r.d);
  store_block(b, out);
  return true;
}

void decode_tq1_0(const uint8_t* p, float* y) {
  const auto b = load_block<BlockTQ1_0>(p);
  const float d = f16_to_f32(b.d);
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 32; ++m) *y++ = static_cast<float>(tq1_trit(b.qs[m], n) - 1) * d;
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 16; ++m) *y++ = static_cast<float>(tq1_trit(b.qs[32 + m], n) - 1) * d;
  for (int n = 0; n < 4; ++n)
    for (int j = 0; j < 4; ++j) *y++ = static_cast<float>(tq1_trit(b.qh[j], n) - 1) * d;
}

void decode_tq2_0(const uint8_t* p, float* y) {
  const auto b = load_block<BlockTQ2_0>(p);
  const float d = f16_to_f32(b.d);
  for (int j = 0; j < 64; j += 32)
    for (int l = 0; l < 4; ++l)
      for (int m = 0; m < 32; ++m) *y++ = static_cast<float>(((b.qs[j + m] >> (2 * l)) & 3) - 1) * d;
}

}  // namespace

Status gguf_tq1_0_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                               const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("tq1_0", kQK_K, sizeof(BlockTQ1_0), kTernaryBound, encode_tq1_0, s, w, rows, cols, o, out);
}
void gguf_tq1_0_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK_K, sizeof(BlockTQ1_0), decode_tq1_0, out);
}
double gguf_tq1_0_error_bound(const Scheme&) { return kTernaryBound; }

Status gguf_tq2_0_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                               const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("tq2_0", kQK_K, sizeof(BlockTQ2_0), kTernaryBound, encode_tq2_0, s, w, rows, cols, o, out);
}
void gguf_tq2_0_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK_K, sizeof(BlockTQ2_0), decode_tq2_0, out);
}
double gguf_tq2_0_error_bound(const Scheme&) { return kTernaryBound; }

}  // namespace qforge::formats
