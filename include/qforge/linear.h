// Linear layers of the model engine: one interface, so a dense f32 weight and a quantized weight
// (dequantized on the fly) are interchangeable inside the forward pass.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qforge/format.h"
#include "qforge/status.h"
#include "qforge/tensor.h"

namespace qforge {

// y = x · Wᵀ + b with W stored [out_features, in_features] (PyTorch nn.Linear convention).
class Linear {
 public:
  virtual ~Linear() = default;
  Linear(const Linear&) = delete;
  Linear& operator=(const Linear&) = delete;

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  // Empty when the layer has no bias; otherwise out_features values.
  const std::vector<float>& bias() const { return bias_; }

  // x: [n_tokens, in_features] row-major; y: [n_tokens, out_features] row-major. x and y must not
  // overlap. Shapes were validated when the layer was built, so this cannot fail.
  virtual void forward(const float* x, int64_t n_tokens, float* y) const = 0;
  // The effective weight as f32 [out_features, in_features] (dequantized for quantized layers).
  virtual void dense_weight(float* out) const = 0;
  // "f32" or the quantization scheme name.
  virtual std::string describe() const = 0;
  // Bytes the weight occupies in memory (bias excluded).
  virtual size_t weight_bytes() const = 0;

 protected:
  Linear(int64_t out_features, int64_t in_features, std::vector<float> bias);
  // y[t, :] += bias for every token.
  void add_bias(float* y, int64_t n_tokens) const;

 private:
  int64_t out_features_;
  int64_t in_features_;
  std::vector<float> bias_;
};

// A dense f32 weight, multiplied with BLAS (sgemm).
class DenseLinear final : public Linear {
 public:
  // `weight` must be a contiguous f32 tensor [out, in]; `bias` empty or `out` values. The tensor's
  // storage is shared, not copied (tied embeddings use this).
  static Expected<std::unique_ptr<DenseLinear>> create(Tensor weight, std::vector<float> bias = {});

  void forward(const float* x, int64_t n_tokens, float* y) const override;
  void dense_weight(float* out) const override;
  std::string describe() const override { return "f32"; }
  size_t weight_bytes() const override { return weight_.nbytes(); }
  const float* weight() const { return weight_.data_as<float>(); }
  const Tensor& weight_tensor() const { return weight_; }

 private:
  DenseLinear(Tensor weight, std::vector<float> bias);
  Tensor weight_;
};

// A quantized weight (any scheme of the format table), dequantized to f32 at each forward call and
// multiplied with BLAS. The reference path for quantized inference and for measuring quantization
// error; fast fused kernels plug in as other Linear implementations.
class QuantizedLinear final : public Linear {
 public:
  // Validates the planes against the scheme and shape (a full dequantization) up front.
  static Expected<std::unique_ptr<QuantizedLinear>> create(QuantizedTensor weight, std::vector<float> bias = {});

  void forward(const float* x, int64_t n_tokens, float* y) const override;
  void dense_weight(float* out) const override;
  std::string describe() const override { return weight_.scheme.name(); }
  size_t weight_bytes() const override { return weight_.nbytes(); }
  const QuantizedTensor& weight() const { return weight_; }

 private:
  QuantizedLinear(QuantizedTensor weight, std::vector<float> bias);
  QuantizedTensor weight_;
};

// Threads BLAS (OpenBLAS) may use from now on; returns the previous count, or 0 when the BLAS
// library has no such control. qforge's own OpenMP loops follow ScopedThreadLimit (parallel.h).
int set_blas_threads(int threads);

// y[n, out] = x[n, in] · W[out, in]ᵀ with BLAS (no bias). Exposed for other engine parts.
void matmul_f32_wt(const float* x, int64_t n_tokens, const float* w, int64_t out_features, int64_t in_features,
                   float* y);

}  // namespace qforge
