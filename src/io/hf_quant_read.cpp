// Reading HF GPTQ / AWQ model directories back: quantization_config, the packed tensors of every
// quantized linear (validated as untrusted input) and a Model whose linears are QuantizedLinear
// layers holding exactly the stored weights.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "qforge/act_quant.h"
#include "qforge/atomic_file.h"
#include "qforge/hf_quant.h"
#include "qforge/safetensors.h"
#include "qforge/tensor_roles.h"

namespace qforge {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Expected<int64_t> int_field(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) return parse_error(where + ": quantization_config." + key + " is missing");
  if (!it->is_number_integer()) return parse_error(where + ": quantization_config." + key + " is not an integer");
  return it->get<int64_t>();
}

// A tensor's values copied out as T, after checking dtype and shape.
template <class T>
Status read_values(const SafetensorsCheckpoint& ck, const std::string& name, DType dtype, const Shape& shape,
                   std::vector<T>* out) {
  const SafetensorsTensorInfo* info = ck.find(name);
  if (info == nullptr) return invalid_argument(ck.path() + ": tensor '" + name + "' is missing");
  if (info->dtype != dtype)
    return invalid_argument(ck.path() + ": tensor '" + name + "' has dtype " + dtype_name(info->dtype) + ", expected " +
                            dtype_name(dtype));
  if (info->shape != shape)
    return invalid_argument(ck.path() + ": tensor '" + name + "' has shape " + shape_to_string(info->shape) +
                            ", expected " + shape_to_string(shape));
  QFORGE_ASSIGN_OR_RETURN(Tensor t, ck.tensor(name));
  out->resize(static_cast<size_t>(t.numel()));
  std::memcpy(out->data(), t.data(), out->size() * sizeof(T));
  return Status::ok();
}

// Dense f32 weights for the loader: dequantized quantized linears (in the checkpoint's stored
// orientation), plain tensors as they are.
class HfQuantSource final : public TensorSource {
 public:
  HfQuantSource(const HfQuantCheckpoint& ck, bool transposed, std::string label)
      : ck_(ck), transposed_(transposed), label_(std::move(label)) {}
  std::vector<std::string> tensor_names() const override {
    std::vector<std::string> names;
    for (const auto& [n, t] : ck_.plain) names.push_back(n);
    for (const auto& [n, q] : ck_.quantized) names.push_back(n);
    return names;
  }
  Expected<Tensor> tensor(const std::string& name) const override {
    auto it = ck_.quantized.find(name);
    if (it == ck_.quantized.end()) {
      auto p = ck_.plain.find(name);
      if (p == ck_.plain.end()) return invalid_argument(label_ + ": no tensor '" + name + "'");
      return p->second;
    }
    const QuantizedTensor& q = it->second;
    Tensor dense = Tensor::zeros(DType::f32, {q.rows, q.cols});
    QFORGE_RETURN_IF_ERROR(dequantize(q, dense.data_as<float>()).with_context(label_ + ": tensor '" + name + "'"));
    if (!transposed_) return dense;
    Tensor t = Tensor::zeros(DType::f32, {q.cols, q.rows});
    const float* in = dense.data_as<float>();
    float* out = t.data_as<float>();
    for (int64_t r = 0; r < q.rows; ++r)
      for (int64_t c = 0; c < q.cols; ++c) out[c * q.rows + r] = in[r * q.cols + c];
    return t;
  }
  std::string label() const override { return label_; }

 private:
  const HfQuantCheckpoint& ck_;
  bool transposed_;
  std::string label_;
};

}  // namespace

