// Micro-kernels over the row-interleaved x8 layouts (src/kernels/interleave_x8.h): Q4_0, Q8_0, Q4_K
// and Q6_K against int8 activations (Q6_K registered at AVX2 only). Included by the AVX2 and the
// AVX-512 VNNI units; each compiles its own copy (internal linkage) with its own flags, and the
// integer accumulator below picks vpdpbusd where the unit has it.
//
// Per block and token, each 32-byte load of codes holds 4 columns of the 8 rows; one broadcast of
// the 4 matching activation bytes gives the 8 rows' partial dot products in the 8 lanes. The
// integer dot of a block (or K-quant sub-block) is exact, so every variant computes the same integers
// as the reference; the f32 accumulation is one chain per (row, token) in block order, whatever
// the number of tokens T a call covers (bit-identical between batch and token-by-token calls).
#pragma once

#include <immintrin.h>

#include <cstring>

#include "kernels/interleave_x8.h"
#include "kernels/kernel_registry.h"

namespace qforge::kernels {
namespace {  // one copy per ISA unit
namespace x8 {

namespace gg = formats::gguf;

inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// The 4 activation bytes at p, in every 32-bit lane.
inline __m256i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

// Software prefetch of each record this many bytes ahead (QFORGE_X8_PREFETCH, 0 = off; default
// 2048): with the hardware prefetchers alone a decode GEMV kept too few lines in flight.
inline int64_t prefetch_distance() {
  static const int64_t d = env_count("QFORGE_X8_PREFETCH", 2048);
  return d;
}

// `d` is prefetch_distance(), read once per kernel call (a function-local static's guard check
// per record cost a load and a branch in the inner loop).
inline void prefetch_record(const uint8_t* p, size_t bytes, int64_t d) {
  if (d <= 0) return;
  for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + d + o), _MM_HINT_T0);
}

inline __m256 f16x8(const uint16_t* h) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h))); }

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
// vpdpbusd: four u8 * s8 products summed into each s32 lane, no intermediate.
struct Acc4 {
  __m256i v = _mm256_setzero_si256();
  void add(__m256i u, __m256i s) { v = _mm256_dpbusd_epi32(v, u, s); }
  void merge(const Acc4& o) { v = _mm256_add_epi32(v, o.v); }
  // Low and high nibbles of 32 code bytes as operands. The high ones stay in place (16 x the
  // nibble: one and-not instead of a shift and an and; no u8 x s8 overflow here, unlike maddubs),
  // so a chain fed with them holds 16 x its sum, divided out exactly by the *_high methods.
  static void nibbles(__m256i q, __m256i m4, __m256i* lo, __m256i* hi) {
    *lo = _mm256_and_si256(q, m4);
    *hi = _mm256_andnot_si256(m4, q);
  }
  void merge_high(const Acc4& hi) { v = _mm256_add_epi32(v, _mm256_srai_epi32(hi.v, 4)); }
  __m256i sum() const { return v; }
  // The 8 rows' scales of sub-blocks j (bytes 0..7 of `sc16`) and j + 1 (bytes 8..15), one int32
  // lane per row.
  static void scale_operands(const uint8_t* sc16, __m256i* sj, __m256i* sj1) {
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc16)));
    *sj = _mm256_shuffle_epi8(v, _mm256_setr_epi8(0, -1, -1, -1, 1, -1, -1, -1, 2, -1, -1, -1, 3, -1, -1, -1,  //
                                                  4, -1, -1, -1, 5, -1, -1, -1, 6, -1, -1, -1, 7, -1, -1, -1));
    *sj1 = _mm256_shuffle_epi8(v, _mm256_setr_epi8(8, -1, -1, -1, 9, -1, -1, -1, 10, -1, -1, -1, 11, -1, -1, -1,  //
                                                   12, -1, -1, -1, 13, -1, -1, -1, 14, -1, -1, -1, 15, -1, -1, -1));
  }
  __m256i scaled(__m256i op) const { return _mm256_mullo_epi32(v, op); }
  // < 2^26 before the shift: 16 x 32 products of 15 x 127, times a 6-bit scale.
  __m256i scaled_high(__m256i op) const { return _mm256_srai_epi32(_mm256_mullo_epi32(v, op), 4); }
};
using Acc8 = Acc4;
#else
// maddubs gives s16 pair sums. With 4-bit codes (<= 15) and |activation| <= 127 a pair is at most
// 3810, so the (at most 8) adds of one block or sub-block stay below 32767; madd then widens.
struct Acc4 {
  __m256i v = _mm256_setzero_si256();
  void add(__m256i u, __m256i s) { v = _mm256_add_epi16(v, _mm256_maddubs_epi16(u, s)); }
  void merge(const Acc4& o) { v = _mm256_add_epi16(v, o.v); }  // the bound above covers the merged adds
  static void nibbles(__m256i q, __m256i m4, __m256i* lo, __m256i* hi) {
    *lo = _mm256_and_si256(q, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
  }
  void merge_high(const Acc4& hi) { merge(hi); }
  __m256i sum() const { return _mm256_madd_epi16(v, _mm256_set1_epi16(1)); }
  // madd with (scale, scale) in each lane's two s16 halves: the lane's sum times its row's scale.
  // The 8 rows' scales of sub-blocks j (bytes 0..7 of `sc16`) and j + 1 (bytes 8..15) as such
  // operands: one in-lane byte shuffle each (lane i of the vector = row i).
  static void scale_operands(const uint8_t* sc16, __m256i* sj, __m256i* sj1) {
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc16)));
    *sj = _mm256_shuffle_epi8(v, _mm256_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1,  //
                                                  4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1));
    *sj1 = _mm256_shuffle_epi8(v, _mm256_setr_epi8(8, -1, 8, -1, 9, -1, 9, -1, 10, -1, 10, -1, 11, -1, 11, -1,  //
                                                   12, -1, 12, -1, 13, -1, 13, -1, 14, -1, 14, -1, 15, -1, 15, -1));
  }
  __m256i scaled(__m256i op) const { return _mm256_madd_epi16(v, op); }
  __m256i scaled_high(__m256i op) const { return scaled(op); }
};
// 8-bit codes: a pair reaches 2 * 128 * 127 = 32512, so each maddubs is widened at once.
struct Acc8 {
  __m256i v = _mm256_setzero_si256();
  void add(__m256i u, __m256i s) {
    v = _mm256_add_epi32(v, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
  }
  void merge(const Acc8& o) { v = _mm256_add_epi32(v, o.v); }
  __m256i sum() const { return v; }
};
#endif

// A block's integer sum runs in two accumulators (merged before the scale): vpdpbusd has a
// latency of 4 cycles, and one chain of 8 per block and token left the VNNI kernels waiting on it
// (Zen 4, weights in L2: Q4_0 with two activation rows 21 -> 15 cycles per block and group, with
// the unrolling above). The sums are exact integers, so the split changes no result.
//
// Kernels take G groups (gstride bytes apart) at once: with G = 2 (decode) each thread reads two
// streams, which the memory system served faster than one in bench_kernels on the 2-core EPYC.
// Outputs: out[g * T + t].

// sum (q - 8) a d_w d_a = d_w d_a sum q a - 8 d_w (d_a sum a); ActQ8Block.s = d_a sum a.
struct Q4_0 {
  static constexpr int kMaxT = 4;
  template <int T, int G>
  static void run(const uint8_t* group, size_t gstride, int64_t cols, const uint8_t* act, size_t as,
                  float (*out)[kX8]) {
    const int64_t pd = prefetch_distance();
    const BlockQ4_0x8* wb[G];
    for (int g = 0; g < G; ++g) wb[g] = reinterpret_cast<const BlockQ4_0x8*>(group + g * gstride);
    const ActQ8Block* ar[T];
    for (int t = 0; t < T; ++t) ar[t] = reinterpret_cast<const ActQ8Block*>(act + t * as);
    __m256 acc[G][T];
    QF_UNROLL
    for (int g = 0; g < G; ++g)
      QF_UNROLL
      for (int t = 0; t < T; ++t) acc[g][t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t b = 0; b < cols / gg::kQK; ++b) {
      QF_UNROLL
      for (int g = 0; g < G; ++g) {
        prefetch_record(reinterpret_cast<const uint8_t*>(wb[g] + b), sizeof(BlockQ4_0x8), pd);
        Acc4 s[T], s_hi[T];  // low and high nibbles' chains
        for (int c = 0; c < 4; ++c) {
          __m256i lo, hi;
          Acc4::nibbles(load(wb[g][b].qs + 32 * c), m4, &lo, &hi);
          QF_UNROLL
          for (int t = 0; t < T; ++t) {
            s[t].add(lo, bcast4(ar[t][b].qs + 4 * c));
            s_hi[t].add(hi, bcast4(ar[t][b].qs + 16 + 4 * c));
          }
        }
        const __m256 d = f16x8(wb[g][b].d);
        const __m256 d8 = _mm256_mul_ps(d, _mm256_set1_ps(8.0f));  // exact: d (8 s) == (8 d) s
        QF_UNROLL
        for (int t = 0; t < T; ++t) {
          s[t].merge_high(s_hi[t]);
          const __m256 dd = _mm256_mul_ps(d, _mm256_set1_ps(ar[t][b].d));
          acc[g][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t].sum()), dd, acc[g][t]);
          acc[g][t] = _mm256_fnmadd_ps(d8, _mm256_set1_ps(ar[t][b].s), acc[g][t]);
        }
      }
    }
    QF_UNROLL
    for (int g = 0; g < G; ++g)
      QF_UNROLL
      for (int t = 0; t < T; ++t) _mm256_storeu_ps(out[g * T + t], acc[g][t]);
  }
};

