// Scale search shared by the GGUF block quantizers (gguf_legacy.cpp, gguf_kquants.cpp,
// gguf_ternary.cpp). The block layouts are fixed by ggml; what is ours is how the scales, mins
// and codes are chosen. Every search here:
//   - minimises the weighted squared error sum w_i (x_i - y_i)^2, where y_i is computed with the
//     same f32 operations, in the same order, as the dequantizer (so the error is the real one),
//   - evaluates candidates with their scales already rounded to the stored precision (f16) and the
//     codes re-chosen against those rounded scales,
//   - accepts only candidates whose largest |x_i - y_i| stays within a per-format bound
//     (FormatTraits::error_bound times the block absmax); the plain absmax / min-max encoding is
//     always a candidate and provably within that bound, so the search is never worse than it,
//   - breaks ties by candidate order, so the result is deterministic.
// See docs/formats.md, "GGUF block formats".
#pragma once

#include <cstdint>

#include "qforge/format.h"

namespace qforge::formats::gguf {

// How a block's scale is stored: rounded to f16 (most formats), kept as f32 (Q8_K's d), or not
// stored at all (sub-block proposals of the K-quants, which are quantized again later).
enum class ScaleStore { f16, f32, exact };

inline constexpr double kNoStop = 1e300;  // stop_at value that never stops an error sum

// Rounds v to its stored precision; non-finite when f16 overflows.
float store_scale(float v, ScaleStore store);

// Nearest integer (ties to even) of a v with |v| < 2^22 that callers have already clamped:
// adding and subtracting 1.5 * 2^23 rounds in the default rounding mode, with no libm call in
// the inner loops.
inline int round_small(float v) {
  constexpr float kMagic = 12582912.0f;
  return static_cast<int>((v + kMagic) - kMagic);
}

// Encodes one block of `n` values (n = the format's block) into `out`. `w` holds one positive or
// zero weight per value, not all zero. `max_err` is the admissibility bound (absolute). Returns
// false when the block cannot be represented (its scale overflows f16).
using EncodeBlockFn = bool (*)(const float* x, const float* w, float max_err, uint8_t* out);

// Quantizes a [rows, cols] weight block by block (cols must be a multiple of `block`): checks the
// shape, the options and the importance weights, builds each block's (clipped) values and
// weights, runs `encode` and concatenates the blocks row by row into out->codes. `bound` is the
// format's error bound as a fraction of the block absmax. Rows run in parallel; output is
// independent of the thread count.
Status quantize_blocks(const char* format, int block, int block_bytes, double bound, EncodeBlockFn encode,
                       const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                       const QuantizeOptions& options, QuantizedTensor* out);

// Decodes every block of q.codes with `decode(block_bytes, out_values)`.
using DecodeBlockFn = void (*)(const uint8_t* block, float* y);
void dequantize_blocks(const QuantizedTensor& q, int block, int block_bytes, DecodeBlockFn decode, float* out);

// ---- Symmetric levels: y = d * level[k] ----------------------------------------------------

// A sorted set of levels: the integers lo..hi, or a table (IQ4_NL).
struct Levels {
  int lo = 0, hi = 0;              // integer levels lo..hi when table == nullptr
  const int8_t* table = nullptr;   // ascending level values
  int table_size = 0;
  int count() const { return table ? table_size : hi - lo + 1; }
  int value(int k) const { return table ? table[k] : lo + k; }
};

struct SymmetricSearch {
  Levels levels;
  // Candidate divisors |D| = |edge| + delta for delta = 0, then delta_min..delta_max by
  // delta_step, for each edge level (lowest and highest; one edge when the set is symmetric);
  // d = m / D with m the block's largest-magnitude value, signed so m maps onto that edge.
  float delta_min = -1, delta_max = 1, delta_step = 0.1f;
  int refine_iters = 4;  // weighted least-squares updates d = sum w x l / sum w l^2 of the best
};

struct SymmetricResult {
  float d = 0;          // the (stored-precision) scale
  double err = 0;       // weighted squared error
  bool admissible = true;
};

// Finds d and codes k[i] (indices into the level set). With max_err = +inf every candidate is
// admissible.
SymmetricResult search_symmetric(const float* x, const float* w, int n, const SymmetricSearch& cfg,
                                 ScaleStore store, float max_err, uint8_t* k);

// The index of the level nearest to v (v already divided by the scale).
int nearest_level(const Levels& levels, float v);

// Codes for a fixed scale d (0 allowed: every value becomes 0) and the weighted squared error of
// y = d * level; *max_abs_err receives the largest |x - y|. The sum stops early, returning a
// value >= stop_at (codes and max_abs_err then incomplete), once it reaches stop_at: a candidate
// that cannot beat the best so far is not finished.
double symmetric_codes(const float* x, const float* w, int n, const Levels& levels, float d, uint8_t* k,
                       double* max_abs_err, double stop_at = kNoStop);

// ---- Affine levels: y = s * q + b, q in 0..nmax --------------------------------------------

struct AffineSearch {
  int nmax = 15;
  // Candidate inverse scales (nmax + delta) / (max - min) over delta_min..delta_max by step,
  // each followed by a weighted least-squares fit of (s, b) to its codes.
  float delta_min = -1, delta_max = 1, delta_step = 0.1f;
  int refine_iters = 3;
  bool offset_nonpositive = false;  // K-quants: b = -dmin * m <= 0
};

struct AffineResult {
  float s = 0, b = 0;
  double err = 0;
  bool admissible = true;
};

// With store == f16, s and b are rounded to f16 (Q4_1 / Q5_1: y = q * d + m).
AffineResult search_affine(const float* x, const float* w, int n, const AffineSearch& cfg, ScaleStore store,
                           float max_err, uint8_t* q);

// Codes for fixed (s, b) and the resulting error: q = nearest code of (x - b) / s. stop_at as in
// symmetric_codes.
double affine_codes(const float* x, const float* w, int n, int nmax, float s, float b, uint8_t* q,
                    double* max_abs_err, double stop_at = kNoStop);

}  // namespace qforge::formats::gguf