Expected<bool> read_hf_quant_config(const std::string& model_dir, HfQuantConfig* config) {
  const std::string path = (fs::path(model_dir) / "config.json").string();
  std::error_code ec;
  if (!fs::exists(path, ec)) return false;  // not an HF directory with a config: nothing to say
  QFORGE_ASSIGN_OR_RETURN(std::string text, read_file(path));
  const json root = json::parse(text, nullptr, false);
  if (root.is_discarded() || !root.is_object()) return parse_error(path + ": not a JSON object");
  auto it = root.find("quantization_config");
  if (it == root.end() || it->is_null()) return false;
  const json& qc = *it;
  if (!qc.is_object()) return parse_error(path + ": quantization_config is not an object");
  auto method_it = qc.find("quant_method");
  if (method_it == qc.end() || !method_it->is_string())
    return parse_error(path + ": quantization_config.quant_method is missing or not a string");
  const std::string method = method_it->get<std::string>();
  HfQuantConfig c;
  if (method == "gptq") {
    c.format = HfQuantFormat::gptq;
    if (auto f = qc.find("checkpoint_format"); f != qc.end() && !f->is_null()) {
      if (!f->is_string() || f->get<std::string>() != "gptq")
        return unsupported(path + ": quantization_config.checkpoint_format " + f->dump() +
                           " is not supported (only \"gptq\", GPTQ v1)");
    }
    if (auto s = qc.find("sym"); s != qc.end()) {
      if (!s->is_boolean()) return parse_error(path + ": quantization_config.sym is not a boolean");
      c.sym = s->get<bool>();
    } else {
      c.sym = true;  // the GPTQ tools' default
    }
    if (auto d = qc.find("desc_act"); d != qc.end() && d->is_boolean()) c.desc_act = d->get<bool>();
  } else if (method == "awq") {
    c.format = HfQuantFormat::awq;
    std::string version = "gemm";
    if (auto v = qc.find("version"); v != qc.end()) {
      if (!v->is_string()) return parse_error(path + ": quantization_config.version is not a string");
      version = v->get<std::string>();
      std::transform(version.begin(), version.end(), version.begin(), [](unsigned char ch) { return std::tolower(ch); });
    }
    if (version != "gemm")
      return unsupported(path + ": AWQ version '" + version + "' is not supported (only \"gemm\")");
    if (auto z = qc.find("zero_point"); z != qc.end() && z->is_boolean() && !z->get<bool>())
      return unsupported(path + ": AWQ with zero_point false is not supported (GEMM checkpoints store qzeros)");
    // AWQ stores explicit zero-points; qforge exports of int-sym schemes say so in qforge.scheme.
    c.sym = false;
    if (auto q = qc.find("qforge"); q != qc.end() && q->is_object())
      if (auto s = q->find("scheme"); s != q->end() && s->is_string())
        if (auto scheme = Scheme::parse(s->get<std::string>()); scheme.has_value())
          c.sym = scheme->format == FormatId::int_sym;
  } else {
    return unsupported(path + ": quantization_config.quant_method '" + method + "' is not supported (gptq, awq)");
  }
  QFORGE_ASSIGN_OR_RETURN(int64_t bits, int_field(qc, "bits", path));
  QFORGE_ASSIGN_OR_RETURN(c.group_size, int_field(qc, "group_size", path));
  if (bits < 2 || bits > 8) return unsupported(path + ": quantization_config.bits " + std::to_string(bits) + " is not supported");
  c.bits = static_cast<int>(bits);
  if (c.group_size == 0 || c.group_size < -1)
    return parse_error(path + ": quantization_config.group_size " + std::to_string(c.group_size) + " is invalid");
  *config = c;
  return true;
}

