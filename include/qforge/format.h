// The quantization format table: the single source of truth for every scheme qforge knows.
//
// A *format* is a family (int-sym, int-asym, nf4, mxfp4, ...) with one row in the table
// (src/formats/format_table.cpp). A *scheme* is a format plus its parameters (bits, granularity,
// group size), named like "int4-g128-asym", "int8-ch-sym", "int8-tensor-sym", "fp8-e4m3-ch", "nf4".
// Kernels, CLI names, file mappings and test tolerances all come from the table; no other file
// switches over formats.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/dtype.h"
#include "qforge/status.h"

namespace qforge {

// Append-only: ids are persisted in qforge manifests and cards. Retired ids stay as comments.
// 1..31: qforge schemes (foundation); 32..: GGUF block formats (GGUF issue).
enum class FormatId : uint16_t {
  int_sym = 1,     // signed intN, scale = absmax / qmax, qmax = 2^(N-1) - 1
  int_asym = 2,    // unsigned intN with integer zero-point, scale = (max - min) / (2^N - 1)
  nf4 = 3,         // NormalFloat4 codebook, absmax per block of 64 (bitsandbytes), optional double quant
  fp4_e2m1 = 4,    // FP4 E2M1 codes, absmax scale per group (bitsandbytes "fp4")
  mxfp4 = 5,       // OCP MX: 32 x E2M1 + one E8M0 scale
  nvfp4 = 6,       // NVIDIA: 16 x E2M1 + one E4M3 scale, plus a per-tensor f32 scale
  fp8_e4m3 = 7,    // E4M3FN codes, f32 scale per tensor or per output channel
  fp8_e5m2 = 8,    // E5M2 codes, f32 scale per tensor or per output channel
  f16 = 9,         // plain cast
  bf16 = 10,       // plain cast
  binary = 11,     // sign(w) * mean|w| of the row
  ternary = 12,    // {-1, 0, +1} * scale of the row, threshold 0.7 * mean|w|
  f32 = 13,        // identity passthrough (keeps a tensor unquantized)
  // GGUF block formats: the codes plane holds ggml's blocks byte for byte (src/formats/gguf_blocks.h).
  gguf_q8_0 = 32,    // 32 x int8, f16 d
  gguf_q4_0 = 33,    // 32 x 4-bit, y = d (q - 8)
  gguf_q4_1 = 34,    // 32 x 4-bit, y = d q + m
  gguf_q5_0 = 35,    // 32 x 5-bit, y = d (q - 16)
  gguf_q5_1 = 36,    // 32 x 5-bit, y = d q + m
  gguf_q2_k = 37,    // 256: 16 x 16 x 2-bit, 4-bit scales and mins
  gguf_q3_k = 38,    // 256: 16 x 16 x 3-bit, 6-bit signed scales
  gguf_q4_k = 39,    // 256: 8 x 32 x 4-bit, 6-bit scales and mins
  gguf_q5_k = 40,    // 256: 8 x 32 x 5-bit, 6-bit scales and mins
  gguf_q6_k = 41,    // 256: 16 x 16 x 6-bit, int8 scales
  gguf_q8_k = 42,    // 256 x int8, f32 d, block sums (ggml's intermediate for dot products)
  gguf_iq4_nl = 43,  // 32 x 4-bit indices into a non-linear 16-value table, f16 d
  gguf_tq1_0 = 44,   // 256 ternary values in base 3 (1.6875 bits per weight)
  gguf_tq2_0 = 45,   // 256 ternary values in 2 bits each
};

// Where one scale (and zero-point) applies. Groups and blocks run along the input dimension
// (columns) of a [rows = out_features, cols = in_features] weight.
enum class Granularity : uint8_t {
  tensor = 0,   // one scale for the whole tensor
  channel = 1,  // one scale per row (output channel)
  group = 2,    // one scale per `group_size` consecutive columns of a row
};

struct Scheme {
  FormatId format = FormatId::int_sym;
  int bits = 8;
  Granularity granularity = Granularity::channel;
  int64_t group_size = 0;     // > 0 only for Granularity::group (fixed-block formats: the block)
  bool double_quant = false;  // NF4: quantize the block absmax values to 8 bits in blocks of 256

