// GPTQ on the GPU: Hessian accumulation (cuBLAS DSYRK), dampening and the Cholesky factor of H⁻¹
// (cuSOLVER potrf / potri / potrf, as the CPU's LAPACK calls), the column sweep (one kernel per
// lazy block) and the lazy block updates (cuBLAS DGEMM). Everything the CPU GPTQ
// (src/algorithms/gptq.cpp) computes in double is double here too, in the same order of
// operations where it matters for the codes (products and differences rounded separately, no
// fused multiply-add), so the two differ only by the summation order of the BLAS/LAPACK calls.
//
// Group parameters and grids come from the format table on the host, as in the CPU code: a group's
// [rows, group] sub-matrix (the weights as updated when the sweep reaches the group, or the
// original weights with act-order's static groups) is quantized by qforge::quantize, and the
// values each code takes in each row are read back through qforge::dequantize of a probe whose
// codes run 0, 1, 2, ... along the row (elements decode independently given their group's
// parameters, which gptq_supports guarantees). When the next block starts a new group, its
// columns are updated first and copied to the host, and the host builds the grid while the GPU
// runs the rest of the block update.
//
// Sweep kernel: a warp owns kRows rows; lane l holds columns l, l+32, l+64, l+96 of the block in
// registers; for each column the owning lane finds the nearest grid value (binary search, ties to
// the lower value, as the CPU) for its rows and broadcasts the scaled errors with a shuffle, then
// every lane updates its later columns with the block's row of U, kept in shared memory as an
// upper triangle.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_common.h"
#include "qforge/parallel.h"

namespace qforge::cuda {
namespace {

constexpr int kMaxBlock = 128;                   // lazy block width the sweep kernel holds
constexpr int kColsPerLane = kMaxBlock / 32;
constexpr int kSweepWarps = 8;
constexpr int kRows = 4;                         // rows per warp
constexpr int kRowsPerCta = kSweepWarps * kRows;

Status cusolver_status(cusolverStatus_t s, const char* what) {
  if (s == CUSOLVER_STATUS_SUCCESS) return Status::ok();
  return Status::error(ErrorCode::io_error, std::string("cuSOLVER error in ") + what + ": status " + std::to_string(static_cast<int>(s)));
}
#define QFORGE_CUSOLVER_TRY(expr) QFORGE_RETURN_IF_ERROR(cusolver_status((expr), #expr))

// Start of row i of a packed upper triangle of a count x count matrix (row i holds j = i..count-1).
__host__ __device__ __forceinline__ int tri_offset(int i, int count) { return i * count - i * (i - 1) / 2; }

template <typename T>
__device__ __forceinline__ double to_double(T v);
template <>
__device__ __forceinline__ double to_double<float>(float v) { return v; }
template <>
__device__ __forceinline__ double to_double<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ double to_double<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__global__ void to_f64_kernel(const T* __restrict__ x, double* __restrict__ out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = to_double(x[i]);
}

// Row-major: a[i][j] = a[j][i] for j > i (upper from lower).
__global__ void fill_upper_kernel(double* a, int64_t n) {
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n * n; idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / n, j = idx % n;
    if (j > i) a[idx] = a[j * n + i];
  }
}
// Row-major: a[i][j] = a[j][i] for j < i (lower from upper).
__global__ void fill_lower_kernel(double* a, int64_t n) {
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n * n; idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / n, j = idx % n;
    if (j < i) a[idx] = a[j * n + i];
  }
}
// Row-major: zero the strict lower triangle.
__global__ void zero_lower_kernel(double* a, int64_t n) {
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n * n; idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / n, j = idx % n;
    if (j < i) a[idx] = 0.0;
  }
}

// U[i][j] = S[perm i][perm j] * norm, diagonal diag[perm i] + add (diag: dead inputs already 1).
__global__ void build_u_kernel(const double* __restrict__ s, double* __restrict__ u, const int32_t* __restrict__ perm,
                               const double* __restrict__ diag, int64_t n, double norm, double add) {
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n * n; idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / n, j = idx % n;
    const int64_t pi = perm[i];
    u[idx] = i == j ? diag[pi] + add : s[pi * n + perm[j]] * norm;
  }
}

// W[r][j] = w[r][perm j], or 0 for a dead input.
__global__ void init_w_kernel(const float* __restrict__ w, double* __restrict__ out, const int32_t* __restrict__ perm,
                              const uint8_t* __restrict__ dead, int64_t rows, int64_t cols) {
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < rows * cols; idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / cols, j = idx % cols;
    const int64_t p = perm[j];
    out[idx] = dead[p] ? 0.0 : static_cast<double>(w[r * cols + p]);
  }
}

int grid_blocks(int64_t n, int threads = 256) { return static_cast<int>(std::min<int64_t>(ceil_div(n, threads), 132 * 16)); }