Expected<HfQuantCheckpoint> read_hf_quantized(const std::string& model_dir) {
  HfQuantCheckpoint out;
  QFORGE_ASSIGN_OR_RETURN(bool found, read_hf_quant_config(model_dir, &out.config));
  if (!found) return invalid_argument(model_dir + ": config.json has no quantization_config");
  const HfQuantConfig& c = out.config;
  QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint ck, SafetensorsCheckpoint::open(model_dir));
  // Keep the mapping alive for the plain views: the tensors hold their owners.
  const std::vector<std::string> names = ck.tensor_names();
  std::vector<std::string> prefixes;
  for (const auto& n : names)
    if (ends_with(n, ".qweight")) prefixes.push_back(n.substr(0, n.size() - 8));
  std::map<std::string, bool> consumed;
  const bool gptq = c.format == HfQuantFormat::gptq;
  for (const std::string& prefix : prefixes) {
    const std::string label = ck.path() + ": '" + prefix + "'";
    const SafetensorsTensorInfo* qw = ck.find(prefix + ".qweight");
    if (qw->shape.size() != 2) return invalid_argument(label + ".qweight is not 2-D");
    HfQuantLinear t;
    t.format = c.format;
    t.bits = c.bits;
    // Shapes are checked below against these (packing must be whole words, so no overflow for
    // dimensions that fit a safetensors file).
    if (qw->shape[0] <= 0 || qw->shape[1] <= 0 || qw->shape[0] > (int64_t{1} << 40) || qw->shape[1] > (int64_t{1} << 40))
      return invalid_argument(label + ".qweight has shape " + shape_to_string(qw->shape));
    if (gptq) {
      if ((qw->shape[0] * 32) % c.bits != 0) return invalid_argument(label + ".qweight rows do not hold whole codes");
      t.in_features = qw->shape[0] * 32 / c.bits;
      t.out_features = qw->shape[1];
    } else {
      if ((qw->shape[1] * 32) % c.bits != 0) return invalid_argument(label + ".qweight columns do not hold whole codes");
      t.in_features = qw->shape[0];
      t.out_features = qw->shape[1] * 32 / c.bits;
    }
    const bool channel = c.group_size == -1;
    t.group_size = channel ? t.in_features : c.group_size;
    if (t.in_features % t.group_size != 0)
      return invalid_argument(label + ": in_features " + std::to_string(t.in_features) + " is not a multiple of group_size " +
                              std::to_string(t.group_size));
    if ((t.out_features * c.bits) % 32 != 0)
      return invalid_argument(label + ": out_features " + std::to_string(t.out_features) + " does not fill whole qzeros words");
    QFORGE_RETURN_IF_ERROR(read_values(ck, prefix + ".qweight", DType::i32, t.qweight_shape(), &t.qweight));
    QFORGE_RETURN_IF_ERROR(read_values(ck, prefix + ".qzeros", DType::i32, t.qzeros_shape(), &t.qzeros));
    QFORGE_RETURN_IF_ERROR(read_values(ck, prefix + ".scales", DType::f16, t.scales_shape(), &t.scales));
    consumed[prefix + ".qweight"] = consumed[prefix + ".qzeros"] = consumed[prefix + ".scales"] = true;
    if (gptq) {
      QFORGE_RETURN_IF_ERROR(read_values(ck, prefix + ".g_idx", DType::i32, {t.in_features}, &t.g_idx));
      consumed[prefix + ".g_idx"] = true;
    }
    QFORGE_ASSIGN_OR_RETURN(QuantizedTensor q, unpack_hf_quant(t, c.sym, channel, label));
    const std::string weight_name = prefix + ".weight";
    if (ck.find(weight_name) != nullptr)
      return invalid_argument(label + ": both a quantized and a plain '" + weight_name + "'");
    out.quantized.emplace(weight_name, std::move(q));
  }
  out.metadata = ck.metadata();
  out.metadata.erase("format");
  for (const auto& n : names) {
    if (consumed.count(n)) continue;
    QFORGE_ASSIGN_OR_RETURN(Tensor t, ck.tensor(n));
    out.plain.emplace(n, std::move(t));
  }
  return out;
}

Expected<Model> load_hf_quantized_model(const std::string& model_dir, const ModelConfig& config) {
  QFORGE_ASSIGN_OR_RETURN(HfQuantCheckpoint ck, read_hf_quantized(model_dir));
  const bool transposed = linear_weights_transposed(config.arch, TensorNaming::hf);
  QFORGE_ASSIGN_OR_RETURN(Model model, Model::from_tensors(config, HfQuantSource(ck, transposed, model_dir), TensorNaming::hf));
  for (auto& [name, q] : ck.quantized) {
    QFORGE_ASSIGN_OR_RETURN(ResolvedTensor r, resolve_tensor_role(config.arch, name, TensorNaming::hf));
    if (r.is_bias || !(is_linear_weight(r.role) || r.role == TensorRole::output)) continue;
    const LinearSite site{r.layer, r.role};
    Linear* dense = model.linear(site);
    if (dense == nullptr) continue;
    QFORGE_ASSIGN_OR_RETURN(auto layer, QuantizedLinear::create(std::move(q), dense->bias()));
    QFORGE_RETURN_IF_ERROR(model.replace_linear(site, std::move(layer)).with_context(model_dir + ": tensor '" + name + "'"));
  }
  QFORGE_RETURN_IF_ERROR(apply_act_quant_metadata(model, ck.metadata, model_dir));
  return model;
}

}  // namespace qforge
