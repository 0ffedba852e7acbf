// Fast CPU kernels: y = x · Wᵀ for quantized and 16-bit weights without dequantizing W, with
// runtime ISA dispatch (scalar reference, AVX2+FMA, AVX-512, AVX-512 VNNI, AVX-512 BF16).
//
// Supported weights (KernelMatrix::supports says why one is not):
//   GGUF Q8_0, Q4_0 (activations quantized per 32 to int8, as llama.cpp's Q8_0),
//   GGUF Q4_K, Q6_K (activations quantized per 256 to int8 with 16-element sums, llama.cpp's Q8_K),
//   int8-ch-sym / int8-tensor-sym (W8A8: activations quantized to int8 per token at run time),
//   int4-*-asym with groups that are multiples of 32 (f32 activations),
//   f16 and bf16 (f32 activations).
// Every variant has a scalar `_ref` twin (src/kernels/ref), the specification: the integer dot
// products are exact, so variants differ from it only by float summation order.
//
// QFORGE_ISA=scalar|avx2|avx512|avx512vnni|avx512bf16 forces a level; a level the CPU lacks is
// clamped to the best it has, with a warning on stderr. Kernels register against a format id
// (src/kernels/kernel_registry.h); a missing variant falls back to the next lower level.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/format.h"
#include "qforge/linear.h"
#include "qforge/status.h"

namespace qforge::kernels {

enum class Isa : uint8_t { scalar = 0, avx2 = 1, avx512 = 2, avx512vnni = 3, avx512bf16 = 4 };
inline constexpr int kIsaCount = 5;

const char* isa_name(Isa isa);
std::optional<Isa> parse_isa(std::string_view name);
// The highest level this CPU (and OS: XSAVE state) supports. avx512: F+BW+VL+DQ;
// avx512vnni adds VNNI; avx512bf16 adds BF16 (and VNNI).
Isa cpu_isa();
// The level kernels use: QFORGE_ISA (clamped to cpu_isa()) when set, else cpu_isa(). Read once.
Isa active_isa();
// Forces the level for this process (tests, benchmarks); clamped to cpu_isa(). Returns the level
// now active. Not thread-safe against running kernels.
Isa set_active_isa(Isa isa);

// How the integer-dot formats (Q8_0, Q4_0, Q4_K, Q6_K, int8 W8A8) quantize activations.
//   int8:   x ≈ d q per block (llama.cpp's Q8_0 / Q8_K): |x - x̂| <= absmax / 254. Fastest; shifts
//           perplexity by ~1e-3 relative against f32 activations on ref-llama-18m Q4_K_M.
//   int8x2: x ≈ d q + d' q' where q' quantizes the residual x - d q with its own block scale:
//           |x - x̂| <= absmax / 64516 (about 16 bits), run as two int8 activation rows over one
//           pass of the weights (twice the integer work, the same weight traffic). The default.
enum class ActPrecision : uint8_t { int8 = 0, int8x2 = 1 };

const char* act_precision_name(ActPrecision p);  // "int8", "int8x2"
std::optional<ActPrecision> parse_act_precision(std::string_view name);
// The precision KernelLinear (the engine's kernel layers) creates its matrices with:
// QFORGE_ACT_PRECISION (int8 | int8x2) when set, else int8x2. Read once; set_ overrides it for
// layers created afterwards (qforge bench --act-precision).
ActPrecision default_act_precision();
void set_default_act_precision(ActPrecision p);

// A weight [rows = out_features, cols = in_features] in the kernels' layout (Q4_0, Q8_0, Q4_K and
// Q6_K blocks interleaved 8 rows at a time, docs/kernels.md; 16-bit values kept byte for byte;
// planar int8/int4 weights repacked row by row with their scales).
class KernelMatrix {
 public:
  KernelMatrix();
  ~KernelMatrix();
  KernelMatrix(KernelMatrix&&) noexcept;
  KernelMatrix& operator=(KernelMatrix&&) noexcept;

  // True when a kernel exists for this scheme and shape; otherwise `why` (if given) says why.
  static bool supports(const Scheme& scheme, int64_t rows, int64_t cols, std::string* why = nullptr);
  // Validates the planes (sizes, scheme) and packs them. Errors name the scheme and shape.
  static Expected<KernelMatrix> create(const QuantizedTensor& weight, ActPrecision precision = ActPrecision::int8x2);

  FormatId format() const;
  ActPrecision precision() const;
  const Scheme& scheme() const;
  int64_t rows() const;
  int64_t cols() const;
  size_t weight_bytes() const;  // bytes of the packed weight the kernels stream

  // y[n, rows] = x[n, cols] · Wᵀ (no bias). Threads: OpenMP (omp_get_max_threads()). Uses the
  // best variant at or below active_isa(); `isa` overrides it (clamped to cpu_isa()).
  void matmul(const float* x, int64_t n_tokens, float* y) const;
  void matmul(const float* x, int64_t n_tokens, float* y, Isa isa) const;
  // The scalar specification (single-threaded).
  void matmul_ref(const float* x, int64_t n_tokens, float* y) const;
  // The level matmul would use for this format under `isa` (after fallback).
  Isa variant_for(Isa isa) const;

  // The weight dequantized to f32 [rows, cols] (reference dequantization of the source planes).
  void dense_weight(float* out) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// KernelLinear runs batches of at least this many tokens as dequantize + BLAS sgemm instead of
// the quantized GEMM (0: never). QFORGE_DENSE_GEMM_TOKENS sets it (read once); default 16.
int64_t dense_gemm_min_tokens();
void set_dense_gemm_min_tokens(int64_t tokens);

// Formats that have kernels, in registry order (for tests and benchmarks).
std::vector<FormatId> kernel_formats();

}  // namespace qforge::kernels

namespace qforge {

// A Linear layer running the fast kernels (include/qforge/kernels.h) on a quantized or 16-bit
// weight; the alternative to QuantizedLinear (dequantize on every call) and DenseLinear
// (dequantize once at load).
class KernelLinear final : public Linear {
 public:
  // Fails when KernelMatrix::supports rejects the scheme or the planes are inconsistent.
  static Expected<std::unique_ptr<KernelLinear>> create(const QuantizedTensor& weight, std::vector<float> bias = {});

  void forward(const float* x, int64_t n_tokens, float* y) const override;
  void dense_weight(float* out) const override;
  std::string describe() const override;
  size_t weight_bytes() const override;
  const kernels::KernelMatrix& matrix() const { return matrix_; }

 private:
  KernelLinear(kernels::KernelMatrix matrix, std::vector<float> bias);
  kernels::KernelMatrix matrix_;
};

}  // namespace qforge
