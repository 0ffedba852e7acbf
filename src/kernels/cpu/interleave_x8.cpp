// Packing GGUF rows into the x8 layouts (src/kernels/interleave_x8.h) and back.
#include "kernels/interleave_x8.h"

#include <cstring>

#include "qforge/status.h"

namespace qforge::kernels {
namespace gg = formats::gguf;

namespace {

// Every code array of every layout is interleaved the same way: byte k of row i's array is byte
// x8_byte(i, k) of the record's, so each 32 bytes hold 4 consecutive bytes of all 8 rows (row i
// in bytes 4i..4i+3), the load the micro-kernels make.
constexpr size_t x8_byte(int i, size_t k) { return 8 * (k / 4 * 4) + 4 * static_cast<size_t>(i) + k % 4; }

template <class T>
void put_row(T* x8, const T* row, size_t n, int i) {
  for (size_t k = 0; k < n; ++k) x8[x8_byte(i, k)] = row[k];
}

template <class T>
void get_row(T* row, const T* x8, size_t n, int i) {
  for (size_t k = 0; k < n; ++k) row[k] = x8[x8_byte(i, k)];
}

// Each layout: row i's GGUF block into its record, and back.
using PackFn = void (*)(const uint8_t* block, int i, uint8_t* rec);
using UnpackFn = void (*)(const uint8_t* rec, int i, uint8_t* block);

// Q4_0 and Q8_0: one f16 scale d and the codes qs per block.
template <typename Block, typename Record>
void pack_d_qs(const uint8_t* block, int i, uint8_t* rec) {
  Block src;
  std::memcpy(&src, block, sizeof src);
  auto* o = reinterpret_cast<Record*>(rec);
  o->d[i] = src.d;
  put_row(o->qs, src.qs, sizeof src.qs, i);
}

template <typename Block, typename Record>
void unpack_d_qs(const uint8_t* rec, int i, uint8_t* block) {
  const auto* r = reinterpret_cast<const Record*>(rec);
  Block dst;
  dst.d = r->d[i];
  get_row(dst.qs, r->qs, sizeof dst.qs, i);
  std::memcpy(block, &dst, sizeof dst);
}

void pack_q4_k(const uint8_t* block, int i, uint8_t* rec) {
  gg::BlockQ4_K src;
  std::memcpy(&src, block, sizeof src);
  auto* o = reinterpret_cast<BlockQ4_Kx8*>(rec);
  o->d[i] = src.d;
  o->dmin[i] = src.dmin;
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    gg::unpack_scale_min_k4(j, src.scales, &sc, &m);
    o->scales[8 * j + i] = sc;
    o->mins[16 * (j / 2) + 2 * i + j % 2] = m;
  }
  put_row(o->qs, src.qs, sizeof src.qs, i);
}

void unpack_q4_k(const uint8_t* rec, int i, uint8_t* block) {
  const auto* r = reinterpret_cast<const BlockQ4_Kx8*>(rec);
  gg::BlockQ4_K dst;
  dst.d = r->d[i];
  dst.dmin = r->dmin[i];
  uint8_t sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = r->scales[8 * j + i];
    m[j] = r->mins[16 * (j / 2) + 2 * i + j % 2];
  }
  gg::pack_scale_min_k4(sc, m, dst.scales);
  get_row(dst.qs, r->qs, sizeof dst.qs, i);
  std::memcpy(block, &dst, sizeof dst);
}

void pack_q6_k(const uint8_t* block, int i, uint8_t* rec) {
  gg::BlockQ6_K src;
  std::memcpy(&src, block, sizeof src);
  auto* o = reinterpret_cast<BlockQ6_Kx8*>(rec);
  o->d[i] = src.d;
  for (int j = 0; j < 16; ++j) o->scales[8 * j + i] = src.scales[j];
  put_row(o->ql, src.ql, sizeof src.ql, i);
  put_row(o->qh, src.qh, sizeof src.qh, i);
}

void unpack_q6_k(const uint8_t* rec, int i, uint8_t* block) {
  const auto* r = reinterpret_cast<const BlockQ6_Kx8*>(rec);
  gg::BlockQ6_K dst;
  dst.d = r->d[i];
  for (int j = 0; j < 16; ++j) dst.scales[j] = r->scales[8 * j + i];
  get_row(dst.ql, r->ql, sizeof dst.ql, i);
  get_row(dst.qh, r->qh, sizeof dst.qh, i);
  std::memcpy(block, &dst, sizeof dst);
}

// The x8 layouts: GGUF block of `block` columns and `gguf_bytes`, record bytes, converters.
struct X8Format {
  FormatId format;
  int64_t block;
  size_t gguf_bytes;
  size_t record_bytes;
  PackFn pack;
  UnpackFn unpack;
};

constexpr X8Format kX8Formats[] = {
    {FormatId::gguf_q4_0, gg::kQK, sizeof(gg::BlockQ4_0), sizeof(BlockQ4_0x8), pack_d_qs<gg::BlockQ4_0, BlockQ4_0x8>,
     unpack_d_qs<gg::BlockQ4_0, BlockQ4_0x8>},
    {FormatId::gguf_q8_0, gg::kQK, sizeof(gg::BlockQ8_0), sizeof(BlockQ8_0x8), pack_d_qs<gg::BlockQ8_0, BlockQ8_0x8>,
     unpack_d_qs<gg::BlockQ8_0, BlockQ8_0x8>},
    {FormatId::gguf_q4_k, gg::kQK_K, sizeof(gg::BlockQ4_K), sizeof(BlockQ4_Kx8), pack_q4_k, unpack_q4_k},
    {FormatId::gguf_q6_k, gg::kQK_K, sizeof(gg::BlockQ6_K), sizeof(BlockQ6_Kx8), pack_q6_k, unpack_q6_k},
};

const X8Format* find_x8(FormatId f) {
  for (const X8Format& x : kX8Formats)
    if (x.format == f) return &x;
  return nullptr;
}

const X8Format& x8_of(FormatId f) {
  const X8Format* x = find_x8(f);
  QFORGE_CHECK_MSG(x != nullptr, "format has no x8 layout");
  return *x;
}

}  // namespace

bool has_x8_layout(FormatId format) { return find_x8(format) != nullptr; }

size_t x8_group_bytes(FormatId format, int64_t cols) {
  const X8Format& x = x8_of(format);
  return static_cast<size_t>(cols / x.block) * x.record_bytes;
}

void pack_x8(FormatId format, const uint8_t* src, size_t src_row_bytes, int64_t rows, int64_t cols, uint8_t* dst) {
  const X8Format& geo = x8_of(format);
  const int64_t nb = cols / geo.block;
  const size_t group_bytes = x8_group_bytes(format, cols);
  for (int64_t r = 0; r < rows; ++r) {  // rows past `rows` in the last group stay zero
    const uint8_t* row = src + static_cast<size_t>(r) * src_row_bytes;
    uint8_t* group = dst + static_cast<size_t>(r / kX8) * group_bytes;
    for (int64_t b = 0; b < nb; ++b)
      geo.pack(row + static_cast<size_t>(b) * geo.gguf_bytes, static_cast<int>(r % kX8),
               group + static_cast<size_t>(b) * geo.record_bytes);
  }
}

void unpack_x8_row(FormatId format, const uint8_t* group, int lane, int64_t cols, uint8_t* out) {
  const X8Format& geo = x8_of(format);
  for (int64_t b = 0; b < cols / geo.block; ++b)
    geo.unpack(group + static_cast<size_t>(b) * geo.record_bytes, lane, out + static_cast<size_t>(b) * geo.gguf_bytes);
}

}  // namespace qforge::kernels
