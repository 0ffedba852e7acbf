// Scalar reference kernels: the specification every ISA variant is tested against, and the
// activation quantization all variants share.
//
// Integer-dot formats compute, per weight block b and token, the exact integer dot product of the
// codes with the int8 activation codes, then accumulate scale_w(b) * scale_x(b) * dot in f32 in
// block order. Float-activation formats accumulate w * x in f32 in column order (int4: per group,
// then scale and zero-point applied once per group).
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/interleave_x8.h"
#include "kernels/kernel_registry.h"
#include "qforge/dtype.h"

namespace qforge::kernels {
namespace gg = formats::gguf;

float half_to_float(uint16_t h) { return f16_to_f32(h); }

namespace {

inline int8_t round_q8(float v) {
  // |v| <= 127 by construction (v = x / d with d = absmax / 127), up to rounding of x * (1/d).
  // When d is subnormal 1/d overflows: x * inf is +-inf (clamped) or, for x = 0, NaN -> 0.
  if (std::isnan(v)) return 0;
  const float r = std::round(v);
  return static_cast<int8_t>(r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r));
}

// d and 1/d for a block of absolute maximum `amax`.
inline void act_scale(float amax, float* d, float* id) {
  *d = amax / 127.0f;
  *id = *d > 0.0f ? 1.0f / *d : 0.0f;
}

float absmax(const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::fmax(m, std::fabs(x[i]));
  return m;
}

}  // namespace

void quantize_act_q8_32(const float* x, int64_t cols, ActQ8Block* out) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float* xb = x + 32 * b;
    float d, id;
    act_scale(absmax(xb, 32), &d, &id);
    int sum = 0;
    for (int i = 0; i < 32; ++i) {
      out[b].qs[i] = round_q8(xb[i] * id);
      sum += out[b].qs[i];
    }
    out[b].d = d;
    out[b].s = d * static_cast<float>(sum);
  }
}

void quantize_act_q8_k(const float* x, int64_t cols, gg::BlockQ8_K* out) {
  for (int64_t b = 0; b < cols / gg::kQK_K; ++b) {
    const float* xb = x + gg::kQK_K * b;
    float d, id;
    act_scale(absmax(xb, gg::kQK_K), &d, &id);
    out[b].d = d;
    for (int j = 0; j < gg::kQK_K / 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) {
        const int8_t q = round_q8(xb[16 * j + i] * id);
        out[b].qs[16 * j + i] = q;
        sum += q;
      }
      out[b].bsums[j] = static_cast<int16_t>(sum);
    }
  }
}

namespace {

// x - d(i) q(i) per element (one fma), into a per-thread buffer: the residual the second int8
// term of int8x2 quantizes.
template <class ScaleOf, class CodeOf>
const float* residual_of(const float* x, int64_t cols, ScaleOf d, CodeOf q) {
  thread_local std::vector<float> r;
  r.resize(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) r[static_cast<size_t>(i)] = std::fma(-d(i), static_cast<float>(q(i)), x[i]);
  return r.data();
}

}  // namespace

void quantize_act_q8_32_x2(const float* x, int64_t cols, ActQ8Block* out, ActQ8Block* residual) {
  quantize_act_q8_32(x, cols, out);
  if (residual == nullptr) return;
  const float* r =
      residual_of(x, cols, [&](int64_t i) { return out[i / 32].d; }, [&](int64_t i) { return out[i / 32].qs[i % 32]; });
  quantize_act_q8_32(r, cols, residual);
}

void quantize_act_q8_k_x2(const float* x, int64_t cols, gg::BlockQ8_K* out, gg::BlockQ8_K* residual) {
  quantize_act_q8_k(x, cols, out);
  if (residual == nullptr) return;
  const float* r = residual_of(x, cols, [&](int64_t i) { return out[i / gg::kQK_K].d; },
                               [&](int64_t i) { return out[i / gg::kQK_K].qs[i % gg::kQK_K]; });
  quantize_act_q8_k(r, cols, residual);
}

void quantize_act_q8_row_x2(const float* x, int64_t cols, uint8_t* out, uint8_t* residual) {
  quantize_act_q8_row(x, cols, out);
  if (residual == nullptr) return;
  float d;
  std::memcpy(&d, out, sizeof d);
  const auto* q = reinterpret_cast<const int8_t*>(out + kRowHeader);
  quantize_act_q8_row(residual_of(x, cols, [d](int64_t) { return d; }, [q](int64_t i) { return q[i]; }), cols,
                      residual);
}

