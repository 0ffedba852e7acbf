// GPU dequantization of QuantizedTensor planes: int-sym / int-asym (2..8 bits, per tensor,
// channel or group) and the GGUF blocks Q4_0, Q8_0, Q4_K and Q6_K. Each kernel follows the
// format's dequantize_ref (src/formats) operation for operation; the products use __fmul_rn so
// that no multiply-add is fused where the reference rounds twice.
#include <cstring>

#include "cuda_common.h"
#include "formats/gguf_blocks.h"
#include "mma.cuh"

namespace qforge::cuda {
namespace {

using namespace detail;
namespace gg = qforge::formats::gguf;

__device__ __forceinline__ float f16_bits(const uint8_t* p) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(p[0] | (p[1] << 8))));
}

template <typename T>
__global__ void int_dequant_kernel(const uint8_t* __restrict__ codes, const uint8_t* __restrict__ scales,
                                   const uint8_t* __restrict__ zeros, T* __restrict__ out, int64_t rows, int64_t cols,
                                   int bits, int granularity, int64_t group, int64_t row_bytes, bool asym) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  const int64_t bit = c * bits;
  const uint8_t* row = codes + r * row_bytes;
  const int64_t byte = bit >> 3;
  unsigned v = row[byte];
  if (byte + 1 < row_bytes) v |= static_cast<unsigned>(row[byte + 1]) << 8;
  const int code = static_cast<int>((v >> (bit & 7)) & ((1u << bits) - 1));
  int64_t si = 0;  // tensor
  if (granularity == 1) si = r;
  else if (granularity == 2) si = r * (cols / group) + c / group;
  const float scale = f16_bits(scales + 2 * si);
  const int zero = asym ? zeros[si] : (1 << (bits - 1));
  out[i] = from_float<T>(__fmul_rn(static_cast<float>(code - zero), scale));
}

// One thread per element of the legacy 32-blocks (Q4_0, Q8_0) and the 256 super-blocks.
template <typename T>
__global__ void q4_0_kernel(const uint8_t* __restrict__ blocks, T* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint8_t* b = blocks + (i / 32) * sizeof(gg::BlockQ4_0);
  const int j = static_cast<int>(i % 32);
  const uint8_t qs = b[2 + (j % 16)];
  const int q = (j < 16 ? (qs & 0xF) : (qs >> 4)) - 8;
  out[i] = from_float<T>(__fmul_rn(static_cast<float>(q), f16_bits(b)));
}

template <typename T>
__global__ void q8_0_kernel(const uint8_t* __restrict__ blocks, T* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint8_t* b = blocks + (i / 32) * sizeof(gg::BlockQ8_0);
  const int q = static_cast<int8_t>(b[2 + i % 32]);
  out[i] = from_float<T>(__fmul_rn(static_cast<float>(q), f16_bits(b)));
}

template <typename T>
__global__ void q4_k_kernel(const uint8_t* __restrict__ blocks, T* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint8_t* b = blocks + (i / 256) * sizeof(gg::BlockQ4_K);
  const int e = static_cast<int>(i % 256), j = e / 32;
  const uint8_t* s = b + 4;
  int sc, m;
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
  const uint8_t qb = b[16 + 32 * (e / 64) + e % 32];
  const int q = (e % 64) < 32 ? (qb & 0xF) : (qb >> 4);
  const float d1 = __fmul_rn(f16_bits(b), static_cast<float>(sc));
  const float m1 = __fmul_rn(f16_bits(b + 2), static_cast<float>(m));
  out[i] = from_float<T>(__fsub_rn(__fmul_rn(d1, static_cast<float>(q)), m1));
}

template <typename T>
__global__ void q6_k_kernel(const uint8_t* __restrict__ blocks, T* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint8_t* b = blocks + (i / 256) * sizeof(gg::BlockQ6_K);
  const int e = static_cast<int>(i % 256), h = e / 128, grp = (e % 128) / 32, l = e % 32;
  const uint8_t lo = b[64 * h + 32 * (grp & 1) + l];
  const uint8_t hi = b[128 + 32 * h + l];
  const int q = (((grp >> 1) ? (lo >> 4) : (lo & 0xF)) | (((hi >> (2 * grp)) & 3) << 4)) - 32;
  const int sc = static_cast<int8_t>(b[192 + e / 16]);
  out[i] = from_float<T>(__fmul_rn(__fmul_rn(f16_bits(b + 208), static_cast<float>(sc)), static_cast<float>(q)));
}

