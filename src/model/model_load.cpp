// Model::load and loading from safetensors checkpoints and qforge packed files (kept apart from
// weights.cpp so code that builds models from other tensor sources does not depend on the
// safetensors reader).
#include <cstring>
#include <filesystem>
#include <fstream>

#include "model/model_impl.h"
#include "qforge/act_quant.h"
#include "qforge/hf_quant.h"
#include "qforge/packed.h"
#include "qforge/safetensors.h"

namespace qforge {
namespace {

class CheckpointSource final : public TensorSource {
 public:
  explicit CheckpointSource(const SafetensorsCheckpoint& ck) : ck_(ck) {}
  std::vector<std::string> tensor_names() const override { return ck_.tensor_names(); }
  Expected<Tensor> tensor(const std::string& name) const override { return ck_.tensor(name); }
  std::string label() const override { return ck_.path(); }

 private:
  const SafetensorsCheckpoint& ck_;
};

// Plain tensors as stored; quantized weights dequantized to f32 in the layout the checkpoint
// originally had (the transpose of the planes for GPT-2 Conv1D weights).
class PackedSource final : public TensorSource {
 public:
  explicit PackedSource(const PackedFile& file) : file_(file) {}
  std::vector<std::string> tensor_names() const override {
    std::vector<std::string> names = file_.plain_names();
    for (const PackedTensorInfo& q : file_.quantized()) names.push_back(q.name);
    return names;
  }
  Expected<Tensor> tensor(const std::string& name) const override {
    const PackedTensorInfo* info = file_.find_quantized(name);
    if (info == nullptr) return file_.plain(name);
    QFORGE_ASSIGN_OR_RETURN(QuantizedTensor q, file_.load_quantized(name));
    Tensor dense = Tensor::zeros(DType::f32, {q.rows, q.cols});
    QFORGE_RETURN_IF_ERROR(dequantize(q, dense.data_as<float>()).with_context(label() + ": tensor '" + name + "'"));
    if (!info->transposed) return dense;
    Tensor t = Tensor::zeros(DType::f32, {q.cols, q.rows});
    const float* in = dense.data_as<float>();
    float* out = t.data_as<float>();
    for (int64_t r = 0; r < q.rows; ++r)
      for (int64_t c = 0; c < q.cols; ++c) out[c * q.rows + r] = in[r * q.cols + c];
    return t;
  }
  std::string label() const override { return file_.path(); }

 private:
  const PackedFile& file_;
};

Expected<ModelConfig> config_for_file(const std::string& path, const ModelLoadOptions& options) {
  namespace fs = std::filesystem;
  std::string config = options.config;
  if (config.empty()) {
    config = (fs::path(path).parent_path() / "config.json").string();
    std::error_code ec;
    if (!fs::exists(config, ec))
      return invalid_argument(path + ": no config.json beside the file (" + config +
                              "); give the model's config.json explicitly");
  }
  std::error_code ec;
  if (fs::is_directory(config, ec)) config = (fs::path(config) / "config.json").string();
  return load_model_config(config);
}

}  // namespace

const char* model_file_kind_name(ModelFileKind kind) {
  switch (kind) {
    case ModelFileKind::hf_directory: return "hf";
    case ModelFileKind::safetensors: return "safetensors";
    case ModelFileKind::packed: return "packed";
    case ModelFileKind::gguf: return "gguf";
    case ModelFileKind::llama2c: return "llama2c";
  }
  return "unknown";
}

Expected<ModelFileKind> detect_model_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) return ModelFileKind::hf_directory;
  if (!fs::is_regular_file(path, ec)) return io_error(path + ": no such file or directory");
  char magic[4] = {};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return io_error(path + ": cannot open for reading");
    in.read(magic, 4);
  }
  if (std::memcmp(magic, "GGUF", 4) == 0) return ModelFileKind::gguf;
  if (fs::path(path).extension() == ".safetensors") {
    QFORGE_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(path));
    return f.metadata().count(kPackedMetadataKey) ? ModelFileKind::packed : ModelFileKind::safetensors;
  }
  return ModelFileKind::llama2c;
}