void quantize_act_q8_row(const float* x, int64_t cols, uint8_t* out) {
  float d, id;
  act_scale(absmax(x, cols), &d, &id);
  std::memset(out, 0, kRowHeader);
  std::memcpy(out, &d, sizeof d);
  int8_t* q = reinterpret_cast<int8_t*>(out + kRowHeader);
  const int64_t padded = (cols + 31) / 32 * 32;
  for (int64_t i = 0; i < cols; ++i) q[i] = round_q8(x[i] * id);
  for (int64_t i = cols; i < padded; ++i) q[i] = 0;
}

namespace {

template <class Row>
void for_each_output(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t act_stride,
                     int64_t n_tokens, float* y, int64_t ldy, Row row) {
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t r = r0; r < r1; ++r) y[t * ldy + r] = row(w.data + r * w.row_stride, act + t * act_stride);
}

// The same over an x8 layout: each row is first read back as its GGUF blocks, so the reference is
// the GGUF specification's dot product whatever layout the fast kernels use.
template <class Row>
void for_each_output_x8(FormatId format, const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act,
                        size_t act_stride, int64_t n_tokens, float* y, int64_t ldy, Row row) {
  std::vector<uint8_t> gguf(w.row_stride);
  for (int64_t r = r0; r < r1; ++r) {
    unpack_x8_row(format, w.data + static_cast<size_t>(r / kX8) * w.group_stride, static_cast<int>(r % kX8), w.cols,
                  gguf.data());
    for (int64_t t = 0; t < n_tokens; ++t) y[t * ldy + r] = row(gguf.data(), act + t * act_stride);
  }
}

void tile_q8_0_ref(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t as, int64_t nt, float* y,
                   int64_t ldy) {
  const int64_t nb = w.cols / gg::kQK;
  for_each_output_x8(FormatId::gguf_q8_0, w, r0, r1, act, as, nt, y, ldy, [nb](const uint8_t* wr, const uint8_t* ar) {
    const auto* wb = reinterpret_cast<const gg::BlockQ8_0*>(wr);
    const auto* ab = reinterpret_cast<const ActQ8Block*>(ar);
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      int sum = 0;
      for (int i = 0; i < 32; ++i) sum += wb[b].qs[i] * ab[b].qs[i];
      acc += half_to_float(wb[b].d) * ab[b].d * static_cast<float>(sum);
    }
    return acc;
  });
}

void tile_q4_0_ref(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t as, int64_t nt, float* y,
                   int64_t ldy) {
  const int64_t nb = w.cols / gg::kQK;
  for_each_output_x8(FormatId::gguf_q4_0, w, r0, r1, act, as, nt, y, ldy, [nb](const uint8_t* wr, const uint8_t* ar) {
    const auto* wb = reinterpret_cast<const gg::BlockQ4_0*>(wr);
    const auto* ab = reinterpret_cast<const ActQ8Block*>(ar);
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) {
        sum += ((wb[b].qs[j] & 0xF) - 8) * ab[b].qs[j];
        sum += ((wb[b].qs[j] >> 4) - 8) * ab[b].qs[j + 16];
      }
      acc += half_to_float(wb[b].d) * ab[b].d * static_cast<float>(sum);
    }
    return acc;
  });
}

void tile_q4_k_ref(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t as, int64_t nt, float* y,
                   int64_t ldy) {
  const int64_t nb = w.cols / gg::kQK_K;
  for_each_output_x8(FormatId::gguf_q4_k, w, r0, r1, act, as, nt, y, ldy, [nb](const uint8_t* wr, const uint8_t* ar) {
    const auto* wb = reinterpret_cast<const gg::BlockQ4_K*>(wr);
    const auto* ab = reinterpret_cast<const gg::BlockQ8_K*>(ar);
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      int sum = 0, msum = 0;
      for (int s = 0; s < 8; ++s) {
        uint8_t sc, m;
        gg::unpack_scale_min_k4(s, wb[b].scales, &sc, &m);
        const int chunk = s / 2, high = s % 2;
        int dot = 0;
        for (int l = 0; l < 32; ++l) {
          const uint8_t byte = wb[b].qs[32 * chunk + l];
          const int q = high ? byte >> 4 : byte & 0xF;
          dot += q * ab[b].qs[32 * s + l];
        }
        sum += sc * dot;
        msum += m * (ab[b].bsums[2 * s] + ab[b].bsums[2 * s + 1]);
      }
      acc += half_to_float(wb[b].d) * ab[b].d * static_cast<float>(sum);
      acc -= half_to_float(wb[b].dmin) * ab[b].d * static_cast<float>(msum);
    }
    return acc;
  });
}

