// CUDA backend (library qforge_cuda, built with -DQFORGE_CUDA=ON): quantized GEMM kernels
// (W4A16, W8A8-INT8, FP8 E4M3), GPU dequantization and device buffers.
//
// No CUDA header is included: device memory is passed as void*, streams live inside a Context.
// All functions taking device pointers expect memory from DeviceBuffer (or cudaMalloc) on the
// Context's device; shapes and schemes are validated and errors come back as Status.
//
// Layout conventions (all row-major): activations X [M, K], outputs Y [M, N], weights W [N, K]
// (N = out_features), i.e. Y = X W^T as in a linear layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qforge/format.h"
#include "qforge/ptq.h"
#include "qforge/status.h"

namespace qforge::cuda {

// True when a CUDA device is present and the runtime can use it.
bool available();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 50 MB L2)", or the reason there is none.
Expected<std::string> device_description();
// Registers the "cuda" backend probe with qforge's backend registry (also done automatically
// when this library is linked and any of its functions is referenced).
void register_backend();

// Owning device allocation (cudaMalloc / cudaFree).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static Expected<DeviceBuffer> allocate(size_t bytes);
  static Expected<DeviceBuffer> upload(const void* host, size_t bytes);
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }
  Status download(void* host, size_t bytes) const;  // synchronous, bytes <= size()
  Status fill_bytes(uint8_t value);                 // synchronous memset

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

enum class ActType : uint8_t { f16 = 0, bf16 = 1 };
const char* act_type_name(ActType t);

