// Mixed-precision GGUF plans: a type per tensor chosen to minimise the predicted KL divergence (the
// sum of the per-unit KLDs measured by qforge/sensitivity.h) under a size budget, as a
// multiple-choice knapsack; and the measured search for the smallest plan whose evaluated KLD meets
// a bound. docs/mixed-precision.md explains the solver, the size accounting and the search.
//
// A plan is written as a `--tensor-type-file` (one anchored `^name$=TYPE` line per tensor, '#'
// comments, the preset in a `# preset: NAME` line), which `qforge quantize --format gguf
// --tensor-type-file` and `qforge quantize --plan` apply.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "qforge/gguf_quantize.h"
#include "qforge/sensitivity.h"
#include "qforge/status.h"

namespace qforge {

// ---------------------------------------------------------------------------------------------
// Multiple-choice knapsack: pick exactly one choice per item, total size <= budget, minimum cost.

struct KnapsackChoice {
  uint64_t size = 0;
  double cost = 0;
};
struct KnapsackItem {
  std::vector<KnapsackChoice> choices;  // at least one
};
struct KnapsackOptions {
  // The DP runs over the extra size above every item's smallest choice, in units of `unit` bytes:
  // unit = the gcd of the size differences when that keeps the table under max_states (then the
  // result is the exact optimum), else the smallest unit that does, with sizes rounded UP (the
  // budget still holds; the result is then near-optimal and refined by a greedy fill).
  int64_t max_states = int64_t{1} << 18;
};
struct KnapsackSolution {
  bool feasible = false;     // false: even the smallest choices exceed the budget
  std::vector<int> choice;   // per item, an index into its choices
  uint64_t size = 0;
  double cost = 0;
  uint64_t unit = 1;         // the DP's size quantum
  bool exact = false;        // the DP ran on exact sizes, so `cost` is the optimum
  double lower_bound = 0;    // Lagrangian lower bound on the optimal cost
};
Expected<KnapsackSolution> solve_multiple_choice_knapsack(std::span<const KnapsackItem> items, uint64_t budget,
                                                          const KnapsackOptions& options = {});

// ---------------------------------------------------------------------------------------------
// Plans

enum class PlanBudgetKind : uint8_t {
  bits_per_weight = 0,  // all tensor data (norms included) in bits per parameter, as quantize prints it
  file_bytes = 1,       // the exact size of the GGUF file quantize writes
};
struct PlanBudget {
  PlanBudgetKind kind = PlanBudgetKind::bits_per_weight;
  double bits_per_weight = 0;
  uint64_t file_bytes = 0;
};

enum class PlanCost : uint8_t {
  kld = 0,    // measured per-unit KLD
  proxy = 1,  // imatrix-weighted squared error (no KLD measurement needed)
};

struct PlanTensor {
  std::string name;  // GGUF name
  GgmlType type = GgmlType::Q8_0;
  std::string unit;  // sensitivity unit it belongs to
};

struct MixedPrecisionPlan {
  std::string preset;               // recorded in the file (general.file_type); the dominant type's preset
  std::vector<PlanTensor> tensors;  // every quantizable tensor, in file order
  double predicted = 0;             // sum of the chosen cells' costs
  uint64_t file_bytes = 0;          // exact GGUF file size
  uint64_t tensor_bytes = 0;        // tensor data
  int64_t parameters = 0;
  double bits_per_weight = 0;       // 8 * tensor_bytes / parameters
  uint64_t budget_bytes = 0;        // the limit the solver worked under (file or tensor bytes)
  bool exact = false;               // solver optimum proven (see KnapsackSolution)
  double lower_bound = 0;
  std::string description;          // one line: budget and cost source
};

// The sizes and costs of every choice, for one model and one sensitivity report.
class PlanProblem {
 public:
  // Errors: the report's tensors are not the model's quantizable tensors (another model), a unit
  // without a valid type, no KLD in the report with PlanCost::kld.
  static Expected<PlanProblem> create(const GgufModelInput& input, const SensitivityReport& sensitivity,
                                      PlanCost cost = PlanCost::kld);
  // The cheapest-cost plan within the budget. Errors: the budget is below the smallest plan (the
  // message gives the smallest possible bits/weight or size).
  Expected<MixedPrecisionPlan> solve(const PlanBudget& budget, const KnapsackOptions& options = {}) const;
  // Smallest and largest possible plans' file bytes and bits/weight.
  uint64_t min_file_bytes() const;
  uint64_t max_file_bytes() const;
  double min_bits_per_weight() const;
  double max_bits_per_weight() const;
  // The GGUF options that apply `plan` (preset + one override per tensor).
  Expected<GgufQuantizeOptions> options_for(const MixedPrecisionPlan& plan) const;

