// Model::load and loading from safetensors checkpoints (kept apart from weights.cpp so code that
// builds models from other tensor sources does not depend on the safetensors reader).
#include <filesystem>

#include "model/model_impl.h"
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

}  // namespace

Expected<Model> Model::from_checkpoint(const ModelConfig& config, const SafetensorsCheckpoint& checkpoint) {
  return from_tensors(config, CheckpointSource(checkpoint), TensorNaming::hf);
}

Expected<Model> Model::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string config_path;
  if (fs::is_directory(path, ec)) {
    config_path = (fs::path(path) / "config.json").string();
  } else if (fs::path(path).extension() == ".safetensors") {
    config_path = (fs::path(path).parent_path() / "config.json").string();
  } else if (fs::is_regular_file(path, ec)) {
    return load_llama2c(path);
  } else {
    return io_error(path + ": no such file or directory");
  }
  QFORGE_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(config_path));
  QFORGE_ASSIGN_OR_RETURN(SafetensorsCheckpoint ck, SafetensorsCheckpoint::open(path));
  return from_checkpoint(config, ck);
}

}  // namespace qforge
