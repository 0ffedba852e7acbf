// Mixed-precision planning (qforge/mixed_precision.h): the multiple-choice knapsack solver, the
// exact GGUF size accounting of a plan, plan files, and the measured search for a KLD bound.
#include "qforge/mixed_precision.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>

#include "qforge/atomic_file.h"
#include "qforge/gguf_convert.h"

namespace qforge {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

bool is_quantizable(const GgufInputTensor& t) {
  if (t.role.is_bias || t.shape.size() != 2) return false;
  return t.role.role == TensorRole::token_embedding || t.role.role == TensorRole::output ||
         is_linear_weight(t.role.role);
}

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (std::string_view(".^$|()[]{}*+?\\").find(ch) != std::string_view::npos) out += '\\';
    out += ch;
  }
  return out;
}

// The preset recorded for a plan whose weights are mostly `type`.
const GgufPreset* preset_for(GgmlType type) {
  for (const GgufPreset& p : gguf_presets())
    if (p.quantized() && p.default_type == type) return &p;
  return &gguf_preset(GgufPresetId::Q8_0);
}

// Lagrangian lower bound max_{lambda >= 0} sum_i min_j (c_ij + lambda e_ij) - lambda B (e: extra
// size over the item's smallest choice).
double lagrangian_bound(std::span<const KnapsackItem> items, const std::vector<uint64_t>& min_size, uint64_t extra_budget) {
  auto eval = [&](double lambda, double* slope) {
    double value = -lambda * static_cast<double>(extra_budget);
    double used = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      double best = kInf, best_e = 0;
      for (const KnapsackChoice& c : items[i].choices) {
        const double e = static_cast<double>(c.size - min_size[i]);
        const double v = c.cost + lambda * e;
        if (v < best || (v == best && e < best_e)) {
          best = v;
          best_e = e;
        }
      }
      value += best;
      used += best_e;
    }
    *slope = used - static_cast<double>(extra_budget);
    return value;
  };
  double slope = 0;
  double best = eval(0, &slope);
  if (slope <= 0) return best;
  double hi = 1e-12;
  for (int k = 0; k < 200 && (eval(hi, &slope), slope > 0); ++k) hi *= 2;
  double lo = 0;
  for (int k = 0; k < 200; ++k) {
    const double mid = 0.5 * (lo + hi);
    const double v = eval(mid, &slope);
    best = std::max(best, v);
    if (slope > 0) lo = mid; else hi = mid;
  }
  return std::max(best, eval(hi, &slope));
}

}  // namespace

