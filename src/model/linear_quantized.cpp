// Quantized linear layers, dequantized on the fly through the format table's reference path.
// Kept apart from linear.cpp so binaries that never quantize do not pull in the format code.
#include <vector>

#include "qforge/linear.h"

namespace qforge {

QuantizedLinear::QuantizedLinear(QuantizedTensor weight, std::vector<float> bias)
    : Linear(weight.rows, weight.cols, std::move(bias)), weight_(std::move(weight)) {}

Expected<std::unique_ptr<QuantizedLinear>> QuantizedLinear::create(QuantizedTensor weight, std::vector<float> bias) {
  if (weight.rows <= 0 || weight.cols <= 0)
    return invalid_argument("QuantizedLinear: empty weight [" + std::to_string(weight.rows) + ", " +
                            std::to_string(weight.cols) + "]");
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != weight.rows)
    return invalid_argument("QuantizedLinear bias has " + std::to_string(bias.size()) + " values for " +
                            std::to_string(weight.rows) + " outputs");
  QFORGE_RETURN_IF_ERROR(validate_scheme(weight.scheme, weight.rows, weight.cols));
  // One full dequantization checks every plane size now, so forward() cannot fail later.
  std::vector<float> probe(static_cast<size_t>(weight.rows) * static_cast<size_t>(weight.cols));
  QFORGE_RETURN_IF_ERROR(dequantize(weight, probe.data()).with_context("QuantizedLinear " + weight.scheme.name()));
  return std::unique_ptr<QuantizedLinear>(new QuantizedLinear(std::move(weight), std::move(bias)));
}

void QuantizedLinear::dense_weight(float* out) const {
  Status s = dequantize(weight_, out);
  QFORGE_CHECK_MSG(s.is_ok(), "planes validated at creation");
}

void QuantizedLinear::forward(const float* x, int64_t n_tokens, float* y) const {
  std::vector<float> w(static_cast<size_t>(out_features()) * static_cast<size_t>(in_features()));
  dense_weight(w.data());
  matmul_f32_wt(x, n_tokens, w.data(), out_features(), in_features(), y);
  add_bias(y, n_tokens);
}

}  // namespace qforge
