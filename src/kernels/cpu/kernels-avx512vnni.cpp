// AVX-512 VNNI kernels: vpdpbusd (u8 x s8, four products summed into s32 without the s16
// intermediate) replaces AVX2's maddubs + madd for Q8_0, Q4_0, Q4_K (the x8 micro-kernels of
// x8_kernels.h, compiled here with VNNI) and int8 W8A8, on 256-bit vectors (AVX-512VL) with the 32
// vector registers of AVX-512. Q6_K keeps AVX2.
#include <immintrin.h>

#include <cmath>

#include <cstring>

#include "kernels/cpu/tile_driver.h"
#include "kernels/cpu/simd_reduce.h"
#include "kernels/cpu/x8_kernels.h"

namespace qforge::kernels {
namespace {
namespace gg = formats::gguf;

inline __m256i loadu256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

struct Int8 {
  static constexpr int kGemvRows = 4, kGemmRows = 4;
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
        wabs[i] = _mm256_sign_epi8(wq[i], wq[i]);
      }
      QF_UNROLL
      for (int t = 0; t < T; ++t) {
        const __m256i aq = loadu256(ar[t] + kRowHeader + c);
        QF_UNROLL
        for (int i = 0; i < R; ++i) acc[i][t] = _mm256_dpbusd_epi32(acc[i][t], wabs[i], _mm256_sign_epi8(aq, wq[i]));
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

}  // namespace

void register_avx512vnni_kernels() {
  const int a = static_cast<int>(Isa::avx512vnni);
  registry_entry(FormatId::gguf_q8_0)->tile[a] = tile_driver_x8<x8::Q8_0>;
  registry_entry(FormatId::gguf_q4_0)->tile[a] = tile_driver_x8<x8::Q4_0>;
  registry_entry(FormatId::gguf_q4_k)->tile[a] = tile_driver_x8<x8::Q4_K>;
  registry_entry(FormatId::int_sym)->tile[a] = tile_driver<Int8>;
}

}  // namespace qforge::kernels
