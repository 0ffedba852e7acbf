// GGUF legacy block formats (blocks of 32): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and IQ4_NL.
//
// Dequantization follows ggml's dequantize_row_* exactly (same f32 operations in the same order).
// Quantization searches the block scale (and min) that minimise the weighted squared error, see
// gguf_search.h; the plain ggml-style encoding (d = max / -8 for Q4_0, (max - min) / 15 for
// Q4_1, ...) is the first candidate, so the result is never worse than it.
#include <cmath>
#include <cstring>

#include "formats/gguf_blocks.h"
#include "formats/gguf_impl.h"
#include "formats/gguf_search.h"
#include "qforge/dtype.h"

namespace qforge::formats {

using namespace gguf;

namespace {

// Relative rounding error of an f16 (normal range): half an ulp, 2^-11.
constexpr double kF16U = 1.0 / 2048.0;
// The search may trade a larger largest error for a lower squared error, up to this factor over
// the plain encoding's worst case (which the bounds below derive).
constexpr double kBoundSlack = 1.25;

// Worst case of the plain encodings, as a fraction of the block absmax A (f16 scale in the
// normal range):
//  Q8_0: d = A/127 rounded to f16; every |x| <= 127.06 d stays in range: error <= d/2.
//  Q4_0 / Q5_0: d = m / -8 (-16) maps the largest-magnitude value m to the lowest code; values of
//    the other sign reach only 7|d| (15|d|), so up to A/8 (A/16) is lost there, plus f16 rounding.
//  Q4_1 / Q5_1: step (max - min)/15 (31) <= 2A/15 (2A/31): error <= half a step.
//  IQ4_NL: d = m / -127; the other side reaches only 113|d| (14A/127 lost); inside, the widest
//    gap between table values is 24, so half a gap is 12|d| < 14A/127.
constexpr double kQ8_0Bound = kBoundSlack * (1 + kF16U) / 254.0;
constexpr double kQ4_0Bound = kBoundSlack * (1.0 / 8 + 7.0 / 8 * kF16U);
constexpr double kQ5_0Bound = kBoundSlack * (1.0 / 16 + 15.0 / 16 * kF16U);
constexpr double kQ4_1Bound = kBoundSlack * (1 + kF16U) / 15.0;
constexpr double kQ5_1Bound = kBoundSlack * (1 + kF16U) / 31.0;
constexpr double kIq4nlBound = kBoundSlack * (14.0 / 127 + 113.0 / 127 * kF16U);

uint32_t load_u32_le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

void store_u32_le(uint32_t v, uint8_t* p) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
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

// Search settings: candidate divisors |edge| - 1 .. |edge| + 1.5 (Q4_0, in steps of 0.2) on both
// edges, each refined by least squares; finer grids changed the RMSE by < 0.05% on weight-like data
// at twice the cost. Wider codes need fewer, coarser candidates (the rounding step is relatively
// finer). The affine formats (min + scale) gain more from a fine grid.
SymmetricSearch q4_0_search() {
  SymmetricSearch s;
  s.levels.lo = -8;
  s.levels.hi = 7;
  s.delta_min = -1.0f;
  s.delta_max = 1.5f;
  s.delta_step = 0.2f;
  return s;
}

SymmetricSearch q5_0_search() {
  SymmetricSearch s;
  s.levels.lo = -16;
  s.levels.hi = 15;
  s.delta_min = -1.0f;
  s.delta_max = 2.0f;
  s.delta_step = 0.25f;
  return s;
}

SymmetricSearch q8_0_search() {
  SymmetricSearch s;
  s.levels.lo = -127;  // -128 is left out as ggml does: it keeps |q| symmetric for the dot kernels
  s.levels.hi = 127;
  s.delta_min = -1.0f;
  s.delta_max = 2.0f;
  s.delta_step = 0.25f;
  return s;
}

SymmetricSearch iq4_nl_search() {
  SymmetricSearch s;
  s.levels.table = kIq4nlValues;
  s.levels.table_size = 16;
  s.delta_min = -8.0f;  // the table's steps are ~10-24 units: search a wider divisor range
  s.delta_max = 12.0f;
  s.delta_step = 1.0f;
  return s;
}

AffineSearch q4_1_search() {
  AffineSearch s;
  s.nmax = 15;
  s.delta_min = -1.0f;
  s.delta_max = 1.5f;
  s.delta_step = 0.1f;
  return s;
}

AffineSearch q5_1_search() {
  AffineSearch s;
  s.nmax = 31;
  s.delta_min = -1.0f;
  s.delta_max = 2.0f;
  s.delta_step = 0.125f;
  return s;
}

// ---- encoders ----

bool encode_q4_0(const float* x, const float* w, float max_err, uint8_t* out) {
  uint8_t k[kQK];
  const SymmetricResult r = search_symmetric(x, w, kQK, q4_0_search(), ScaleStore::f16, max_err, k);
  if (!std::isfinite(r.d)) return false;
  BlockQ4_0 b{};
  b.d = f32_to_f16(r.d);
  for (int j = 0; j < kQK / 2; ++j) b.qs[j] = static_cast<uint8_t>(k[j] | (k[j + 16] << 4));
  store_block(b, out);
  return true;
}

bool encode_q5_0(const float* x, const float* w, float max_err, uint8_t* out) {
  uint8_t k[kQK];
  const SymmetricResult r = search_symmetric(x, w, kQK, q5_0_search(), ScaleStore::f16, max_err, k);
  if (!std::isfinite(r.d)) return false;
  BlockQ5_0 b{};
  b.d = f32_to_f16(r.d);
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) b.qs[j] = static_cast<uint8_t>((k[j] & 0xF) | ((k[j + 16] & 0xF) << 4));
  for (int j = 0; j < kQK; ++j) qh |= static_cast<uint32_t>((k[j] >> 4) & 1) << j;
  store_u32_le(qh, b.qh);
  store_block(b, out);
  return true;
}

bool encode_q8_0(const float* x, const float* w, float max_err, uint8_t* out) {
  uint8_t k[kQK];
  const SymmetricSearch cfg = q8_0_search();
  const SymmetricResult r = search_symmetric(x, w, kQK, cfg, ScaleStore::f16, max_err, k);
  if (!std::isfinite(r.d)) return false;
  BlockQ8_0 b{};
  b.d = f32_to_f16(r.d);
  for (int j = 0; j < kQK; ++j) b.qs[j] = static_cast<int8_t>(cfg.levels.value(k[j]));
  store_block(b, out);
  return true;
}

bool encode_iq4_nl(const float* x, const float* w, float max_err, uint8_t* out) {
  uint8_t k[kQK];
  const SymmetricResult r = search_symmetric(x, w, kQK, iq4_nl_search(), ScaleStore::f16, max_err, k);
  if (!std::isfinite(r.d)) return false;
  BlockIQ4_NL b{};
  b.d = f32_to_f16(r.d);
  for (int j = 0; j < kQK / 2; ++j) b.qs[j] = static_cast<uint8_t>(k[j] | (k[j + 16] << 4));
  store_block(b, out);
  return true;
}

bool encode_q4_1(const float* x, const float* w, float max_err, uint8_t* out) {
  uint8_t q[kQK];
  const AffineResult r = search_affine(x, w, kQK, q4_1_search(), ScaleStore::f16, max_err, q);
  if (!std::isfinite(r.s) || !std::isfinite(r.b)) return false;
  BlockQ4_1 b{};
  b.d = f32_to_f16(r.s);
  b.m = f32_to_f16(r.b);
  for (int j = 0; j < kQK / 2; ++j) b.qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  store_block(b, out);
  return true;
}

bool encode_q5_1(const float* x, const float* w, float max_err, uint8_t* out) {
  uint8_t q[kQK];
  const AffineResult r = search_affine(x, w, kQK, q5_1_search(), ScaleStore::f16, max_err, q);
  if (!std::isfinite(r.s) || !std::isfinite(r.b)) return false;
  BlockQ5_1 b{};
  b.d = f32_to_f16(r.s);
  b.m = f32_to_f16(r.b);
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) b.qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
  for (int j = 0; j < kQK; ++j) qh |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  store_u32_le(qh, b.qh);
  store_block(b, out);
  return true;
}

