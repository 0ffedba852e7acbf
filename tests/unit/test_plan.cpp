// Mixed-precision planning (qforge/mixed_precision.h): the knapsack solver against brute force,
// Spearman's rho on hand-computed cases, the measured search on a synthetic measurement, and the
// CLI end to end (sensitivity -> plan -> quantize --plan gives the planned types and sizes).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>

#include "qforge/atomic_file.h"
#include "qforge/gguf_convert.h"
#include "qforge/mixed_precision.h"
#include "qforge/sensitivity.h"
#include "test_support.h"

namespace qforge {
namespace {

using json = nlohmann::json;
using test::run_command;
std::string quote(const std::string& s) { return "'" + s + "'"; }
constexpr const char* kModel = "models/ref-llama-18m";


// Exhaustive optimum: the least cost over every combination within the budget (inf: none fits).
double brute_force(const std::vector<KnapsackItem>& items, uint64_t budget) {
  double best = INFINITY;
  std::vector<size_t> pick(items.size(), 0);
  for (;;) {
    uint64_t size = 0;
    double cost = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      size += items[i].choices[pick[i]].size;
      cost += items[i].choices[pick[i]].cost;
    }
    if (size <= budget) best = std::min(best, cost);
    size_t i = 0;
    while (i < items.size() && ++pick[i] == items[i].choices.size()) pick[i++] = 0;
    if (i == items.size()) return best;
  }
}

std::vector<KnapsackItem> random_instance(std::mt19937& rng, int max_items, uint64_t size_scale) {
  std::uniform_int_distribution<int> n_items(1, max_items), n_choices(1, 4), size(1, 20);
  std::uniform_real_distribution<double> cost(0.0, 10.0);
  std::vector<KnapsackItem> items(static_cast<size_t>(n_items(rng)));
  for (auto& it : items) {
    const int n = n_choices(rng);
    for (int j = 0; j < n; ++j) it.choices.push_back({static_cast<uint64_t>(size(rng)) * size_scale, cost(rng)});
  }
  return items;
}

TEST(Knapsack, ExactOptimumOnRandomInstancesMatchesBruteForce) {
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 400; ++trial) {
    SCOPED_TRACE(trial);
    const uint64_t scale = trial % 2 ? 32 : 1;  // sizes sharing a factor: the gcd keeps it exact
    const auto items = random_instance(rng, 6, scale);
    uint64_t lo = 0, hi = 0;
    for (const auto& it : items) {
      uint64_t mn = UINT64_MAX, mx = 0;
      for (const auto& c : it.choices) mn = std::min(mn, c.size), mx = std::max(mx, c.size);
      lo += mn;
      hi += mx;
    }
    std::uniform_int_distribution<uint64_t> b(lo > 3 * scale ? lo - 3 * scale : 0, hi + scale);
    const uint64_t budget = b(rng);
    const double best = brute_force(items, budget);
    auto s = solve_multiple_choice_knapsack(items, budget);
    ASSERT_TRUE(s.has_value()) << s.status().to_string();
    ASSERT_EQ(s->feasible, std::isfinite(best)) << "budget " << budget << " smallest " << lo;
    if (!s->feasible) continue;
    EXPECT_TRUE(s->exact);
    EXPECT_LE(s->size, budget);
    EXPECT_NEAR(s->cost, best, 1e-9) << "solver " << s->cost << " vs brute force " << best;
    EXPECT_LE(s->lower_bound, best + 1e-9);
    // The reported size and cost are those of the reported choices.
    uint64_t size = 0;
    double cost = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      size += items[i].choices[static_cast<size_t>(s->choice[i])].size;
      cost += items[i].choices[static_cast<size_t>(s->choice[i])].cost;
    }
    EXPECT_EQ(size, s->size);
    EXPECT_NEAR(cost, s->cost, 1e-9);
  }
}

