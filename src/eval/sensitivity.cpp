// Per-tensor sensitivity to GGUF quantization (qforge/sensitivity.h): one cached reference pass,
// then for every (unit, type) a quantize -> dequantize of the unit's weights and a re-run of the
// layers from the unit's first layer on, compared with the cached reference logits.
#include "qforge/sensitivity.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "eval/softmax_rows.h"
#include "qforge/atomic_file.h"
#include "qforge/format.h"
#include "qforge/gguf_convert.h"
#include "qforge/gguf_quantize.h"
#include "qforge/linear.h"
#include "qforge/model.h"

namespace qforge {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool is_quantizable(const GgufInputTensor& t) {
  if (t.role.is_bias || t.shape.size() != 2) return false;
  return t.role.role == TensorRole::token_embedding || t.role.role == TensorRole::output ||
         is_linear_weight(t.role.role);
}

bool is_attention(TensorRole r) {
  return r == TensorRole::attn_q || r == TensorRole::attn_k || r == TensorRole::attn_v || r == TensorRole::attn_qkv ||
         r == TensorRole::attn_output;
}

// A quantizable tensor and where its weights live in the model.
struct UnitTensor {
  size_t input_index = 0;
  std::string name;
  TensorRole role = TensorRole::attn_q;
  int layer = -1;
  int64_t rows = 0, cols = 0;
  bool embedding = false;       // token_embd (the lookup table)
  bool output_head = false;     // the output head: output.weight, or a tied token_embd
  LinearSite site;              // the linear to replace (output head: {-1, output})
};

// The sums llama-imatrix collects for one linear input: sum of x^2 per column, tokens seen.
struct ColumnSums {
  std::vector<double> sum2;
  int64_t count = 0;
};

double nan() { return std::numeric_limits<double>::quiet_NaN(); }

std::vector<double> ranks(const std::vector<double>& v) {
  std::vector<size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
    const double avg = 0.5 * static_cast<double>(i + j) + 1.0;  // 1-based average rank of the tie run
    for (size_t k = i; k <= j; ++k) r[idx[k]] = avg;
    i = j + 1;
  }
  return r;
}

}  // namespace

const char* sensitivity_granularity_name(SensitivityGranularity g) {
  return g == SensitivityGranularity::group ? "group" : "tensor";
}

Expected<SensitivityGranularity> parse_sensitivity_granularity(const std::string& name) {
  if (name == "tensor") return SensitivityGranularity::tensor;
  if (name == "group") return SensitivityGranularity::group;
  return invalid_argument("--granularity '" + name + "': expected tensor or group");
}

double spearman_correlation(const std::vector<double>& x, const std::vector<double>& y) {
  QFORGE_CHECK(x.size() == y.size());
  const size_t n = x.size();
  if (n < 2) return nan();
  for (size_t i = 0; i < n; ++i)
    if (std::isnan(x[i]) || std::isnan(y[i])) return nan();
  const std::vector<double> rx = ranks(x), ry = ranks(y);
  const double mean = 0.5 * static_cast<double>(n + 1);
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (rx[i] - mean) * (ry[i] - mean);
    sxx += (rx[i] - mean) * (rx[i] - mean);
    syy += (ry[i] - mean) * (ry[i] - mean);
  }
  if (sxx == 0 || syy == 0) return nan();
  return sxy / std::sqrt(sxx * syy);
}

Expected<Scheme> gguf_block_type_scheme(GgmlType type) {
  const FormatTraits* f = find_format_by_gguf_type(static_cast<int>(type));
  if (f == nullptr || !ggml_type_info(type).quantized || type == GgmlType::Q8_K)
    return invalid_argument(std::string("type ") + ggml_type_name(type) +
                            " is not a GGUF block format qforge writes (candidates are quantized types: Q8_0, Q6_K, "
                            "Q5_K, Q4_K, Q3_K, Q2_K, Q4_0, ...)");
  return gguf_type_scheme(type);
}