template <typename T>
Status launch(Context::Impl& c, const DeviceQuantizedTensor& q, void* out) {
  const int64_t n = q.rows * q.cols;
  const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
  const auto* codes = static_cast<const uint8_t*>(q.codes.data());
  T* o = static_cast<T*>(out);
  switch (q.scheme.format) {
    case FormatId::int_sym:
    case FormatId::int_asym: {
      const int64_t row_bytes = static_cast<int64_t>(packed_size(q.cols, q.scheme.bits));
      int_dequant_kernel<T><<<blocks, 256, 0, c.stream>>>(
          codes, static_cast<const uint8_t*>(q.scales.data()), static_cast<const uint8_t*>(q.zeros.data()), o, q.rows,
          q.cols, q.scheme.bits, static_cast<int>(q.scheme.granularity), q.scheme.group_size, row_bytes,
          q.scheme.format == FormatId::int_asym);
      break;
    }
    case FormatId::gguf_q4_0: q4_0_kernel<T><<<blocks, 256, 0, c.stream>>>(codes, o, n); break;
    case FormatId::gguf_q8_0: q8_0_kernel<T><<<blocks, 256, 0, c.stream>>>(codes, o, n); break;
    case FormatId::gguf_q4_k: q4_k_kernel<T><<<blocks, 256, 0, c.stream>>>(codes, o, n); break;
    case FormatId::gguf_q6_k: q6_k_kernel<T><<<blocks, 256, 0, c.stream>>>(codes, o, n); break;
    default: return unsupported("cuda::dequantize: no GPU kernel for scheme " + q.scheme.name());
  }
  QFORGE_CUDA_LAUNCHED("dequantize kernel");
  return Status::ok();
}

}  // namespace

bool can_dequantize(const Scheme& s) {
  switch (s.format) {
    case FormatId::int_sym:
    case FormatId::int_asym:
    case FormatId::gguf_q4_0:
    case FormatId::gguf_q8_0:
    case FormatId::gguf_q4_k:
    case FormatId::gguf_q6_k: return true;
    default: return false;
  }
}

Expected<DeviceQuantizedTensor> upload(const QuantizedTensor& q) {
  QFORGE_RETURN_IF_ERROR(validate_scheme(q.scheme, q.rows, q.cols));
  const PlaneSizes sizes = scheme_plane_sizes(q.scheme, q.rows, q.cols);
  if (q.codes.size() != sizes.codes || q.scales.size() != sizes.scales || q.zeros.size() != sizes.zeros)
    return invalid_argument("cuda::upload: plane sizes do not match scheme " + q.scheme.name() + " on [" +
                            std::to_string(q.rows) + ", " + std::to_string(q.cols) + "]");
  DeviceQuantizedTensor d;
  d.scheme = q.scheme;
  d.rows = q.rows;
  d.cols = q.cols;
  QFORGE_ASSIGN_OR_RETURN(d.codes, DeviceBuffer::upload(q.codes.data(), q.codes.size()));
  QFORGE_ASSIGN_OR_RETURN(d.scales, DeviceBuffer::upload(q.scales.data(), q.scales.size()));
  QFORGE_ASSIGN_OR_RETURN(d.zeros, DeviceBuffer::upload(q.zeros.data(), q.zeros.size()));
  return Expected<DeviceQuantizedTensor>(std::move(d));
}

Status dequantize(Context& ctx, const DeviceQuantizedTensor& q, void* out, ActType out_type) {
  if (!can_dequantize(q.scheme)) return unsupported("cuda::dequantize: no GPU kernel for scheme " + q.scheme.name());
  QFORGE_RETURN_IF_ERROR(validate_scheme(q.scheme, q.rows, q.cols));
  const PlaneSizes sizes = scheme_plane_sizes(q.scheme, q.rows, q.cols);
  if (q.codes.size() < sizes.codes || q.scales.size() < sizes.scales || q.zeros.size() < sizes.zeros)
    return invalid_argument("cuda::dequantize: device planes smaller than scheme " + q.scheme.name() + " needs");
  if (!out) return invalid_argument("cuda::dequantize: null output");
  if (q.rows * q.cols > (int64_t{1} << 40)) return invalid_argument("cuda::dequantize: tensor too large");
  return out_type == ActType::bf16 ? launch<__nv_bfloat16>(ctx.impl(), q, out) : launch<__half>(ctx.impl(), q, out);
}

}  // namespace qforge::cuda
