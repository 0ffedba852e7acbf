// TEMPORARY (h-intfmt): placeholders for the float formats, which land with branch h-floatfmt
// (src/formats/{nf4,fp4,fp8,float_cast}.cpp). They exist only so that the table links before
// then; this file is deleted when that branch is merged. The quantizers report "not yet
// implemented"; nothing here is a real implementation.
#include <cmath>
#include <cstring>
#include <limits>

#include "formats/format_impl.h"

namespace qforge::formats {

const float kNf4Codebook[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                                -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                                0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
                                0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                                0.7229568362236023f, 1.0f};
const float kFp4E2M1Values[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

namespace {
Status pending(const Scheme& scheme) {
  return unsupported("scheme " + scheme.name() + ": not yet implemented (float formats land with h-floatfmt)");
}
void fill_nan(const QuantizedTensor& q, float* out) {
  const size_t n = static_cast<size_t>(q.rows) * static_cast<size_t>(q.cols);
  for (size_t i = 0; i < n; ++i) out[i] = std::numeric_limits<float>::quiet_NaN();
}
double no_bound(const Scheme&) { return std::numeric_limits<double>::infinity(); }
}  // namespace

#define QFORGE_PENDING_FORMAT(prefix)                                                                   \
  Status prefix##_quantize_ref(const Scheme& s, const float*, int64_t, int64_t, const QuantizeOptions&, \
                               QuantizedTensor*) {                                                      \
    return pending(s);                                                                                  \
  }                                                                                                     \
  void prefix##_dequantize_ref(const QuantizedTensor& q, float* out) { fill_nan(q, out); }             \
  double prefix##_error_bound(const Scheme& s) { return no_bound(s); }

QFORGE_PENDING_FORMAT(nf4)
QFORGE_PENDING_FORMAT(fp4)
QFORGE_PENDING_FORMAT(mxfp4)
QFORGE_PENDING_FORMAT(nvfp4)
QFORGE_PENDING_FORMAT(fp8)
QFORGE_PENDING_FORMAT(float_cast)

#undef QFORGE_PENDING_FORMAT

}  // namespace qforge::formats
