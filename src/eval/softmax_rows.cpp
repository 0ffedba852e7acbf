// Scalar reference row kernels and the run-time dispatch (see softmax_rows.h).
#include "eval/softmax_rows.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace qforge::eval_detail {

double SoftmaxRow::lse() const { return max + std::log(sum); }

SoftmaxRow softmax_row_ref(const float* x, int64_t n) {
  SoftmaxRow s;
  if (n <= 0) {
    s.max = -std::numeric_limits<double>::infinity();
    return s;
  }
  s.max = x[0];
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > s.max) {
      s.max = x[i];
      s.argmax = i;
    }
  if (std::isinf(s.max)) {  // all -inf (sum 0, lse -inf) or a +inf logit (lse +inf)
    s.sum = s.max > 0 ? std::numeric_limits<double>::infinity() : 0.0;
    return s;
  }
  double sum = 0;  // NaN anywhere (or a NaN max) makes this NaN
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - s.max);
  s.sum = sum;
  return s;
}

KlRow kl_row_ref(const float* r, const float* x, int64_t n) {
  KlRow k;
  k.sm = softmax_row_ref(r, n);
  if (std::isinf(k.sm.max)) return k;
  double cross = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = std::exp(static_cast<double>(r[i]) - k.sm.max);
    if (e != 0) cross += e * (static_cast<double>(r[i]) - static_cast<double>(x[i]));
  }
  k.cross = cross;
  return k;
}

namespace {
bool use_avx2() {
  static const bool yes = [] {
    const char* level = std::getenv("QFORGE_SIMD_LEVEL");
    if (level != nullptr && std::strcmp(level, "scalar") == 0) return false;
    return have_avx2();
  }();
  return yes;
}
}  // namespace

bool have_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

SoftmaxRow softmax_row(const float* x, int64_t n) { return use_avx2() ? softmax_row_avx2(x, n) : softmax_row_ref(x, n); }
KlRow kl_row(const float* r, const float* x, int64_t n) { return use_avx2() ? kl_row_avx2(r, x, n) : kl_row_ref(r, x, n); }

double kl_from_rows(const KlRow& ref, const SoftmaxRow& model) {
  const double kl = ref.cross / ref.sm.sum - ref.sm.lse() + model.lse();
  return kl > 0 ? kl : (std::isnan(kl) ? kl : 0.0);
}

}  // namespace qforge::eval_detail
