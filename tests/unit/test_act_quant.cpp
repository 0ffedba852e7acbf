// Activation quantization: the integer GEMM against its scalar reference (bit-identical), the
// quantizers' error bounds, ActQuantLinear's integer and fake-quant paths, and the recorded
// scales' round trip through JSON and a model.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>

#include "qforge/act_quant.h"
#include "qforge/dtype.h"
#include "qforge/format.h"
#include "qforge/linear.h"

namespace qforge {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(Int8Gemm, FastMatchesReferenceOnTails) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> code(-127, 127);
  for (int64_t n : {1, 3, 4, 5, 9})
    for (int64_t out : {1, 7, 64, 65, 130})
      for (int64_t in : {1, 17, 33, 384}) {
        std::vector<int8_t> xq(static_cast<size_t>(n * in)), wq(static_cast<size_t>(out * in));
        for (auto& v : xq) v = static_cast<int8_t>(code(rng));
        for (auto& v : wq) v = static_cast<int8_t>(code(rng));
        auto xs = randn(static_cast<size_t>(n), 2, 0.01f), ws = randn(static_cast<size_t>(out), 3, 0.01f),
             bias = randn(static_cast<size_t>(out), 4);
        for (auto& v : xs) v = std::fabs(v);
        std::vector<float> a(static_cast<size_t>(n * out)), b(a.size());
        for (const float* bp : {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())}) {
          int8_gemm_ref(xq.data(), xs.data(), n, wq.data(), ws.data(), out, in, bp, a.data());
          int8_gemm(xq.data(), xs.data(), n, wq.data(), ws.data(), out, in, bp, b.data());
          ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << "n " << n << " out " << out << " in " << in;
        }
      }
}

TEST(ActQuantize, PerTokenWithinHalfStep) {
  const int64_t n = 6, in = 100;
  auto x = randn(static_cast<size_t>(n * in), 5);
  for (int64_t i = 0; i < in; ++i) x[static_cast<size_t>(2 * in + i)] = 0.0f;  // an all-zero token
  x[7] = 40.0f;                                                               // an outlier
  std::vector<int8_t> q(x.size());
  std::vector<float> s(static_cast<size_t>(n));
  quantize_act_int8_per_token(x.data(), n, in, q.data(), s.data());
  EXPECT_EQ(s[2], 1.0f);
  EXPECT_EQ(q[7], 127);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < in; ++i) {
      const size_t k = static_cast<size_t>(t * in + i);
      const float err = std::fabs(x[k] - q[k] * s[static_cast<size_t>(t)]);
      // Half a step, plus f32 evaluation of x / s (relative 2^-23 of |x| <= 127 s).
      const float allowed = s[static_cast<size_t>(t)] * (0.5f + 127.0f * FLT_EPSILON);
      ASSERT_LE(err, allowed) << "token " << t << " channel " << i;
    }
  // Static: values beyond the range saturate at +-127.
  std::vector<int8_t> qs(x.size());
  quantize_act_int8_static(x.data(), n, in, 0.05f, qs.data());
  EXPECT_EQ(qs[7], 127);
}

TEST(ActQuantLinear, Int8ChannelWeightsRunTheIntegerPath) {
  const int64_t out = 48, in = 96, n = 5;
  auto w = randn(static_cast<size_t>(out * in), 6, 0.05f);
  auto q = quantize(*Scheme::parse("int8-ch-sym"), w.data(), out, in);
  ASSERT_TRUE(q.has_value());
  auto bias = randn(static_cast<size_t>(out), 7);
  auto inner = QuantizedLinear::create(*q, bias);
  ASSERT_TRUE(inner.has_value());
  auto layer = ActQuantLinear::create(std::move(*inner), ActScheme::int8_token_dyn);
  ASSERT_TRUE(layer.has_value());
  EXPECT_TRUE((*layer)->integer_path());
  EXPECT_EQ((*layer)->describe(), "int8-ch-sym a:int8-token-dyn");
  auto x = randn(static_cast<size_t>(n * in), 8);
  std::vector<float> y(static_cast<size_t>(n * out));
  (*layer)->forward(x.data(), n, y.data());

  // The same computed independently: fake-quantized activations times the dequantized weights in
  // double. Integer accumulation is exact, so the only differences are the f32 epilogue rounding
  // (a few ulps of each term's magnitude).
  std::vector<int8_t> xq(x.size());
  std::vector<float> xs(static_cast<size_t>(n));
  quantize_act_int8_per_token(x.data(), n, in, xq.data(), xs.data());
  std::vector<float> wd(w.size());
  ASSERT_TRUE(dequantize(*q, wd.data()).is_ok());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double ref = bias[static_cast<size_t>(o)], mag = std::fabs(bias[static_cast<size_t>(o)]);
      for (int64_t i = 0; i < in; ++i) {
        const double p = static_cast<double>(xq[static_cast<size_t>(t * in + i)]) * xs[static_cast<size_t>(t)] *
                         wd[static_cast<size_t>(o * in + i)];
        ref += p;
        mag += std::fabs(p);
      }
      const double got = y[static_cast<size_t>(t * out + o)];
      ASSERT_LE(std::fabs(got - ref), 4 * FLT_EPSILON * mag) << "t " << t << " o " << o << ": " << got << " vs " << ref;
    }
}