// Signed x signed through maddubs: |w| (u8; -128 -> 128) times a with w's sign (sign_epi8).
struct Q8_0 {
  static constexpr int kMaxT = 4;
  template <int T, int G>
  static void run(const uint8_t* group, size_t gstride, int64_t cols, const uint8_t* act, size_t as,
                  float (*out)[kX8]) {
    const int64_t pd = prefetch_distance();
    const BlockQ8_0x8* wb[G];
    for (int g = 0; g < G; ++g) wb[g] = reinterpret_cast<const BlockQ8_0x8*>(group + g * gstride);
    const ActQ8Block* ar[T];
    for (int t = 0; t < T; ++t) ar[t] = reinterpret_cast<const ActQ8Block*>(act + t * as);
    __m256 acc[G][T];
    QF_UNROLL
    for (int g = 0; g < G; ++g)
      QF_UNROLL
      for (int t = 0; t < T; ++t) acc[g][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < cols / gg::kQK; ++b) {
      QF_UNROLL
      for (int g = 0; g < G; ++g) {
        prefetch_record(reinterpret_cast<const uint8_t*>(wb[g] + b), sizeof(BlockQ8_0x8), pd);
        Acc8 s[2][T];  // even and odd chunks' chains
        for (int c = 0; c < 8; ++c) {
          const __m256i q = load(wb[g][b].qs + 32 * c);
          const __m256i u = _mm256_abs_epi8(q);
          QF_UNROLL
          for (int t = 0; t < T; ++t) s[c & 1][t].add(u, _mm256_sign_epi8(bcast4(ar[t][b].qs + 4 * c), q));
        }
        const __m256 d = f16x8(wb[g][b].d);
        QF_UNROLL
        for (int t = 0; t < T; ++t) {
          s[0][t].merge(s[1][t]);
          const __m256 dd = _mm256_mul_ps(d, _mm256_set1_ps(ar[t][b].d));
          acc[g][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[0][t].sum()), dd, acc[g][t]);
        }
      }
    }
    QF_UNROLL
    for (int g = 0; g < G; ++g)
      QF_UNROLL
      for (int t = 0; t < T; ++t) _mm256_storeu_ps(out[g * T + t], acc[g][t]);
  }
};