Expected<KnapsackSolution> solve_multiple_choice_knapsack(std::span<const KnapsackItem> items, uint64_t budget,
                                                          const KnapsackOptions& options) {
  KnapsackSolution sol;
  if (options.max_states < 2) return invalid_argument("knapsack: max_states must be at least 2");
  std::vector<uint64_t> min_size(items.size());
  uint64_t base = 0, max_extra_total = 0, g = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& ch = items[i].choices;
    if (ch.empty()) return invalid_argument("knapsack: item " + std::to_string(i) + " has no choice");
    if (ch.size() > 255) return invalid_argument("knapsack: item " + std::to_string(i) + " has more than 255 choices");
    uint64_t lo = std::numeric_limits<uint64_t>::max(), hi = 0;
    for (const KnapsackChoice& c : ch) {
      if (!std::isfinite(c.cost)) return invalid_argument("knapsack: item " + std::to_string(i) + " has a non-finite cost");
      lo = std::min(lo, c.size);
      hi = std::max(hi, c.size);
    }
    min_size[i] = lo;
    for (const KnapsackChoice& c : ch) g = std::gcd(g, c.size - lo);
    if (base > std::numeric_limits<uint64_t>::max() - lo) return invalid_argument("knapsack: sizes overflow");
    base += lo;
    max_extra_total += hi - lo;
  }
  if (base > budget) return sol;  // infeasible
  sol.feasible = true;
  const uint64_t extra_budget = std::min(budget - base, max_extra_total);
  if (g == 0) g = 1;
  // The size quantum: exact (the gcd) when the table fits, else the smallest that fits.
  const uint64_t states_cap = static_cast<uint64_t>(options.max_states - 1);
  uint64_t unit = g;
  if (extra_budget / unit > states_cap) unit = (extra_budget + states_cap - 1) / states_cap;
  sol.unit = unit;
  sol.exact = unit == g;
  const size_t S = static_cast<size_t>(extra_budget / unit);
  auto weight = [&](size_t i, size_t j) {  // rounded up: the budget holds for any rounding
    const uint64_t e = items[i].choices[j].size - min_size[i];
    return static_cast<size_t>((e + unit - 1) / unit);
  };

  // dp[s]: least cost of the items so far with total weight <= s.
  std::vector<double> dp(S + 1, 0.0), next(S + 1);
  std::vector<uint8_t> pick(items.size() * (S + 1), 0);
  for (size_t i = 0; i < items.size(); ++i) {
    uint8_t* row = pick.data() + i * (S + 1);
    std::fill(next.begin(), next.end(), kInf);
    for (size_t j = 0; j < items[i].choices.size(); ++j) {
      const size_t w = weight(i, j);
      const double c = items[i].choices[j].cost;
      for (size_t s = w; s <= S; ++s) {
        const double v = dp[s - w] + c;
        if (v < next[s]) {
          next[s] = v;
          row[s] = static_cast<uint8_t>(j);
        }
      }
    }
    dp.swap(next);
  }
  sol.choice.assign(items.size(), 0);
  size_t s = S;
  for (size_t i = items.size(); i-- > 0;) {
    const int j = pick[i * (S + 1) + s];
    sol.choice[i] = j;
    s -= weight(i, static_cast<size_t>(j));
  }
  // Greedy fill with the exact slack the rounding left: the best cost reduction that fits, repeated.
  auto extra_of = [&](size_t i) { return items[i].choices[static_cast<size_t>(sol.choice[i])].size - min_size[i]; };
  uint64_t used = 0;
  for (size_t i = 0; i < items.size(); ++i) used += extra_of(i);
  QFORGE_CHECK(used <= extra_budget);
  for (;;) {
    double best_gain = 0;
    size_t bi = 0, bj = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const KnapsackChoice& cur = items[i].choices[static_cast<size_t>(sol.choice[i])];
      for (size_t j = 0; j < items[i].choices.size(); ++j) {
        const KnapsackChoice& c = items[i].choices[j];
        if (used - (cur.size - min_size[i]) + (c.size - min_size[i]) > extra_budget) continue;
        const double gain = cur.cost - c.cost;
        if (gain > best_gain) {
          best_gain = gain;
          bi = i;
          bj = j;
        }
      }
    }
    if (best_gain <= 0) break;
    used = used - extra_of(bi) + (items[bi].choices[bj].size - min_size[bi]);
    sol.choice[bi] = static_cast<int>(bj);
  }
  sol.size = base + used;
  sol.cost = 0;
  for (size_t i = 0; i < items.size(); ++i) sol.cost += items[i].choices[static_cast<size_t>(sol.choice[i])].cost;
  sol.lower_bound = std::min(sol.cost, lagrangian_bound(items, min_size, extra_budget));
  return sol;
}

// ---------------------------------------------------------------------------------------------
// PlanProblem

