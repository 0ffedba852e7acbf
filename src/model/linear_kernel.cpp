// KernelLinear: a Linear running the fast CPU kernels (include/qforge/kernels.h) on the weight as
// stored (GGUF blocks, int8/int4 planes, f16/bf16), without dequantizing it.
#include <string>
#include <vector>

#include "model/model_impl.h"
#include "qforge/kernels.h"

namespace qforge {

KernelLinear::KernelLinear(kernels::KernelMatrix matrix, std::vector<float> bias)
    : Linear(matrix.rows(), matrix.cols(), std::move(bias)), matrix_(std::move(matrix)) {}

Expected<std::unique_ptr<KernelLinear>> KernelLinear::create(const QuantizedTensor& weight, std::vector<float> bias) {
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != weight.rows)
    return invalid_argument("KernelLinear bias has " + std::to_string(bias.size()) + " values for " +
                            std::to_string(weight.rows) + " outputs");
  QFORGE_ASSIGN_OR_RETURN(kernels::KernelMatrix m, kernels::KernelMatrix::create(weight, kernels::default_act_precision()));
  return std::unique_ptr<KernelLinear>(new KernelLinear(std::move(m), std::move(bias)));
}

void KernelLinear::forward(const float* x, int64_t n_tokens, float* y) const {
  const int64_t dense_from = kernels::dense_gemm_min_tokens();
  if (dense_from > 0 && n_tokens >= dense_from) {
    // Large batches: dequantizing once and running BLAS sgemm beats the quantized GEMM here
    // (docs/BENCHMARKS.md, "CPU kernels"), as ggml's BLAS backend also does for big batches.
    thread_local std::vector<float> w;
    w.resize(static_cast<size_t>(out_features()) * static_cast<size_t>(in_features()));
    matrix_.dense_weight(w.data());
    matmul_f32_wt(x, n_tokens, w.data(), out_features(), in_features(), y);
  } else {
    matrix_.matmul(x, n_tokens, y);
  }
  add_bias(y, n_tokens);
}

void KernelLinear::dense_weight(float* out) const { matrix_.dense_weight(out); }

std::string KernelLinear::describe() const { return matrix_.scheme().name(); }

size_t KernelLinear::weight_bytes() const { return matrix_.weight_bytes(); }

}  // namespace qforge

namespace qforge {

Expected<std::unique_ptr<Linear>> make_quantized_linear(QuantizedTensor q, std::vector<float> bias,
                                                        QuantizedWeights mode, bool transposed) {
  switch (mode) {
    case QuantizedWeights::dequantize_at_load:
      return std::unique_ptr<Linear>();
    case QuantizedWeights::on_the_fly: {
      QFORGE_ASSIGN_OR_RETURN(auto l, QuantizedLinear::create(std::move(q), std::move(bias)));
      return std::unique_ptr<Linear>(std::move(l));
    }
    case QuantizedWeights::kernels: {
      if (transposed || !kernels::KernelMatrix::supports(q.scheme, q.rows, q.cols)) return std::unique_ptr<Linear>();
      QFORGE_ASSIGN_OR_RETURN(auto l, KernelLinear::create(q, std::move(bias)));
      return std::unique_ptr<Linear>(std::move(l));
    }
  }
  return std::unique_ptr<Linear>();
}

}  // namespace qforge
