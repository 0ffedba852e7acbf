// Packing GGUF rows into the x8 layouts (src/kernels/interleave_x8.h) and back.
#include "kernels/interleave_x8.h"

#include <cstring>

#include "qforge/status.h"

namespace qforge::kernels {
namespace gg = formats::gguf;

namespace {

// Each layout: record <-> the 8 rows' GGUF blocks (rows[i] null = padding row, left zero).
using PackFn = void (*)(const uint8_t* const rows[kX8], int64_t b, uint8_t* rec);
using UnpackFn = void (*)(const uint8_t* rec, int i, uint8_t* out);

void pack_q4_0(const uint8_t* const rows[kX8], int64_t b, uint8_t* rec) {
  auto* o = reinterpret_cast<BlockQ4_0x8*>(rec);
  for (int i = 0; i < kX8; ++i) {
    if (rows[i] == nullptr) continue;
    gg::BlockQ4_0 src;
    std::memcpy(&src, rows[i] + b * sizeof src, sizeof src);
    o->d[i] = src.d;
    for (int c = 0; c < 4; ++c)
      for (int j = 0; j < 4; ++j) o->qs[32 * c + 4 * i + j] = src.qs[4 * c + j];
  }
}

void unpack_q4_0(const uint8_t* rec, int i, uint8_t* out) {
  const auto* r = reinterpret_cast<const BlockQ4_0x8*>(rec);
  gg::BlockQ4_0 dst;
  dst.d = r->d[i];
  for (int c = 0; c < 4; ++c)
    for (int j = 0; j < 4; ++j) dst.qs[4 * c + j] = r->qs[32 * c + 4 * i + j];
  std::memcpy(out, &dst, sizeof dst);
}

void pack_q8_0(const uint8_t* const rows[kX8], int64_t b, uint8_t* rec) {
  auto* o = reinterpret_cast<BlockQ8_0x8*>(rec);
  for (int i = 0; i < kX8; ++i) {
    if (rows[i] == nullptr) continue;
    gg::BlockQ8_0 src;
    std::memcpy(&src, rows[i] + b * sizeof src, sizeof src);
    o->d[i] = src.d;
    for (int c = 0; c < 8; ++c)
      for (int j = 0; j < 4; ++j) o->qs[32 * c + 4 * i + j] = src.qs[4 * c + j];
  }
}

void unpack_q8_0(const uint8_t* rec, int i, uint8_t* out) {
  const auto* r = reinterpret_cast<const BlockQ8_0x8*>(rec);
  gg::BlockQ8_0 dst;
  dst.d = r->d[i];
  for (int c = 0; c < 8; ++c)
    for (int j = 0; j < 4; ++j) dst.qs[4 * c + j] = r->qs[32 * c + 4 * i + j];
  std::memcpy(out, &dst, sizeof dst);
}

void pack_q4_k(const uint8_t* const rows[kX8], int64_t b, uint8_t* rec) {
  auto* o = reinterpret_cast<BlockQ4_Kx8*>(rec);
  for (int i = 0; i < kX8; ++i) {
    if (rows[i] == nullptr) continue;
    gg::BlockQ4_K src;
    std::memcpy(&src, rows[i] + b * sizeof src, sizeof src);
    o->d[i] = src.d;
    o->dmin[i] = src.dmin;
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      gg::unpack_scale_min_k4(j, src.scales, &sc, &m);
      o->scales[8 * j + i] = sc;
      o->mins[16 * (j / 2) + 2 * i + j % 2] = m;
    }
    for (int h = 0; h < 4; ++h)
      for (int c = 0; c < 8; ++c)
        for (int t = 0; t < 4; ++t) o->qs[256 * h + 32 * c + 4 * i + t] = src.qs[32 * h + 4 * c + t];
  }
}

void unpack_q4_k(const uint8_t* rec, int i, uint8_t* out) {
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
  for (int h = 0; h < 4; ++h)
    for (int c = 0; c < 8; ++c)
      for (int t = 0; t < 4; ++t) dst.qs[32 * h + 4 * c + t] = r->qs[256 * h + 32 * c + 4 * i + t];
  std::memcpy(out, &dst, sizeof dst);
}

void pack_q6_k(const uint8_t* const rows[kX8], int64_t b, uint8_t* rec) {
  auto* o = reinterpret_cast<BlockQ6_Kx8*>(rec);
  for (int i = 0; i < kX8; ++i) {
    if (rows[i] == nullptr) continue;
    gg::BlockQ6_K src;
    std::memcpy(&src, rows[i] + b * sizeof src, sizeof src);
    o->d[i] = src.d;
    for (int j = 0; j < 16; ++j) o->scales[8 * j + i] = src.scales[j];
    for (int n = 0; n < 2; ++n)
      for (int c = 0; c < 8; ++c)
        for (int t = 0; t < 4; ++t) {
          for (int h = 0; h < 2; ++h) o->ql[512 * n + 256 * h + 32 * c + 4 * i + t] = src.ql[64 * n + 32 * h + 4 * c + t];
          o->qh[256 * n + 32 * c + 4 * i + t] = src.qh[32 * n + 4 * c + t];
        }
  }
}

void unpack_q6_k(const uint8_t* rec, int i, uint8_t* out) {
  const auto* r = reinterpret_cast<const BlockQ6_Kx8*>(rec);
  gg::BlockQ6_K dst;
  dst.d = r->d[i];
  for (int j = 0; j < 16; ++j) dst.scales[j] = r->scales[8 * j + i];
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 8; ++c)
      for (int t = 0; t < 4; ++t) {
        for (int h = 0; h < 2; ++h) dst.ql[64 * n + 32 * h + 4 * c + t] = r->ql[512 * n + 256 * h + 32 * c + 4 * i + t];
        dst.qh[32 * n + 4 * c + t] = r->qh[256 * n + 32 * c + 4 * i + t];
      }
  std::memcpy(out, &dst, sizeof dst);
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
    {FormatId::gguf_q4_0, gg::kQK, sizeof(gg::BlockQ4_0), sizeof(BlockQ4_0x8), pack_q4_0, unpack_q4_0},
    {FormatId::gguf_q8_0, gg::kQK, sizeof(gg::BlockQ8_0), sizeof(BlockQ8_0x8), pack_q8_0, unpack_q8_0},
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
  for (int64_t g = 0; g * kX8 < rows; ++g) {
    const uint8_t* row[kX8];
    for (int i = 0; i < kX8; ++i) {
      const int64_t r = g * kX8 + i;
      row[i] = r < rows ? src + static_cast<size_t>(r) * src_row_bytes : nullptr;
    }
    uint8_t* out = dst + static_cast<size_t>(g) * group_bytes;
    for (int64_t b = 0; b < nb; ++b) geo.pack(row, b, out + static_cast<size_t>(b) * geo.record_bytes);
  }
}

void unpack_x8_row(FormatId format, const uint8_t* group, int lane, int64_t cols, uint8_t* out) {
  const X8Format& geo = x8_of(format);
  for (int64_t b = 0; b < cols / geo.block; ++b)
    geo.unpack(group + static_cast<size_t>(b) * geo.record_bytes, lane, out + static_cast<size_t>(b) * geo.gguf_bytes);
}

}  // namespace qforge::kernels