Expected<Model> Model::from_checkpoint(const ModelConfig& config, const SafetensorsCheckpoint& checkpoint) {
  return from_tensors(config, CheckpointSource(checkpoint), TensorNaming::hf);
}

Expected<Model> Model::load_packed(const std::string& path, const ModelConfig& config, bool quantized_linear) {
  return load_packed(path, config,
                     quantized_linear ? QuantizedWeights::on_the_fly : QuantizedWeights::dequantize_at_load);
}

Expected<Model> Model::load_packed(const std::string& path, const ModelConfig& config, QuantizedWeights weights) {
  QFORGE_ASSIGN_OR_RETURN(PackedFile file, PackedFile::open(path));
  QFORGE_ASSIGN_OR_RETURN(Model model, from_tensors(config, PackedSource(file), TensorNaming::hf));
  if (weights == QuantizedWeights::dequantize_at_load) {
    QFORGE_RETURN_IF_ERROR(apply_act_quant_metadata(model, file.user_metadata(), path));
    return model;
  }
  for (const PackedTensorInfo& info : file.quantized()) {
    QFORGE_ASSIGN_OR_RETURN(ResolvedTensor r, resolve_tensor_role(config.arch, info.name, TensorNaming::hf));
    if (r.is_bias) continue;
    LinearSite site{r.layer, r.role};
    if (r.role == TensorRole::token_embedding && config.tie_word_embeddings && config.causal)
      site = LinearSite{-1, TensorRole::output};  // the tied head runs on the quantized embedding
    else if (!(is_linear_weight(r.role) || r.role == TensorRole::output))
      continue;
    Linear* dense = model.linear(site);
    if (dense == nullptr) continue;
    QFORGE_ASSIGN_OR_RETURN(QuantizedTensor q, file.load_quantized(info.name));
    QFORGE_ASSIGN_OR_RETURN(std::unique_ptr<Linear> layer,
                            make_quantized_linear(std::move(q), dense->bias(), weights, info.transposed));
    if (layer == nullptr) continue;  // no kernel for this scheme: stays dequantized
    QFORGE_RETURN_IF_ERROR(model.replace_linear(site, std::move(layer)).with_context(path + ": tensor '" + info.name + "'"));
  }
  // Recorded activation quantization (act_quant.h) wraps the linears as they were quantized.
  QFORGE_RETURN_IF_ERROR(apply_act_quant_metadata(model, file.user_metadata(), path));
  return model;
}

Expected<Model> Model::load(const std::string& path, const ModelLoadOptions& options) {
  QFORGE_ASSIGN_OR_RETURN(ModelFileKind kind, detect_model_file(path));
  switch (kind) {
    case ModelFileKind::gguf:
      return load_gguf(path, options.quantized_linear ? QuantizedWeights::on_the_fly : options.weights);
    case ModelFileKind::llama2c:
      return load_llama2c(path);
    case ModelFileKind::packed: {
      QFORGE_ASSIGN_OR_RETURN(ModelConfig config, config_for_file(path, options));
      return load_packed(path, config, options.quantized_linear ? QuantizedWeights::on_the_fly : options.weights);
    }
    case ModelFileKind::safetensors: {
      QFORGE_ASSIGN_OR_RETURN(ModelConfig config, config_for_file(path, options));
      QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint ck, SafetensorsCheckpoint::open(path));
      return from_checkpoint(config, ck);
    }
    case ModelFileKind::hf_directory: {
      ModelConfig config;
      if (options.config.empty()) {
        QFORGE_ASSIGN_OR_RETURN(config, load_model_config((std::filesystem::path(path) / "config.json").string()));
      } else {
        QFORGE_ASSIGN_OR_RETURN(config, config_for_file(path, options));
      }
      // GPTQ / AWQ exports (include/qforge/hf_quant.h) load as QuantizedLinear layers.
      HfQuantConfig quant_config;
      QFORGE_ASSIGN_OR_RETURN(bool hf_quantized, read_hf_quant_config(path, &quant_config));
      if (hf_quantized) return load_hf_quantized_model(path, config);
      QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint ck, SafetensorsCheckpoint::open(path));
      return from_checkpoint(config, ck);
    }
  }
  return invalid_argument(path + ": unknown model file kind");
}

}  // namespace qforge