Expected<PlanProblem> PlanProblem::create(const GgufModelInput& input, const SensitivityReport& s, PlanCost cost) {
  if (cost == PlanCost::kld && !s.measured_kld)
    return invalid_argument("the sensitivity report has no measured KLD (made with --proxy-only): plan with --cost proxy");
  PlanProblem p;
  p.input_ = &input;
  p.sensitivity_ = &s;
  p.cost_ = cost;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < input.tensors().size(); ++i) index[input.tensors()[i].name] = i;
  uint64_t alignment = kGgufDefaultAlignment;
  for (const GgufKeyValue& kv : input.metadata())
    if (kv.key == "general.alignment")
      if (const uint32_t* a = kv.value.get_if<uint32_t>()) alignment = *a;
  std::vector<int> covered(input.tensors().size(), 0);
  for (const SensitivityUnit& su : s.units) {
    Unit u;
    for (const std::string& name : su.tensors) {
      auto it = index.find(name);
      if (it == index.end() || !is_quantizable(input.tensors()[it->second]))
        return invalid_argument("sensitivity unit " + su.name + ": tensor " + name + " is not a quantizable tensor of " +
                                input.path() + " (a report of another model?)");
      if (covered[it->second]++) return invalid_argument("tensor " + name + " appears in two sensitivity units");
      u.tensors.push_back(it->second);
    }
    for (size_t ti = 0; ti < su.cells.size(); ++ti) {
      const SensitivityCell& cell = su.cells[ti];
      if (!cell.valid) continue;
      const double c = cost == PlanCost::kld ? cell.kld : cell.proxy;
      if (!std::isfinite(c)) return invalid_argument("sensitivity unit " + su.name + ": no finite cost for " + ggml_type_name(cell.type));
      uint64_t bytes = 0, aligned = 0;
      for (size_t t : u.tensors) {
        const Shape& sh = input.tensors()[t].shape;
        QFORGE_ASSIGN_OR_RETURN(uint64_t nb, ggml_tensor_nbytes(cell.type, std::vector<int64_t>(sh.rbegin(), sh.rend())));
        bytes += nb;
        aligned += align_up(nb, alignment);
      }
      u.types.push_back(cell.type);
      u.bytes.push_back(bytes);
      u.aligned.push_back(aligned);
      u.costs.push_back(c);
    }
    if (u.types.empty()) return invalid_argument("sensitivity unit " + su.name + ": no candidate type fits its shape");
    p.units_.push_back(std::move(u));
  }
  for (size_t i = 0; i < input.tensors().size(); ++i)
    if (is_quantizable(input.tensors()[i]) && !covered[i])
      return invalid_argument("tensor " + input.tensors()[i].name + " of " + input.path() +
                              " is not in the sensitivity report (a report of another model?)");

  // Fixed bytes: tensors outside the plan, and the header with the longest metadata any plan can
  // have (override strings and preset names differ in length between plans).
  GgmlType longest = p.units_.front().types.front();
  std::vector<const GgufPreset*> presets;
  for (const Unit& u : p.units_)
    for (GgmlType t : u.types) {
      if (std::string_view(ggml_type_name(t)).size() > std::string_view(ggml_type_name(longest)).size()) longest = t;
      const GgufPreset* pr = preset_for(t);
      if (std::find(presets.begin(), presets.end(), pr) == presets.end()) presets.push_back(pr);
    }
  for (const GgufPreset* pr : presets) {
    GgufQuantizeOptions o;
    o.preset = pr;
    for (const Unit& u : p.units_)
      for (size_t t : u.tensors) {
        const std::string& name = input.tensors()[t].name;
        QFORGE_ASSIGN_OR_RETURN(GgufTypeOverride ov, parse_gguf_type_override("^" + regex_escape(name) + "$=" + ggml_type_name(longest), "plan"));
        o.overrides.push_back(std::move(ov));
      }
    QFORGE_ASSIGN_OR_RETURN(GgufQuantizePlan gp, plan_gguf_quantization(input, o));
    uint64_t planned_aligned = 0, fixed_tensor = 0;
    for (const GgufTensorPlan& tp : gp.tensors) {
      if (tp.quantizable) planned_aligned += align_up(tp.nbytes, alignment);
      else fixed_tensor += tp.nbytes;
    }
    p.fixed_tensor_bytes_ = fixed_tensor;
    p.fixed_file_bytes_ = std::max(p.fixed_file_bytes_, gp.file_bytes - planned_aligned);
    p.parameters_ = gp.parameters;
  }
  return p;
}

uint64_t PlanProblem::min_file_bytes() const {
  uint64_t b = fixed_file_bytes_;
  for (const Unit& u : units_) b += *std::min_element(u.aligned.begin(), u.aligned.end());
  return b;
}
uint64_t PlanProblem::max_file_bytes() const {
  uint64_t b = fixed_file_bytes_;
  for (const Unit& u : units_) b += *std::max_element(u.aligned.begin(), u.aligned.end());
  return b;
}
double PlanProblem::min_bits_per_weight() const {
  uint64_t b = fixed_tensor_bytes_;
  for (const Unit& u : units_) b += *std::min_element(u.bytes.begin(), u.bytes.end());
  return 8.0 * static_cast<double>(b) / static_cast<double>(parameters_);
}
double PlanProblem::max_bits_per_weight() const {
  uint64_t b = fixed_tensor_bytes_;
  for (const Unit& u : units_) b += *std::max_element(u.bytes.begin(), u.bytes.end());
  return 8.0 * static_cast<double>(b) / static_cast<double>(parameters_);
}

