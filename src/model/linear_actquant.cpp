// ActQuantLinear: activation quantization (int8 per token / per tensor, FP8 per tensor) in front
// of any weight, with an integer GEMM for int8 x int8-ch-sym (include/qforge/act_quant.h).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "qforge/act_quant.h"
#include "qforge/dtype.h"
#include "qforge/model.h"
#include "qforge/tensor_roles.h"

namespace qforge {
namespace {

constexpr float kInt8Max = 127.0f;
constexpr float kE4m3Max = 448.0f;

int8_t quantize_int8(float x, float inv_scale) {
  const float r = std::nearbyint(x * inv_scale);  // round half to even (default FP environment)
  return static_cast<int8_t>(std::clamp(r, -kInt8Max, kInt8Max));
}

// One output: int32 dot of two int8 rows. |x q| <= 127^2 and in <= 2^17 (checked at create), so
// the sum fits in int32.
int32_t dot_i8(const int8_t* a, const int8_t* b, int64_t n) {
  int32_t acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<int32_t>(a[i]) * static_cast<int32_t>(b[i]);
  return acc;
}

// A copy of a layer that shares its weights where the implementation allows (dense) or copies the
// quantized planes; other kinds become dense f32.
Expected<std::unique_ptr<Linear>> clone_linear(const Linear& l) {
  if (const auto* q = dynamic_cast<const QuantizedLinear*>(&l)) {
    QFORGE_ASSIGN_OR_RETURN(auto c, QuantizedLinear::create(q->weight(), q->bias()));
    return std::unique_ptr<Linear>(std::move(c));
  }
  if (const auto* d = dynamic_cast<const DenseLinear*>(&l)) {
    QFORGE_ASSIGN_OR_RETURN(auto c, DenseLinear::create(d->weight_tensor(), d->bias()));
    return std::unique_ptr<Linear>(std::move(c));
  }
  if (dynamic_cast<const ActQuantLinear*>(&l) != nullptr)
    return invalid_argument("the layer already quantizes its activations");
  Tensor w = Tensor::zeros(DType::f32, {l.out_features(), l.in_features()});
  l.dense_weight(w.data_as<float>());
  QFORGE_ASSIGN_OR_RETURN(auto c, DenseLinear::create(std::move(w), l.bias()));
  return std::unique_ptr<Linear>(std::move(c));
}

}  // namespace

const char* act_scheme_name(ActScheme s) {
  switch (s) {
    case ActScheme::none: return "none";
    case ActScheme::int8_token_dyn: return "int8-token-dyn";
    case ActScheme::int8_tensor_static: return "int8-tensor-static";
    case ActScheme::fp8_tensor_static: return "fp8-tensor-static";
  }
  return "unknown";
}

Expected<ActScheme> parse_act_scheme(const std::string& name) {
  for (ActScheme s : {ActScheme::none, ActScheme::int8_token_dyn, ActScheme::int8_tensor_static,
                      ActScheme::fp8_tensor_static})
    if (name == act_scheme_name(s)) return s;
  return invalid_argument("unknown activation scheme '" + name +
                          "' (expected none, int8-token-dyn, int8-tensor-static or fp8-tensor-static)");
}

bool act_scheme_is_static(ActScheme s) {
  return s == ActScheme::int8_tensor_static || s == ActScheme::fp8_tensor_static;
}

float act_scheme_qmax(ActScheme s) { return s == ActScheme::fp8_tensor_static ? kE4m3Max : kInt8Max; }

float act_static_scale(ActScheme scheme, float threshold) {
  if (!(threshold > 0.0f) || !std::isfinite(threshold)) return 1.0f;
  return std::max(threshold / act_scheme_qmax(scheme), FLT_MIN);
}

void quantize_act_int8_per_token(const float* x, int64_t n, int64_t in, int8_t* xq, float* scales) {
  for (int64_t t = 0; t < n; ++t) {
    const float* row = x + t * in;
    float amax = 0.0f;
    for (int64_t i = 0; i < in; ++i) amax = std::max(amax, std::fabs(row[i]));
    const float s = amax > 0.0f ? std::max(amax / kInt8Max, FLT_MIN) : 1.0f;
    scales[t] = s;
    const float inv = 1.0f / s;
    for (int64_t i = 0; i < in; ++i) xq[t * in + i] = quantize_int8(row[i], inv);
  }
}

void quantize_act_int8_static(const float* x, int64_t n, int64_t in, float scale, int8_t* xq) {
  const float inv = 1.0f / scale;
  for (int64_t k = 0; k < n * in; ++k) xq[k] = quantize_int8(x[k], inv);
}

void int8_gemm_ref(const int8_t* xq, const float* x_scale, int64_t n, const int8_t* wq, const float* w_scale,
                   int64_t out, int64_t in, const float* bias, float* y) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < out; ++o) {
      int32_t acc = 0;
      for (int64_t i = 0; i < in; ++i) acc += static_cast<int32_t>(xq[t * in + i]) * static_cast<int32_t>(wq[o * in + i]);
      float v = static_cast<float>(acc) * (x_scale[t] * w_scale[o]);
      if (bias != nullptr) v += bias[o];
      y[t * out + o] = v;
    }
}

