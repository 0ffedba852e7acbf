// Internal helpers of qforge_cuda: error mapping and the Context's private state.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <map>
#include <string>
#include <tuple>

#include "qforge/cuda.h"
#include "qforge/status.h"

namespace qforge::cuda {

Status cuda_status(cudaError_t err, const char* what);
Status cublas_status(cublasStatus_t err, const char* what);

#define QFORGE_CUDA_TRY(expr) QFORGE_RETURN_IF_ERROR(::qforge::cuda::cuda_status((expr), #expr))
#define QFORGE_CUBLAS_TRY(expr) QFORGE_RETURN_IF_ERROR(::qforge::cuda::cublas_status((expr), #expr))
// After a launch: configuration errors surface here, execution errors at the next synchronize.
#define QFORGE_CUDA_LAUNCHED(name) QFORGE_RETURN_IF_ERROR(::qforge::cuda::cuda_status(cudaGetLastError(), name))

// A cached cuBLASLt plan for one FP8 GEMM shape.
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
};

struct Context::Impl {
  int device = 0;
  int sm_count = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  cusolverDnHandle_t solver = nullptr;  // created on first use (GPTQ)
  void* lt_workspace = nullptr;
  size_t lt_workspace_bytes = 0;
  // Zero-initialised f32 partial sums and arrival counters of split-K kernels; each kernel
  // leaves them zero again.
  void* splitk = nullptr;
  size_t splitk_bytes = 0;
  // General scratch (dequantized weights, quantized activations).
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, LtPlan> fp8_plans;

  Status ensure_splitk(size_t bytes);
  // The split-K workspace carved for one launch: `partials` f32 sums, then (256-byte aligned)
  // `counters` arrival counters, all zero.
  Status splitk_workspace(size_t partials, size_t counters, float** partial, unsigned** counter);
  Status ensure_scratch(size_t bytes);
  Status ensure_solver();
  ~Impl();
};

inline constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace qforge::cuda