Expected<GgufQuantizeOptions> PlanProblem::options_for(const MixedPrecisionPlan& plan) const {
  GgufQuantizeOptions o;
  QFORGE_ASSIGN_OR_RETURN(o.preset, find_gguf_preset(plan.preset));
  for (const PlanTensor& t : plan.tensors) {
    QFORGE_ASSIGN_OR_RETURN(GgufTypeOverride ov, parse_gguf_type_override("^" + regex_escape(t.name) + "$=" + ggml_type_name(t.type),
                                                                         "plan: " + t.unit));
    o.overrides.push_back(std::move(ov));
  }
  return o;
}

Expected<MixedPrecisionPlan> PlanProblem::build(const std::vector<int>& choice, uint64_t budget_bytes,
                                                const KnapsackSolution& s) const {
  MixedPrecisionPlan plan;
  std::map<size_t, std::pair<GgmlType, std::string>> by_tensor;
  std::map<GgmlType, int64_t> weights_by_type;
  for (size_t ui = 0; ui < units_.size(); ++ui) {
    const Unit& u = units_[ui];
    const size_t j = static_cast<size_t>(choice[ui]);
    plan.predicted += u.costs[j];
    for (size_t t : u.tensors) {
      by_tensor[t] = {u.types[j], sensitivity_->units[ui].name};
      weights_by_type[u.types[j]] += input_->tensors()[t].numel();
    }
  }
  GgmlType dominant = weights_by_type.begin()->first;
  for (const auto& [type, n] : weights_by_type)
    if (n > weights_by_type[dominant]) dominant = type;
  plan.preset = preset_for(dominant)->name;
  for (const auto& [t, tu] : by_tensor) plan.tensors.push_back({input_->tensors()[t].name, tu.first, tu.second});
  QFORGE_ASSIGN_OR_RETURN(GgufQuantizeOptions o, options_for(plan));
  QFORGE_ASSIGN_OR_RETURN(GgufQuantizePlan gp, plan_gguf_quantization(*input_, o));
  plan.file_bytes = gp.file_bytes;
  plan.tensor_bytes = gp.tensor_bytes;
  plan.parameters = gp.parameters;
  plan.bits_per_weight = gp.bits_per_weight();
  plan.budget_bytes = budget_bytes;
  plan.exact = s.exact;
  plan.lower_bound = s.lower_bound;
  return plan;
}

Expected<MixedPrecisionPlan> PlanProblem::solve(const PlanBudget& budget, const KnapsackOptions& options) const {
  const bool bpw = budget.kind == PlanBudgetKind::bits_per_weight;
  uint64_t limit = 0, fixed = 0;
  if (bpw) {
    if (!(budget.bits_per_weight > 0) || !std::isfinite(budget.bits_per_weight))
      return invalid_argument("--target-bpw must be a positive number");
    limit = static_cast<uint64_t>(std::floor(budget.bits_per_weight * static_cast<double>(parameters_) / 8.0));
    fixed = fixed_tensor_bytes_;
  } else {
    limit = budget.file_bytes;
    fixed = fixed_file_bytes_;
  }
  std::vector<KnapsackItem> items(units_.size());
  for (size_t i = 0; i < units_.size(); ++i)
    for (size_t j = 0; j < units_[i].types.size(); ++j)
      items[i].choices.push_back({bpw ? units_[i].bytes[j] : units_[i].aligned[j], units_[i].costs[j]});
  auto impossible = [&]() {
    char buf[256];
    if (bpw)
      std::snprintf(buf, sizeof buf, "--target-bpw %.4g is impossible: the smallest plan from these types takes %.4f bits/weight (largest %.4f)",
                    budget.bits_per_weight, min_bits_per_weight(), max_bits_per_weight());
    else
      std::snprintf(buf, sizeof buf, "--target-size %llu is impossible: the smallest plan from these types is a %llu-byte file (largest %llu)",
                    static_cast<unsigned long long>(budget.file_bytes), static_cast<unsigned long long>(min_file_bytes()),
                    static_cast<unsigned long long>(max_file_bytes()));
    return invalid_argument(buf);
  };
  if (limit < fixed) return impossible();
  QFORGE_ASSIGN_OR_RETURN(KnapsackSolution s, solve_multiple_choice_knapsack(items, limit - fixed, options));
  if (!s.feasible) return impossible();
  QFORGE_ASSIGN_OR_RETURN(MixedPrecisionPlan plan, build(s.choice, limit, s));
  const uint64_t actual = bpw ? plan.tensor_bytes : plan.file_bytes;
  if (actual > limit)
    return Status::error(ErrorCode::internal, "plan size accounting is off: " + std::to_string(actual) + " bytes for a budget of " +
                                                  std::to_string(limit));
  char buf[256];
  if (bpw)
    std::snprintf(buf, sizeof buf, "target %.4g bits/weight: tensor data <= %llu bytes", budget.bits_per_weight,
                  static_cast<unsigned long long>(limit));
  else
    std::snprintf(buf, sizeof buf, "target file size <= %llu bytes", static_cast<unsigned long long>(limit));
  plan.description = std::string(buf) + "; cost: " + (cost_ == PlanCost::kld ? "measured per-unit KLD" : "imatrix-weighted error proxy");
  return plan;
}

