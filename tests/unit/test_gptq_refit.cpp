// GPTQ's least-squares scale refit (GptqOptions::refit): with every code and zero-point fixed, each
// row's group scales are re-solved for the layer objective (w - ŵ)ᵀ H (w - ŵ). Checked here: it never
// raises the objective against the plain sweep and lowers it on some scheme, leaves codes and
// zero-points alone, is thread-count independent, agrees with an independent least-squares solve
// (a QR of the data-space design matrix, not the normal equations) to within the f16 rounding of
// the scales, and rejects the schemes it does not apply to. Further passes (sweep again on the refit
// scales, refit again, each row keeping its best) never raise a row's objective.
#include <gtest/gtest.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <cmath>
#include <random>

#include "gptq_test_layers.h"
#include "qforge/ptq.h"
#include "test_support.h"

namespace qforge {
namespace {
using test::cli_path;
using test::run_command;

using Layer = test::GptqLayer;

// 12 latent factors (the data these tests were written against).
Layer make_layer(int64_t rows, int64_t cols, int64_t tokens, uint32_t seed) {
  return test::make_gptq_layer(rows, cols, tokens, seed, 12);
}

// The damped Hessian the sweep used: 2/n XᵀX + damp * mean(diag) * I (no dead inputs here).
std::vector<double> damped_hessian(const Layer& L, double damp) {
  const size_t C = static_cast<size_t>(L.cols);
  std::vector<double> H(C * C);
  double mean = 0;
  for (size_t i = 0; i < C * C; ++i) H[i] = L.xtx[i] * 2.0 / static_cast<double>(L.tokens);
  for (size_t j = 0; j < C; ++j) mean += H[j * C + j];
  mean /= static_cast<double>(C);
  for (size_t j = 0; j < C; ++j) H[j * C + j] += damp * mean;
  return H;
}

// Per-row objective (w - ŵ)ᵀ H (w - ŵ), ŵ from the table's dequantization.
std::vector<double> row_objectives(const Layer& L, const QuantizedTensor& q, const std::vector<double>& H) {
  const size_t C = static_cast<size_t>(L.cols);
  std::vector<float> y(static_cast<size_t>(L.rows) * C);
  EXPECT_TRUE(dequantize(q, y.data()));
  std::vector<double> obj(static_cast<size_t>(L.rows)), e(C);
  for (int64_t r = 0; r < L.rows; ++r) {
    for (size_t j = 0; j < C; ++j) e[j] = static_cast<double>(L.w[static_cast<size_t>(r) * C + j]) - y[static_cast<size_t>(r) * C + j];
    double f = 0;
    for (size_t i = 0; i < C; ++i) {
      double hi = 0;
      for (size_t j = 0; j < C; ++j) hi += H[i * C + j] * e[j];
      f += e[i] * hi;
    }
    obj[static_cast<size_t>(r)] = f;
  }
  return obj;
}

std::vector<float> scales_f32(const QuantizedTensor& q) {
  std::vector<float> s(q.scales.size() / 2);
  EXPECT_TRUE(convert_to_f32(DType::f16, q.scales.data(), s.data(), s.size()));
  return s;
}

GptqResult run_gptq(const Layer& L, const Scheme& s, bool act_order, bool refit, int passes = 1) {
  GptqOptions o;
  o.refit_passes = passes;
  const bool clip = true;
  o.act_order = act_order;
  o.mse_clip = clip;
  o.refit = refit;
  auto r = gptq_quantize(s, L.w.data(), L.rows, L.cols, L.xtx.data(), L.tokens, o);
  EXPECT_TRUE(r.has_value()) << (r.has_value() ? "" : r.status().message());
  return r.has_value() ? std::move(*r) : GptqResult{};
}

TEST(GptqRefit, NeverRaisesTheObjectiveAndKeepsCodes) {
  int strictly_lower = 0;
  for (const int64_t cols : {256, 384}) {
    const Layer L = make_layer(24, cols, 320, static_cast<uint32_t>(cols));
    for (const char* name : {"int4-g128-asym", "int3-g128-asym", "int4-g128-sym", "int8-ch-sym"})
      for (const bool act : {false, true}) {
        SCOPED_TRACE(std::string(name) + " cols " + std::to_string(cols) + (act ? " act-order" : ""));
        const Scheme s = Scheme::parse(name).value();
        const GptqResult base = run_gptq(L, s, act, false);
        const GptqResult ref = run_gptq(L, s, act, true);
        ASSERT_EQ(base.damp_used, ref.damp_used);
        EXPECT_EQ(base.q.codes, ref.q.codes);
        EXPECT_EQ(base.q.zeros, ref.q.zeros);
        const std::vector<double> H = damped_hessian(L, base.damp_used);
        const std::vector<double> ob = row_objectives(L, base.q, H), orf = row_objectives(L, ref.q, H);
        double tb = 0, tr = 0;
        for (int64_t r = 0; r < L.rows; ++r) {
          // The refit decides on the exact change of the quadratic; this direct evaluation differs
          // from it by summation rounding only (a few ulps of the row's objective).
          const double allowed = ob[static_cast<size_t>(r)] * (1 + 1e-12);
          EXPECT_LE(orf[static_cast<size_t>(r)], allowed) << "row " << r << " refit objective " << orf[static_cast<size_t>(r)]
                                                          << " vs sweep " << ob[static_cast<size_t>(r)];
          tb += ob[static_cast<size_t>(r)];
          tr += orf[static_cast<size_t>(r)];
        }
        if (tr < tb * (1 - 1e-6)) ++strictly_lower;
        std::printf("%-15s cols %3lld act %d: objective %.6g -> %.6g (%.2f%%)\n", name, static_cast<long long>(cols),
                    act ? 1 : 0, tb, tr, 100.0 * (tr - tb) / tb);
      }
  }
  EXPECT_GT(strictly_lower, 0) << "the refit lowered the objective on no scheme";
}

// More passes: each row keeps its best pass, so the objective never exceeds the one-pass refit's.
TEST(GptqRefit, MorePassesNeverRaiseTheObjective) {
  int strictly_lower = 0;
  const Layer L = make_layer(24, 384, 320, 5);
  for (const char* name : {"int4-g128-asym", "int3-g128-asym", "int4-g128-sym"})
    for (const bool act : {false, true}) {
      SCOPED_TRACE(std::string(name) + (act ? " act-order" : ""));
      const Scheme s = Scheme::parse(name).value();
      const GptqResult one = run_gptq(L, s, act, true, 1);
      const GptqResult four = run_gptq(L, s, act, true, 4);
      EXPECT_EQ(one.q.zeros, four.q.zeros);  // zero-points come from the fixed group parameters
      const std::vector<double> H = damped_hessian(L, one.damp_used);
      const std::vector<double> o1 = row_objectives(L, one.q, H), o4 = row_objectives(L, four.q, H);
      double t1 = 0, t4 = 0;
      for (int64_t r = 0; r < L.rows; ++r) {
        EXPECT_LE(o4[static_cast<size_t>(r)], o1[static_cast<size_t>(r)] * (1 + 1e-12))
            << "row " << r << ": 4 passes " << o4[static_cast<size_t>(r)] << " vs 1 pass " << o1[static_cast<size_t>(r)];
        t1 += o1[static_cast<size_t>(r)];
        t4 += o4[static_cast<size_t>(r)];
      }
      if (t4 < t1 * (1 - 1e-6)) ++strictly_lower;
      std::printf("%-15s act %d: objective 1 pass %.6g, 4 passes %.6g (%.2f%%)\n", name, act ? 1 : 0, t1, t4,
                  100.0 * (t4 - t1) / t1);
    }
  EXPECT_GT(strictly_lower, 0) << "further passes lowered the objective on no scheme";
  GptqOptions bad;
  bad.refit = true;
  bad.refit_passes = 0;
  EXPECT_FALSE(gptq_quantize(Scheme::parse("int4-g128-asym").value(), L.w.data(), L.rows, L.cols, L.xtx.data(), L.tokens, bad)
                   .has_value());
}

TEST(GptqRefit, SameBytesForOneAndTwoThreads) {
#ifdef _OPENMP
  const Layer L = make_layer(40, 384, 256, 7);
  const int saved = omp_get_max_threads();
  for (const char* name : {"int4-g128-asym", "int4-g128-sym"}) {
    const Scheme s = Scheme::parse(name).value();
    omp_set_num_threads(1);
    const GptqResult one = run_gptq(L, s, true, true, 3);
    omp_set_num_threads(2);
    const GptqResult two = run_gptq(L, s, true, true, 3);
    omp_set_num_threads(saved);
    EXPECT_EQ(one.q.codes, two.q.codes) << name;
    EXPECT_EQ(one.q.scales, two.q.scales) << name;
    EXPECT_EQ(one.q.zeros, two.q.zeros) << name;
  }
#else
  GTEST_SKIP() << "built without OpenMP";
#endif
}

// Independent solution for one row: with H = X'ᵀ X', X' = [sqrt(2/n) X; sqrt(λ) I], the objective is
// ||X' w - (X' A) s||², solved by modified Gram-Schmidt QR of the design matrix B = X' A in long
// double. a_i = ŵ_i / s_g(i) from the sweep's own output (codes fixed by the refit).
std::vector<long double> independent_scales(const Layer& L, const QuantizedTensor& q, int64_t row, double damp) {
  const int64_t C = L.cols, G = q.groups_per_row(), gs = C / G, T = L.tokens;
  std::vector<float> y(static_cast<size_t>(L.rows * C));
  EXPECT_TRUE(dequantize(q, y.data()));
  const std::vector<float> s = scales_f32(q);
  std::vector<long double> a(static_cast<size_t>(C));
  for (int64_t i = 0; i < C; ++i)
    a[static_cast<size_t>(i)] = static_cast<long double>(y[static_cast<size_t>(row * C + i)]) / s[static_cast<size_t>(row * G + i / gs)];
  double mean = 0;
  for (int64_t j = 0; j < C; ++j) mean += L.xtx[static_cast<size_t>(j * C + j)] * 2.0 / static_cast<double>(T);
  mean /= static_cast<double>(C);
  const long double xs = std::sqrt(2.0L / T), ls = std::sqrt(static_cast<long double>(damp * mean));
  const int64_t N = T + C;
  std::vector<std::vector<long double>> B(static_cast<size_t>(G), std::vector<long double>(static_cast<size_t>(N), 0.0L));
  std::vector<long double> b(static_cast<size_t>(N), 0.0L);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < C; ++i) {
      const long double xv = xs * L.x[static_cast<size_t>(t * C + i)];
      B[static_cast<size_t>(i / gs)][static_cast<size_t>(t)] += xv * a[static_cast<size_t>(i)];
      b[static_cast<size_t>(t)] += xv * L.w[static_cast<size_t>(row * C + i)];
    }
  for (int64_t i = 0; i < C; ++i) {
    B[static_cast<size_t>(i / gs)][static_cast<size_t>(T + i)] = ls * a[static_cast<size_t>(i)];
    b[static_cast<size_t>(T + i)] = ls * L.w[static_cast<size_t>(row * C + i)];
  }
  // MGS: B = Q R, then R s = Qᵀ b.
  std::vector<std::vector<long double>> R(static_cast<size_t>(G), std::vector<long double>(static_cast<size_t>(G), 0.0L));
  std::vector<long double> qb(static_cast<size_t>(G));
  for (int64_t k = 0; k < G; ++k) {
    auto& v = B[static_cast<size_t>(k)];
    long double nrm = 0;
    for (auto e : v) nrm += e * e;
    nrm = std::sqrt(nrm);
    R[static_cast<size_t>(k)][static_cast<size_t>(k)] = nrm;
    for (auto& e : v) e /= nrm;
    for (int64_t j = k + 1; j < G; ++j) {
      long double d = 0;
      for (int64_t n = 0; n < N; ++n) d += v[static_cast<size_t>(n)] * B[static_cast<size_t>(j)][static_cast<size_t>(n)];
      R[static_cast<size_t>(k)][static_cast<size_t>(j)] = d;
      for (int64_t n = 0; n < N; ++n) B[static_cast<size_t>(j)][static_cast<size_t>(n)] -= d * v[static_cast<size_t>(n)];
    }
    long double d = 0;
    for (int64_t n = 0; n < N; ++n) d += v[static_cast<size_t>(n)] * b[static_cast<size_t>(n)];
    qb[static_cast<size_t>(k)] = d;
    for (int64_t n = 0; n < N; ++n) b[static_cast<size_t>(n)] -= d * v[static_cast<size_t>(n)];
  }
  std::vector<long double> sol(static_cast<size_t>(G));
  for (int64_t k = G - 1; k >= 0; --k) {
    long double acc = qb[static_cast<size_t>(k)];
    for (int64_t j = k + 1; j < G; ++j) acc -= R[static_cast<size_t>(k)][static_cast<size_t>(j)] * sol[static_cast<size_t>(j)];
    sol[static_cast<size_t>(k)] = acc / R[static_cast<size_t>(k)][static_cast<size_t>(k)];
  }
  return sol;
}

TEST(GptqRefit, MatchesAnIndependentLeastSquaresSolve) {
  const Layer L = make_layer(16, 384, 300, 11);
  int compared = 0;
  for (const char* name : {"int4-g128-asym", "int3-g128-asym", "int4-g128-sym"})
    for (const bool act : {false, true}) {
      SCOPED_TRACE(std::string(name) + (act ? " act-order" : ""));
      const Scheme s = Scheme::parse(name).value();
      const GptqResult base = run_gptq(L, s, act, false);
      const GptqResult ref = run_gptq(L, s, act, true);
      const std::vector<float> sb = scales_f32(base.q), sr = scales_f32(ref.q);
      const int64_t G = ref.q.groups_per_row();
      for (int64_t r = 0; r < L.rows; ++r) {
        bool changed = false;
        for (int64_t g = 0; g < G; ++g) changed |= sb[static_cast<size_t>(r * G + g)] != sr[static_cast<size_t>(r * G + g)];
        if (!changed) continue;  // kept: covered by the objective test
        const std::vector<long double> sol = independent_scales(L, ref.q, r, ref.damp_used);
        for (int64_t g = 0; g < G; ++g) {
          // Each scale is the exact optimum rounded to nearest f16: within half an f16 ulp of it
          // (2^-11 relative for normal f16), plus the double solve's rounding (1e-9 relative allows
          // condition numbers up to ~1e7).
          const double opt = static_cast<double>(sol[static_cast<size_t>(g)]);
          const double got = sr[static_cast<size_t>(r * G + g)];
          const double ulp = std::ldexp(1.0, std::ilogb(opt) - 10);
          const double allowed = 0.5 * ulp * (1 + 1e-6) + 1e-9 * std::fabs(opt);
          EXPECT_LE(std::fabs(got - opt), allowed) << "row " << r << " group " << g << ": refit " << got << " vs LS " << opt;
        }
        ++compared;
      }
    }
  EXPECT_GT(compared, 0) << "no row took a refit scale";
}

TEST(GptqRefit, RejectsOtherSchemes) {
  const Layer L = make_layer(8, 256, 64, 3);
  GptqOptions o;
  o.refit = true;
  for (const char* name : {"nf4", "int4-tensor-sym", "fp4-g64"}) {
    const Scheme s = Scheme::parse(name).value();
    EXPECT_FALSE(gptq_refit_supports(s)) << name;
    auto r = gptq_quantize(s, L.w.data(), L.rows, L.cols, L.xtx.data(), L.tokens, o);
    ASSERT_FALSE(r.has_value()) << name;
    EXPECT_NE(r.status().message().find("--gptq-refit"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(s.name()), std::string::npos) << r.status().message();
  }
  EXPECT_TRUE(gptq_refit_supports(Scheme::parse("int4-g128-asym").value()));
  EXPECT_TRUE(gptq_refit_supports(Scheme::parse("int8-ch-sym").value()));
}

TEST(GptqRefit, CliNamesTheOptionAndScheme) {
  std::string out;
  const std::string base = cli_path() + " quantize /nonexistent-model --calib /nonexistent.txt --method gptq --gptq-refit";
  EXPECT_NE(run_command(base + " --scheme nf4 --out /nonexistent/x.safetensors", &out), 0);
  EXPECT_NE(out.find("--gptq-refit"), std::string::npos) << out;
  EXPECT_NE(out.find("nf4"), std::string::npos) << out;
  out.clear();
  EXPECT_NE(run_command(base + " --format gguf --type Q4_K_M --out /nonexistent/x.gguf", &out), 0);
  EXPECT_NE(out.find("--gptq-refit"), std::string::npos) << out;
  out.clear();
  EXPECT_NE(run_command(cli_path() + " quantize /nonexistent-model --gptq-refit --scheme int4-g128-asym --out /nonexistent/x.safetensors", &out), 0);
  EXPECT_NE(out.find("--gptq-refit"), std::string::npos) << out;
}

}  // namespace
}  // namespace qforge
