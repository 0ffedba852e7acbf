// Row-interleaved ("x8") weight layouts of Q4_0, Q8_0, Q4_K and Q6_K for the CPU kernels.
//
// Why: in the GGUF layout a GEMV decodes each row's block separately and ends with a horizontal
// sum per row; the 4-bit GEMVs were compute-bound at about half the memory bandwidth. Here eight
// consecutive rows share one block record: their eight f16 scales load as one vector, and each
// 32-byte load of codes holds 4 consecutive columns of all 8 rows (row i in bytes 4i..4i+3), so
// one broadcast of 4 activation bytes against it yields 8 rows' partial dots in the 8 int32 lanes
// (maddubs + madd), with no per-row work and no horizontal sums. docs/kernels.md documents the
// records field by field.
//
// A weight of R rows is stored as ceil(R / 8) groups; the rows of the last group past R are zero
// (scale 0, codes 0), so every group is complete. Group g, block b starts at
// data + g * group_stride + b * sizeof(record). The bijection with the GGUF blocks is
// pack_x8 / unpack_x8_row (dense_weight and the scalar reference read rows back through it).
#pragma once

#include <cstddef>
#include <cstdint>

#include "formats/gguf_blocks.h"
#include "qforge/format.h"

namespace qforge::kernels {

inline constexpr int kX8 = 8;  // rows per group

// 32 columns of 8 rows. qs[32 c + 4 i + j] = GGUF qs[4 c + j] of row i (c = 0..3): its low nibble
// is column 4c + j, its high nibble column 16 + 4c + j.
struct BlockQ4_0x8 {
  uint16_t d[kX8];
  uint8_t qs[kX8 * formats::gguf::kQK / 2];
};
static_assert(sizeof(BlockQ4_0x8) == 144);

// 32 columns of 8 rows. qs[32 c + 4 i + j] = column 4c + j of row i (c = 0..7).
struct BlockQ8_0x8 {
  uint16_t d[kX8];
  int8_t qs[kX8 * formats::gguf::kQK];
};
static_assert(sizeof(BlockQ8_0x8) == 272);

// 256 columns of 8 rows. scales[8 j + i] / mins: the 6-bit scale and min of sub-block j (columns
// 32j..32j+31) of row i, decoded; mins[16 p + 2 i + e] = min of sub-block 2p + e of row i (pairs,
// so one widening load gives each row's two mins side by side). qs[256 h + 32 c + 4 i + t] = GGUF
// qs[32 h + 4 c + t] of row i (h = 0..3, c = 0..7): low nibble = column 64h + 4c + t (sub-block 2h),
// high nibble = column 64h + 32 + 4c + t (sub-block 2h + 1).
struct BlockQ4_Kx8 {
  uint16_t d[kX8];
  uint16_t dmin[kX8];
  uint8_t scales[kX8 * 8];
  uint8_t mins[kX8 * 8];
  uint8_t qs[kX8 * formats::gguf::kQK_K / 2];
};
static_assert(sizeof(BlockQ4_Kx8) == 1184);

// 256 columns of 8 rows. scales[8 j + i]: scale of sub-block j (columns 16j..16j+15) of row i.
// ql[512 n + 256 h + 32 c + 4 i + t] = GGUF ql[64 n + 32 h + 4 c + t] of row i and
// qh[256 n + 32 c + 4 i + t] = GGUF qh[32 n + 4 c + t] of row i (n, h = 0..1, c = 0..7): one 32-byte
// load of each holds, for 4 columns of all 8 rows, the low bits of columns 128n + 32g + 4c + t
// (g = h: low nibbles, g = 2 + h: high nibbles) and the 2 high bits of all four g.
struct BlockQ6_Kx8 {
  uint16_t d[kX8];
  int8_t scales[kX8 * 16];
  uint8_t ql[kX8 * formats::gguf::kQK_K / 2];
  uint8_t qh[kX8 * formats::gguf::kQK_K / 4];
};
static_assert(sizeof(BlockQ6_Kx8) == 1680);

// Whether `format` runs in an x8 layout.
bool has_x8_layout(FormatId format);

// Bytes of one group of 8 rows of `cols` columns (cols a multiple of the format's block).
size_t x8_group_bytes(FormatId format, int64_t cols);

// Packs `rows` GGUF rows (src_row_bytes apart) into ceil(rows / 8) groups at dst, which must hold
// that many groups and be zero-filled (the padding rows stay zero).
void pack_x8(FormatId format, const uint8_t* src, size_t src_row_bytes, int64_t rows, int64_t cols, uint8_t* dst);

// Writes row `lane` (0..7) of the group at `group` back as GGUF blocks (cols / block of them).
void unpack_x8_row(FormatId format, const uint8_t* group, int lane, int64_t cols, uint8_t* out);

}  // namespace qforge::kernels
