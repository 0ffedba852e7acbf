// Helpers shared by the integer and binary/ternary reference quantizers (not part of the API).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "qforge/dtype.h"
#include "qforge/format.h"

namespace qforge::formats {

// Smallest f16 value >= s, for finite s >= 0; +Inf (0x7C00) when s > 65504.
// Scales are rounded *up* so that every element of the group still lies inside the representable
// grid after rounding: codes never clamp, and the error stays <= stored_scale / 2.
inline uint16_t f16_round_up(float s) {
  uint16_t h = f32_to_f16(s);
  if (f16_to_f32(h) < s) ++h;  // positive, finite, below 0x7C00: the next f16 up (may become Inf)
  return h;
}

// round(v) to the nearest integer, ties to even, after clamping v to [lo, hi] (|lo|, |hi| < 2^22).
// Adding 1.5 * 2^23 makes the float addition itself round to an integer (ties to even in the
// default rounding mode) and leaves it in the low mantissa bits: exact, branch-free and the same
// in scalar and SIMD code, unlike nearbyint, which is a library call that saves the FP state.
inline int round_clamped(float v, int lo, int hi) {
  v = std::min(std::max(v, static_cast<float>(lo)), static_cast<float>(hi));
  const float shifted = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return (bits & 0x007FFFFF) - 0x00400000;
}

// Importance weights as quantize() accepted them: per element ([rows * cols]) or per input column
// ([cols], broadcast over rows). Null when the caller gave none.
struct ImportanceView {
  const float* data = nullptr;
  bool per_column = false;
  int64_t cols = 0;

  ImportanceView(const QuantizeOptions& options, int64_t rows, int64_t cols_)
      : data(options.importance), cols(cols_) {
    per_column = data != nullptr && static_cast<int64_t>(options.importance_size) != rows * cols_;
  }
  bool present() const { return data != nullptr; }
  // Weight of the element at flat (row-major) index i.
  float at(int64_t i) const { return per_column ? data[i % cols] : data[i]; }
  // Copies the weights of the flat range [begin, begin + n) into out.
  void gather(int64_t begin, int64_t n, std::vector<float>* out) const {
    out->resize(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) (*out)[static_cast<size_t>(k)] = at(begin + k);
  }
};

// Scale groups of a scheme on a [rows, cols] weight. Every group is a contiguous row-major range:
// per-tensor = the whole tensor, per-channel = one row, per-group = group_size columns of a row.
struct GroupLayout {
  int64_t count = 0;           // groups in the tensor (= scales stored)
  int64_t per_row = 0;         // groups per row (per-tensor: 0, the one group spans rows)
  int64_t length = 0;          // elements per group

  GroupLayout(const Scheme& scheme, int64_t rows, int64_t cols) {
    switch (scheme.granularity) {
      case Granularity::tensor: count = 1; per_row = 0; length = rows * cols; break;
      case Granularity::channel: count = rows; per_row = 1; length = cols; break;
      case Granularity::group:
        per_row = cols / scheme.group_size;
        count = rows * per_row;
        length = scheme.group_size;
        break;
    }
  }
  // Index of the group holding element (row, col).
  int64_t group_of(int64_t row, int64_t col) const {
    return per_row == 0 ? 0 : row * per_row + col / length;
  }
};

}  // namespace qforge::formats