void tile_q6_k_ref(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t as, int64_t nt, float* y,
                   int64_t ldy) {
  const int64_t nb = w.cols / gg::kQK_K;
  for_each_output_x8(FormatId::gguf_q6_k, w, r0, r1, act, as, nt, y, ldy, [nb](const uint8_t* wr, const uint8_t* ar) {
    const auto* wb = reinterpret_cast<const gg::BlockQ6_K*>(wr);
    const auto* ab = reinterpret_cast<const gg::BlockQ8_K*>(ar);
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      int sum = 0;
      for (int e = 0; e < gg::kQK_K; ++e) {
        const int n = e / 128, g = (e % 128) / 32, l = e % 32;
        const uint8_t lo = wb[b].ql[64 * n + 32 * (g & 1) + l];
        const int q = ((g >> 1) ? lo >> 4 : lo & 0xF) | (((wb[b].qh[32 * n + l] >> (2 * g)) & 3) << 4);
        sum += wb[b].scales[e / 16] * (q - 32) * ab[b].qs[e];
      }
      acc += half_to_float(wb[b].d) * ab[b].d * static_cast<float>(sum);
    }
    return acc;
  });
}

void tile_int8_ref(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t as, int64_t nt, float* y,
                   int64_t ldy) {
  const int64_t cols = w.cols;
  for_each_output(w, r0, r1, act, as, nt, y, ldy, [cols](const uint8_t* wr, const uint8_t* ar) {
    float sw, sa;
    std::memcpy(&sw, wr, sizeof sw);
    std::memcpy(&sa, ar, sizeof sa);
    const auto* qw = reinterpret_cast<const int8_t*>(wr + kRowHeader);
    const auto* qa = reinterpret_cast<const int8_t*>(ar + kRowHeader);
    int64_t sum = 0;  // |sum| <= 128 * 127 * cols fits int32 for the supported cols; int64 for clarity
    for (int64_t i = 0; i < cols; ++i) sum += qw[i] * qa[i];
    return sw * sa * static_cast<float>(sum);
  });
}

void tile_int4_ref(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t as, int64_t nt, float* y,
                   int64_t ldy) {
  const int64_t groups = w.cols / w.group, g_len = w.group, cols = w.cols;
  for_each_output(w, r0, r1, act, as, nt, y, ldy, [=](const uint8_t* wr, const uint8_t* ar) {
    const auto* params = reinterpret_cast<const float*>(wr);
    const uint8_t* qs = wr + 8 * groups;
    const auto* x = reinterpret_cast<const float*>(ar);
    const float* xsum = x + cols;
    float acc = 0.0f;
    for (int64_t g = 0; g < groups; ++g) {
      float dot = 0.0f;
      for (int64_t c = g * g_len; c < (g + 1) * g_len; ++c) {
        const uint8_t byte = qs[(c / 32) * 16 + (c % 32) % 16];
        const int q = (c % 32) < 16 ? byte & 0xF : byte >> 4;
        dot += static_cast<float>(q) * x[c];
      }
      acc += params[2 * g] * (dot - params[2 * g + 1] * xsum[g]);
    }
    return acc;
  });
}

template <bool kBf16>
void tile_16bit_ref(const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act, size_t as, int64_t nt, float* y,
                    int64_t ldy) {
  const int64_t cols = w.cols;
  for_each_output(w, r0, r1, act, as, nt, y, ldy, [cols](const uint8_t* wr, const uint8_t* ar) {
    const auto* x = reinterpret_cast<const float*>(ar);
    float acc = 0.0f;
    for (int64_t i = 0; i < cols; ++i) {
      uint16_t h;
      std::memcpy(&h, wr + 2 * i, 2);
      acc += (kBf16 ? bf16_to_f32(h) : f16_to_f32(h)) * x[i];
    }
    return acc;
  });
}

}  // namespace

void register_ref_kernels() {
  const int s = static_cast<int>(Isa::scalar);
  registry_entry(FormatId::gguf_q8_0)->tile[s] = tile_q8_0_ref;
  registry_entry(FormatId::gguf_q4_0)->tile[s] = tile_q4_0_ref;
  registry_entry(FormatId::gguf_q4_k)->tile[s] = tile_q4_k_ref;
  registry_entry(FormatId::gguf_q6_k)->tile[s] = tile_q6_k_ref;
  registry_entry(FormatId::int_sym)->tile[s] = tile_int8_ref;
  registry_entry(FormatId::int_asym)->tile[s] = tile_int4_ref;
  registry_entry(FormatId::f16)->tile[s] = tile_16bit_ref<false>;
  registry_entry(FormatId::bf16)->tile[s] = tile_16bit_ref<true>;
}

}  // namespace qforge::kernels