// One segment [sa, sb) of the lazy block [i1, i1 + count) (local column indices): quantizes those
// columns and applies their error to the block's later columns. W: [rows, ldw] (permuted
// columns); U: [ldw, ldw]; codes: [rows, ldw]; err: [rows, kMaxBlock]. Grid of group slot s, row
// r: vals/codes at ((s * rows + r) * ncodes), valid entries gcount[s * rows + r].
__global__ void __launch_bounds__(kSweepWarps * 32)
gptq_sweep_kernel(double* __restrict__ W, int64_t ldw, int64_t rows, const double* __restrict__ U, int64_t i1, int count,
                  int sa, int sb, const float* __restrict__ gvals, const uint8_t* __restrict__ gcodes,
                  const int32_t* __restrict__ gcount, int ncodes, const int32_t* __restrict__ slot_of_col,
                  uint8_t* __restrict__ codes, double* __restrict__ err, double* __restrict__ loss_rows) {
  extern __shared__ double us[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int base = tri_offset(sa, count);
  for (int i = sa + warp; i < sb; i += kSweepWarps) {
    double* dst = us + (tri_offset(i, count) - base);
    const double* src = U + (i1 + i) * ldw + i1;
    for (int j = i + lane; j < count; j += 32) dst[j - i] = src[j];
  }
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kSweepWarps + warp) * kRows;
  double w[kRows][kColsPerLane];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int t = 0; t < kColsPerLane; ++t) {
      const int c = t * 32 + lane;
      const int64_t row = row0 + r;
      w[r][t] = (row < rows && c >= sa && c < count) ? W[row * ldw + i1 + c] : 0.0;
    }
  __syncthreads();

  double loss[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) loss[r] = 0.0;
#pragma unroll
  for (int t = 0; t < kColsPerLane; ++t) {
    for (int c = 0; c < 32; ++c) {
      const int i = t * 32 + c;
      if (i < sa) continue;
      if (i >= sb) break;
      const double* urow = us + (tri_offset(i, count) - base);  // urow[j - i] = U[i][j]
      double e[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) e[r] = 0.0;
      if (lane == c) {
        const double d = urow[0];
        const int64_t col = i1 + i;
        const int64_t slot = slot_of_col[col];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int64_t row = row0 + r;
          if (row >= rows) continue;
          const double x = w[r][t];
          const int64_t g = slot * rows + row;
          const float* v = gvals + g * ncodes;
          const int n = gcount[g];
          // std::lower_bound(v, v + n, float(x)), then the nearer neighbour (ties: lower value).
          const float xf = __double2float_rn(x);
          int lo = 0, len = n;
          while (len > 0) {
            const int half = len >> 1;
            if (v[lo + half] < xf) {
              lo += half + 1;
              len -= half + 1;
            } else {
              len = half;
            }
          }
          int k;
          if (lo == 0) k = 0;
          else if (lo == n) k = n - 1;
          else k = (x - static_cast<double>(v[lo - 1]) <= static_cast<double>(v[lo]) - x) ? lo - 1 : lo;
          const double q = v[k];
          codes[row * ldw + col] = gcodes[g * ncodes + k];
          const double diff = x - q;
          e[r] = diff / d;
          loss[r] += __dmul_rn(diff, diff) / __dmul_rn(d, d);
          err[row * kMaxBlock + i] = e[r];
        }
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) e[r] = __shfl_sync(0xffffffffu, e[r], c);
#pragma unroll
      for (int t2 = 0; t2 < kColsPerLane; ++t2) {
        if (t2 < t) continue;
        const int j = t2 * 32 + lane;
        if (j > i && j < count) {
          const double u = urow[j - i];
#pragma unroll
          for (int r = 0; r < kRows; ++r) w[r][t2] = __dsub_rn(w[r][t2], __dmul_rn(e[r], u));
        }
      }
    }
  }
  // Columns not yet quantized go back for the next segment / the group grid / the block update.
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = row0 + r;
#pragma unroll
    for (int t = 0; t < kColsPerLane; ++t) {
      const int c = t * 32 + lane;
      if (row < rows && c >= sb && c < count) W[row * ldw + i1 + c] = w[r][t];
    }
    double s = loss[r];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0 && row < rows) loss_rows[row] += s;
  }
}

// ---------------------------------------------------------------- host side

int64_t param_group_width(const Scheme& s, int64_t cols) { return s.granularity == Granularity::group ? s.group_size : cols; }

// A group's parameters (the table's quantization of its sub-matrix) and, per row, the finite values
// the codes decode to, sorted (stable: among equal values the lowest code first), as the CPU's
// build_grid.
struct GroupParams {
  std::vector<uint8_t> scales, zeros;  // the group's planes ([rows] entries, or the tensor's)
};