// Stream, cuBLAS/cuBLASLt handles, scratch workspace and cached GEMM plans. Not thread-safe:
// one Context per host thread. Kernels are enqueued on the Context's stream.
class Context {
 public:
  static Expected<std::unique_ptr<Context>> create(int device = 0);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  void* stream() const;     // cudaStream_t
  Status synchronize();     // waits for the stream; reports asynchronous kernel errors
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  explicit Context(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------- W4A16
// int4 weights with one f16 scale (and for int-asym one zero-point) per group of 128 columns,
// repacked for the GPU: 16-row x 64-column tiles, 16 bytes per lane of a warp, nibbles ordered so
// that one mask-and-or yields two fp16/bf16 values in mma.sync A-fragment order (see
// src/kernels/cuda/w4a16.cu for the exact layout). Scales are stored in the activation type.
struct W4A16Host {
  int64_t n = 0, k = 0;
  bool zero_point = false;  // int-asym; int-sym uses the implicit zero 8
  ActType act = ActType::f16;
  std::vector<uint8_t> packed;  // n * k / 2 bytes
  std::vector<uint8_t> scales;  // n * k / 128 values of `act`
  std::vector<uint8_t> zeros;   // as scales (zero_point only): biased zero in `act`
};
// Repacks a scheme "int4-g128-sym" or "int4-g128-asym" weight. Needs n % 16 == 0, k % 128 == 0.
Expected<W4A16Host> w4a16_repack(const QuantizedTensor& q, ActType act);

struct W4A16Weights {
  int64_t n = 0, k = 0;
  bool zero_point = false;
  ActType act = ActType::f16;
  DeviceBuffer packed, scales, zeros;
};
Expected<W4A16Weights> w4a16_upload(const W4A16Host& host);

// Which kernel w4a16_gemm runs.
enum class W4A16Path : uint8_t { automatic = 0, fused = 1, dequant_gemm = 2, gemv = 3 };
// Y[M, N] = X[M, K] * dequant(W)^T, X and Y of the weights' activation type on the device.
// fused: one kernel streams the packed weights and multiplies with mma.sync (tile shape and
// split-K chosen from M and N); dequant_gemm: unpacks W into a workspace, then cuBLAS; gemv
// (decode, M <= 16): kernels streaming the same packed weights, with CUDA-core math (M <= 8) or
// mma.sync. automatic: gemv up to 8 tokens, fused up to 128, dequant_gemm above.
Status w4a16_gemm(Context& ctx, const W4A16Weights& w, const void* x, void* y, int64_t m,
                  W4A16Path path = W4A16Path::automatic);
// Benchmark knobs of the fused kernel: a forced split-K count (0 = automatic) and, for M <= 16,
// where the group scale is applied (0 = automatic: after the mma for M <= 8, before it for
// 9..16; 1 = to the weights before the mma; 2 = to each tile's f32 mma result). Process-wide, not thread-safe: for bench_cuda --w4a16-variants and tests.
// gemv_max_m: largest M the automatic path sends to the gemv kernel (0 = built-in threshold,
// -1 = never); gemv_splits: forced in-block K split of the gemv kernel (0 = automatic);
// gemv_tensor_cores: its math (0 = automatic, 1 = CUDA cores, M <= 8 only, 2 = mma.sync); with
// mma.sync gemv_splits is the number of K chunks across blocks and gemv_rows_per_warp (M <= 8)
// the row tiles of 16 rows each warp streams (0 = automatic, 1 or 2).
struct W4A16Tuning {
  int splits = 0;
  int late_scale = 0;
  int gemv_max_m = 0;
  int gemv_splits = 0;
  int gemv_tensor_cores = 0;
  int gemv_rows_per_warp = 0;
};
void w4a16_set_tuning(const W4A16Tuning& t);
// Unpacks W to [N, K] values of its activation type (device), the dequant_gemm path's first step.
Status w4a16_dequantize(Context& ctx, const W4A16Weights& w, void* out);

// ---------------------------------------------------------------- W8A8
// int8 weights per output channel ("int8-ch-sym"), activations quantized per token to int8 on
// the fly, int32 accumulation on tensor cores, dequantization fused into the epilogue (bf16 out).
struct W8A8Weights {
  int64_t n = 0, k = 0;
  DeviceBuffer q;       // int8 [N, K]
  DeviceBuffer scales;  // f32 [N]
};
// Needs scheme int8-ch-sym, k % 64 == 0.
Expected<W8A8Weights> w8a8_upload(const QuantizedTensor& q);
// x_q[M, K] int8 and x_scale[M] f32 = absmax(row) / 127 from bf16 x (device buffers).
Status quantize_rows_int8(Context& ctx, const void* x_bf16, int64_t m, int64_t k, void* x_q, void* x_scale);
// Y = bf16(x_scale[m] * w_scale[n] * sum_k x_q[m, k] w_q[n, k]); x_q/x_scale from quantize_rows_int8.
Status w8a8_gemm_quantized(Context& ctx, const W8A8Weights& w, const void* x_q, const void* x_scale,
                           void* y_bf16, int64_t m);
// The int32 accumulators alone (y_i32 [M, N]), for exactness checks.
Status w8a8_gemm_int32(Context& ctx, const W8A8Weights& w, const void* x_q, void* y_i32, int64_t m);
// Which GEMM w8a8_gemm runs after quantizing the activations: fused = the mma.sync kernel with
// the dequantization in its epilogue (w8a8_gemm_quantized); cublas = cuBLAS's int8 tensor-core
// GEMM to int32 followed by a dequantizing pass (faster on H100, see docs/BENCHMARKS.md; needs
// N, K multiples of 4); automatic = cublas where it applies.
enum class W8A8Path : uint8_t { automatic = 0, fused = 1, cublas = 2 };
// quantize_rows_int8 + the GEMM, using the Context's workspace.
Status w8a8_gemm(Context& ctx, const W8A8Weights& w, const void* x_bf16, void* y_bf16, int64_t m,
                 W8A8Path path = W8A8Path::automatic);

// ---------------------------------------------------------------- FP8 E4M3
// Weights "fp8-e4m3-tensor" or "fp8-e4m3-ch"; activations quantized to E4M3 with the same
// granularity (per tensor, or per token for per-channel weights); the GEMM runs through cuBLASLt's
// FP8 tensor-core kernels (bf16 out): per-tensor scales in its epilogue, per-row/per-token scales
// in a following in-place pass (cuBLASLt 13.0 has no outer-vector scaling on sm_90).
struct Fp8Weights {
  int64_t n = 0, k = 0;
  bool per_row = false;
  DeviceBuffer codes;   // E4M3FN [N, K]
  DeviceBuffer scales;  // f32 [N] (per_row) or [1]
};
Expected<Fp8Weights> fp8_upload(const QuantizedTensor& q);
Status fp8_gemm(Context& ctx, const Fp8Weights& w, const void* x_bf16, void* y_bf16, int64_t m);

// ---------------------------------------------------------------- dequantization
// A QuantizedTensor's planes on the device.
struct DeviceQuantizedTensor {
  Scheme scheme;
  int64_t rows = 0, cols = 0;
  DeviceBuffer codes, scales, zeros;
};
Expected<DeviceQuantizedTensor> upload(const QuantizedTensor& q);
// True when dequantize() has a GPU kernel for the scheme's format.
bool can_dequantize(const Scheme& scheme);
// out: rows * cols values of `out_type` (device), row-major: the format table's dequantize_ref
// values rounded to `out_type` (within one unit in the last place: the GPU may fuse a multiply-add).
Status dequantize(Context& ctx, const DeviceQuantizedTensor& q, void* out, ActType out_type);

// ---------------------------------------------------------------- GPTQ
// Σ x xᵀ of a layer's inputs accumulated on the device in double precision (cuBLAS DSYRK on
// chunks of tokens converted to f64): the same sum the CPU calibration pipeline keeps, so the
// GPU and CPU GPTQ see the same Hessian H = 2/n Σ x xᵀ up to summation order.
struct DeviceHessian {
  int64_t cols = 0;
  int64_t tokens = 0;    // rows of x accumulated so far
  bool full = true;      // false while only one triangle of sum_xxt is valid
  DeviceBuffer sum_xxt;  // f64 [cols, cols]
};
enum class InputType : uint8_t { f32 = 0, f16 = 1, bf16 = 2 };
Expected<DeviceHessian> hessian_create(int64_t cols);
// Adds x[tokens, cols] (device, row-major) to the sum.
Status hessian_accumulate(Context& ctx, DeviceHessian& h, const void* x, int64_t tokens, InputType type);
// Fills the second triangle (done by gptq_quantize and hessian_download as needed).
Status hessian_finalize(Context& ctx, DeviceHessian& h);
// Σ x xᵀ as a full symmetric row-major matrix on the host (cols * cols doubles).
Status hessian_download(Context& ctx, DeviceHessian& h, double* host);

// GPTQ on the GPU: the algorithm, options, group parameters and outputs of qforge::gptq_quantize
// (src/algorithms/gptq.cpp) with the column sweep, the lazy block updates (cuBLAS DGEMM) and the
// factorisations (cuSOLVER potrf/potri/potrf) on the device, all in double precision. Group
// parameters still come from the format table's quantizer on the host. The result equals the CPU
// GPTQ's up to summation order: a code can differ only where a weight sits within rounding of the
// midpoint between two grid values (tests/cuda/test_cuda_gptq.cpp counts them). Needs
// options.block_size <= 128; planar schemes only (GGUF block formats and options.mse_clip are
// CPU-only and rejected as unsupported). w: host [rows, cols] f32.
Expected<GptqResult> gptq_quantize(Context& ctx, const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                                   DeviceHessian& h, const GptqOptions& options);
// Same with Σ x xᵀ (row-major, cols * cols) and the token count on the host.
Expected<GptqResult> gptq_quantize(Context& ctx, const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                                   const double* sum_xxt, int64_t tokens, const GptqOptions& options);

}  // namespace qforge::cuda