Expected<std::vector<float>> gguf_quantize_dequantize(GgmlType type, const float* w, int64_t rows, int64_t cols) {
  QFORGE_ASSIGN_OR_RETURN(Scheme scheme, gguf_block_type_scheme(type));
  QFORGE_RETURN_IF_ERROR(validate_scheme(scheme, rows, cols));
  // Rows are quantized independently, so chunks of rows run in parallel with the same result.
  constexpr int64_t kRowsPerChunk = 32;
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  std::vector<float> out(static_cast<size_t>(rows * cols));
  std::vector<Status> errors(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * kRowsPerChunk, n = std::min(kRowsPerChunk, rows - r0);
    Expected<QuantizedTensor> q = quantize(scheme, w + r0 * cols, n, cols);
    errors[static_cast<size_t>(c)] = q ? dequantize(*q, out.data() + r0 * cols) : q.status();
  }
  for (const Status& e : errors) QFORGE_RETURN_IF_ERROR(e);
  return out;
}

Expected<SensitivityReport> measure_sensitivity(Model& model, const GgufModelInput& input, const EvalWindows& windows,
                                                const SensitivityOptions& o) {
  const auto t_start = std::chrono::steady_clock::now();
  const ModelConfig& c = model.config();
  if (!c.causal) return invalid_argument("sensitivity: " + std::string(architecture_name(c.arch)) + " is an encoder");
  if (c.learned_positions) return unsupported("sensitivity: models with learned positions are not supported");
  if (o.types.empty()) return invalid_argument("sensitivity: no candidate types given (--types)");
  for (GgmlType t : o.types) QFORGE_RETURN_IF_ERROR(gguf_block_type_scheme(t).status().with_context("--types"));
  if (input.config().num_layers != c.num_layers || input.config().hidden_size != c.hidden_size)
    return invalid_argument("sensitivity: the GGUF view of " + input.path() + " does not match the loaded model");
  if (windows.count < 1) return invalid_argument("sensitivity: " + windows.label + " has no full window");
  const int64_t W = o.windows > 0 ? std::min(o.windows, windows.count) : windows.count;
  const int64_t T = windows.ctx, H = c.hidden_size, V = c.vocab_size, L = c.num_layers;
  const int64_t N = W * T;

  // ---- units -------------------------------------------------------------------------------
  std::vector<UnitTensor> tensors;
  for (size_t i = 0; i < input.tensors().size(); ++i) {
    const GgufInputTensor& t = input.tensors()[i];
    if (!is_quantizable(t)) continue;
    UnitTensor u;
    u.input_index = i;
    u.name = t.name;
    u.role = t.role.role;
    u.layer = t.role.layer;
    u.rows = t.rows();
    u.cols = t.cols();
    u.embedding = t.role.role == TensorRole::token_embedding;
    u.output_head = t.role.role == TensorRole::output || (u.embedding && input.tied_embeddings());
    u.site = u.output_head ? LinearSite{-1, TensorRole::output} : LinearSite{u.layer, u.role};
    if (!u.embedding) {
      const Linear* lin = model.linear(u.site);
      if (lin == nullptr || lin->out_features() != u.rows || lin->in_features() != u.cols)
        return invalid_argument("sensitivity: " + u.name + " has no matching linear layer in the model");
    } else if (model.token_embedding().dim(0) != u.rows || model.token_embedding().dim(1) != u.cols) {
      return invalid_argument("sensitivity: token_embd shape differs from the model's embedding table");
    }
    tensors.push_back(std::move(u));
  }
  if (tensors.empty()) return invalid_argument("sensitivity: " + input.path() + " has no quantizable tensor");

  SensitivityReport report;
  report.text = windows.label;
  report.text_sha256 = windows.text_sha256;
  report.ctx = T;
  report.windows = W;
  report.tokens_scored = W * (T - 1);
  report.granularity = o.granularity;
  report.types = o.types;
  report.measured_kld = o.measure_kld;

  std::vector<std::vector<size_t>> unit_members;  // indices into `tensors`
  {
    std::map<std::string, size_t> group_index;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const UnitTensor& t = tensors[i];
      std::string name = t.name;
      if (o.granularity == SensitivityGranularity::group && t.layer >= 0 && !t.embedding && !t.output_head)
        name = "blk." + std::to_string(t.layer) + (is_attention(t.role) ? ".attn" : ".ffn");
      if (o.filter && !std::regex_search(name, *o.filter)) continue;
      auto it = group_index.find(name);
      if (it == group_index.end()) {
        group_index[name] = report.units.size();
        SensitivityUnit u;
        u.name = name;
        u.layer = t.embedding ? 0 : (t.output_head ? -1 : t.layer);
        report.units.push_back(std::move(u));
        unit_members.emplace_back();
        it = group_index.find(name);
      }
      SensitivityUnit& u = report.units[it->second];
      u.tensors.push_back(t.name);
      u.parameters += t.rows * t.cols;
      if (t.embedding) u.layer = 0;
      unit_members[it->second].push_back(i);
    }
  }
  if (report.units.empty()) return invalid_argument("sensitivity: the filter matches no tensor or group");

  // ---- reference pass: layer inputs, logits, importance sums -------------------------------
  const auto t_ref = std::chrono::steady_clock::now();
  std::vector<std::vector<float>> layer_in(static_cast<size_t>(L + 1));
  std::map<LinearSite, ColumnSums> sums;
  std::vector<int> hook_ids;
  for (const LinearSite& site : model.linear_sites()) {
    const Linear* lin = model.linear(site);
    ColumnSums& s = sums[site];
    s.sum2.assign(static_cast<size_t>(lin->in_features()), 0.0);
    hook_ids.push_back(model.add_hook(site, [&s](const LinearActivations& a) {
      for (int64_t t = 0; t < a.n_tokens; ++t) {
        const float* x = a.x + t * a.in_features;
        for (int64_t j = 0; j < a.in_features; ++j) s.sum2[static_cast<size_t>(j)] += static_cast<double>(x[j]) * x[j];
      }
      s.count += a.n_tokens;
    }));
  }
  auto remove_hooks = [&] {
    for (int id : hook_ids) model.remove_hook(id);
    hook_ids.clear();
  };
  std::vector<float> x(static_cast<size_t>(N * H));
  const int32_t* tokens = windows.stream.data();
  if (Status s = model.embed_tokens(tokens, W, T, x); !s) {
    remove_hooks();
    return s;
  }
  for (int64_t l = 0; l < L; ++l) {
    layer_in[static_cast<size_t>(l)] = x;
    if (Status s = model.forward_layer(static_cast<int>(l), x, W, T); !s) {
      remove_hooks();
      return s;
    }
    if (o.should_stop) {
      if (Status s = o.should_stop(); !s) {
        remove_hooks();
        return s;
      }
    }
  }
  layer_in[static_cast<size_t>(L)] = x;
  // Reference logits of the scored rows (positions 0 .. T-2 of each window), kept in f32 so that
  // the KL of a barely perturbed model is not drowned in storage rounding.
  const int64_t S = T - 1;
  std::vector<float> ref_logits(static_cast<size_t>(W * S * V));
  std::vector<float> logits(static_cast<size_t>(T * V));
  double nll = 0;
  for (int64_t w = 0; w < W; ++w) {
    if (Status s = model.forward_head(std::span<const float>(x).subspan(static_cast<size_t>(w * T * H), static_cast<size_t>(T * H)),
                                      T, logits);
        !s) {
      remove_hooks();
      return s;
    }
    std::copy(logits.begin(), logits.begin() + S * V, ref_logits.begin() + w * S * V);
    for (int64_t p = 0; p < S; ++p) {
      const float* row = logits.data() + p * V;
      nll += eval_detail::softmax_row(row, V).lse() - row[tokens[w * T + p + 1]];
    }
  }
  remove_hooks();
  report.ref_ppl = std::exp(nll / static_cast<double>(W * S));
  report.reference_seconds = seconds_since(t_ref);

  // Column importance per tensor (mean x^2 of its input), row weights for an untied embedding
  // (how often each token is looked up).
  auto column_importance = [&](const UnitTensor& t) -> std::vector<double> {
    if (t.embedding && !t.output_head) return {};
    const ColumnSums& s = sums.at(t.site);
    std::vector<double> imp(s.sum2.size(), 1.0);
    if (s.count > 0)
      for (size_t j = 0; j < imp.size(); ++j) imp[j] = s.sum2[j] / static_cast<double>(s.count);
    return imp;
  };
  std::vector<double> token_share(static_cast<size_t>(V), 0.0);
  for (int64_t i = 0; i < N; ++i) token_share[static_cast<size_t>(tokens[i])] += 1.0 / static_cast<double>(N);

  // ---- measurements ------------------------------------------------------------------------
  const int64_t total = static_cast<int64_t>(report.units.size() * o.types.size());
  int64_t done = 0;
  std::vector<double> kl(static_cast<size_t>(W * S));
  std::vector<uint8_t> agree(static_cast<size_t>(W * S));
  for (size_t ui = 0; ui < report.units.size(); ++ui) {
    SensitivityUnit& unit = report.units[ui];
    const std::vector<size_t>& members = unit_members[ui];
    // The unit's f32 weights, to quantize and to restore.
    std::vector<std::vector<float>> original(members.size());
    std::vector<std::vector<float>> bias(members.size());
    for (size_t k = 0; k < members.size(); ++k) {
      const UnitTensor& t = tensors[members[k]];
      if (t.embedding) {
        const float* e = model.token_embedding().data_as<float>();
        original[k].assign(e, e + t.rows * t.cols);
      } else {
        const Linear* lin = model.linear(t.site);
        original[k].resize(static_cast<size_t>(t.rows * t.cols));
        lin->dense_weight(original[k].data());
        bias[k] = lin->bias();
      }
    }
    for (GgmlType type : o.types) {
      if (o.should_stop) QFORGE_RETURN_IF_ERROR(o.should_stop());
      SensitivityCell cell;
      cell.type = type;
      const GgmlTypeInfo& info = ggml_type_info(type);
      for (size_t k = 0; k < members.size(); ++k) {
        const UnitTensor& t = tensors[members[k]];
        if (t.cols % info.block_size != 0) {
          cell.valid = false;
          cell.reason = t.name + ": " + std::to_string(t.cols) + " columns are not a multiple of " + info.name + "'s " +
                        std::to_string(info.block_size);
        }
        const std::vector<int64_t> ne{t.cols, t.rows};
        QFORGE_ASSIGN_OR_RETURN(uint64_t nb, ggml_tensor_nbytes(type, ne));
        cell.bytes += cell.valid ? nb : 0;
      }
      if (!cell.valid) {
        cell.bytes = 0;
        cell.kld = cell.kld_stderr = cell.sqnr_db = cell.proxy = nan();
        cell.top1 = nan();
        unit.cells.push_back(cell);
        if (o.on_progress) o.on_progress(++done, total);
        continue;
      }
      // The f32 weights back in every member's linear (the model is left as it was given).
      auto restore = [&]() -> Status {
        for (size_t k = 0; k < members.size(); ++k) {
          const UnitTensor& t = tensors[members[k]];
          if (t.embedding && !t.output_head) continue;
          Expected<std::unique_ptr<DenseLinear>> lin =
              t.embedding ? DenseLinear::create(model.token_embedding(), bias[k])
                          : DenseLinear::create(Tensor::from_f32({t.rows, t.cols}, original[k]), bias[k]);
          QFORGE_RETURN_IF_ERROR(lin.status());
          QFORGE_RETURN_IF_ERROR(model.replace_linear(t.site, std::move(*lin)));
        }
        return Status::ok();
      };
      // Quantize -> dequantize every member; install them.
      double signal = 0, noise = 0;
      std::vector<float> embedding_table;  // the unit's dequantized token_embd, when it has one
      int first_layer = static_cast<int>(L);
      for (size_t k = 0; k < members.size(); ++k) {
        const UnitTensor& t = tensors[members[k]];
        Expected<std::vector<float>> qd = gguf_quantize_dequantize(type, original[k].data(), t.rows, t.cols);
        if (!qd) {
          if (o.measure_kld) (void)restore();
          return qd.status().with_context(t.name);
        }
        const std::vector<float>& q = *qd;
        const std::vector<double> imp = column_importance(t);
        for (int64_t r = 0; r < t.rows; ++r) {
          const double row_weight = t.embedding && !t.output_head ? token_share[static_cast<size_t>(r)] : 1.0;
          double row_proxy = 0;
          for (int64_t j = 0; j < t.cols; ++j) {
            const size_t e = static_cast<size_t>(r * t.cols + j);
            const double w = original[k][e], d = w - q[e];
            signal += w * w;
            noise += d * d;
            row_proxy += (imp.empty() ? 1.0 : imp[static_cast<size_t>(j)]) * d * d;
          }
          cell.proxy += row_weight * row_proxy;
        }
        if (o.measure_kld) {
          if (t.embedding) {
            first_layer = 0;
            embedding_table = q;
          } else {
            first_layer = std::min(first_layer, t.layer >= 0 && !t.output_head ? t.layer : static_cast<int>(L));
          }
          if (!t.embedding || t.output_head) {
            auto lin = DenseLinear::create(Tensor::from_f32({t.rows, t.cols}, q), bias[k]);
            Status installed = lin ? model.replace_linear(t.site, std::move(*lin)) : lin.status();
            if (!installed) {
              (void)restore();
              return installed;
            }
          }
        }
      }
      cell.sqnr_db = noise > 0 ? 10.0 * std::log10(signal / noise) : std::numeric_limits<double>::infinity();

      if (o.measure_kld) {
        if (!embedding_table.empty()) {
          for (int64_t i = 0; i < N; ++i)
            std::copy_n(embedding_table.data() + static_cast<int64_t>(tokens[i]) * H, H, x.data() + i * H);
        } else {
          x = layer_in[static_cast<size_t>(first_layer)];
        }
        Status run = Status::ok();
        for (int64_t l = first_layer; l < L && run; ++l) run = model.forward_layer(static_cast<int>(l), x, W, T);
        for (int64_t w = 0; w < W && run; ++w) {
          run = model.forward_head(std::span<const float>(x).subspan(static_cast<size_t>(w * T * H), static_cast<size_t>(T * H)),
                                   T, logits);
          if (!run) break;
#pragma omp parallel for schedule(static)
          for (int64_t p = 0; p < S; ++p) {
            const float* r = ref_logits.data() + (w * S + p) * V;
            const float* m = logits.data() + p * V;
            const eval_detail::KlRow kr = eval_detail::kl_row(r, m, V);
            const eval_detail::SoftmaxRow sm = eval_detail::softmax_row(m, V);
            kl[static_cast<size_t>(w * S + p)] = eval_detail::kl_from_rows(kr, sm);
            agree[static_cast<size_t>(w * S + p)] = kr.sm.argmax == sm.argmax ? 1 : 0;
          }
        }
        QFORGE_RETURN_IF_ERROR(restore());  // before anything can return
        QFORGE_RETURN_IF_ERROR(run.with_context("sensitivity of " + unit.name + " as " + info.name));
        std::vector<double> values(kl);
        const SampleStats st = sample_stats(values);
        cell.kld = st.mean;
        cell.kld_stderr = st.stderr_mean;
        int64_t agreeing = 0;
        for (uint8_t a : agree) agreeing += a;
        cell.top1 = static_cast<double>(agreeing) / static_cast<double>(agree.size());
        report.measurements += 1;
        report.layer_passes += L - first_layer;
        report.head_passes += 1;
        report.naive_layer_passes += L;
        report.naive_head_passes += 1;
      }
      unit.cells.push_back(cell);
      if (o.on_progress) o.on_progress(++done, total);
    }
  }

  // ---- proxy quality -------------------------------------------------------------------------
  if (o.measure_kld) {
    std::vector<double> all_proxy, all_kld, all_sqnr;
    report.spearman_per_type.assign(o.types.size(), nan());
    for (size_t ti = 0; ti < o.types.size(); ++ti) {
      std::vector<double> p, k;
      for (const SensitivityUnit& u : report.units) {
        const SensitivityCell& cell = u.cells[ti];
        if (!cell.valid) continue;
        p.push_back(cell.proxy);
        k.push_back(cell.kld);
        all_proxy.push_back(cell.proxy);
        all_kld.push_back(cell.kld);
        all_sqnr.push_back(-cell.sqnr_db);
      }
      if (p.size() >= 3) report.spearman_per_type[ti] = spearman_correlation(p, k);
    }
    report.spearman_all = all_kld.size() >= 3 ? spearman_correlation(all_proxy, all_kld) : nan();
    report.spearman_sqnr_all = all_kld.size() >= 3 ? spearman_correlation(all_sqnr, all_kld) : nan();
  } else {
    report.spearman_all = report.spearman_sqnr_all = nan();
    report.spearman_per_type.assign(o.types.size(), nan());
  }
  report.seconds = seconds_since(t_start);
  return report;
}