Status build_group(const Scheme& scheme, const float* sub, int64_t rows, int64_t width, int ncodes, GroupParams& gp,
                   float* vals, uint8_t* codes, int32_t* count) {
  // Rows are independent for channel and group granularity: quantize row chunks in parallel
  // (deterministic: the chunking depends only on rows).
  const int64_t grain = scheme.granularity == Granularity::tensor ? rows : 256;
  const int64_t chunks = chunk_count(rows, grain);
  std::vector<GroupParams> parts(static_cast<size_t>(chunks));
  const size_t row_bytes = packed_size(width, scheme.bits);
  QFORGE_RETURN_IF_ERROR(parallel_for_status(rows, grain, [&](int64_t chunk, int64_t r0, int64_t r1) -> Status {
    const int64_t n = r1 - r0;
    QFORGE_ASSIGN_OR_RETURN(QuantizedTensor params, quantize(scheme, sub + r0 * width, n, width));
    if (params.codes.size() != row_bytes * static_cast<size_t>(n))
      return unsupported("GPTQ: scheme " + scheme.name() + " does not store one " + std::to_string(scheme.bits) + "-bit code per weight");
    std::vector<std::vector<std::pair<float, uint8_t>>> cand(static_cast<size_t>(n));
    std::vector<uint8_t> pattern(static_cast<size_t>(width));
    std::vector<float> out(static_cast<size_t>(n * width));
    QuantizedTensor probe = params;
    for (int64_t first = 0; first < ncodes; first += width) {
      const int64_t m = std::min<int64_t>(width, ncodes - first);
      for (int64_t j = 0; j < width; ++j) pattern[static_cast<size_t>(j)] = static_cast<uint8_t>(j < m ? first + j : 0);
      for (int64_t r = 0; r < n; ++r) pack_bits(pattern.data(), width, scheme.bits, probe.codes.data() + r * row_bytes);
      QFORGE_RETURN_IF_ERROR(dequantize(probe, out.data()));
      for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < m; ++j) {
          const float v = out[static_cast<size_t>(r * width + j)];
          if (std::isfinite(v)) cand[static_cast<size_t>(r)].push_back({v, static_cast<uint8_t>(first + j)});
        }
    }
    for (int64_t r = 0; r < n; ++r) {
      auto& cr = cand[static_cast<size_t>(r)];
      std::stable_sort(cr.begin(), cr.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      if (cr.empty()) return Status::error(ErrorCode::internal, "GPTQ: no finite value in the grid of " + scheme.name());
      const size_t o = static_cast<size_t>((r0 + r) * ncodes);
      for (size_t k = 0; k < cr.size(); ++k) {
        vals[o + k] = cr[k].first;
        codes[o + k] = cr[k].second;
      }
      for (size_t k = cr.size(); k < static_cast<size_t>(ncodes); ++k) {
        vals[o + k] = 0.f;
        codes[o + k] = 0;
      }
      count[r0 + r] = static_cast<int32_t>(cr.size());
    }
    parts[static_cast<size_t>(chunk)].scales = std::move(params.scales);
    parts[static_cast<size_t>(chunk)].zeros = std::move(params.zeros);
    return Status::ok();
  }));
  gp.scales.clear();
  gp.zeros.clear();
  for (auto& p : parts) {
    gp.scales.insert(gp.scales.end(), p.scales.begin(), p.scales.end());
    gp.zeros.insert(gp.zeros.end(), p.zeros.begin(), p.zeros.end());
  }
  return Status::ok();
}