// ---------------------------------------------------------------------------------------------
// Plan files

std::string plan_file_text(const MixedPrecisionPlan& plan, const std::string& header_comment) {
  std::ostringstream out;
  out << "# qforge mixed-precision plan: one REGEX=TYPE per tensor, for qforge quantize --plan FILE\n";
  out << "# (or --format gguf --type " << plan.preset << " --tensor-type-file FILE)\n";
  out << "# preset: " << plan.preset << "\n";
  if (!header_comment.empty()) {
    std::istringstream lines(header_comment);
    for (std::string line; std::getline(lines, line);) out << "# " << line << "\n";
  }
  if (!plan.description.empty()) out << "# " << plan.description << "\n";
  char buf[256];
  std::snprintf(buf, sizeof buf, "# predicted KLD %.6g (sum of per-unit costs); file %llu bytes; %.4f bits/weight\n",
                plan.predicted, static_cast<unsigned long long>(plan.file_bytes), plan.bits_per_weight);
  out << buf;
  for (const PlanTensor& t : plan.tensors) out << "^" << regex_escape(t.name) << "$=" << ggml_type_name(t.type) << "\n";
  return out.str();
}

Expected<std::string> read_plan_preset(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(std::string text, read_file(path));
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const std::string key = "# preset:";
    if (line.rfind(key, 0) != 0) continue;
    std::string name = line.substr(key.size());
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t\r") + 1);
    return name;
  }
  return invalid_argument(path + ": no '# preset: NAME' line (not a qforge plan file? give --type)");
}

nlohmann::ordered_json plan_to_json(const MixedPrecisionPlan& plan) {
  nlohmann::ordered_json j;
  j["preset"] = plan.preset;
  j["description"] = plan.description;
  j["predicted"] = plan.predicted;
  j["file_bytes"] = plan.file_bytes;
  j["tensor_bytes"] = plan.tensor_bytes;
  j["parameters"] = plan.parameters;
  j["bits_per_weight"] = plan.bits_per_weight;
  j["budget_bytes"] = plan.budget_bytes;
  j["exact_optimum"] = plan.exact;
  j["lower_bound"] = plan.lower_bound;
  nlohmann::ordered_json counts = nlohmann::ordered_json::object();
  for (const PlanTensor& t : plan.tensors) {
    const std::string n = ggml_type_name(t.type);
    counts[n] = counts.value(n, 0) + 1;
  }
  j["tensors_per_type"] = counts;
  nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
  for (const PlanTensor& t : plan.tensors) tensors.push_back({{"name", t.name}, {"type", ggml_type_name(t.type)}, {"unit", t.unit}});
  j["tensors"] = tensors;
  return j;
}

// ---------------------------------------------------------------------------------------------
// Measured search