// ---- JSON ------------------------------------------------------------------------------------

namespace {
nlohmann::ordered_json number(double v) {
  return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr);
}
double number_from(const nlohmann::ordered_json& j) {
  if (j.is_null()) return nan();
  return j.get<double>();  // throws type_error for anything but a number
}
}  // namespace

nlohmann::ordered_json sensitivity_to_json(const SensitivityReport& r) {
  nlohmann::ordered_json j;
  j["format"] = "qforge-sensitivity-v1";
  j["model"] = r.model;
  j["text"] = r.text;
  j["text_sha256"] = r.text_sha256;
  j["protocol"] = std::string(kPerplexityProtocol);
  j["ctx"] = r.ctx;
  j["windows"] = r.windows;
  j["tokens_scored"] = r.tokens_scored;
  j["granularity"] = sensitivity_granularity_name(r.granularity);
  nlohmann::ordered_json types = nlohmann::ordered_json::array();
  for (GgmlType t : r.types) types.push_back(ggml_type_name(t));
  j["types"] = types;
  j["measured_kld"] = r.measured_kld;
  j["ref_ppl"] = number(r.ref_ppl);
  j["cost"] = {{"measurements", r.measurements},
               {"layer_passes", r.layer_passes},
               {"head_passes", r.head_passes},
               {"naive_layer_passes", r.naive_layer_passes},
               {"naive_head_passes", r.naive_head_passes},
               {"reference_seconds", r.reference_seconds},
               {"seconds", r.seconds}};
  nlohmann::ordered_json per_type = nlohmann::ordered_json::object();
  for (size_t i = 0; i < r.types.size() && i < r.spearman_per_type.size(); ++i)
    per_type[ggml_type_name(r.types[i])] = number(r.spearman_per_type[i]);
  j["spearman"] = {{"proxy_vs_kld", number(r.spearman_all)},
                   {"proxy_vs_kld_per_type", per_type},
                   {"neg_sqnr_vs_kld", number(r.spearman_sqnr_all)}};
  nlohmann::ordered_json units = nlohmann::ordered_json::array();
  for (const SensitivityUnit& u : r.units) {
    nlohmann::ordered_json ju;
    ju["name"] = u.name;
    ju["tensors"] = u.tensors;
    ju["layer"] = u.layer;
    ju["parameters"] = u.parameters;
    nlohmann::ordered_json cells = nlohmann::ordered_json::array();
    for (const SensitivityCell& c : u.cells) {
      nlohmann::ordered_json jc;
      jc["type"] = ggml_type_name(c.type);
      jc["valid"] = c.valid;
      if (!c.valid) jc["reason"] = c.reason;
      jc["bytes"] = c.bytes;
      jc["kld"] = number(c.kld);
      jc["kld_stderr"] = number(c.kld_stderr);
      jc["top1"] = number(c.top1);
      jc["sqnr_db"] = number(c.sqnr_db);
      jc["proxy"] = number(c.proxy);
      cells.push_back(jc);
    }
    ju["cells"] = cells;
    units.push_back(ju);
  }
  j["units"] = units;
  return j;
}