// Per super-block: d d_a sum_j sc_j (q . a)_j - dmin d_a sum_j m_j (sum a)_j, the second from the
// activations' per-16 sums (bsums).
struct Q4_K {
  static constexpr int kMaxT = 2;
  template <int T, int G>
  static void run(const uint8_t* group, size_t gstride, int64_t cols, const uint8_t* act, size_t as,
                  float (*out)[kX8]) {
    const int64_t pd = prefetch_distance();
    const BlockQ4_Kx8* wb[G];
    for (int g = 0; g < G; ++g) wb[g] = reinterpret_cast<const BlockQ4_Kx8*>(group + g * gstride);
    const gg::BlockQ8_K* ar[T];
    for (int t = 0; t < T; ++t) ar[t] = reinterpret_cast<const gg::BlockQ8_K*>(act + t * as);
    __m256 acc[G][T];
    QF_UNROLL
    for (int g = 0; g < G; ++g)
      QF_UNROLL
      for (int t = 0; t < T; ++t) acc[g][t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t b = 0; b < cols / gg::kQK_K; ++b) {
      // Activation sums of sub-blocks (2p, 2p + 1) as s16 pairs (bsums added pairwise by madd; at
      // most 2 x 16 x 127 each, so packs does not saturate), shared by the G groups.
      alignas(16) int32_t pairs[T][4];
      QF_UNROLL
      for (int t = 0; t < T; ++t) {
        const auto* bs = reinterpret_cast<const __m128i*>(ar[t][b].bsums);
        const __m128i one = _mm_set1_epi16(1);
        _mm_store_si128(reinterpret_cast<__m128i*>(pairs[t]),
                        _mm_packs_epi32(_mm_madd_epi16(_mm_loadu_si128(bs), one), _mm_madd_epi16(_mm_loadu_si128(bs + 1), one)));
      }
      QF_UNROLL
      for (int g = 0; g < G; ++g) prefetch_record(reinterpret_cast<const uint8_t*>(wb[g] + b), sizeof(BlockQ4_Kx8), pd);
      __m256i isum[G][T];
      QF_UNROLL
      for (int g = 0; g < G; ++g)
        QF_UNROLL
        for (int t = 0; t < T; ++t) isum[g][t] = _mm256_setzero_si256();
      // Groups inside the column loop: each activation broadcast serves the G groups.
      for (int h = 0; h < 4; ++h) {
        Acc4 lo[G][T], hi[G][T];
        for (int c = 0; c < 8; ++c) {
          __m256i al[T], ah[T];
          QF_UNROLL
          for (int t = 0; t < T; ++t) {
            al[t] = bcast4(ar[t][b].qs + 64 * h + 4 * c);
            ah[t] = bcast4(ar[t][b].qs + 64 * h + 32 + 4 * c);
          }
          QF_UNROLL
          for (int g = 0; g < G; ++g) {
            __m256i l, u;
            Acc4::nibbles(load(wb[g][b].qs + 256 * h + 32 * c), m4, &l, &u);
            QF_UNROLL
            for (int t = 0; t < T; ++t) {
              lo[g][t].add(l, al[t]);
              hi[g][t].add(u, ah[t]);
            }
          }
        }
        QF_UNROLL
        for (int g = 0; g < G; ++g) {
          __m256i sl, sh;
          Acc4::scale_operands(wb[g][b].scales + 16 * h, &sl, &sh);
          QF_UNROLL
          for (int t = 0; t < T; ++t)
            isum[g][t] = _mm256_add_epi32(isum[g][t], _mm256_add_epi32(lo[g][t].scaled(sl), hi[g][t].scaled_high(sh)));
        }
      }
      QF_UNROLL
      for (int g = 0; g < G; ++g) {
        const BlockQ4_Kx8& w = wb[g][b];
        const __m256 d = f16x8(w.d), dmin = f16x8(w.dmin);
        QF_UNROLL
        for (int t = 0; t < T; ++t) {
          // Each lane: [min of sub-block 2p, min of 2p + 1] (s16) . [their activation sums].
          __m256i msum = _mm256_setzero_si256();
          for (int p = 0; p < 4; ++p) {
            const __m256i mn = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.mins + 16 * p)));
            msum = _mm256_add_epi32(msum, _mm256_madd_epi16(mn, _mm256_set1_epi32(pairs[t][p])));
          }
          const __m256 da = _mm256_set1_ps(ar[t][b].d);
          acc[g][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[g][t]), _mm256_mul_ps(d, da), acc[g][t]);
          acc[g][t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dmin, da), acc[g][t]);
        }
      }
    }
    QF_UNROLL
    for (int g = 0; g < G; ++g)
      QF_UNROLL
      for (int t = 0; t < T; ++t) _mm256_storeu_ps(out[g * T + t], acc[g][t]);
  }
};

