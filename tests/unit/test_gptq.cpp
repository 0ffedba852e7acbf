// GPTQ on synthetic layers: it lowers the output error against round-to-nearest on the inputs it
// was calibrated on, degenerates to round-to-nearest when inputs are uncorrelated, keeps act-order
// groups' parameters static and contiguous, handles dead inputs and raises the dampening when the
// Cholesky factorisation fails. Into GGUF blocks: the code writers invert the table's encoders,
// and GPTQ with the blocks' scales fixed before the sweep beats the blocks' own (importance-
// weighted) search.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "formats/gguf_codes.h"
#include "gptq_test_layers.h"
#include "qforge/ptq.h"

namespace qforge {
namespace {

using Layer = test::GptqLayer;

Layer make_layer(int64_t rows, int64_t cols, int64_t tokens, uint32_t seed, int64_t dead_col = -1) {
  return test::make_gptq_layer(rows, cols, tokens, seed, 16, dead_col);
}

// Σ over tokens and outputs of (x·w - x·q)².
double output_error(const Layer& L, const QuantizedTensor& q) {
  std::vector<float> dq(static_cast<size_t>(L.rows * L.cols));
  EXPECT_TRUE(dequantize(q, dq.data()));
  double e = 0;
  for (int64_t t = 0; t < L.tokens; ++t)
    for (int64_t r = 0; r < L.rows; ++r) {
      double d = 0;
      for (int64_t c = 0; c < L.cols; ++c)
        d += static_cast<double>(L.x[static_cast<size_t>(t * L.cols + c)]) *
             (L.w[static_cast<size_t>(r * L.cols + c)] - dq[static_cast<size_t>(r * L.cols + c)]);
      e += d * d;
    }
  return e;
}

TEST(Gptq, LowersOutputErrorAgainstRtn) {
  const Layer L = make_layer(48, 256, 1024, 1);
  for (const char* name : {"int4-g64-asym", "int3-g64-asym", "int4-g64-sym", "int4-ch-asym"}) {
    const Scheme s = Scheme::parse(name).value();
    auto rtn = quantize(s, L.w.data(), L.rows, L.cols);
    ASSERT_TRUE(rtn.has_value());
    const double e_rtn = output_error(L, *rtn);
    for (bool act_order : {false, true}) {
      GptqOptions o;
      o.act_order = act_order;
      o.block_size = 64;  // several lazy blocks
      auto g = gptq_quantize(s, L.w.data(), L.rows, L.cols, L.xtx.data(), L.tokens, o);
      ASSERT_TRUE(g.has_value()) << g.status().message();
      EXPECT_TRUE(g->warnings.empty());
      const double e = output_error(L, g->q);
      // GPTQ's whole point: on correlated inputs it should remove a large share of the error.
      EXPECT_LT(e, 0.85 * e_rtn) << name << (act_order ? " act-order" : "") << ": GPTQ " << e << " vs RTN " << e_rtn;
    }
  }
}

const char* const kGgufSchemes[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"};

TEST(GptqGguf, CodeWritersInvertTheEncoders) {
  // Re-derive every element's code of table-quantized blocks from the decoded values (nearest
  // level of its sub-block, found by probing with the code writer), write the codes back: the
  // block bytes must come out exactly as the encoder wrote them.
  const Layer L = make_layer(3, 256, 8, 7);
  for (const char* name : kGgufSchemes) {
    const Scheme s = Scheme::parse(name).value();
    const formats::GgufCodeLayout* layout = formats::gguf_code_layout(s.format);
    ASSERT_NE(layout, nullptr) << name;
    auto q = quantize(s, L.w.data(), L.rows, L.cols);
    ASSERT_TRUE(q.has_value()) << name;
    std::vector<float> y(static_cast<size_t>(L.rows * L.cols));
    ASSERT_TRUE(dequantize(*q, y.data()));
    const size_t bb = q->codes.size() / static_cast<size_t>(L.rows * L.cols / layout->block);
    QuantizedTensor probe = *q;
    std::vector<uint8_t> codes(static_cast<size_t>(L.rows * L.cols)), same(static_cast<size_t>(layout->block));
    std::vector<double> best(codes.size(), 1e300);
    std::vector<int> matches(codes.size(), 0);
    std::vector<float> out(y.size());
    for (int c = 0; c < layout->levels; ++c) {
      std::fill(same.begin(), same.end(), static_cast<uint8_t>(c));
      for (size_t b = 0; b < probe.codes.size() / bb; ++b) layout->set_codes(probe.codes.data() + b * bb, same.data());
      ASSERT_TRUE(dequantize(probe, out.data()));
      for (size_t i = 0; i < y.size(); ++i) {
        const double d = std::fabs(static_cast<double>(out[i]) - y[i]);
        if (d == 0.0) ++matches[i];
        if (d < best[i]) best[i] = d, codes[i] = static_cast<uint8_t>(c);
      }
    }
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(best[i], 0.0) << name << " element " << i;
    QuantizedTensor rebuilt = probe;
    for (size_t b = 0; b < rebuilt.codes.size() / bb; ++b)
      layout->set_codes(rebuilt.codes.data() + b * bb, codes.data() + b * static_cast<size_t>(layout->block));
    std::vector<float> y2(y.size());
    ASSERT_TRUE(dequantize(rebuilt, y2.data()));
    EXPECT_EQ(y, y2) << name;
    // Codes that decode alike (a zero sub-block scale) may differ, the values may not; where the
    // decoded values pin every code, the bytes match.
    if (std::all_of(matches.begin(), matches.end(), [](int m) { return m == 1; })) {
      EXPECT_TRUE(rebuilt.codes == q->codes) << name;
    }
  }
  EXPECT_EQ(formats::gguf_code_layout(FormatId::gguf_iq4_nl), nullptr);
  EXPECT_FALSE(gptq_supports(Scheme::parse("iq4_nl").value()));
  EXPECT_FALSE(gptq_supports(Scheme::parse("tq1_0").value()));
}

TEST(GptqGguf, LowersOutputErrorAgainstTheBlockSearch) {
  // Against the table's block search without importance (RTN-GGUF) and with the Hessian diagonal
  // as importance (what an imatrix gives): GPTQ with fixed block scales must beat both.
  const Layer L = make_layer(24, 512, 1024, 3);
  std::vector<float> diag(static_cast<size_t>(L.cols));
  for (int64_t j = 0; j < L.cols; ++j) diag[static_cast<size_t>(j)] = static_cast<float>(L.xtx[static_cast<size_t>(j * L.cols + j)]);
  for (const char* name : kGgufSchemes) {
    const Scheme s = Scheme::parse(name).value();
    ASSERT_TRUE(gptq_supports(s)) << name;
    auto rtn = quantize(s, L.w.data(), L.rows, L.cols);
    ASSERT_TRUE(rtn.has_value()) << name;
    QuantizeOptions qo;
    qo.importance = diag.data();
    qo.importance_size = diag.size();
    auto imx = quantize(s, L.w.data(), L.rows, L.cols, qo);
    ASSERT_TRUE(imx.has_value()) << name;
    const double e_rtn = output_error(L, *rtn), e_imx = output_error(L, *imx);
    for (bool act_order : {false, true}) {
      GptqOptions o;
      o.act_order = act_order;
      auto g = gptq_quantize(s, L.w.data(), L.rows, L.cols, L.xtx.data(), L.tokens, o);
      ASSERT_TRUE(g.has_value()) << name << ": " << g.status().message();
      EXPECT_EQ(g->q.scheme, s);
      EXPECT_EQ(g->q.codes.size(), rtn->codes.size()) << name;
      EXPECT_TRUE(g->q.scales.empty() && g->q.zeros.empty());
      const double e = output_error(L, g->q);
      EXPECT_LT(e, 0.85 * std::min(e_rtn, e_imx)) << name << (act_order ? " act-order" : "") << ": GPTQ " << e
                                                   << " vs block search " << e_rtn << ", with importance " << e_imx;
    }
  }
}

TEST(Gptq, MseClipLowersOutputErrorOnOutliers) {
  // The clip search keeps ratio 1 unless a smaller one lowers Σ h (w - q)²; on weights with
  // outliers, where clipping pays most, GPTQ on the clipped grids must beat GPTQ on the plain ones.
  Layer L = make_layer(32, 256, 1024, 5);
  for (size_t i = 0; i < L.w.size(); i += 37) L.w[i] *= 6.0f;  // outliers
  for (const char* name : {"int3-g64-asym", "int4-g64-asym", "q4_0", "q3_k"}) {
    const Scheme s = Scheme::parse(name).value();
    GptqOptions o;
    auto plain = gptq_quantize(s, L.w.data(), L.rows, L.cols, L.xtx.data(), L.tokens, o);
    o.mse_clip = true;
    auto clip = gptq_quantize(s, L.w.data(), L.rows, L.cols, L.xtx.data(), L.tokens, o);
    ASSERT_TRUE(plain.has_value() && clip.has_value()) << name;
    const double e_plain = output_error(L, plain->q), e_clip = output_error(L, clip->q);
    EXPECT_LT(e_clip, e_plain) << name << ": with MSE clipping " << e_clip << " vs without " << e_plain;
  }
}

TEST(Gptq, UncorrelatedInputsGiveRoundToNearest) {
  // H diagonal: no error can be compensated, so every code is the table's nearest code.
  const int64_t rows = 16, cols = 128;
  std::mt19937 rng(3);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = n01(rng);
  std::vector<double> h(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t i = 0; i < cols; ++i) h[static_cast<size_t>(i * cols + i)] = 1.0 + static_cast<double>(i % 7);
  for (const char* name : {"int4-g32-asym", "int3-g64-sym", "int8-ch-sym", "nf4"}) {
    const Scheme s = Scheme::parse(name).value();
    auto rtn = quantize(s, w.data(), rows, cols);
    ASSERT_TRUE(rtn.has_value());
    for (bool act_order : {false, true}) {
      GptqOptions o;
      o.act_order = act_order;
      auto g = gptq_quantize(s, w.data(), rows, cols, h.data(), 10, o);
      ASSERT_TRUE(g.has_value()) << name << ": " << g.status().message();
      EXPECT_EQ(g->q.codes, rtn->codes) << name;
      EXPECT_EQ(g->q.scales, rtn->scales) << name;
      EXPECT_EQ(g->q.zeros, rtn->zeros) << name;
    }
  }
}

TEST(Gptq, ActOrderStaticGroupsKeepRtnParameters) {
  // With act-order the groups' parameters are fixed up front from the original weights, in the
  // original column order: the scale and zero planes are exactly round-to-nearest's, contiguous
  // per group, while the codes differ.
  const Layer L = make_layer(32, 256, 512, 5);
  const Scheme s = Scheme::parse("int4-g64-asym").value();
  auto rtn = quantize(s, L.w.data(), L.rows, L.cols);
  GptqOptions o;
  o.act_order = true;
  auto g = gptq_quantize(s, L.w.data(), L.rows, L.cols, L.xtx.data(), L.tokens, o);
  ASSERT_TRUE(g.has_value() && rtn.has_value());
  EXPECT_EQ(g->q.scales, rtn->scales);
  EXPECT_EQ(g->q.zeros, rtn->zeros);
  EXPECT_NE(g->q.codes, rtn->codes);
  // Without act-order the later groups' parameters follow the updated weights.
  o.act_order = false;
  auto seq = gptq_quantize(s, L.w.data(), L.rows, L.cols, L.xtx.data(), L.tokens, o);
  ASSERT_TRUE(seq.has_value());
  EXPECT_NE(seq->q.scales, rtn->scales);
  // Deterministic.
  auto again = gptq_quantize(s, L.w.data(), L.rows, L.cols, L.xtx.data(), L.tokens, o);
  EXPECT_EQ(again->q.codes, seq->q.codes);
}

TEST(Gptq, DeadInputsAreZeroed) {
  const int64_t dead = 17;
  const Layer L = make_layer(24, 128, 400, 9, dead);
  ASSERT_EQ(L.xtx[static_cast<size_t>(dead * L.cols + dead)], 0.0);
  for (bool act_order : {false, true}) {
    GptqOptions o;
    o.act_order = act_order;
    const Scheme s = Scheme::parse("int4-g32-asym").value();
    auto g = gptq_quantize(s, L.w.data(), L.rows, L.cols, L.xtx.data(), L.tokens, o);
    ASSERT_TRUE(g.has_value()) << g.status().message();
    std::vector<float> dq(static_cast<size_t>(L.rows * L.cols));
    ASSERT_TRUE(dequantize(g->q, dq.data()));
    for (int64_t r = 0; r < L.rows; ++r) {
      // Asymmetric grids hold 0 exactly (it is the zero-point's code).
      EXPECT_EQ(dq[static_cast<size_t>(r * L.cols + dead)], 0.0f) << "row " << r;
      for (int64_t c = 0; c < L.cols; ++c) ASSERT_TRUE(std::isfinite(dq[static_cast<size_t>(r * L.cols + c)]));
    }
  }
}

TEST(Gptq, CholeskyFailureRaisesDampening) {
  // Blocks [[1, 3], [3, 1]] have eigenvalues 4 and -2: indefinite until the dampening exceeds 2
  // (mean diagonal 1 after the 2/n scaling with n = 2), so 0.01, 0.1 and 1 fail and 10 works.
  const int64_t rows = 8, cols = 64;
  std::vector<double> h(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t i = 0; i < cols; i += 2) {
    h[static_cast<size_t>(i * cols + i)] = h[static_cast<size_t>((i + 1) * cols + i + 1)] = 1.0;
    h[static_cast<size_t>(i * cols + i + 1)] = h[static_cast<size_t>((i + 1) * cols + i)] = 3.0;
  }
  std::mt19937 rng(4);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = n01(rng);
  const Scheme s = Scheme::parse("int4-g32-sym").value();
  GptqOptions o;
  auto g = gptq_quantize(s, w.data(), rows, cols, h.data(), 2, o);
  ASSERT_TRUE(g.has_value()) << g.status().message();
  EXPECT_FALSE(g->warnings.empty());
  EXPECT_NEAR(g->damp_used, 10.0, 1e-9);
  EXPECT_EQ(g->warnings.size(), 3u);
  EXPECT_NE(g->warnings.front().find("Cholesky"), std::string::npos) << g->warnings.front();
  o.max_damp_raises = 2;
  auto fail = gptq_quantize(s, w.data(), rows, cols, h.data(), 2, o);
  ASSERT_FALSE(fail.has_value());
  EXPECT_NE(fail.status().message().find("indefinite"), std::string::npos) << fail.status().message();
}

TEST(Gptq, RejectsWhatItCannotDo) {
  const int64_t rows = 4, cols = 64;
  std::vector<float> w(static_cast<size_t>(rows * cols), 0.5f);
  std::vector<double> h(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t i = 0; i < cols; ++i) h[static_cast<size_t>(i * cols + i)] = 1;
  EXPECT_FALSE(gptq_supports(Scheme::parse("nf4-dq").value()));
  EXPECT_TRUE(gptq_supports(Scheme::parse("q4_k").value()));
  EXPECT_TRUE(gptq_supports(Scheme::parse("int3-g128-asym").value()));
  EXPECT_FALSE(gptq_quantize(Scheme::parse("int4-g128-asym").value(), w.data(), rows, cols, h.data(), 1, {}).has_value());
  EXPECT_FALSE(gptq_quantize(Scheme::parse("int4-g32-asym").value(), w.data(), rows, cols, h.data(), 0, {}).has_value());
  w[5] = std::nanf("");
  EXPECT_FALSE(gptq_quantize(Scheme::parse("int4-g32-asym").value(), w.data(), rows, cols, h.data(), 1, {}).has_value());
}

}  // namespace
}  // namespace qforge
