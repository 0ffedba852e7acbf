// f32 passthrough: the codes plane holds the weights unchanged (little-endian f32), so a tensor
// can stay unquantized under the same QuantizedTensor interface. Exact: error bound 0.
#include <cstring>

#include "formats/format_impl.h"

namespace qforge::formats {

static_assert(sizeof(float) == 4);

Status f32_quantize_ref(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                        const QuantizeOptions& options, QuantizedTensor* out) {
  if (options.importance != nullptr || options.clip_ratio != 1.0f)
    return invalid_argument("scheme f32 stores weights unchanged: importance and clip_ratio do not apply");
  const size_t n = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  out->codes.resize(n * 4);
  if (n > 0) std::memcpy(out->codes.data(), w, n * 4);
  out->scales.clear();
  out->zeros.clear();
  out->extra.clear();
  return Status::ok();
}

void f32_dequantize_ref(const QuantizedTensor& q, float* out) {
  const size_t n = static_cast<size_t>(q.rows) * static_cast<size_t>(q.cols);
  if (n > 0) std::memcpy(out, q.codes.data(), n * 4);
}

double f32_error_bound(const Scheme&) { return 0.0; }

}  // namespace qforge::formats
