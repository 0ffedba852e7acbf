// AVX2 + FMA + F16C kernels. Integer-dot formats use maddubs (u8 x s8 -> s16 pairs, which cannot
// saturate here: |pair| <= 2 * 128 * 127) and madd with ones (-> s32); one f32 FMA per block applies
// the two scales. Float-activation formats widen the weights to f32 and FMA.
#include <immintrin.h>

#include <cmath>

#include <cstring>

#include "kernels/cpu/tile_driver.h"
#include "kernels/cpu/simd_reduce.h"
#include "kernels/cpu/x8_kernels.h"

namespace qforge::kernels {
namespace {
namespace gg = formats::gguf;

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// Sum over pairs of u8 * s8 into 8 s32 lanes.
inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

inline __m256i loadu256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// ---- int8 W8A8: exact int32 dot, then scale_w * scale_x ------------------------------------------
struct Int8 {
  static constexpr int kGemvRows = 4, kGemmRows = 2;
  template <int R, int T>
  static void run(const WeightView& w, int64_t r, const uint8_t* act, size_t as, float* y, int64_t ldy) {
    const uint8_t* wr[R];
    const uint8_t* ar[T];
    QF_UNROLL
    for (int i = 0; i < R; ++i) wr[i] = w.data + (r + i) * w.row_stride;
    QF_UNROLL
    for (int t = 0; t < T; ++t) ar[t] = act + t * as;
    __m256i acc[R][T];
    QF_UNROLL
    for (int i = 0; i < R; ++i)
      QF_UNROLL
      for (int t = 0; t < T; ++t) acc[i][t] = _mm256_setzero_si256();
    const int64_t padded = (w.cols + 31) / 32 * 32;
    for (int64_t c = 0; c < padded; c += 32) {
      __m256i wq[R], wabs[R];
      QF_UNROLL
      for (int i = 0; i < R; ++i) {
        wq[i] = loadu256(wr[i] + kRowHeader + c);
        wabs[i] = _mm256_sign_epi8(wq[i], wq[i]);  // -128 stays 0x80 = 128 as u8: still exact
      }
      QF_UNROLL
      for (int t = 0; t < T; ++t) {
        const __m256i aq = loadu256(ar[t] + kRowHeader + c);
        QF_UNROLL
        for (int i = 0; i < R; ++i)
          acc[i][t] = _mm256_add_epi32(acc[i][t], dot_u8s8(wabs[i], _mm256_sign_epi8(aq, wq[i])));
      }
    }
    QF_UNROLL
    for (int i = 0; i < R; ++i)
      QF_UNROLL
      for (int t = 0; t < T; ++t) {
        float sw, sa;
        std::memcpy(&sw, wr[i], sizeof sw);
        std::memcpy(&sa, ar[t], sizeof sa);
        y[t * ldy + i] = sw * sa * static_cast<float>(hsum_i32(acc[i][t]));
      }
  }
};

// ---- int4 asymmetric groups x f32: y = sum_g s_g (sum q x - z_g X_g) -----------------------------
struct Int4 {
  static constexpr int kGemvRows = 2, kGemmRows = 1;
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
    __m256 acc[R][T];
    float off[R][T];
    QF_UNROLL
    for (int i = 0; i < R; ++i)
      QF_UNROLL
      for (int t = 0; t < T; ++t) acc[i][t] = _mm256_setzero_ps(), off[i][t] = 0.0f;
    const __m128i m4 = _mm_set1_epi8(0x0F);
    for (int64_t g = 0; g < groups; ++g) {
      __m256 gacc[R][T];
      QF_UNROLL
      for (int i = 0; i < R; ++i)
        QF_UNROLL
        for (int t = 0; t < T; ++t) gacc[i][t] = _mm256_setzero_ps();
      for (int64_t c = g * w.group; c < (g + 1) * w.group; c += 32) {
        __m256 wf[R][4];
        QF_UNROLL
        for (int i = 0; i < R; ++i) {
          const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs[i] + c / 2));
          const __m128i lo = _mm_and_si128(bytes, m4), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), m4);
          wf[i][0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
          wf[i][1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
          wf[i][2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
          wf[i][3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
        }
        QF_UNROLL
        for (int t = 0; t < T; ++t)
          QF_UNROLL
          for (int k = 0; k < 4; ++k) {
            const __m256 xv = _mm256_loadu_ps(x[t] + c + 8 * k);
            QF_UNROLL
            for (int i = 0; i < R; ++i) gacc[i][t] = _mm256_fmadd_ps(wf[i][k], xv, gacc[i][t]);
          }
      }
      QF_UNROLL
      for (int i = 0; i < R; ++i) {
        const float s = params[i][2 * g], z = params[i][2 * g + 1];
        QF_UNROLL
        for (int t = 0; t < T; ++t) {
          acc[i][t] = _mm256_fmadd_ps(_mm256_set1_ps(s), gacc[i][t], acc[i][t]);
          off[i][t] = std::fma(s * z, x[t][w.cols + g], off[i][t]);
        }
      }
    }
    QF_UNROLL
    for (int i = 0; i < R; ++i)
      QF_UNROLL
      for (int t = 0; t < T; ++t) y[t * ldy + i] = hsum(acc[i][t]) - off[i][t];
  }
};

// ---- f16 / bf16 x f32 ------------------------------------------------------------------------------
template <bool kBf16>
struct Half {
  static constexpr int kGemvRows = 4, kGemmRows = 2;
  static __m256 load8(const uint8_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (kBf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    else return _mm256_cvtph_ps(h);
  }
  static float load1(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    if constexpr (kBf16) {
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    } else {
      return h2f(h);
    }
  }
  template <int R, int T>
  static void run(const WeightView& w, int64_t r, const uint8_t* act, size_t as, float* y, int64_t ldy) {
    const uint8_t* wr[R];
    const float* x[T];
    QF_UNROLL
    for (int i = 0; i < R; ++i) wr[i] = w.data + (r + i) * w.row_stride;
    QF_UNROLL
    for (int t = 0; t < T; ++t) x[t] = reinterpret_cast<const float*>(act + t * as);
    __m256 acc[R][T];
    QF_UNROLL
    for (int i = 0; i < R; ++i)
      QF_UNROLL
      for (int t = 0; t < T; ++t) acc[i][t] = _mm256_setzero_ps();
    const int64_t body = w.cols / 8 * 8;
    for (int64_t c = 0; c < body; c += 8) {
      __m256 wv[R];
      QF_UNROLL
      for (int i = 0; i < R; ++i) wv[i] = load8(wr[i] + 2 * c);
      QF_UNROLL
      for (int t = 0; t < T; ++t) {
        const __m256 xv = _mm256_loadu_ps(x[t] + c);
        QF_UNROLL
        for (int i = 0; i < R; ++i) acc[i][t] = _mm256_fmadd_ps(wv[i], xv, acc[i][t]);
      }
    }
    QF_UNROLL
    for (int i = 0; i < R; ++i)
      QF_UNROLL
      for (int t = 0; t < T; ++t) {
        float s = hsum(acc[i][t]);
        for (int64_t c = body; c < w.cols; ++c) s = std::fma(load1(wr[i] + 2 * c), x[t][c], s);
        y[t * ldy + i] = s;
      }
  }
};

}  // namespace

void register_avx2_kernels() {
  const int a = static_cast<int>(Isa::avx2);
  registry_entry(FormatId::gguf_q8_0)->tile[a] = tile_driver_x8<x8::Q8_0>;
  registry_entry(FormatId::gguf_q4_0)->tile[a] = tile_driver_x8<x8::Q4_0>;
  registry_entry(FormatId::gguf_q4_k)->tile[a] = tile_driver_x8<x8::Q4_K>;
  registry_entry(FormatId::gguf_q6_k)->tile[a] = tile_driver_x8<x8::Q6_K>;
  registry_entry(FormatId::int_sym)->tile[a] = tile_driver<Int8>;
  registry_entry(FormatId::int_asym)->tile[a] = tile_driver<Int4>;
  registry_entry(FormatId::f16)->tile[a] = tile_driver<Half<false>>;
  registry_entry(FormatId::bf16)->tile[a] = tile_driver<Half<true>>;
}

}  // namespace qforge::kernels
