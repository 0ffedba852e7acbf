// Dense f32 linear layers (BLAS) and the shared Linear plumbing.
#include "qforge/linear.h"

#include <cblas.h>

#include <cstring>
#include <limits>

namespace qforge {

int set_blas_threads(int threads) {
  // The build requires OpenBLAS (BLA_VENDOR in CMakeLists.txt), whose cblas.h declares these.
  if (threads <= 0) return 0;
  const int previous = openblas_get_num_threads();
  openblas_set_num_threads(threads);
  return previous;
}

Linear::Linear(int64_t out_features, int64_t in_features, std::vector<float> bias)
    : out_features_(out_features), in_features_(in_features), bias_(std::move(bias)) {
  QFORGE_CHECK(bias_.empty() || static_cast<int64_t>(bias_.size()) == out_features_);
}

void Linear::add_bias(float* y, int64_t n_tokens) const {
  if (bias_.empty()) return;
  const float* b = bias_.data();
  const int64_t n = out_features_;
#pragma omp parallel for if (n_tokens * n > 65536)
  for (int64_t t = 0; t < n_tokens; ++t) {
    float* row = y + t * n;
    for (int64_t i = 0; i < n; ++i) row[i] += b[i];
  }
}

void matmul_f32_wt(const float* x, int64_t n_tokens, const float* w, int64_t out_features, int64_t in_features,
                   float* y) {
  if (n_tokens == 0 || out_features == 0) return;
  if (in_features == 0) {
    std::memset(y, 0, sizeof(float) * static_cast<size_t>(n_tokens * out_features));
    return;
  }
  // BLAS takes int dimensions; the engine's validated shapes stay far below this.
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  QFORGE_CHECK(n_tokens <= kMax && out_features <= kMax && in_features <= kMax);
  const int m = static_cast<int>(n_tokens), n = static_cast<int>(out_features), k = static_cast<int>(in_features);
  // OpenBLAS splits products far smaller than a thread hand-off is worth (sgemv from ~10k
  // elements); below ~1M multiply-adds run them on the calling thread. Tiny models decode many
  // times faster, and a busy machine no longer stalls every call on a descheduled BLAS thread.
  const bool small = static_cast<int64_t>(m) * n * k < (int64_t{1} << 20);
  const int previous_threads = small ? set_blas_threads(1) : 0;
  if (m == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k, x, 1, 0.0f, y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n);
  }
  if (previous_threads > 1) set_blas_threads(previous_threads);
}

DenseLinear::DenseLinear(Tensor weight, std::vector<float> bias)
    : Linear(weight.dim(0), weight.dim(1), std::move(bias)), weight_(std::move(weight)) {}

Expected<std::unique_ptr<DenseLinear>> DenseLinear::create(Tensor weight, std::vector<float> bias) {
  if (weight.dtype() != DType::f32 || weight.ndim() != 2 || !weight.is_contiguous())
    return invalid_argument("DenseLinear needs a contiguous 2-D f32 weight, got " +
                            std::string(dtype_name(weight.dtype())) + " " + shape_to_string(weight.shape()));
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != weight.dim(0))
    return invalid_argument("DenseLinear bias has " + std::to_string(bias.size()) + " values for " +
                            std::to_string(weight.dim(0)) + " outputs");
  return std::unique_ptr<DenseLinear>(new DenseLinear(std::move(weight), std::move(bias)));
}

void DenseLinear::forward(const float* x, int64_t n_tokens, float* y) const {
  matmul_f32_wt(x, n_tokens, weight(), out_features(), in_features(), y);
  add_bias(y, n_tokens);
}

void DenseLinear::dense_weight(float* out) const {
  std::memcpy(out, weight(), weight_.nbytes());
}

}  // namespace qforge