Expected<SensitivityReport> sensitivity_from_json(const nlohmann::ordered_json& j, const std::string& label) {
  SensitivityReport r;
  try {
    if (!j.is_object() || j.value("format", "") != "qforge-sensitivity-v1")
      return parse_error(label + ": not a qforge sensitivity file (format qforge-sensitivity-v1)");
    r.model = j.at("model").get<std::string>();
    r.text = j.at("text").get<std::string>();
    r.text_sha256 = j.at("text_sha256").get<std::string>();
    r.ctx = j.at("ctx").get<int64_t>();
    r.windows = j.at("windows").get<int64_t>();
    r.tokens_scored = j.at("tokens_scored").get<int64_t>();
    QFORGE_ASSIGN_OR_RETURN(r.granularity, parse_sensitivity_granularity(j.at("granularity").get<std::string>()));
    for (const auto& t : j.at("types")) {
      const auto type = ggml_type_from_name(t.get<std::string>());
      if (!type) return parse_error(label + ": unknown type '" + t.get<std::string>() + "'");
      r.types.push_back(*type);
    }
    r.measured_kld = j.at("measured_kld").get<bool>();
    r.ref_ppl = number_from(j.at("ref_ppl"));
    const auto& cost = j.at("cost");
    r.measurements = cost.at("measurements").get<int64_t>();
    r.layer_passes = cost.at("layer_passes").get<int64_t>();
    r.head_passes = cost.at("head_passes").get<int64_t>();
    r.naive_layer_passes = cost.at("naive_layer_passes").get<int64_t>();
    r.naive_head_passes = cost.at("naive_head_passes").get<int64_t>();
    r.reference_seconds = cost.at("reference_seconds").get<double>();
    r.seconds = cost.at("seconds").get<double>();
    const auto& sp = j.at("spearman");
    r.spearman_all = number_from(sp.at("proxy_vs_kld"));
    r.spearman_sqnr_all = number_from(sp.at("neg_sqnr_vs_kld"));
    for (GgmlType t : r.types) r.spearman_per_type.push_back(number_from(sp.at("proxy_vs_kld_per_type").at(ggml_type_name(t))));
    for (const auto& ju : j.at("units")) {
      SensitivityUnit u;
      u.name = ju.at("name").get<std::string>();
      u.tensors = ju.at("tensors").get<std::vector<std::string>>();
      u.layer = ju.at("layer").get<int>();
      u.parameters = ju.at("parameters").get<int64_t>();
      const auto& cells = ju.at("cells");
      if (cells.size() != r.types.size())
        return parse_error(label + ": unit " + u.name + " has " + std::to_string(cells.size()) + " cells for " +
                           std::to_string(r.types.size()) + " types");
      for (size_t i = 0; i < cells.size(); ++i) {
        const auto& jc = cells[i];
        SensitivityCell c;
        c.type = r.types[i];
        if (jc.at("type").get<std::string>() != ggml_type_name(c.type))
          return parse_error(label + ": unit " + u.name + " cell " + std::to_string(i) + " is not " + ggml_type_name(c.type));
        c.valid = jc.at("valid").get<bool>();
        c.reason = jc.value("reason", "");
        c.bytes = jc.at("bytes").get<uint64_t>();
        c.kld = number_from(jc.at("kld"));
        c.kld_stderr = number_from(jc.at("kld_stderr"));
        c.top1 = number_from(jc.at("top1"));
        c.sqnr_db = number_from(jc.at("sqnr_db"));
        c.proxy = number_from(jc.at("proxy"));
        u.cells.push_back(c);
      }
      if (u.tensors.empty()) return parse_error(label + ": unit " + u.name + " lists no tensors");
      r.units.push_back(std::move(u));
    }
  } catch (const nlohmann::json::exception& e) {
    return parse_error(label + ": " + e.what());
  }
  if (r.units.empty()) return parse_error(label + ": no units");
  return r;
}

Expected<SensitivityReport> read_sensitivity_json(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(std::string text, read_file(path));
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(text, nullptr, false);
  if (j.is_discarded()) return parse_error(path + ": not valid JSON");
  return sensitivity_from_json(j, path);
}

}  // namespace qforge
