// AVX-512 (F/BW/VL/DQ) kernels for the float-activation formats, where 16-wide FMAs and masked
// tails help: f16, bf16 and int4-asym. The integer-dot formats gain nothing from AVX-512F alone
// over AVX2 (the same maddubs/madd chain at twice the width needs wider blocks than the formats'
// 32); their VNNI variants are in kernels-avx512vnni.cpp, and without VNNI they use AVX2.
#include <immintrin.h>

#include <cmath>

// GCC 12 warns inside its own AVX-512 headers (the _mm512_undefined_* placeholders of widening
// intrinsics): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "kernels/cpu/tile_driver.h"

namespace qforge::kernels {
namespace {

// _mm512_reduce_add_ps trips GCC 12's -Wmaybe-uninitialized inside its header; reduce by halves.
inline float hsum512(__m512 v) {
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---- f16 / bf16 x f32 ------------------------------------------------------------------------------
template <bool kBf16>
struct Half512 {
  static constexpr int kGemvRows = 4, kGemmRows = 4;
  static __m512 load16(const uint8_t* p, __mmask16 k) {
    const __m256i h = _mm256_maskz_loadu_epi16(k, p);
    if constexpr (kBf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else return _mm512_cvtph_ps(h);
  }
  template <int R, int T>
  static void run(const WeightView& w, int64_t r, const uint8_t* act, size_t as, float* y, int64_t ldy) {
    const uint8_t* wr[R];
    const float* x[T];
    QF_UNROLL
    for (int i = 0; i < R; ++i) wr[i] = w.data + (r + i) * w.row_stride;
    QF_UNROLL
    for (int t = 0; t < T; ++t) x[t] = reinterpret_cast<const float*>(act + t * as);
    __m512 acc[R][T];
    QF_UNROLL
    for (int i = 0; i < R; ++i)
      QF_UNROLL
      for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_ps();
    for (int64_t c = 0; c < w.cols; c += 16) {
      const int64_t left = w.cols - c;
      const __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
      __m512 wv[R];
      QF_UNROLL
      for (int i = 0; i < R; ++i) wv[i] = load16(wr[i] + 2 * c, k);
      QF_UNROLL
      for (int t = 0; t < T; ++t) {
        const __m512 xv = _mm512_maskz_loadu_ps(k, x[t] + c);
        QF_UNROLL
        for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(wv[i], xv, acc[i][t]);
      }
    }
    QF_UNROLL
    for (int i = 0; i < R; ++i)
      QF_UNROLL
      for (int t = 0; t < T; ++t) y[t * ldy + i] = hsum512(acc[i][t]);
  }
};

// ---- int4 asymmetric groups x f32 ------------------------------------------------------------------
struct Int4_512 {
  static constexpr int kGemvRows = 2, kGemmRows = 2;
  template <int R, int T>
  static void run(const WeightView& w, int64_t r, const uint8_t* act, size_t as, float* y, int64_t ldy) {
    const int64_t groups = w.cols / w.group;
    const float* params[R];
    const uint8_t* qs[R];
    const float* x[T];
    QF_UNROLL
    for (int i = 0; i < R; ++i) {
      params[i] = reinterpret_cast<const float*>(w.data + (r + i) * w.row_stride);
      qs[i] = w.data + (r + i) * w.row_stride + 8 * groups;
    }
    QF_UNROLL
    for (int t = 0; t < T; ++t) x[t] = reinterpret_cast<const float*>(act + t * as);
    __m512 acc[R][T];
    float off[R][T];
    QF_UNROLL
    for (int i = 0; i < R; ++i)
      QF_UNROLL
      for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_ps(), off[i][t] = 0.0f;
    const __m128i m4 = _mm_set1_epi8(0x0F);
    for (int64_t g = 0; g < groups; ++g) {
      __m512 gacc[R][T];
      QF_UNROLL
      for (int i = 0; i < R; ++i)
        QF_UNROLL
        for (int t = 0; t < T; ++t) gacc[i][t] = _mm512_setzero_ps();
      for (int64_t c = g * w.group; c < (g + 1) * w.group; c += 32) {
        __m512 lo[R], hi[R];
        QF_UNROLL
        for (int i = 0; i < R; ++i) {
          const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs[i] + c / 2));
          lo[i] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, m4)));
          hi[i] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), m4)));
        }
        QF_UNROLL
        for (int t = 0; t < T; ++t) {
          const __m512 x0 = _mm512_loadu_ps(x[t] + c), x1 = _mm512_loadu_ps(x[t] + c + 16);
          QF_UNROLL
          for (int i = 0; i < R; ++i) {
            gacc[i][t] = _mm512_fmadd_ps(lo[i], x0, gacc[i][t]);
            gacc[i][t] = _mm512_fmadd_ps(hi[i], x1, gacc[i][t]);
          }
        }
      }
      QF_UNROLL
      for (int i = 0; i < R; ++i) {
        const float s = params[i][2 * g], z = params[i][2 * g + 1];
        QF_UNROLL
        for (int t = 0; t < T; ++t) {
          acc[i][t] = _mm512_fmadd_ps(_mm512_set1_ps(s), gacc[i][t], acc[i][t]);
          off[i][t] = std::fma(s * z, x[t][w.cols + g], off[i][t]);
        }
      }
    }
    QF_UNROLL
    for (int i = 0; i < R; ++i)
      QF_UNROLL
      for (int t = 0; t < T; ++t) y[t * ldy + i] = hsum512(acc[i][t]) - off[i][t];
  }
};

}  // namespace

void register_avx512_kernels() {
  const int a = static_cast<int>(Isa::avx512);
  registry_entry(FormatId::f16)->tile[a] = tile_driver<Half512<false>>;
  registry_entry(FormatId::bf16)->tile[a] = tile_driver<Half512<true>>;
  registry_entry(FormatId::int_asym)->tile[a] = tile_driver<Int4_512>;
}

}  // namespace qforge::kernels