// Page-locked host memory (for the asynchronous copies).
struct PinnedBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  ~PinnedBuffer() {
    if (p) cudaFreeHost(p);
  }
  Status allocate(size_t n) {
    bytes = n;
    return cuda_status(cudaMallocHost(&p, std::max<size_t>(n, 1)), "cudaMallocHost");
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// Factor of H⁻¹ in place, as the CPU's cholesky_upper / inverse_from_cholesky / cholesky_upper
// (row-major; cuSOLVER's column-major 'lower' is row-major 'upper'). False when not positive
// definite.
Expected<bool> inverse_cholesky_upper(Context::Impl& c, double* u, int64_t n, DeviceBuffer& work, DeviceBuffer& info) {
  const int ni = static_cast<int>(n);
  int lw1 = 0, lw2 = 0;
  QFORGE_CUSOLVER_TRY(cusolverDnDpotrf_bufferSize(c.solver, CUBLAS_FILL_MODE_LOWER, ni, u, ni, &lw1));
  QFORGE_CUSOLVER_TRY(cusolverDnDpotri_bufferSize(c.solver, CUBLAS_FILL_MODE_LOWER, ni, u, ni, &lw2));
  const size_t need = static_cast<size_t>(std::max(lw1, lw2)) * sizeof(double);
  if (work.size() < need) {
    QFORGE_ASSIGN_OR_RETURN(work, DeviceBuffer::allocate(need));
  }
  double* wk = static_cast<double*>(work.data());
  int* dinfo = static_cast<int*>(info.data());
  const int blocks = grid_blocks(n * n);
  auto check = [&]() -> Expected<bool> {
    int h = 0;
    QFORGE_CUDA_TRY(cudaMemcpyAsync(&h, dinfo, sizeof h, cudaMemcpyDeviceToHost, c.stream));
    QFORGE_CUDA_TRY(cudaStreamSynchronize(c.stream));
    if (h < 0) return Status::error(ErrorCode::internal, "cuSOLVER: invalid argument " + std::to_string(-h));
    return h == 0;
  };
  QFORGE_CUSOLVER_TRY(cusolverDnDpotrf(c.solver, CUBLAS_FILL_MODE_LOWER, ni, u, ni, wk, std::max(lw1, lw2), dinfo));
  QFORGE_ASSIGN_OR_RETURN(bool ok1, check());
  if (!ok1) return false;
  zero_lower_kernel<<<blocks, 256, 0, c.stream>>>(u, n);
  QFORGE_CUDA_LAUNCHED("zero_lower_kernel");
  QFORGE_CUSOLVER_TRY(cusolverDnDpotri(c.solver, CUBLAS_FILL_MODE_LOWER, ni, u, ni, wk, std::max(lw1, lw2), dinfo));
  QFORGE_ASSIGN_OR_RETURN(bool ok2, check());
  if (!ok2) return false;
  fill_lower_kernel<<<blocks, 256, 0, c.stream>>>(u, n);
  QFORGE_CUDA_LAUNCHED("fill_lower_kernel");
  QFORGE_CUSOLVER_TRY(cusolverDnDpotrf(c.solver, CUBLAS_FILL_MODE_LOWER, ni, u, ni, wk, std::max(lw1, lw2), dinfo));
  QFORGE_ASSIGN_OR_RETURN(bool ok3, check());
  if (!ok3) return false;
  zero_lower_kernel<<<blocks, 256, 0, c.stream>>>(u, n);
  QFORGE_CUDA_LAUNCHED("zero_lower_kernel");
  return true;
}

}  // namespace

Expected<DeviceHessian> hessian_create(int64_t cols) {
  if (cols <= 0 || cols > (int64_t{1} << 16)) return invalid_argument("hessian_create: cols " + std::to_string(cols) + " outside 1..65536");
  DeviceHessian h;
  h.cols = cols;
  QFORGE_ASSIGN_OR_RETURN(h.sum_xxt, DeviceBuffer::allocate(static_cast<size_t>(cols * cols) * sizeof(double)));
  QFORGE_RETURN_IF_ERROR(h.sum_xxt.fill_bytes(0));
  return Expected<DeviceHessian>(std::move(h));
}

Status hessian_accumulate(Context& ctx, DeviceHessian& h, const void* x, int64_t tokens, InputType type) {
  Context::Impl& c = ctx.impl();
  if (tokens < 0) return invalid_argument("hessian_accumulate: negative token count");
  if (tokens == 0) return Status::ok();
  if (!x) return invalid_argument("hessian_accumulate: null input");
  const int64_t C = h.cols;
  if (C <= 0 || h.sum_xxt.size() < static_cast<size_t>(C * C) * sizeof(double))
    return invalid_argument("hessian_accumulate: DeviceHessian not created");
  const size_t elem = type == InputType::f32 ? 4 : 2;
  // Chunks of at most 256 MiB of f64 (and at least 64 tokens).
  const int64_t chunk = std::max<int64_t>(64, std::min<int64_t>(tokens, (int64_t{256} << 20) / (C * 8)));
  QFORGE_RETURN_IF_ERROR(c.ensure_scratch(static_cast<size_t>(chunk * C) * sizeof(double)));
  double* xd = static_cast<double*>(c.scratch);
  const double one = 1.0;
  for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
    const int64_t t = std::min(chunk, tokens - t0);
    const void* src = static_cast<const uint8_t*>(x) + static_cast<size_t>(t0 * C) * elem;
    const int blocks = grid_blocks(t * C);
    switch (type) {
      case InputType::f32: to_f64_kernel<<<blocks, 256, 0, c.stream>>>(static_cast<const float*>(src), xd, t * C); break;
      case InputType::f16: to_f64_kernel<<<blocks, 256, 0, c.stream>>>(static_cast<const __half*>(src), xd, t * C); break;
      case InputType::bf16: to_f64_kernel<<<blocks, 256, 0, c.stream>>>(static_cast<const __nv_bfloat16*>(src), xd, t * C); break;
    }
    QFORGE_CUDA_LAUNCHED("to_f64_kernel");
    // Column-major view: X^T is [C, t]; S += X^T (X^T)^T, upper triangle (row-major lower).
    QFORGE_CUBLAS_TRY(cublasDsyrk(c.blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, static_cast<int>(C), static_cast<int>(t), &one, xd,
                                  static_cast<int>(C), &one, static_cast<double*>(h.sum_xxt.data()), static_cast<int>(C)));
  }
  h.tokens += tokens;
  h.full = false;
  return Status::ok();
}