  // Canonical name; parse(name()) == *this.
  std::string name() const;
  // Accepts the canonical names and documented aliases; errors name the offending text.
  static Expected<Scheme> parse(std::string_view name);
  bool operator==(const Scheme&) const = default;
};

// A quantized 2-D weight. Planes not used by a format stay empty.
struct QuantizedTensor {
  Scheme scheme;
  int64_t rows = 0;
  int64_t cols = 0;
  // Packed codes, row-major; each row starts on a byte boundary (row stride = packed_row_bytes()).
  // Codes of bit width b are packed little-endian into a bit stream (see docs/formats.md).
  std::vector<uint8_t> codes;
  // Scales, [rows, groups_per_row] (per-tensor: 1 value) in the format's scale dtype, raw
  // little-endian bytes.
  std::vector<uint8_t> scales;
  // Zero-points, [rows, groups_per_row] (per-tensor: 1), one u8 each (asymmetric formats only).
  std::vector<uint8_t> zeros;
  // Format-specific extras: NVFP4 per-tensor f32 scale; NF4 double-quant second-level data.
  std::vector<uint8_t> extra;

  // Scale groups per row: cols / group_size for group granularity, else 1 (per-tensor schemes
  // still store a single scale for the whole tensor).
  int64_t groups_per_row() const;
  size_t packed_row_bytes() const;
  size_t nbytes() const { return codes.size() + scales.size() + zeros.size() + extra.size(); }
  double bits_per_weight() const;  // all stored bytes * 8 / (rows * cols)
};

struct QuantizeOptions {
  // Optional importance weights, >= 0: either one per element ([rows * cols]) or one per input
  // column ([cols], broadcast over rows, as an imatrix gives). Scales are then searched to minimise
  // the importance-weighted squared error instead of taken from absmax/min-max.
  const float* importance = nullptr;
  size_t importance_size = 0;  // rows * cols or cols
  // Shrinks the range used for the scale: scale computed from clip_ratio * absmax (or the clipped
  // min/max for asymmetric). 1 = no clipping. Must be in (0, 1].
  float clip_ratio = 1.0f;
};

using QuantizeFn = Status (*)(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                              const QuantizeOptions& options, QuantizedTensor* out);
using DequantizeFn = void (*)(const QuantizedTensor& q, float* out);  // out: rows * cols, row-major

// Bit mask of Granularity values a format accepts.
constexpr uint8_t granularity_bit(Granularity g) { return static_cast<uint8_t>(1u << static_cast<unsigned>(g)); }

// One row of the table.
//
// Scheme names follow one grammar for every row (docs/formats.md):
//   name := stem [bits] ["-" granularity] ["-dq"] suffix
// where bits is written only when min_bits < max_bits, granularity ("g<N>", "ch", "tensor") only
// when the row offers a choice and the scheme is not the row's default, and "-dq" only for double
// quantization. Examples: "int4-g128-asym" = "int" 4 "-g128" "-asym"; "nf4-dq"; "fp8-e4m3-ch".
struct FormatTraits {
  FormatId id;
  const char* name;           // unique row name ("int-sym", "int-asym", "nf4", "fp8-e4m3", ...)
  const char* description;
  const char* stem;           // scheme-name text before the bit width ("int", "nf4", "fp8-e4m3")
  const char* suffix;         // scheme-name text after the granularity ("-sym", "-asym", "")
  int min_bits, max_bits;     // code width range (fixed formats: equal)
  uint8_t granularities;      // granularity_bit() mask of accepted granularities
  // Used when a name leaves the granularity out; only rows with granularity_optional allow that.
  bool granularity_optional;
  Granularity default_granularity;
  int64_t default_group;      // group size of the default (group granularity), else 0
  bool double_quant;          // accepts "-dq" (Scheme::double_quant)
  int64_t block;              // fixed block length along columns, 0 = set by the scheme's granularity
  int bytes_per_block;        // bytes of one fixed block (codes + its scale), 0 = parametric
  // True when the codes plane holds whole self-describing blocks (GGUF style: scales inside the
  // block, bytes_per_block each) and the scales/zeros planes are empty. False = planar layout.
  bool blocks_in_codes;
  bool has_scales;            // has a `scales` plane
  DType scale_dtype;          // dtype of the `scales` plane (NF4 with double quant: u8 codes)
  bool zero_point;            // has a `zeros` plane
  QuantizeFn quantize_ref;    // the specification; fast paths are bit-exact with it
  DequantizeFn dequantize_ref;
  int gguf_type;              // GGML type id, -1 when GGUF has no equivalent
  // Test tolerance: the largest |x - dequant(quant(x))| allowed for an element, as a fraction of
  // its group's absmax (asymmetric: of the group's range max(max, 0) - min(min, 0)), without
  // clipping or importance weights. Each family's .cpp derives its bound in a comment.
  double (*error_bound)(const Scheme& scheme);
  // Bytes of the `extra` plane for a valid scheme on a [rows, cols] weight; null = none.
  size_t (*extra_bytes)(const Scheme& scheme, int64_t rows, int64_t cols);
};

std::span<const FormatTraits> all_formats();
const FormatTraits& format_traits(FormatId id);  // id must be in the table (QFORGE_CHECK)
// The row of `id`, or null for ids not in the table (e.g. read from a corrupt file).
const FormatTraits* find_format_by_id(FormatId id);
const FormatTraits* find_format(std::string_view family_name);
// The row whose gguf_type is `ggml_type`, or null.
const FormatTraits* find_format_by_gguf_type(int ggml_type);

// Every accepted scheme-name form, one per row, e.g. "int<2..8>-{g<N>|ch|tensor}-sym".
std::vector<std::string> scheme_name_forms();

// Checks the scheme against the table and the weight's shape (e.g. group size divides cols).
Status validate_scheme(const Scheme& scheme, int64_t rows, int64_t cols);

// Exact byte size of each plane of a QuantizedTensor.
struct PlaneSizes {
  size_t codes = 0, scales = 0, zeros = 0, extra = 0;
  size_t total() const { return codes + scales + zeros + extra; }
};
// Plane sizes for a scheme that passed validate_scheme on [rows, cols].
PlaneSizes scheme_plane_sizes(const Scheme& scheme, int64_t rows, int64_t cols);
// Bits per weight including scale/zero-point/extra overhead for a [rows, cols] weight (exact:
// all plane bytes * 8 / (rows * cols)); 0 when the scheme is not valid for that shape.
double scheme_bits_per_weight(const Scheme& scheme, int64_t rows, int64_t cols);

// Reference quantization (the table's quantize_ref after validation). Rejects NaN/Inf weights
// with an error naming the first offending index.
Expected<QuantizedTensor> quantize(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                                   const QuantizeOptions& options = {});
// Reference dequantization into rows * cols floats; validates plane sizes first.
Status dequantize(const QuantizedTensor& q, float* out);

// Bit packing used by the `codes` plane: n codes of `bits` (1..8) each, little-endian bit stream
// (code i occupies stream bits [i*bits, (i+1)*bits); stream bit k is bit k%8 of byte k/8). Only
// the low `bits` bits of each code are used; unused high bits of the last byte are zero.
size_t packed_size(int64_t n, int bits);
void pack_bits(const uint8_t* codes, int64_t n, int bits, uint8_t* out);
void unpack_bits(const uint8_t* packed, int64_t n, int bits, uint8_t* codes);

// Reconstruction error of `approx` against `ref`.
struct ErrorStats {
  double sqnr_db = 0;    // 10 log10(sum ref^2 / sum (ref - approx)^2); +inf when exact
  double rel_rmse = 0;   // ||ref - approx|| / ||ref||
  double max_abs = 0;    // max |ref - approx|
  double mse = 0;        // mean (ref - approx)^2
  int64_t count = 0;
};
ErrorStats error_stats(const float* ref, const float* approx, int64_t n);

}  // namespace qforge
