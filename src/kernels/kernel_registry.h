// Internal kernel registry: one entry per weight format, holding how to pack the weight, how to
// prepare the activations and one tile function per ISA level (null = fall back to the next lower
// level). ISA translation units fill their slots through register_*() functions called by the
// registry (no switch over formats anywhere else).
//
// Packed layouts (row r starts at data + r * row_stride):
//   q4_0, q8_0, q4_k, q6_k:  groups of 8 rows interleaved (kernels/interleave_x8.h); group g
//                      starts at data + g * group_stride.
//   f16, bf16:         the 2-byte values of the row, as stored.
//   int8 (W8A8):  [f32 scale][28 bytes pad][int8 q, zero-padded to a multiple of 32]
//   int4 (asym):  per group [f32 scale][f32 zero-point] (groups_per_row pairs), then per 32
//                 elements 16 bytes: byte j holds element j (low nibble) and j + 16 (high nibble).
// Activation rows (one per token, act_row_stride bytes apart):
//   q8_32 (q8_0, q4_0):  ActQ8Block per 32 elements
//   q8_k (q4_k, q6_k):   BlockQ8_K per 256 elements
//   q8_row (int8):       [f32 d][28 bytes pad][int8 q, zero-padded to a multiple of 32]
//   f32 (f16, bf16):     the cols floats of x
//   f32_gsum (int4):     the cols floats of x, then one f32 sum of x per weight group
#pragma once

#include <cstddef>
#include <cstdint>

#include "formats/gguf_blocks.h"
#include "qforge/kernels.h"

// Micro-kernel loops over their compile-time row / token / group counts are unrolled with this:
// GCC otherwise keeps the accumulator arrays they index in memory (a store per accumulator and
// iteration; the AVX-512 f16 GEMM ran at half speed from it).
#define QF_UNROLL _Pragma("GCC unroll 16")

namespace qforge::kernels {

// One int8 activation block of 32: x ≈ d q, s = d * sum(q) (used for Q4_0's -8 offset).
struct ActQ8Block {
  float d;
  float s;
  int8_t qs[32];
};
static_assert(sizeof(ActQ8Block) == 40);

inline constexpr size_t kRowHeader = 32;  // int8 weight rows and q8_row activation rows

enum class ActKind : uint8_t { q8_32, q8_k, q8_row, f32, f32_gsum };

struct WeightView {
  const uint8_t* data = nullptr;
  size_t row_stride = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t group = 0;  // int4: group length (a multiple of 32)
  size_t group_stride = 0;  // x8 layouts: bytes per group of 8 rows (row_stride is then unused)
};

// Computes y[t * ldy + r] for r in [r0, r1), t in [0, n_tokens) from activation rows
// act + t * act_stride. Must not depend on r0 other than through the rows it covers.
using TileFn = void (*)(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t act_stride,
                        int64_t n_tokens, float* y, int64_t ldy);

struct KernelEntry {
  FormatId format = FormatId::f32;
  ActKind act = ActKind::f32;
  TileFn tile[kIsaCount] = {};
};

// Slots of the registry, filled by each ISA unit (kernels_*-<isa>.cpp). Each sets tile[isa] of
// the entries it implements.
KernelEntry* registry_entry(FormatId format);  // null when not registered
void register_ref_kernels();
void register_avx2_kernels();
void register_avx512_kernels();
void register_avx512vnni_kernels();
void register_avx512bf16_kernels();

// Activation quantization. The scalar functions are the specification: d = absmax / 127,
// q = round-half-away(x * (1 / d)) clamped to +-127. The _x2 forms also quantize the residual
// r = fma(-d, q, x) the same way into `residual` (the int8x2 second term).
void quantize_act_q8_32(const float* x, int64_t cols, ActQ8Block* out);
void quantize_act_q8_k(const float* x, int64_t cols, formats::gguf::BlockQ8_K* out);
void quantize_act_q8_row(const float* x, int64_t cols, uint8_t* out);  // header + padded codes
void quantize_act_q8_32_x2(const float* x, int64_t cols, ActQ8Block* out, ActQ8Block* residual);
void quantize_act_q8_k_x2(const float* x, int64_t cols, formats::gguf::BlockQ8_K* out,
                          formats::gguf::BlockQ8_K* residual);
void quantize_act_q8_row_x2(const float* x, int64_t cols, uint8_t* out, uint8_t* residual);

// Vectorised activation quantizers of an ISA level, bit-identical to the scalar ones (tested);
// `residual` null = one term. A null slot falls back to the next lower level, then to scalar.
struct ActQuantizers {
  void (*q8_32)(const float* x, int64_t cols, ActQ8Block* out, ActQ8Block* residual) = nullptr;
  void (*q8_k)(const float* x, int64_t cols, formats::gguf::BlockQ8_K* out,
               formats::gguf::BlockQ8_K* residual) = nullptr;
};
ActQuantizers* act_quantizer_slot(Isa isa);
void register_avx2_act_quantizers();
// The quantizers `isa` uses (after fallback; scalar = the specification).
ActQuantizers act_quantizers_for(Isa isa);

// Decoding helpers shared by the scalar kernels and packing.
float half_to_float(uint16_t h);

// A non-negative count from environment variable `name`: `fallback` when unset or empty, and, with
// a warning on stderr naming the variable, when it is not a decimal integer >= 0.
int64_t env_count(const char* name, int64_t fallback);

}  // namespace qforge::kernels