TEST(Knapsack, CoarseTablesStillRespectTheBudgetExactly) {
  std::mt19937 rng(777);
  for (int trial = 0; trial < 300; ++trial) {
    SCOPED_TRACE(trial);
    const auto items = random_instance(rng, 7, 1);
    uint64_t hi = 0;
    for (const auto& it : items) {
      uint64_t mx = 0;
      for (const auto& c : it.choices) mx = std::max(mx, c.size);
      hi += mx;
    }
    const uint64_t budget = hi * 2 / 3;
    const double best = brute_force(items, budget);
    KnapsackOptions o;
    o.max_states = 4;  // forces a size quantum > 1 with rounding up
    auto s = solve_multiple_choice_knapsack(items, budget, o);
    ASSERT_TRUE(s.has_value());
    if (!std::isfinite(best)) {
      EXPECT_FALSE(s->feasible);
      continue;
    }
    ASSERT_TRUE(s->feasible);
    EXPECT_LE(s->size, budget);
    EXPECT_GE(s->cost, best - 1e-9);
    EXPECT_LE(s->lower_bound, best + 1e-9);
  }
}

TEST(Knapsack, EdgeCases) {
  std::vector<KnapsackItem> items{{{{10, 1.0}, {20, 0.5}}}, {{{5, 2.0}}}};
  auto s = solve_multiple_choice_knapsack(items, 14);
  ASSERT_TRUE(s.has_value());
  EXPECT_FALSE(s->feasible);  // 10 + 5 > 14
  s = solve_multiple_choice_knapsack(items, 25);
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(s->feasible);
  EXPECT_EQ(s->size, 25u);  // exactly at the budget
  EXPECT_DOUBLE_EQ(s->cost, 2.5);
  std::vector<KnapsackItem> empty_choice{{}};
  EXPECT_FALSE(solve_multiple_choice_knapsack(empty_choice, 10).has_value());
  std::vector<KnapsackItem> nan_cost{{{{1, NAN}}}};
  EXPECT_FALSE(solve_multiple_choice_knapsack(nan_cost, 10).has_value());
}

