// Activation quantization for linear layers: a Linear wrapper that quantizes its input before the
// weight multiplies it, for any weight scheme (`--act-scheme`).
//
//   int8-token-dyn      symmetric int8, one scale per token computed at run time:
//                       s_t = max_i |x_ti| / 127, q = clamp(round_half_even(x / s_t), -127, 127)
//   int8-tensor-static  symmetric int8, one calibrated scale s for the whole input (from a
//                       calibration observer: s = T / 127, T the observer's threshold)
//   fp8-tensor-static   E4M3FN codes of x / s with one calibrated scale (s = T / 448), saturating
//
// With int8 activations and int8 per-channel symmetric weights (int8-ch-sym: the W8A8 of
// SmoothQuant) the layer runs a faithful integer GEMM: int8 x int8 products accumulated in int32,
// then the epilogue y = acc * (s_x * s_w[o]) (+ bias) in f32. Every other combination runs the
// weight's own forward on the dequantized (fake-quantized) activations, which is what integer or
// FP8 hardware computes up to the accumulation order.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qforge/linear.h"
#include "qforge/status.h"

namespace qforge {

class Model;
struct LinearSite;

enum class ActScheme : uint8_t {
  none = 0,
  int8_token_dyn = 1,
  int8_tensor_static = 2,
  fp8_tensor_static = 3,
};
const char* act_scheme_name(ActScheme s);  // "none", "int8-token-dyn", ...
Expected<ActScheme> parse_act_scheme(const std::string& name);
bool act_scheme_is_static(ActScheme s);
// The largest code magnitude: 127 for int8, 448 for E4M3FN. Static scale = threshold / this.
float act_scheme_qmax(ActScheme s);

// y[t, o] = sum_i xq[t, i] * wq[o, i] accumulated in int32, then y = acc * x_scale[t] * w_scale[o]
// (+ bias[o] when bias is non-null). xq [n, in] and wq [out, in] are int8 row-major; x_scale has
// n values (per token; a per-tensor scale is repeated). The _ref is the specification; the fast
// version is bit-identical to it (integer accumulation is exact; the epilogue is the same f32 ops).
void int8_gemm_ref(const int8_t* xq, const float* x_scale, int64_t n, const int8_t* wq, const float* w_scale,
                   int64_t out, int64_t in, const float* bias, float* y);
void int8_gemm(const int8_t* xq, const float* x_scale, int64_t n, const int8_t* wq, const float* w_scale, int64_t out,
               int64_t in, const float* bias, float* y);

// Quantizes activations [n, in] to int8: per token (scale per row, dynamic) or with one static
// scale. Zero rows get scale 1 (all codes 0).
void quantize_act_int8_per_token(const float* x, int64_t n, int64_t in, int8_t* xq, float* scales);
void quantize_act_int8_static(const float* x, int64_t n, int64_t in, float scale, int8_t* xq);

class ActQuantLinear final : public Linear {
 public:
  // Wraps `inner`. Static schemes need a finite scale > 0; dynamic ones ignore it.
  static Expected<std::unique_ptr<ActQuantLinear>> create(std::unique_ptr<Linear> inner, ActScheme scheme,
                                                          float static_scale = 0.0f);

  void forward(const float* x, int64_t n_tokens, float* y) const override;
  void dense_weight(float* out) const override { inner_->dense_weight(out); }
  // "<weight scheme> a:<act scheme>", e.g. "int8-ch-sym a:int8-token-dyn".
  std::string describe() const override;
  size_t weight_bytes() const override { return inner_->weight_bytes(); }

  ActScheme scheme() const { return scheme_; }
  float static_scale() const { return scale_; }
  const Linear& inner() const { return *inner_; }
  // True when forward runs the int8 x int8 -> int32 path (int8-ch-sym weights, int8 activations).
  bool integer_path() const { return !wq_.empty(); }

 private:
  ActQuantLinear(std::unique_ptr<Linear> inner, ActScheme scheme, float scale);
  std::unique_ptr<Linear> inner_;
  ActScheme scheme_;
  float scale_;
  std::vector<int8_t> wq_;      // integer path: int8 weights [out, in]
  std::vector<float> w_scale_;  // integer path: per output channel
};

// Static scale of an input whose observed range is `range_absmax` (threshold) for `scheme`:
// absmax / qmax, never below FLT_MIN (an all-zero input gets scale 1).
float act_static_scale(ActScheme scheme, float threshold);

// Activation-quantization settings recorded in an output file's metadata (key "qforge_act_quant"):
//   {"scheme": "int8-tensor-static", "observer": "minmax", "scales": {"<weight name>": s, ...}}
// Dynamic schemes have no "scales".
inline constexpr const char* kActQuantMetadataKey = "qforge_act_quant";
struct ActQuantRecord {
  ActScheme scheme = ActScheme::none;
  std::string observer;                  // how static scales were calibrated (informational)
  std::map<std::string, float> scales;   // weight name (HF) -> static input scale
};
std::string act_quant_record_to_json(const ActQuantRecord& r);
Expected<ActQuantRecord> parse_act_quant_record(const std::string& json_text, const std::string& label);
// Replaces the linear at `site` by an ActQuantLinear around (a copy of) it; `scale` for static
// schemes. QuantizedLinear layers keep their quantized weight (so int8-ch-sym runs the integer path).
Status wrap_act_quant(Model& model, const LinearSite& site, ActScheme scheme, float scale);
// Wraps every linear the record covers (dynamic: every block linear, and not the output head) in
// an ActQuantLinear. Names resolve through the model's architecture (HF naming).
Status apply_act_quant(Model& model, const ActQuantRecord& record);
// apply_act_quant when `metadata` holds kActQuantMetadataKey; nothing otherwise.
Status apply_act_quant_metadata(Model& model, const std::map<std::string, std::string>& metadata,
                                const std::string& label);

}  // namespace qforge