TEST(ActQuantLinear, StaticAndFp8FakeQuantize) {
  const int64_t out = 16, in = 32, n = 3;
  auto w = randn(static_cast<size_t>(out * in), 9, 0.1f);
  auto x = randn(static_cast<size_t>(n * in), 10);
  Tensor wt = Tensor::from_f32({out, in}, w);
  for (ActScheme s : {ActScheme::int8_tensor_static, ActScheme::fp8_tensor_static}) {
    auto dense = DenseLinear::create(wt);
    ASSERT_TRUE(dense.has_value());
    const float scale = act_static_scale(s, 3.0f);
    EXPECT_EQ(scale, 3.0f / act_scheme_qmax(s));
    auto layer = ActQuantLinear::create(std::move(*dense), s, scale);
    ASSERT_TRUE(layer.has_value());
    EXPECT_FALSE((*layer)->integer_path());
    std::vector<float> y(static_cast<size_t>(n * out)), xd(x.size()), yref(y.size());
    for (size_t k = 0; k < x.size(); ++k) {
      if (s == ActScheme::fp8_tensor_static) {
        xd[k] = f8_e4m3fn_to_f32(f32_to_f8_e4m3fn(x[k] * (1.0f / scale))) * scale;
      } else {
        xd[k] = std::clamp(std::nearbyint(x[k] * (1.0f / scale)), -127.0f, 127.0f) * scale;
      }
    }
    (*layer)->forward(x.data(), n, y.data());
    matmul_f32_wt(xd.data(), n, w.data(), out, in, yref.data());
    ASSERT_EQ(std::memcmp(y.data(), yref.data(), y.size() * 4), 0) << act_scheme_name(s);
  }
  auto dense = DenseLinear::create(wt);
  ASSERT_TRUE(dense.has_value());
  EXPECT_FALSE(ActQuantLinear::create(std::move(*dense), ActScheme::int8_tensor_static, 0.0f).has_value());
  dense = DenseLinear::create(wt);
  EXPECT_FALSE(ActQuantLinear::create(std::move(*dense), ActScheme::int8_tensor_static, NAN).has_value());
}

TEST(ActQuantRecord, JsonRoundTripAndErrors) {
  ActQuantRecord r;
  r.scheme = ActScheme::int8_tensor_static;
  r.observer = "minmax";
  r.scales["model.layers.0.self_attn.q_proj.weight"] = 0.0123456789f;
  r.scales["model.layers.0.mlp.down_proj.weight"] = 3.4e-7f;
  auto back = parse_act_quant_record(act_quant_record_to_json(r), "t");
  ASSERT_TRUE(back.has_value()) << back.status().message();
  EXPECT_EQ(back->scheme, r.scheme);
  EXPECT_EQ(back->observer, "minmax");
  EXPECT_EQ(back->scales, r.scales);  // exact floats
  EXPECT_FALSE(parse_act_quant_record(R"({"scheme": "int4-token"})", "t").has_value());
  EXPECT_FALSE(parse_act_quant_record(R"({"scheme": "int8-tensor-static"})", "t").has_value());
  EXPECT_FALSE(parse_act_quant_record(R"({"scheme": "int8-tensor-static", "scales": {"a": -1}})", "t").has_value());
  EXPECT_FALSE(parse_act_quant_record("[1]", "t").has_value());
  auto dyn = parse_act_quant_record(R"({"scheme": "int8-token-dyn"})", "t");
  ASSERT_TRUE(dyn.has_value());
  EXPECT_TRUE(dyn->scales.empty());
}

}  // namespace
}  // namespace qforge
