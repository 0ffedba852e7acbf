// Helpers shared by the model/engine tests: an in-memory tensor source and the relative error
// that the golden comparisons use.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "qforge/model.h"

namespace qforge::test {

// Named tensors held in a map, for building models from synthetic or dequantized weights.
class MapTensorSource final : public TensorSource {
 public:
  explicit MapTensorSource(std::string label = "synthetic") : label_(std::move(label)) {}
  std::map<std::string, Tensor> tensors;
  std::vector<std::string> tensor_names() const override {
    std::vector<std::string> names;
    for (const auto& [name, tensor] : tensors) names.push_back(name);
    return names;
  }
  Expected<Tensor> tensor(const std::string& name) const override {
    auto it = tensors.find(name);
    if (it == tensors.end()) return parse_error("no " + name);
    return it->second;
  }
  std::string label() const override { return label_; }

 private:
  std::string label_;
};

// ‖out − ref‖ / ‖ref‖ over n values, accumulated in double.
inline double relative_l2_error(const float* out, const float* ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

}  // namespace qforge::test