Expected<PlanSearchResult> search_plan_for_bound(const PlanProblem& problem, const PlanSearchOptions& o,
                                                 const std::function<Expected<double>(const MixedPrecisionPlan&)>& measure) {
  if (!(o.bound > 0) || !std::isfinite(o.bound)) return invalid_argument("the bound must be a positive number");
  if (o.max_iterations < 1) return invalid_argument("--max-iterations must be at least 1");
  PlanSearchResult result;
  const uint64_t min_b = problem.min_file_bytes(), max_b = problem.max_file_bytes();
  uint64_t fail_b = min_b - 1;  // largest budget known to fail (none yet)
  uint64_t pass_b = 0;          // smallest passing plan's file bytes (0: none yet)
  double scale = 1;
  KnapsackOptions coarse = o.knapsack;
  coarse.max_states = std::min<int64_t>(o.knapsack.max_states, int64_t{1} << 15);
  auto predicted_at = [&](uint64_t b) -> Expected<double> {
    PlanBudget budget{PlanBudgetKind::file_bytes, 0, b};
    QFORGE_ASSIGN_OR_RETURN(MixedPrecisionPlan p, problem.solve(budget, coarse));
    return p.predicted;
  };
  for (int it = 0; it < o.max_iterations; ++it) {
    const uint64_t lo = fail_b + 1, hi = pass_b > 0 ? pass_b - 1 : max_b;
    if (lo > hi) break;
    // Smallest budget in [lo, hi] whose scaled prediction meets the bound (predictions fall as the
    // budget grows).
    const double target = o.bound * (1.0 - o.margin) / scale;
    uint64_t a = lo, b = hi;
    QFORGE_ASSIGN_OR_RETURN(double p_hi, predicted_at(hi));
    if (p_hi > target) {
      // The corrected prediction says nothing below the smallest passing plan passes: done.
      if (pass_b > 0) break;
      a = hi;
    } else {
      while (a < b) {
        const uint64_t mid = a + (b - a) / 2;
        QFORGE_ASSIGN_OR_RETURN(double p, predicted_at(mid));
        if (p <= target) b = mid; else a = mid + 1;
      }
    }
    uint64_t budget = a;
    // Safeguards: with both ends known, stay in the middle half of the bracket so it shrinks; with
    // only failures, step at least 1/16 of the way to the largest plan.
    if (pass_b > 0 && fail_b >= min_b) {
      const uint64_t span = pass_b - fail_b;
      budget = std::clamp(budget, fail_b + span / 4, pass_b - span / 4);
    } else if (fail_b >= min_b) {
      budget = std::clamp(budget, std::min(max_b, fail_b + std::max<uint64_t>(1, (max_b - fail_b) / 16)), max_b);
    }
    PlanBudget pb{PlanBudgetKind::file_bytes, 0, budget};
    QFORGE_ASSIGN_OR_RETURN(MixedPrecisionPlan plan, problem.solve(pb, o.knapsack));
    QFORGE_ASSIGN_OR_RETURN(double measured, measure(plan));
    PlanSearchIteration iter;
    iter.budget_bytes = budget;
    iter.predicted = plan.predicted;
    iter.scale = scale;
    iter.measured = measured;
    iter.meets = measured <= o.bound;
    iter.plan = plan;
    result.iterations.push_back(iter);
    if (o.log) {
      char buf[320];
      std::snprintf(buf, sizeof buf,
                    "iteration %d: budget %llu bytes -> plan %llu bytes (%.4f bits/weight), predicted %.6f x scale %.3f = "
                    "%.6f, measured %.6f: %s",
                    it + 1, static_cast<unsigned long long>(budget), static_cast<unsigned long long>(plan.file_bytes),
                    plan.bits_per_weight, plan.predicted, scale, plan.predicted * scale, measured,
                    iter.meets ? "meets the bound" : "above the bound");
      o.log(buf);
    }
    if (plan.predicted > 0 && measured > 0) scale = measured / plan.predicted;
    if (iter.meets) {
      if (result.best < 0 || plan.file_bytes < result.iterations[static_cast<size_t>(result.best)].plan.file_bytes)
        result.best = static_cast<int>(result.iterations.size() - 1);
      pass_b = pass_b > 0 ? std::min(pass_b, plan.file_bytes) : plan.file_bytes;
    } else {
      if (budget >= max_b) {
        result.largest_fails = true;
        break;
      }
      fail_b = std::max(fail_b, budget);
    }
    if (pass_b > 0 && fail_b >= min_b &&
        static_cast<double>(pass_b - fail_b) <= o.size_tolerance * static_cast<double>(pass_b))
      break;
  }
  return result;
}

}  // namespace qforge