void int8_gemm(const int8_t* xq, const float* x_scale, int64_t n, const int8_t* wq, const float* w_scale, int64_t out,
               int64_t in, const float* bias, float* y) {
  // Tiles of 4 tokens x 64 outputs keep both operands in L1; accumulation order inside a dot is
  // irrelevant for integers, so the result equals int8_gemm_ref exactly.
  constexpr int64_t kTok = 4, kOut = 64;
  const int64_t tiles_t = (n + kTok - 1) / kTok, tiles_o = (out + kOut - 1) / kOut;
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t tt = 0; tt < tiles_t; ++tt)
    for (int64_t to = 0; to < tiles_o; ++to) {
      const int64_t t_end = std::min(n, (tt + 1) * kTok), o_end = std::min(out, (to + 1) * kOut);
      for (int64_t t = tt * kTok; t < t_end; ++t)
        for (int64_t o = to * kOut; o < o_end; ++o) {
          const int32_t acc = dot_i8(xq + t * in, wq + o * in, in);
          float v = static_cast<float>(acc) * (x_scale[t] * w_scale[o]);
          if (bias != nullptr) v += bias[o];
          y[t * out + o] = v;
        }
    }
}

ActQuantLinear::ActQuantLinear(std::unique_ptr<Linear> inner, ActScheme scheme, float scale)
    : Linear(inner->out_features(), inner->in_features(), inner->bias()),
      inner_(std::move(inner)),
      scheme_(scheme),
      scale_(scale) {}

Expected<std::unique_ptr<ActQuantLinear>> ActQuantLinear::create(std::unique_ptr<Linear> inner, ActScheme scheme,
                                                                 float static_scale) {
  if (inner == nullptr) return invalid_argument("ActQuantLinear: no layer to wrap");
  if (scheme == ActScheme::none) return invalid_argument("ActQuantLinear: activation scheme 'none'");
  if (act_scheme_is_static(scheme) && !(std::isfinite(static_scale) && static_scale > 0.0f))
    return invalid_argument(std::string("ActQuantLinear: ") + act_scheme_name(scheme) + " needs a finite scale > 0, got " +
                            std::to_string(static_scale));
  if (!act_scheme_is_static(scheme)) static_scale = 0.0f;
  std::unique_ptr<ActQuantLinear> l(new ActQuantLinear(std::move(inner), scheme, static_scale));
  const auto* q = dynamic_cast<const QuantizedLinear*>(l->inner_.get());
  const bool int8_act = scheme == ActScheme::int8_token_dyn || scheme == ActScheme::int8_tensor_static;
  if (q != nullptr && int8_act && q->weight().scheme.format == FormatId::int_sym && q->weight().scheme.bits == 8 &&
      q->weight().scheme.granularity == Granularity::channel && l->in_features() <= (int64_t{1} << 17)) {
    const QuantizedTensor& w = q->weight();
    l->wq_.resize(static_cast<size_t>(w.rows * w.cols));
    l->w_scale_.resize(static_cast<size_t>(w.rows));
    for (int64_t o = 0; o < w.rows; ++o) {
      uint16_t h;
      std::memcpy(&h, w.scales.data() + 2 * o, 2);
      l->w_scale_[static_cast<size_t>(o)] = f16_to_f32(h);
      // int8-ch-sym codes are q + 128 (offset binary, integer.cpp), one byte each.
      for (int64_t i = 0; i < w.cols; ++i)
        l->wq_[static_cast<size_t>(o * w.cols + i)] = static_cast<int8_t>(static_cast<int>(w.codes[static_cast<size_t>(o * w.cols + i)]) - 128);
    }
  }
  return l;
}

std::string ActQuantLinear::describe() const { return inner_->describe() + " a:" + act_scheme_name(scheme_); }