// ---- decoders (ggml's dequantize_row_*, one block) ----

void decode_q4_0(const uint8_t* p, float* y) {
  const auto b = load_block<BlockQ4_0>(p);
  const float d = f16_to_f32(b.d);
  for (int j = 0; j < kQK / 2; ++j) {
    const int x0 = (b.qs[j] & 0x0F) - 8;
    const int x1 = (b.qs[j] >> 4) - 8;
    y[j] = static_cast<float>(x0) * d;
    y[j + kQK / 2] = static_cast<float>(x1) * d;
  }
}

void decode_q4_1(const uint8_t* p, float* y) {
  const auto b = load_block<BlockQ4_1>(p);
  const float d = f16_to_f32(b.d);
  const float m = f16_to_f32(b.m);
  for (int j = 0; j < kQK / 2; ++j) {
    const int x0 = b.qs[j] & 0x0F;
    const int x1 = b.qs[j] >> 4;
    y[j] = static_cast<float>(x0) * d + m;
    y[j + kQK / 2] = static_cast<float>(x1) * d + m;
  }
}

void decode_q5_0(const uint8_t* p, float* y) {
  const auto b = load_block<BlockQ5_0>(p);
  const float d = f16_to_f32(b.d);
  const uint32_t qh = load_u32_le(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const uint8_t xh0 = static_cast<uint8_t>(((qh >> j) << 4) & 0x10);
    const uint8_t xh1 = static_cast<uint8_t>((qh >> (j + 12)) & 0x10);
    const int x0 = ((b.qs[j] & 0x0F) | xh0) - 16;
    const int x1 = ((b.qs[j] >> 4) | xh1) - 16;
    y[j] = static_cast<float>(x0) * d;
    y[j + kQK / 2] = static_cast<float>(x1) * d;
  }
}

