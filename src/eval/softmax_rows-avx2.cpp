// AVX2 + FMA row kernels (see softmax_rows.h): four doubles at a time, with a polynomial exp
// (Cody-Waite reduction by ln 2, degree-13 Taylor polynomial on |r| <= ln2/2: truncation error
// below 5e-18 relative, so about 1 ulp after rounding). Tails use std::exp.
#include <immintrin.h>

#include <cmath>
#include <limits>

#include "eval/softmax_rows.h"

namespace qforge::eval_detail {
namespace {

// exp(x) for x <= 0 (x - max of a row); x < -708 (including -inf) gives 0.
inline __m256d exp_nonpositive(__m256d x) {
  const __m256d lo = _mm256_set1_pd(-708.0);
  const __m256d underflow = _mm256_cmp_pd(x, lo, _CMP_LT_OQ);
  x = _mm256_max_pd(x, lo);
  const __m256d t = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(1.4426950408889634)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // fdlibm's split of ln 2: t * kLn2Hi is exact for |t| < 2^11.
  __m256d r = _mm256_fnmadd_pd(t, _mm256_set1_pd(6.93147180369123816490e-01), x);
  r = _mm256_fnmadd_pd(t, _mm256_set1_pd(1.90821492927058770002e-10), r);
  // Horner over 1/k!, k = 13 .. 0.
  __m256d p = _mm256_set1_pd(1.0 / 6227020800.0);
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 479001600.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 39916800.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 3628800.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 362880.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 40320.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 5040.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 720.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 120.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 24.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 6.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(0.5));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
  // 2^t from the exponent bits; t is in [-1022, 0].
  const __m128i ti = _mm256_cvtpd_epi32(t);
  const __m256i bits = _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(ti), _mm256_set1_epi64x(1023)), 52);
  const __m256d result = _mm256_mul_pd(p, _mm256_castsi256_pd(bits));
  return _mm256_andnot_pd(underflow, result);
}

inline double hsum(__m256d v) {
  const __m128d lo = _mm256_castpd256_pd128(v), hi = _mm256_extractf128_pd(v, 1);
  const __m128d s = _mm_add_pd(lo, hi);
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// Max and first argmax; NaN anywhere gives max = NaN.
void row_max(const float* x, int64_t n, SoftmaxRow* s) {
  if (n <= 0) {
    s->max = -std::numeric_limits<double>::infinity();
    return;
  }
  __m256 vmax = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 nan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    vmax = _mm256_max_ps(vmax, v);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float m = lanes[0];
  for (int l = 1; l < 8; ++l) m = lanes[l] > m ? lanes[l] : m;
  bool any_nan = _mm256_movemask_ps(nan) != 0;
  for (; i < n; ++i) {
    any_nan |= std::isnan(x[i]);
    m = x[i] > m ? x[i] : m;
  }
  if (any_nan) {
    s->max = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  s->max = m;
  for (int64_t j = 0; j < n; ++j)
    if (x[j] == m) {
      s->argmax = j;
      break;
    }
}

}  // namespace

SoftmaxRow softmax_row_avx2(const float* x, int64_t n) {
  SoftmaxRow s;
  row_max(x, n, &s);
  if (!std::isfinite(s.max)) {
    s.sum = std::isnan(s.max) ? s.max : (s.max > 0 ? std::numeric_limits<double>::infinity() : 0.0);
    return s;
  }
  const __m256d vm = _mm256_set1_pd(s.max);
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256d a = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), vm);
    const __m256d b = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)), vm);
    acc0 = _mm256_add_pd(acc0, exp_nonpositive(a));
    acc1 = _mm256_add_pd(acc1, exp_nonpositive(b));
  }
  double sum = hsum(_mm256_add_pd(acc0, acc1));
  for (; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - s.max);
  s.sum = sum;
  return s;
}

KlRow kl_row_avx2(const float* r, const float* x, int64_t n) {
  KlRow k;
  row_max(r, n, &k.sm);
  if (!std::isfinite(k.sm.max)) {
    k.sm.sum = std::isnan(k.sm.max) ? k.sm.max : (k.sm.max > 0 ? std::numeric_limits<double>::infinity() : 0.0);
    return k;
  }
  const __m256d vm = _mm256_set1_pd(k.sm.max);
  __m256d sum0 = _mm256_setzero_pd(), sum1 = _mm256_setzero_pd();
  __m256d cr0 = _mm256_setzero_pd(), cr1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256d ra = _mm256_cvtps_pd(_mm_loadu_ps(r + i)), rb = _mm256_cvtps_pd(_mm_loadu_ps(r + i + 4));
    const __m256d xa = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), xb = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
    const __m256d ea = exp_nonpositive(_mm256_sub_pd(ra, vm)), eb = exp_nonpositive(_mm256_sub_pd(rb, vm));
    sum0 = _mm256_add_pd(sum0, ea);
    sum1 = _mm256_add_pd(sum1, eb);
    // e * (r - x); where e == 0 the difference may be inf - inf: mask it out.
    const __m256d da = _mm256_and_pd(_mm256_cmp_pd(ea, _mm256_setzero_pd(), _CMP_NEQ_OQ), _mm256_sub_pd(ra, xa));
    const __m256d db = _mm256_and_pd(_mm256_cmp_pd(eb, _mm256_setzero_pd(), _CMP_NEQ_OQ), _mm256_sub_pd(rb, xb));
    cr0 = _mm256_fmadd_pd(ea, da, cr0);
    cr1 = _mm256_fmadd_pd(eb, db, cr1);
  }
  double sum = hsum(_mm256_add_pd(sum0, sum1)), cross = hsum(_mm256_add_pd(cr0, cr1));
  for (; i < n; ++i) {
    const double e = std::exp(static_cast<double>(r[i]) - k.sm.max);
    sum += e;
    if (e != 0) cross += e * (static_cast<double>(r[i]) - static_cast<double>(x[i]));
  }
  k.sm.sum = sum;
  k.cross = cross;
  return k;
}

}  // namespace qforge::eval_detail