void ActQuantLinear::forward(const float* x, int64_t n_tokens, float* y) const {
  const int64_t in = in_features(), out = out_features();
  const size_t count = static_cast<size_t>(n_tokens * in);
  if (scheme_ == ActScheme::fp8_tensor_static) {
    std::vector<float> xd(count);
    const float inv = 1.0f / scale_;
    for (size_t k = 0; k < count; ++k) xd[k] = f8_e4m3fn_to_f32(f32_to_f8_e4m3fn(x[k] * inv)) * scale_;
    inner_->forward(xd.data(), n_tokens, y);
    return;
  }
  std::vector<int8_t> xq(count);
  std::vector<float> xs(static_cast<size_t>(n_tokens));
  if (scheme_ == ActScheme::int8_token_dyn) {
    quantize_act_int8_per_token(x, n_tokens, in, xq.data(), xs.data());
  } else {
    quantize_act_int8_static(x, n_tokens, in, scale_, xq.data());
    std::fill(xs.begin(), xs.end(), scale_);
  }
  if (integer_path()) {
    int8_gemm(xq.data(), xs.data(), n_tokens, wq_.data(), w_scale_.data(), out, in,
              bias().empty() ? nullptr : bias().data(), y);
    return;
  }
  std::vector<float> xd(count);
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t i = 0; i < in; ++i) xd[static_cast<size_t>(t * in + i)] = static_cast<float>(xq[static_cast<size_t>(t * in + i)]) * xs[static_cast<size_t>(t)];
  inner_->forward(xd.data(), n_tokens, y);
}

std::string act_quant_record_to_json(const ActQuantRecord& r) {
  nlohmann::ordered_json j;
  j["scheme"] = act_scheme_name(r.scheme);
  if (!r.observer.empty()) j["observer"] = r.observer;
  if (act_scheme_is_static(r.scheme)) {
    nlohmann::ordered_json s = nlohmann::ordered_json::object();
    for (const auto& [name, v] : r.scales) s[name] = v;  // JSON doubles hold every float exactly
    j["scales"] = s;
  }
  return j.dump();
}

Expected<ActQuantRecord> parse_act_quant_record(const std::string& json_text, const std::string& label) {
  const auto j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return parse_error(label + ": " + kActQuantMetadataKey + " is not a JSON object");
  ActQuantRecord r;
  auto s = j.find("scheme");
  if (s == j.end() || !s->is_string()) return parse_error(label + ": " + kActQuantMetadataKey + ".scheme is missing");
  QFORGE_ASSIGN_OR_RETURN(r.scheme, parse_act_scheme(s->get<std::string>()));
  if (auto o = j.find("observer"); o != j.end() && o->is_string()) r.observer = o->get<std::string>();
  if (act_scheme_is_static(r.scheme)) {
    auto sc = j.find("scales");
    if (sc == j.end() || !sc->is_object())
      return parse_error(label + ": " + kActQuantMetadataKey + ".scales is missing for " + act_scheme_name(r.scheme));
    for (auto it = sc->begin(); it != sc->end(); ++it) {
      if (!it.value().is_number()) return parse_error(label + ": act scale of '" + it.key() + "' is not a number");
      const double v = it.value().get<double>();
      if (!(std::isfinite(v) && v > 0.0 && v < 3.0e38))
        return parse_error(label + ": act scale of '" + it.key() + "' is not a finite positive float");
      r.scales[it.key()] = static_cast<float>(v);
    }
  }
  return r;
}

Status wrap_act_quant(Model& model, const LinearSite& site, ActScheme scheme, float scale) {
  const Linear* current = model.linear(site);
  if (current == nullptr) return invalid_argument("no linear at " + linear_site_name(site));
  QFORGE_ASSIGN_OR_RETURN(std::unique_ptr<Linear> inner, clone_linear(*current));
  QFORGE_ASSIGN_OR_RETURN(auto wrapped, ActQuantLinear::create(std::move(inner), scheme, scale));
  return model.replace_linear(site, std::move(wrapped));
}

Status apply_act_quant(Model& model, const ActQuantRecord& record) {
  if (record.scheme == ActScheme::none) return Status::ok();
  const Architecture arch = model.config().arch;
  size_t used = 0;
  for (const LinearSite& site : model.linear_sites()) {
    if (site.layer < 0) continue;  // the output head keeps float activations
    QFORGE_ASSIGN_OR_RETURN(std::string name, tensor_name_for_role(arch, site.role, site.layer, false));
    float scale = 0.0f;
    if (act_scheme_is_static(record.scheme)) {
      auto it = record.scales.find(name);
      if (it == record.scales.end())
        return invalid_argument(std::string("activation scheme ") + act_scheme_name(record.scheme) +
                                ": no static scale recorded for '" + name + "'");
      scale = it->second;
      ++used;
    }
    QFORGE_RETURN_IF_ERROR(wrap_act_quant(model, site, record.scheme, scale).with_context("tensor '" + name + "'"));
  }
  if (used != record.scales.size())
    return invalid_argument("activation scales recorded for " + std::to_string(record.scales.size() - used) +
                            " tensors that are not block linears of the model");
  return Status::ok();
}

Status apply_act_quant_metadata(Model& model, const std::map<std::string, std::string>& metadata,
                                const std::string& label) {
  auto it = metadata.find(kActQuantMetadataKey);
  if (it == metadata.end()) return Status::ok();
  QFORGE_ASSIGN_OR_RETURN(ActQuantRecord r, parse_act_quant_record(it->second, label));
  return apply_act_quant(model, r).with_context(label);
}

}  // namespace qforge
