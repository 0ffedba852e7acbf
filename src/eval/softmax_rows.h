// Row kernels of the evaluator: the softmax normaliser of a logits row and the cross term of
// KL(P_ref || P_model), accumulated in double. softmax_row_ref / kl_row_ref are the specification
// (scalar, std::exp in double); the AVX2 versions (softmax_rows-avx2.cpp) use a degree-13
// polynomial exp that is accurate to about 1 ulp, and dispatch picks them at run time.
#pragma once

#include <cstdint>

namespace qforge::eval_detail {

// Softmax of one row of logits x[0..n): max, argmax (first index of the max) and
// sum = sum_i exp(x_i - max), so log-sum-exp = max + log(sum).
struct SoftmaxRow {
  double max = 0;
  double sum = 0;
  int64_t argmax = 0;
  double lse() const;
};

// The reference row r (logits or log-probabilities) against the model row x:
//   sm = softmax_row(r), cross = sum_i exp(r_i - max_r) * (r_i - x_i).
// Then KL(P_r || P_x) = cross / sm.sum - lse_r + lse_x (P_r sums to one).
struct KlRow {
  SoftmaxRow sm;
  double cross = 0;
};

SoftmaxRow softmax_row_ref(const float* x, int64_t n);
KlRow kl_row_ref(const float* r, const float* x, int64_t n);

bool have_avx2();
SoftmaxRow softmax_row_avx2(const float* x, int64_t n);
KlRow kl_row_avx2(const float* r, const float* x, int64_t n);

// Dispatch: AVX2 when the CPU has it (and QFORGE_SIMD_LEVEL is not "scalar"), else the reference.
SoftmaxRow softmax_row(const float* x, int64_t n);
KlRow kl_row(const float* r, const float* x, int64_t n);

// KL(P_r || P_x) from the two rows' pieces, clamped at 0 (rounding can push identical rows a hair
// below).
double kl_from_rows(const KlRow& ref, const SoftmaxRow& model);

}  // namespace qforge::eval_detail
