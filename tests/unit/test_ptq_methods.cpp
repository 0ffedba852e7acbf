// AWQ, SmoothQuant and activation quantization on the block-sequential pipeline (ptq_methods.h),
// on stories260K: the folds leave the float model's function unchanged, AWQ + RTN beats plain RTN
// on the calibration windows, and activation quantization records a scale for every block linear.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "qforge/model.h"
#include "qforge/ptq.h"
#include "qforge/ptq_methods.h"
#include "test_support.h"

namespace qforge {
namespace {

std::string stories_path() { return test::shared_dir() + "/models/stories260K/stories260K.bin"; }

CalibrationSet synthetic_set(int64_t windows, int64_t ctx, int64_t vocab, uint32_t seed) {
  CalibrationSet s;
  s.path = "synthetic";
  s.windows = windows;
  s.ctx = ctx;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  s.tokens.resize(static_cast<size_t>(windows * ctx));
  for (auto& x : s.tokens) x = d(rng);
  return s;
}

// Leaves the block as it is (to check that the folds alone keep the model's function).
class NoOpProcessor final : public BlockProcessor {
 public:
  std::string name() const override { return "none"; }
  StatsRequest stats_request() const override { return {}; }
  Status process_block(BlockContext&) override { return Status::ok(); }
};

double logits_mse(Model& a, Model& b, const CalibrationSet& set, double* scale) {
  auto la = a.forward_batch(set.tokens.data(), set.windows, set.ctx);
  auto lb = b.forward_batch(set.tokens.data(), set.windows, set.ctx);
  EXPECT_TRUE(la.has_value() && lb.has_value());
  double e = 0, s = 0;
  const float* x = la->data_as<float>();
  const float* y = lb->data_as<float>();
  for (int64_t i = 0; i < la->numel(); ++i) {
    e += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
    s = std::max(s, std::fabs(static_cast<double>(x[i])));
  }
  if (scale) *scale = s;
  return e / static_cast<double>(la->numel());
}

SchemeForSite blocks_only(const Scheme& scheme) {
  return [scheme](const LinearSite& site, int64_t rows, int64_t cols) -> std::optional<Scheme> {
    if (site.layer < 0 || !validate_scheme(scheme, rows, cols)) return std::nullopt;
    return scheme;
  };
}

TEST(PtqMethods, FoldsKeepTheFloatModel) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  auto ref = Model::load_llama2c(stories_path());
  ASSERT_TRUE(ref.has_value());
  const CalibrationSet set = synthetic_set(4, 16, ref->config().vocab_size, 1);
  for (const char* method : {"awq", "smoothquant"}) {
    auto m = Model::load_llama2c(stories_path());
    ASSERT_TRUE(m.has_value());
    std::unique_ptr<BlockProcessor> p;
    if (std::string(method) == "awq") {
      AwqOptions o;
      o.clip = false;  // clipping changes the weights on purpose
      p = std::make_unique<AwqProcessor>(blocks_only(*Scheme::parse("int3-g32-asym")), o, std::make_unique<NoOpProcessor>());
    } else {
      p = std::make_unique<SmoothQuantProcessor>(SmoothQuantOptions{0.5}, std::make_unique<NoOpProcessor>());
    }
    auto pipe = CalibrationPipeline::create(*m, set);
    ASSERT_TRUE(pipe.has_value());
    ASSERT_TRUE((*pipe)->run(*p)) << method;
    // The norms really changed (something was folded).
    double changed = 0;
    auto nw = m->norm_weight(0, Model::BlockNorm::attention);
    auto nr = ref->norm_weight(0, Model::BlockNorm::attention);
    for (size_t j = 0; j < nw.size(); ++j) changed = std::max(changed, std::fabs(static_cast<double>(nw[j]) - nr[j]));
    EXPECT_GT(changed, 1e-3) << method;
    double scale = 0;
    const double mse = logits_mse(*m, *ref, set, &scale);
    // Exact in real arithmetic; f32 rounding of rescaled weights and activations only.
    EXPECT_LE(std::sqrt(mse), 1e-4 * scale) << method << ": rms logit change " << std::sqrt(mse) << ", scale " << scale;
  }
}

TEST(PtqMethods, AwqBeatsRtnOnCalibrationData) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  auto ref = Model::load_llama2c(stories_path());
  ASSERT_TRUE(ref.has_value());
  const CalibrationSet set = synthetic_set(6, 32, ref->config().vocab_size, 2);
  const Scheme scheme = *Scheme::parse("int3-g32-asym");
  auto rtn_model = Model::load_llama2c(stories_path());
  auto awq_model = Model::load_llama2c(stories_path());
  ASSERT_TRUE(rtn_model.has_value() && awq_model.has_value());
  RtnProcessor rtn(blocks_only(scheme));
  auto p1 = CalibrationPipeline::create(*rtn_model, set);
  ASSERT_TRUE(p1.has_value());
  ASSERT_TRUE((*p1)->run(rtn));
  AwqProcessor awq(blocks_only(scheme), AwqOptions{}, std::make_unique<RtnProcessor>(blocks_only(scheme)));
  auto p2 = CalibrationPipeline::create(*awq_model, set);
  ASSERT_TRUE(p2.has_value());
  ASSERT_TRUE((*p2)->run(awq));
  EXPECT_FALSE(awq.log().empty());
  const double e_rtn = logits_mse(*rtn_model, *ref, set, nullptr);
  const double e_awq = logits_mse(*awq_model, *ref, set, nullptr);
  EXPECT_LT(e_awq, e_rtn) << "AWQ logits MSE " << e_awq << " vs RTN " << e_rtn;
  // Every block linear the scheme fits ended up quantized with it.
  int quantized = 0;
  for (const LinearSite& site : awq_model->linear_sites()) {
    const Linear* l = awq_model->linear(site);
    if (site.layer < 0 || !validate_scheme(scheme, l->out_features(), l->in_features())) continue;
    EXPECT_EQ(l->describe(), scheme.name()) << linear_site_name(site);
    ++quantized;
  }
  EXPECT_GT(quantized, 0);
}

TEST(PtqMethods, ActQuantRecordsEveryBlockLinear) {
  QFORGE_REQUIRE_SHARED("models/stories260K");
  auto m = Model::load_llama2c(stories_path());
  ASSERT_TRUE(m.has_value());
  const CalibrationSet set = synthetic_set(3, 16, m->config().vocab_size, 3);
  const Scheme w8 = *Scheme::parse("int8-ch-sym");
  ActQuantProcessor p(ActScheme::int8_tensor_static, "minmax",
                      std::make_unique<SmoothQuantProcessor>(SmoothQuantOptions{0.5},
                                                             std::make_unique<RtnProcessor>(blocks_only(w8))));
  auto pipe = CalibrationPipeline::create(*m, set);
  ASSERT_TRUE(pipe.has_value());
  ASSERT_TRUE((*pipe)->run(p));
  EXPECT_EQ(static_cast<int64_t>(p.record().scales.size()), m->config().num_layers * 7);
  for (const auto& [name, s] : p.record().scales) EXPECT_GT(s, 0.0f) << name;
  for (const LinearSite& site : m->linear_sites()) {
    if (site.layer < 0) continue;
    const auto* l = dynamic_cast<const ActQuantLinear*>(m->linear(site));
    ASSERT_NE(l, nullptr) << linear_site_name(site);
    EXPECT_TRUE(l->integer_path()) << linear_site_name(site);
  }
}

}  // namespace
}  // namespace qforge