void decode_q5_1(const uint8_t* p, float* y) {
  const auto b = load_block<BlockQ5_1>(p);
  const float d = f16_to_f32(b.d);
  const float m = f16_to_f32(b.m);
  const uint32_t qh = load_u32_le(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const uint8_t xh0 = static_cast<uint8_t>(((qh >> j) << 4) & 0x10);
    const uint8_t xh1 = static_cast<uint8_t>((qh >> (j + 12)) & 0x10);
    const int x0 = (b.qs[j] & 0x0F) | xh0;
    const int x1 = (b.qs[j] >> 4) | xh1;
    y[j] = static_cast<float>(x0) * d + m;
    y[j + kQK / 2] = static_cast<float>(x1) * d + m;
  }
}

void decode_q8_0(const uint8_t* p, float* y) {
  const auto b = load_block<BlockQ8_0>(p);
  const float d = f16_to_f32(b.d);
  for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
}

void decode_iq4_nl(const uint8_t* p, float* y) {
  const auto b = load_block<BlockIQ4_NL>(p);
  const float d = f16_to_f32(b.d);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>(kIq4nlValues[b.qs[j] & 0xF]);
    y[j + kQK / 2] = d * static_cast<float>(kIq4nlValues[b.qs[j] >> 4]);
  }
}

}  // namespace

// ---- table entry points ----

Status gguf_q4_0_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("q4_0", kQK, sizeof(BlockQ4_0), kQ4_0Bound, encode_q4_0, s, w, rows, cols, o, out);
}
void gguf_q4_0_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK, sizeof(BlockQ4_0), decode_q4_0, out);
}
double gguf_q4_0_error_bound(const Scheme&) { return kQ4_0Bound; }

Status gguf_q4_1_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("q4_1", kQK, sizeof(BlockQ4_1), kQ4_1Bound, encode_q4_1, s, w, rows, cols, o, out);
}
void gguf_q4_1_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK, sizeof(BlockQ4_1), decode_q4_1, out);
}
double gguf_q4_1_error_bound(const Scheme&) { return kQ4_1Bound; }

Status gguf_q5_0_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("q5_0", kQK, sizeof(BlockQ5_0), kQ5_0Bound, encode_q5_0, s, w, rows, cols, o, out);
}
void gguf_q5_0_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK, sizeof(BlockQ5_0), decode_q5_0, out);
}
double gguf_q5_0_error_bound(const Scheme&) { return kQ5_0Bound; }

Status gguf_q5_1_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("q5_1", kQK, sizeof(BlockQ5_1), kQ5_1Bound, encode_q5_1, s, w, rows, cols, o, out);
}
void gguf_q5_1_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK, sizeof(BlockQ5_1), decode_q5_1, out);
}
double gguf_q5_1_error_bound(const Scheme&) { return kQ5_1Bound; }

Status gguf_q8_0_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("q8_0", kQK, sizeof(BlockQ8_0), kQ8_0Bound, encode_q8_0, s, w, rows, cols, o, out);
}
void gguf_q8_0_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK, sizeof(BlockQ8_0), decode_q8_0, out);
}
double gguf_q8_0_error_bound(const Scheme&) { return kQ8_0Bound; }

Status gguf_iq4_nl_quantize_ref(const Scheme& s, const float* w, int64_t rows, int64_t cols,
                                const QuantizeOptions& o, QuantizedTensor* out) {
  return quantize_blocks("iq4_nl", kQK, sizeof(BlockIQ4_NL), kIq4nlBound, encode_iq4_nl, s, w, rows, cols, o, out);
}
void gguf_iq4_nl_dequantize_ref(const QuantizedTensor& q, float* out) {
  dequantize_blocks(q, kQK, sizeof(BlockIQ4_NL), decode_iq4_nl, out);
}
double gguf_iq4_nl_error_bound(const Scheme&) { return kIq4nlBound; }

}  // namespace qforge::formats