TEST(Spearman, HandComputedCases) {
  EXPECT_DOUBLE_EQ(spearman_correlation({1, 2, 3, 4}, {10, 20, 30, 40}), 1.0);
  EXPECT_DOUBLE_EQ(spearman_correlation({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0);
  // Monotone but not linear: ranks only.
  EXPECT_DOUBLE_EQ(spearman_correlation({1, 2, 3, 4, 5}, {1, 8, 27, 64, 1e6}), 1.0);
  // Ties take the average rank: y ranks 1, 2, 3.5, 5, 3.5 -> rho = 8 / sqrt(10 * 9.5).
  EXPECT_NEAR(spearman_correlation({1, 2, 3, 4, 5}, {5, 6, 7, 8, 7}), 8.0 / std::sqrt(95.0), 1e-12);
  // d^2 formula without ties: x ranks 1..5, y ranks 2, 1, 4, 3, 5 -> 1 - 6 * 4 / (5 * 24) = 0.8.
  EXPECT_NEAR(spearman_correlation({0.1, 0.2, 0.3, 0.4, 0.5}, {2, 1, 4, 3, 5}), 0.8, 1e-12);
  EXPECT_TRUE(std::isnan(spearman_correlation({1, 1, 1}, {1, 2, 3})));
  EXPECT_TRUE(std::isnan(spearman_correlation({1}, {1})));
}

// A synthetic report for ref-llama-18m: cost = parameters * 2^-bits(type), so the solver's choice
// is predictable and no forward pass is needed.
SensitivityReport synthetic_report(const GgufModelInput& input, const std::vector<GgmlType>& types) {
  SensitivityReport r;
  r.types = types;
  r.measured_kld = true;
  for (const GgufInputTensor& t : input.tensors()) {
    if (t.shape.size() != 2 || t.role.is_bias) continue;
    SensitivityUnit u;
    u.name = t.name;
    u.tensors = {t.name};
    u.parameters = t.numel();
    for (GgmlType type : types) {
      SensitivityCell c;
      c.type = type;
      const double bpw = 8.0 * ggml_type_info(type).type_size / static_cast<double>(ggml_type_info(type).block_size);
      c.kld = 1e-9 * static_cast<double>(t.numel()) * std::exp2(-bpw) * (t.role.role == TensorRole::mlp_down ? 4 : 1);
      c.proxy = c.kld;
      u.cells.push_back(c);
    }
    r.units.push_back(std::move(u));
  }
  return r;
}

TEST(PlanProblem, BudgetsHoldExactlyAndTheSearchMeetsItsBound) {
  QFORGE_REQUIRE_SHARED(kModel);
  auto input = GgufModelInput::open(test::shared_dir() + "/" + kModel);
  ASSERT_TRUE(input.has_value()) << input.status().to_string();
  const std::vector<GgmlType> types{GgmlType::Q8_0, GgmlType::Q6_K, GgmlType::Q4_K, GgmlType::Q2_K};
  const SensitivityReport report = synthetic_report(*input, types);
  auto problem = PlanProblem::create(*input, report);
  ASSERT_TRUE(problem.has_value()) << problem.status().to_string();
  double previous = INFINITY;
  for (double bpw : {2.8, 3.5, 4.5, 6.0, 8.5}) {
    SCOPED_TRACE(bpw);
    auto plan = problem->solve({PlanBudgetKind::bits_per_weight, bpw, 0});
    ASSERT_TRUE(plan.has_value()) << plan.status().to_string();
    EXPECT_LE(plan->bits_per_weight, bpw);
    EXPECT_LE(plan->predicted, previous);  // more bits never predict more loss
    previous = plan->predicted;
    // The sizes are those plan_gguf_quantization (and so the writer) computes for the plan.
    auto opts = problem->options_for(*plan);
    ASSERT_TRUE(opts.has_value());
    auto gp = plan_gguf_quantization(*input, *opts);
    ASSERT_TRUE(gp.has_value());
    EXPECT_EQ(gp->file_bytes, plan->file_bytes);
    EXPECT_TRUE(gp->fallbacks.empty());
    for (const GgufTensorPlan& t : gp->tensors) {
      if (t.quantizable) {
        EXPECT_EQ(t.reason.substr(0, 4), "plan") << t.name;
      }
    }
    auto by_size = problem->solve({PlanBudgetKind::file_bytes, 0, plan->file_bytes});
    ASSERT_TRUE(by_size.has_value());
    EXPECT_LE(by_size->file_bytes, plan->file_bytes);
    EXPECT_LE(by_size->predicted, plan->predicted * (1 + 1e-12));
  }
  auto too_small = problem->solve({PlanBudgetKind::bits_per_weight, 1.0, 0});
  ASSERT_FALSE(too_small.has_value());
  EXPECT_NE(too_small.status().message().find("impossible"), std::string::npos) << too_small.status().message();
  EXPECT_FALSE(problem->solve({PlanBudgetKind::file_bytes, 0, problem->min_file_bytes() - 1}).has_value());
  EXPECT_TRUE(problem->solve({PlanBudgetKind::file_bytes, 0, problem->min_file_bytes()}).has_value());

  // The search with a measurement that is 1.7x the prediction.
  PlanSearchOptions so;
  auto mid = problem->solve({PlanBudgetKind::bits_per_weight, 4.5, 0});
  ASSERT_TRUE(mid.has_value());
  so.bound = mid->predicted * 1.7;
  so.max_iterations = 8;
  so.margin = 0;  // aim at the bound itself: the measurement here has no noise
  int calls = 0;
  auto result = search_plan_for_bound(*problem, so, [&](const MixedPrecisionPlan& p) -> Expected<double> {
    ++calls;
    return p.predicted * 1.7;
  });
  ASSERT_TRUE(result.has_value()) << result.status().to_string();
  ASSERT_GE(result->best, 0);
  const PlanSearchIteration& best = result->iterations[static_cast<size_t>(result->best)];
  EXPECT_LE(best.measured, so.bound);
  EXPECT_LE(best.plan.file_bytes, mid->file_bytes);  // the 4.5-bpw plan meets it, so the answer is no larger
  EXPECT_EQ(calls, static_cast<int>(result->iterations.size()));
  EXPECT_LE(calls, 3);  // a constant ratio is learnt in one step
  // A bound nothing meets.
  so.bound = 1e-30;
  so.max_iterations = 3;
  auto none = search_plan_for_bound(*problem, so, [](const MixedPrecisionPlan& p) -> Expected<double> { return p.predicted + 1; });
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(none->best, -1);
}

TEST(PlanCli, SensitivityPlanQuantizeRoundTrip) {
  QFORGE_REQUIRE_SHARED(kModel);
  QFORGE_SKIP_UNDER_SANITIZERS("quantizes a whole model several times");
  const std::string model = test::shared_dir() + "/" + kModel, dir = test::temp_dir();
  const std::string cli = quote(test::cli_path());
  std::string out;
  ASSERT_EQ(run_command(cli + " sensitivity " + quote(model) + " --text " + quote(model + "/calibration.txt") +
                            " --types Q8_0,Q2_K --granularity group --ctx 64 --windows 1 --json " +
                            quote(dir + "/s.json") + " --svg " + quote(dir + "/s.svg") + " 2>&1",
                        &out),
            0)
      << out;
  // Every group (and the embedding) loses more at 2 bits than at 8.
  json sens = json::parse(*read_file(dir + "/s.json"));
  ASSERT_EQ(sens["units"].size(), 12u * 2u + 1u);
  for (const auto& u : sens["units"])
    EXPECT_GT(u["cells"][1]["kld"].get<double>(), u["cells"][0]["kld"].get<double>()) << u["name"];
  auto svg = read_file(dir + "/s.svg");
  ASSERT_TRUE(svg.has_value());
  EXPECT_NE(svg->find("<svg"), std::string::npos);
  for (const std::string& budget : {std::string("--target-bpw 5.0"), std::string("--target-size 12000000")}) {
    SCOPED_TRACE(budget);
    ASSERT_EQ(run_command(cli + " plan " + quote(model) + " --sensitivity " + quote(dir + "/s.json") + " " + budget +
                              " --out " + quote(dir + "/plan.txt") + " --json " + quote(dir + "/plan.json") + " 2>&1",
                          &out),
              0)
        << out;
    json plan = json::parse(*read_file(dir + "/plan.json"));
    ASSERT_EQ(run_command(cli + " quantize " + quote(model) + " --plan " + quote(dir + "/plan.txt") + " --out " +
                              quote(dir + "/m.gguf") + " 2>&1",
                          &out),
              0)
        << out;
    ASSERT_EQ(run_command(cli + " inspect --json " + quote(dir + "/m.gguf") + " 2>/dev/null", &out), 0) << out;
    json inspect = json::parse(out);
    std::map<std::string, std::string> written;
    for (const auto& t : inspect["tensors"]) written[t["name"].get<std::string>()] = t["dtype"].get<std::string>();
    ASSERT_EQ(plan["tensors"].size(), 12u * 7u + 1u);
    for (const auto& t : plan["tensors"])
      EXPECT_EQ(written[t["name"].get<std::string>()], t["type"].get<std::string>()) << t["name"];
    const uint64_t file_bytes = std::filesystem::file_size(dir + "/m.gguf");
    EXPECT_EQ(file_bytes, plan["file_bytes"].get<uint64_t>());
    if (budget.find("size") != std::string::npos) {
      EXPECT_LE(file_bytes, 12000000u);
    } else {
      EXPECT_LE(plan["bits_per_weight"].get<double>(), 5.0);
    }
  }
  // A sweep of a preset and the last plan keeps both files with cards carrying the sweep.
  std::filesystem::create_directories(dir + "/variants");
  ASSERT_EQ(run_command(cli + " sweep " + quote(model) + " --presets Q8_0 --plan " + quote(dir + "/plan.txt") +
                            " --text " + quote(model + "/heldout.txt") + " --ctx 64 --windows 1 --json " +
                            quote(dir + "/sweep.json") + " --md " + quote(dir + "/sweep.md") + " --svg " +
                            quote(dir + "/sweep.svg") + " --out-dir " + quote(dir + "/variants") + " 2>&1",
                        &out),
            0)
      << out;
  json sweep = json::parse(*read_file(dir + "/sweep.json"));
  ASSERT_EQ(sweep["entries"].size(), 2u);
  EXPECT_EQ(sweep["entries"][0]["kind"], "preset");
  EXPECT_EQ(sweep["entries"][1]["kind"], "plan");
  EXPECT_LT(sweep["entries"][0]["kld_mean"].get<double>(), sweep["entries"][1]["kld_mean"].get<double>());
  EXPECT_TRUE(sweep["entries"][0]["pareto"].get<bool>());
  json card = json::parse(*read_file(dir + "/variants/plan.gguf.card.json"));
  EXPECT_TRUE(card["evaluation"]["measured"].get<bool>());
  EXPECT_EQ(card["sweep"]["points"].size(), 2u);
  EXPECT_EQ(std::filesystem::file_size(dir + "/variants/plan.gguf"), sweep["entries"][1]["file_bytes"].get<uint64_t>());
}

TEST(PlanCli, BadInputGivesClearErrors) {
  QFORGE_REQUIRE_SHARED(kModel);
  const std::string model = test::shared_dir() + "/" + kModel, dir = test::temp_dir();
  const std::string cli = quote(test::cli_path());
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"sensitivity " + quote(model) + " --text " + quote(model + "/calibration.txt") + " --types Q8_0,Q9_K", "Q9_K"},
      {"sensitivity " + quote(model) + " --text " + quote(model + "/calibration.txt") + " --types F16", "F16"},
      {"sensitivity " + quote(model) + " --text /nonexistent.txt", "/nonexistent.txt"},
      {"plan " + quote(model) + " --sensitivity /nonexistent.json --target-bpw 4", "/nonexistent.json"},
      {"plan " + quote(model) + " --text " + quote(model + "/calibration.txt"), "exactly one of"},
      {"plan " + quote(model) + " --sensitivity x.json --max-kld 0.01", "--eval-text"},
      {"sweep " + quote(model) + " --presets Q4_K_M,Q7_X --text " + quote(model + "/heldout.txt"), "Q7_X"},
      {"quantize " + quote(model) + " --plan /nonexistent.plan --out " + quote(dir + "/x.gguf"), "/nonexistent.plan"},
  };
  for (const Case& c : cases) {
    std::string out;
    const int rc = run_command(cli + " " + c.args + " 2>&1", &out);
    EXPECT_NE(rc, 0) << c.args << "\n" << out;
    EXPECT_NE(out.find(c.message), std::string::npos) << c.args << "\n" << out;
    EXPECT_NE(out.find("error"), std::string::npos) << out;
  }
  // An impossible bits/weight target names the smallest possible plan.
  std::ofstream(dir + "/bad.json") << "{\"format\": \"qforge-sensitivity-v1\"}";
  std::string out;
  EXPECT_NE(run_command(cli + " plan " + quote(model) + " --sensitivity " + quote(dir + "/bad.json") + " --target-bpw 4 2>&1", &out), 0);
  EXPECT_NE(out.find("bad.json"), std::string::npos) << out;
}

}  // namespace
}  // namespace qforge