// sum_j d sc_j (q - 32) . a = d (sum_j sc_j (q . a)_j - 32 sum_j sc_j (sum a)_j), sub-blocks of 16,
// the second from the activations' bsums. q (6 bits) is rebuilt from ql's nibble and qh's 2 bits
// per byte; maddubs pairs are at most 2 * 63 * 127 = 16002, so two chunks add in s16.
struct Q6_K {
  static constexpr int kMaxT = 4;
  // Signed scales of the 8 rows, sign-extended to s16: lane i = (v[a(i)], v[b(i)]) for the byte
  // indices the mask puts in each s16's high byte.
  static __m256i scale_pairs(__m256i bytes, __m256i mask) {
    return _mm256_srai_epi16(_mm256_shuffle_epi8(bytes, mask), 8);
  }

  template <int T, int G>
  static void run(const uint8_t* group, size_t gstride, int64_t cols, const uint8_t* act, size_t as,
                  float (*out)[kX8]) {
    const int64_t pd = prefetch_distance();
    const BlockQ6_Kx8* wb[G];
    for (int g = 0; g < G; ++g) wb[g] = reinterpret_cast<const BlockQ6_Kx8*>(group + g * gstride);
    const gg::BlockQ8_K* ar[T];
    for (int t = 0; t < T; ++t) ar[t] = reinterpret_cast<const gg::BlockQ8_K*>(act + t * as);
    __m256 acc[G][T];
    QF_UNROLL
    for (int g = 0; g < G; ++g)
      QF_UNROLL
      for (int t = 0; t < T; ++t) acc[g][t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    // Lane i: (byte i, byte i) for one sub-block's scale; (byte i, byte 8 + i) for the pair of
    // sub-blocks the offset term multiplies with the bsum pairs.
    const __m256i dup_lo = _mm256_setr_epi8(-1, 0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3,  //
                                            -1, 4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7);
    const __m256i pair = _mm256_setr_epi8(-1, 0, -1, 8, -1, 1, -1, 9, -1, 2, -1, 10, -1, 3, -1, 11,  //
                                          -1, 4, -1, 12, -1, 5, -1, 13, -1, 6, -1, 14, -1, 7, -1, 15);
    for (int64_t b = 0; b < cols / gg::kQK_K; ++b) {
      // bsums of sub-blocks (2p, 2p + 1) as s16 pairs, shared by the G groups.
      int32_t bpairs[T][8];
      for (int t = 0; t < T; ++t)
        for (int p = 0; p < 8; ++p)
          bpairs[t][p] = static_cast<int32_t>(static_cast<uint16_t>(ar[t][b].bsums[2 * p]) |
                                              (uint32_t{static_cast<uint16_t>(ar[t][b].bsums[2 * p + 1])} << 16));
      QF_UNROLL
      for (int g = 0; g < G; ++g) {
        const BlockQ6_Kx8& w = wb[g][b];
        prefetch_record(reinterpret_cast<const uint8_t*>(&w), sizeof(BlockQ6_Kx8), pd);
        __m256i isum[T], osum[T];
        for (int t = 0; t < T; ++t) isum[t] = osum[t] = _mm256_setzero_si256();
        for (int n = 0; n < 2; ++n)
          // Chunks c in [4 half, 4 half + 4) of 4 columns: sub-blocks 8n + 2q + half, q = 0..3.
          for (int half = 0; half < 2; ++half) {
            // Scales of sub-blocks 8n + 2q + half, q = 0..3 (bytes 8 (8n + 2q + half) + i).
            __m256i sc[4];
            for (int q = 0; q < 4; ++q) {
              const __m256i v = _mm256_broadcastsi128_si256(
                  _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.scales + 8 * (8 * n + 2 * q + half))));
              sc[q] = scale_pairs(v, dup_lo);
            }
            for (int cp = 0; cp < 2; ++cp) {
              __m256i s16[4][T];
              for (int q = 0; q < 4; ++q)
                for (int t = 0; t < T; ++t) s16[q][t] = _mm256_setzero_si256();
              for (int cc = 0; cc < 2; ++cc) {
                const int c = 4 * half + 2 * cp + cc;
                const __m256i hb = load(w.qh + 256 * n + 32 * c);
                const __m256i l0 = load(w.ql + 512 * n + 32 * c), l1 = load(w.ql + 512 * n + 256 + 32 * c);
                const __m256i q6[4] = {
                    _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30)),
                    _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                    _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30))};
                for (int q = 0; q < 4; ++q)
                  for (int t = 0; t < T; ++t)
                    s16[q][t] = _mm256_add_epi16(
                        s16[q][t], _mm256_maddubs_epi16(q6[q], bcast4(ar[t][b].qs + 128 * n + 32 * q + 4 * c)));
              }
              for (int q = 0; q < 4; ++q)
                for (int t = 0; t < T; ++t) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[q][t], sc[q]));
            }
          }
        for (int p = 0; p < 8; ++p) {
          const __m256i v =
              _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales + 16 * p)));
          const __m256i scp = scale_pairs(v, pair);
          for (int t = 0; t < T; ++t)
            osum[t] = _mm256_add_epi32(osum[t], _mm256_madd_epi16(scp, _mm256_set1_epi32(bpairs[t][p])));
        }
        // The block's exact integer sum (|isum| < 2^28.1, |32 osum| < 2^27.1), then one FMA.
        const __m256 d = f16x8(w.d);
        for (int t = 0; t < T; ++t) {
          const __m256i sum = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(osum[t], 5));
          acc[g][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(d, _mm256_set1_ps(ar[t][b].d)), acc[g][t]);
        }
      }
    }
    QF_UNROLL
    for (int g = 0; g < G; ++g)
      QF_UNROLL
      for (int t = 0; t < T; ++t) _mm256_storeu_ps(out[g * T + t], acc[g][t]);
  }
};

}  // namespace x8
}  // namespace
}  // namespace qforge::kernels