Status hessian_finalize(Context& ctx, DeviceHessian& h) {
  if (h.full) return Status::ok();
  Context::Impl& c = ctx.impl();
  fill_upper_kernel<<<grid_blocks(h.cols * h.cols), 256, 0, c.stream>>>(static_cast<double*>(h.sum_xxt.data()), h.cols);
  QFORGE_CUDA_LAUNCHED("fill_upper_kernel");
  h.full = true;
  return Status::ok();
}

Status hessian_download(Context& ctx, DeviceHessian& h, double* host) {
  QFORGE_RETURN_IF_ERROR(hessian_finalize(ctx, h));
  QFORGE_RETURN_IF_ERROR(ctx.synchronize());
  return h.sum_xxt.download(host, static_cast<size_t>(h.cols * h.cols) * sizeof(double));
}

Expected<GptqResult> gptq_quantize(Context& ctx, const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                                   const double* sum_xxt, int64_t tokens, const GptqOptions& options) {
  if (cols <= 0 || cols > (int64_t{1} << 16)) return invalid_argument("GPTQ (GPU): cols " + std::to_string(cols) + " outside 1..65536");
  DeviceHessian h;
  h.cols = cols;
  h.tokens = tokens;
  QFORGE_ASSIGN_OR_RETURN(h.sum_xxt, DeviceBuffer::upload(sum_xxt, static_cast<size_t>(cols * cols) * sizeof(double)));
  return gptq_quantize(ctx, scheme, w, rows, cols, h, options);
}

