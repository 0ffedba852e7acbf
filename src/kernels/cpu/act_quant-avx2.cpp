// AVX2 activation quantizers, bit-identical to the scalar specification in kernels_ref.cpp: the
// block absmax is exact whatever the order, x * (1 / d) is one f32 multiply per element as there,
// round-half-away is built from truncation (v - trunc(v) is exact), and the residual is the same
// fma. Decode quantizes one activation row per GEMV; the scalar code took about a tenth of the
// time of a 4096 x 11008 Q4_0 GEMV.
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/simd_reduce.h"
#include "kernels/kernel_registry.h"

namespace qforge::kernels {
namespace {
namespace gg = formats::gguf;

inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// std::round (half away from zero) then clamp to +-127, as int32 lanes; NaN (0 * inf when d is
// subnormal) -> 0, as the scalar round_q8.
inline __m256i round_clamp_q8(__m256 v) {
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = abs_ps(_mm256_sub_ps(v, t));
  const __m256 step = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
  __m256 r = _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), step));
  r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
  return _mm256_cvttps_epi32(_mm256_and_ps(r, _mm256_cmp_ps(v, v, _CMP_ORD_Q)));
}

// 4 x 8 int32 (in order) -> 32 int8.
inline void store_q8x32(const __m256i q[4], int8_t* out) {
  const __m256i ab = _mm256_packs_epi32(q[0], q[1]), cd = _mm256_packs_epi32(q[2], q[3]);
  const __m256i bytes = _mm256_packs_epi16(ab, cd);  // per 128-bit half: a b c d quarters interleaved
  const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), ordered);
}

// One block of B (a multiple of 32) values: d, the codes (int8 and as int32 vectors q32), and,
// when `residual` is set, x - d q per element (fma) written there.
template <int B>
inline float quantize_block(const float* x, int8_t* qs, __m256i (&q32)[B / 8], float* residual) {
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < B; i += 8) m = _mm256_max_ps(abs_ps(_mm256_loadu_ps(x + i)), m);
  const float d = hmax(m) / 127.0f;
  const float id = d > 0.0f ? 1.0f / d : 0.0f;
  const __m256 vid = _mm256_set1_ps(id);
  for (int i = 0; i < B / 8; ++i) q32[i] = round_clamp_q8(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i), vid));
  for (int i = 0; i < B / 8; i += 4) store_q8x32(q32 + i, qs + 8 * i);
  if (residual != nullptr) {
    const __m256 vd = _mm256_set1_ps(d);
    for (int i = 0; i < B / 8; ++i)
      _mm256_storeu_ps(residual + 8 * i, _mm256_fnmadd_ps(vd, _mm256_cvtepi32_ps(q32[i]), _mm256_loadu_ps(x + 8 * i)));
  }
  return d;
}

void q8_32_one(const float* x, ActQ8Block* out, float* residual) {
  __m256i q[4];
  const float d = quantize_block<32>(x, out->qs, q, residual);
  out->d = d;
  const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
  out->s = d * static_cast<float>(hsum_i32(sum));
}

void q8_32(const float* x, int64_t cols, ActQ8Block* out, ActQ8Block* residual) {
  alignas(32) float r[32];
  for (int64_t b = 0; b < cols / 32; ++b) {
    q8_32_one(x + 32 * b, out + b, residual != nullptr ? r : nullptr);
    if (residual != nullptr) q8_32_one(r, residual + b, nullptr);
  }
}

void q8_k_one(const float* x, gg::BlockQ8_K* out, float* residual) {
  __m256i q[gg::kQK_K / 8];
  out->d = quantize_block<gg::kQK_K>(x, out->qs, q, residual);
  for (int j = 0; j < gg::kQK_K / 16; ++j)
    out->bsums[j] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(q[2 * j], q[2 * j + 1])));
}

void q8_k(const float* x, int64_t cols, gg::BlockQ8_K* out, gg::BlockQ8_K* residual) {
  alignas(32) float r[gg::kQK_K];
  for (int64_t b = 0; b < cols / gg::kQK_K; ++b) {
    q8_k_one(x + gg::kQK_K * b, out + b, residual != nullptr ? r : nullptr);
    if (residual != nullptr) q8_k_one(r, residual + b, nullptr);
  }
}

}  // namespace

void register_avx2_act_quantizers() {
  ActQuantizers* a = act_quantizer_slot(Isa::avx2);
  a->q8_32 = q8_32;
  a->q8_k = q8_k;
}

}  // namespace qforge::kernels