  const SensitivityReport& sensitivity() const { return *sensitivity_; }

 private:
  struct Unit {
    std::vector<size_t> tensors;     // indices into the input's tensors
    std::vector<GgmlType> types;     // valid choices
    std::vector<uint64_t> bytes;     // unaligned tensor bytes per choice
    std::vector<uint64_t> aligned;   // file bytes (each tensor padded to the alignment) per choice
    std::vector<double> costs;
  };
  PlanProblem() = default;
  Expected<MixedPrecisionPlan> build(const std::vector<int>& choice, uint64_t budget_bytes, const KnapsackSolution& s) const;
  const GgufModelInput* input_ = nullptr;
  const SensitivityReport* sensitivity_ = nullptr;
  PlanCost cost_ = PlanCost::kld;
  std::vector<Unit> units_;
  uint64_t fixed_tensor_bytes_ = 0;  // tensors outside the plan (norms)
  uint64_t fixed_file_bytes_ = 0;    // header + metadata (worst case over plans) + tensors outside the plan
  int64_t parameters_ = 0;
};

// The plan as a --tensor-type-file (with '#' header lines: preset, model, budget, prediction).
std::string plan_file_text(const MixedPrecisionPlan& plan, const std::string& header_comment = "");
// The preset named in a plan file's "# preset: NAME" line; an error when there is none.
Expected<std::string> read_plan_preset(const std::string& path);
nlohmann::ordered_json plan_to_json(const MixedPrecisionPlan& plan);

// ---------------------------------------------------------------------------------------------
// Measured search: the smallest plan whose MEASURED metric meets a bound

enum class PlanMetric : uint8_t {
  kld = 0,           // mean KLD against the reference (nats)
  ln_ppl_ratio = 1,  // ln(ppl / ppl_ref); --max-ppl-increase P% is ln(1 + P/100)
};

struct PlanSearchOptions {
  PlanMetric metric = PlanMetric::kld;
  double bound = 0;
  int max_iterations = 6;       // quantize + measure rounds
  double size_tolerance = 0.01; // stop when the bracket [infeasible, feasible] is this narrow (relative)
  // Proposals aim this fraction below the bound, so a plan predicted right at it (and measured a
  // hair above, within the measurement's noise) does not make the search creep up by tiny steps.
  double margin = 0.03;
  KnapsackOptions knapsack;
  std::function<void(const std::string&)> log;  // one line per iteration
};

struct PlanSearchIteration {
  uint64_t budget_bytes = 0;
  MixedPrecisionPlan plan;
  double predicted = 0;   // sum of KLD deltas
  double scale = 1;       // measured/predicted correction in force when this budget was chosen
  double measured = 0;    // the metric, measured
  bool meets = false;
};

struct PlanSearchResult {
  std::vector<PlanSearchIteration> iterations;
  int best = -1;  // index of the smallest plan meeting the bound; -1: none found
  bool largest_fails = false;  // the largest possible plan was measured and does not meet the bound
};

// Iterates predict -> quantize -> measure -> correct: the budget is the smallest whose predicted
// cost, scaled by the last measured/predicted ratio, meets the bound; each measurement narrows a
// bracket [largest failing budget, smallest passing budget], and proposals outside it are replaced
// by its midpoint. `measure` quantizes and evaluates a plan, returning the metric.
Expected<PlanSearchResult> search_plan_for_bound(const PlanProblem& problem, const PlanSearchOptions& options,
                                                 const std::function<Expected<double>(const MixedPrecisionPlan&)>& measure);

}  // namespace qforge