Expected<GptqResult> gptq_quantize(Context& ctx, const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                                   DeviceHessian& h, const GptqOptions& options) {
  QFORGE_RETURN_IF_ERROR(validate_scheme(scheme, rows, cols));
  if (!gptq_supports(scheme))
    return unsupported("GPTQ does not support scheme " + scheme.name() +
                       " (block formats with scales inside the codes, extra planes or double quantization)");
  if (h.cols != cols) return invalid_argument("GPTQ (GPU): Hessian has " + std::to_string(h.cols) + " columns, weight " + std::to_string(cols));
  if (h.tokens <= 0) return invalid_argument("GPTQ needs calibration tokens (got " + std::to_string(h.tokens) + ")");
  if (!(options.damp > 0) || options.block_size <= 0) return invalid_argument("GPTQ: damp must be > 0 and block size positive");
  if (format_traits(scheme.format).blocks_in_codes)
    return unsupported("GPTQ (GPU): GGUF block format " + scheme.name() + " is not implemented on the GPU (the CPU GPTQ handles it)");
  if (options.mse_clip)
    return unsupported("GPTQ (GPU): mse_clip is not implemented on the GPU (the CPU GPTQ handles it)");
  if (options.block_size > kMaxBlock)
    return unsupported("GPTQ (GPU): block size " + std::to_string(options.block_size) + " above " + std::to_string(kMaxBlock));
  if (rows > (int64_t{1} << 30) || cols > (int64_t{1} << 16))
    return invalid_argument("GPTQ (GPU): shape " + std::to_string(rows) + "x" + std::to_string(cols) + " too large");
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) return invalid_argument("GPTQ: non-finite weight at index " + std::to_string(i));

  Context::Impl& c = ctx.impl();
  QFORGE_RETURN_IF_ERROR(c.ensure_solver());
  QFORGE_RETURN_IF_ERROR(hessian_finalize(ctx, h));
  GptqResult result;
  const int64_t gs = param_group_width(scheme, cols);
  const int64_t n_groups = cols / gs;
  const size_t C = static_cast<size_t>(cols);
  const int ncodes = 1 << scheme.bits;
  const size_t R = static_cast<size_t>(rows);

  // Diagonal (host), dead inputs, act-order permutation: as the CPU code.
  const double norm = 2.0 / static_cast<double>(h.tokens);
  std::vector<double> sdiag(C);
  QFORGE_CUDA_TRY(cudaMemcpy2DAsync(sdiag.data(), sizeof(double), h.sum_xxt.data(), (C + 1) * sizeof(double), sizeof(double), C,
                                    cudaMemcpyDeviceToHost, c.stream));
  QFORGE_CUDA_TRY(cudaStreamSynchronize(c.stream));
  std::vector<double> diag(C);
  std::vector<uint8_t> dead(C, 0);
  for (size_t j = 0; j < C; ++j) {
    diag[j] = sdiag[j] * norm;
    if (diag[j] == 0.0) {
      diag[j] = 1.0;
      dead[j] = 1;
    }
  }
  std::vector<int32_t> perm(C);
  std::iota(perm.begin(), perm.end(), 0);
  if (options.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](int32_t a, int32_t b) { return diag[static_cast<size_t>(a)] > diag[static_cast<size_t>(b)]; });

  // Device state.
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_perm, DeviceBuffer::upload(perm.data(), C * sizeof(int32_t)));
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_diag, DeviceBuffer::upload(diag.data(), C * sizeof(double)));
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_dead, DeviceBuffer::upload(dead.data(), C));
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_w32, DeviceBuffer::upload(w, R * C * sizeof(float)));
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_W, DeviceBuffer::allocate(R * C * sizeof(double)));
  init_w_kernel<<<grid_blocks(rows * cols), 256, 0, c.stream>>>(static_cast<const float*>(d_w32.data()), static_cast<double*>(d_W.data()),
                                                                  static_cast<const int32_t*>(d_perm.data()),
                                                                  static_cast<const uint8_t*>(d_dead.data()), rows, cols);
  QFORGE_CUDA_LAUNCHED("init_w_kernel");
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_U, DeviceBuffer::allocate(C * C * sizeof(double)));
  double* U = static_cast<double*>(d_U.data());
  double* W = static_cast<double*>(d_W.data());

  // Group grids: every group's with act-order (static groups, any column order), else one slot.
  const int64_t slots = options.act_order ? n_groups : 1;
  const size_t slot_entries = R * static_cast<size_t>(ncodes);
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_gvals, DeviceBuffer::allocate(static_cast<size_t>(slots) * slot_entries * sizeof(float)));
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_gcodes, DeviceBuffer::allocate(static_cast<size_t>(slots) * slot_entries));
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_gcount, DeviceBuffer::allocate(static_cast<size_t>(slots) * R * sizeof(int32_t)));
  std::vector<int32_t> slot_of_col(C, 0);
  if (options.act_order)
    for (size_t j = 0; j < C; ++j) slot_of_col[j] = static_cast<int32_t>(perm[j] / gs);
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_slot, DeviceBuffer::upload(slot_of_col.data(), C * sizeof(int32_t)));
  std::vector<GroupParams> params(static_cast<size_t>(n_groups));
  std::vector<bool> ready(static_cast<size_t>(n_groups), false);
  PinnedBuffer pin_sub, pin_grid;
  QFORGE_RETURN_IF_ERROR(pin_sub.allocate(R * static_cast<size_t>(gs) * sizeof(double)));
  const size_t grid_bytes_per_slot = slot_entries * (sizeof(float) + 1) + R * sizeof(int32_t);
  QFORGE_RETURN_IF_ERROR(pin_grid.allocate(grid_bytes_per_slot * static_cast<size_t>(slots)));
  std::vector<float> sub(R * static_cast<size_t>(gs));

  // Builds group g's grid from `sub` ([rows, gs] f32) into slot `slot` and uploads it.
  auto make_group = [&](int64_t g, int64_t slot) -> Status {
    uint8_t* base = pin_grid.as<uint8_t>() + grid_bytes_per_slot * static_cast<size_t>(slot);
    float* vals = reinterpret_cast<float*>(base);
    int32_t* count = reinterpret_cast<int32_t*>(base + slot_entries * sizeof(float));
    uint8_t* codes = base + slot_entries * sizeof(float) + R * sizeof(int32_t);
    QFORGE_RETURN_IF_ERROR(build_group(scheme, sub.data(), rows, gs, ncodes, params[static_cast<size_t>(g)], vals, codes, count));
    QFORGE_CUDA_TRY(cudaMemcpyAsync(static_cast<float*>(d_gvals.data()) + static_cast<size_t>(slot) * slot_entries, vals,
                                    slot_entries * sizeof(float), cudaMemcpyHostToDevice, c.stream));
    QFORGE_CUDA_TRY(cudaMemcpyAsync(static_cast<uint8_t*>(d_gcodes.data()) + static_cast<size_t>(slot) * slot_entries, codes,
                                    slot_entries, cudaMemcpyHostToDevice, c.stream));
    QFORGE_CUDA_TRY(cudaMemcpyAsync(static_cast<int32_t*>(d_gcount.data()) + static_cast<size_t>(slot) * R, count, R * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, c.stream));
    ready[static_cast<size_t>(g)] = true;
    return Status::ok();
  };
  // sub = original (dead-zeroed) weights of group g.
  auto sub_from_host = [&](int64_t g) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < gs; ++j) {
        const int64_t col = g * gs + j;
        sub[static_cast<size_t>(r * gs + j)] = dead[static_cast<size_t>(col)] ? 0.f : w[r * cols + col];
      }
  };
  // sub = f32 of the pinned f64 copy of W[:, col0 : col0 + gs].
  auto sub_from_pinned = [&]() {
    const double* p = pin_sub.as<double>();
    for (size_t i = 0; i < R * static_cast<size_t>(gs); ++i) sub[i] = static_cast<float>(p[i]);
  };
  auto fetch_columns = [&](int64_t col0) -> Status {
    QFORGE_CUDA_TRY(cudaMemcpy2DAsync(pin_sub.p, static_cast<size_t>(gs) * sizeof(double), W + col0, C * sizeof(double),
                                      static_cast<size_t>(gs) * sizeof(double), R, cudaMemcpyDeviceToHost, c.stream));
    return Status::ok();
  };
  if (options.act_order) {
    for (int64_t g = 0; g < n_groups; ++g) {
      sub_from_host(g);
      QFORGE_RETURN_IF_ERROR(make_group(g, g));
    }
  }

  // Dampening, raised tenfold on each Cholesky failure (the CPU's loop and messages).
  double mean_diag = 0;
  for (size_t j = 0; j < C; ++j) mean_diag += diag[j];
  mean_diag /= static_cast<double>(C);
  double damp = options.damp;
  {
    DeviceBuffer work;
    QFORGE_ASSIGN_OR_RETURN(DeviceBuffer info, DeviceBuffer::allocate(sizeof(int)));
    for (int attempt = 0;; ++attempt) {
      build_u_kernel<<<grid_blocks(cols * cols), 256, 0, c.stream>>>(static_cast<const double*>(h.sum_xxt.data()), U,
                                                                      static_cast<const int32_t*>(d_perm.data()),
                                                                      static_cast<const double*>(d_diag.data()), cols, norm, damp * mean_diag);
      QFORGE_CUDA_LAUNCHED("build_u_kernel");
      QFORGE_ASSIGN_OR_RETURN(bool ok, inverse_cholesky_upper(c, U, cols, work, info));
      if (ok) break;
      if (attempt >= options.max_damp_raises)
        return Status::error(ErrorCode::internal, "GPTQ: the Hessian stays indefinite with dampening " + std::to_string(damp));
      result.warnings.push_back("Cholesky failed with dampening " + std::to_string(damp) + " of the mean diagonal; retrying with " +
                                std::to_string(damp * 10));
      damp *= 10;
    }
  }
  result.damp_used = damp;

  // The sweep.
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_codes, DeviceBuffer::allocate(R * C));
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_err, DeviceBuffer::allocate(R * kMaxBlock * sizeof(double)));
  QFORGE_ASSIGN_OR_RETURN(DeviceBuffer d_loss, DeviceBuffer::allocate(R * sizeof(double)));
  QFORGE_RETURN_IF_ERROR(d_loss.fill_bytes(0));
  QFORGE_RETURN_IF_ERROR(d_err.fill_bytes(0));
  const int smem_max = tri_offset(kMaxBlock, kMaxBlock) * static_cast<int>(sizeof(double));
  QFORGE_CUDA_TRY(cudaFuncSetAttribute(gptq_sweep_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max));
  cudaEvent_t fetched = nullptr;
  QFORGE_CUDA_TRY(cudaEventCreateWithFlags(&fetched, cudaEventDisableTiming));
  struct EventGuard {
    cudaEvent_t e;
    ~EventGuard() { cudaEventDestroy(e); }
  } guard{fetched};
  bool pending_fetch = false;  // pin_sub holds (after `fetched`) the columns of the next group
  const int64_t B = options.block_size;
  const double minus_one = -1.0, one = 1.0;
  const unsigned sweep_blocks = static_cast<unsigned>(ceil_div(rows, kRowsPerCta));
  for (int64_t i1 = 0; i1 < cols; i1 += B) {
    const int64_t i2 = std::min(i1 + B, cols), count = i2 - i1;
    int64_t a = i1;
    while (a < i2) {
      int64_t b = i2;
      if (!options.act_order) {
        const int64_t g = a / gs;
        if (!ready[static_cast<size_t>(g)]) {
          // Without act-order, a group starts here: its parameters come from the weights as
          // updated so far.
          if (a == 0) {
            sub_from_host(0);
          } else {
            if (!pending_fetch) QFORGE_RETURN_IF_ERROR(fetch_columns(a));
            QFORGE_CUDA_TRY(pending_fetch ? cudaEventSynchronize(fetched) : cudaStreamSynchronize(c.stream));
            sub_from_pinned();
          }
          pending_fetch = false;
          QFORGE_RETURN_IF_ERROR(make_group(g, 0));
        }
        b = std::min(i2, (g + 1) * gs);
      }
      const int sa = static_cast<int>(a - i1), sb = static_cast<int>(b - i1), cnt = static_cast<int>(count);
      const int smem = (tri_offset(sb, cnt) - tri_offset(sa, cnt)) * static_cast<int>(sizeof(double));
      gptq_sweep_kernel<<<sweep_blocks, kSweepWarps * 32, smem, c.stream>>>(
          W, cols, rows, U, i1, cnt, sa, sb, static_cast<const float*>(d_gvals.data()), static_cast<const uint8_t*>(d_gcodes.data()),
          static_cast<const int32_t*>(d_gcount.data()), ncodes, static_cast<const int32_t*>(d_slot.data()),
          static_cast<uint8_t*>(d_codes.data()), static_cast<double*>(d_err.data()), static_cast<double*>(d_loss.data()));
      QFORGE_CUDA_LAUNCHED("gptq_sweep_kernel");
      a = b;
    }
    if (i2 < cols) {
      // W[:, c0:c1] -= Err[:, 0:count] · U[i1:i2, c0:c1]; column-major view: W^T[c0:c1, :] -= U_sub^T Err^T.
      auto update = [&](int64_t c0, int64_t c1) -> Status {
        if (c1 <= c0) return Status::ok();
        QFORGE_CUBLAS_TRY(cublasDgemm(c.blas, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(c1 - c0), static_cast<int>(rows),
                                      static_cast<int>(count), &minus_one, U + i1 * cols + c0, static_cast<int>(cols),
                                      static_cast<const double*>(d_err.data()), kMaxBlock, &one, W + c0, static_cast<int>(cols)));
        return Status::ok();
      };
      if (!options.act_order && i2 % gs == 0) {
        // The next block starts a group: update its columns first and fetch them, so the host
        // builds the grid while the GPU updates the rest.
        const int64_t c1 = std::min(cols, i2 + gs);
        QFORGE_RETURN_IF_ERROR(update(i2, c1));
        QFORGE_RETURN_IF_ERROR(fetch_columns(i2));
        QFORGE_CUDA_TRY(cudaEventRecord(fetched, c.stream));
        pending_fetch = true;
        QFORGE_RETURN_IF_ERROR(update(c1, cols));
      } else {
        QFORGE_RETURN_IF_ERROR(update(i2, cols));
      }
    }
  }

  std::vector<uint8_t> codes(R * C);
  std::vector<double> loss_rows(R);
  QFORGE_RETURN_IF_ERROR(ctx.synchronize());
  QFORGE_RETURN_IF_ERROR(d_codes.download(codes.data(), codes.size()));
  QFORGE_RETURN_IF_ERROR(d_loss.download(loss_rows.data(), R * sizeof(double)));
  double loss = 0;
  for (double l : loss_rows) loss += l;
  result.proxy_loss = loss / 2;

  // Assemble the QuantizedTensor in the original column order (as the CPU code).
  QuantizedTensor& q = result.q;
  q.scheme = scheme;
  q.rows = rows;
  q.cols = cols;
  const PlaneSizes sizes = scheme_plane_sizes(scheme, rows, cols);
  q.codes.assign(sizes.codes, 0);
  q.scales.assign(sizes.scales, 0);
  q.zeros.assign(sizes.zeros, 0);
  std::vector<int64_t> pos(C);
  for (size_t j = 0; j < C; ++j) pos[static_cast<size_t>(perm[j])] = static_cast<int64_t>(j);
  const size_t row_bytes = q.packed_row_bytes();
  QFORGE_RETURN_IF_ERROR(parallel_for_status(rows, 256, [&](int64_t, int64_t r0, int64_t r1) -> Status {
    std::vector<uint8_t> row_codes(C);
    for (int64_t r = r0; r < r1; ++r) {
      for (size_t j = 0; j < C; ++j) row_codes[j] = codes[static_cast<size_t>(r) * C + static_cast<size_t>(pos[j])];
      pack_bits(row_codes.data(), cols, scheme.bits, q.codes.data() + static_cast<size_t>(r) * row_bytes);
    }
    return Status::ok();
  }));
  auto copy_plane = [&](std::vector<uint8_t>& dst, auto member) -> Status {
    if (dst.empty()) return Status::ok();
    if (n_groups == 1) {
      const auto& src = params[0].*member;
      if (src.size() != dst.size()) return Status::error(ErrorCode::internal, "GPTQ: plane size mismatch");
      dst = src;
      return Status::ok();
    }
    const size_t per = dst.size() / (R * static_cast<size_t>(n_groups));
    for (int64_t g = 0; g < n_groups; ++g) {
      const auto& src = params[static_cast<size_t>(g)].*member;
      if (src.size() != per * R) return Status::error(ErrorCode::internal, "GPTQ: group plane size mismatch");
      for (size_t r = 0; r < R; ++r)
        std::memcpy(dst.data() + (r * static_cast<size_t>(n_groups) + static_cast<size_t>(g)) * per, src.data() + r * per, per);
    }
    return Status::ok();
  };
  QFORGE_RETURN_IF_ERROR(copy_plane(q.scales, &GroupParams::scales));
  QFORGE_RETURN_IF_ERROR(copy_plane(q.zeros, &GroupParams::zeros));
  return result;
}

}  // namespace qforge::cuda
