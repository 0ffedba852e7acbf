// Writing llama.cpp importance matrices in the GGUF layout (qforge/imatrix.h).
#include <cmath>

#include "qforge/gguf.h"
#include "qforge/imatrix.h"

namespace qforge {

Status write_imatrix_gguf(const std::string& path, const std::map<std::string, ImatrixSums>& entries,
                          const std::vector<std::string>& datasets, int64_t chunk_count, int64_t chunk_size) {
  if (entries.empty()) return invalid_argument("imatrix " + path + ": no entries to write");
  if (chunk_count < 0 || chunk_count > UINT32_MAX || chunk_size < 0 || chunk_size > UINT32_MAX)
    return invalid_argument("imatrix " + path + ": chunk count/size out of range");
  GgufWriter w(path);
  QFORGE_RETURN_IF_ERROR(w.set_string("general.type", "imatrix"));
  QFORGE_RETURN_IF_ERROR(w.set_string_array("imatrix.datasets", datasets));
  QFORGE_RETURN_IF_ERROR(w.set_u32("imatrix.chunk_count", static_cast<uint32_t>(chunk_count)));
  QFORGE_RETURN_IF_ERROR(w.set_u32("imatrix.chunk_size", static_cast<uint32_t>(chunk_size)));
  // std::map iterates in name order.
  for (const auto& [name, e] : entries) {
    if (e.n_cols <= 0 || e.n_mat <= 0 || e.in_sum2.size() != static_cast<size_t>(e.n_cols * e.n_mat) ||
        e.counts.size() != static_cast<size_t>(e.n_mat))
      return invalid_argument("imatrix " + path + ": entry '" + name + "' has inconsistent sizes");
    for (float v : e.in_sum2)
      if (!std::isfinite(v) || v < 0) return invalid_argument("imatrix " + path + ": entry '" + name + "' has a value " + std::to_string(v));
    for (float v : e.counts)
      if (!std::isfinite(v) || v < 0) return invalid_argument("imatrix " + path + ": entry '" + name + "' has a count " + std::to_string(v));
    QFORGE_RETURN_IF_ERROR(w.add_tensor(name + ".in_sum2", GgmlType::F32, {e.n_mat, e.n_cols}, e.in_sum2.data(),
                                        e.in_sum2.size() * sizeof(float)));
    QFORGE_RETURN_IF_ERROR(w.add_tensor(name + ".counts", GgmlType::F32, {e.n_mat, 1}, e.counts.data(),
                                        e.counts.size() * sizeof(float)));
  }
  return w.finish();
}

}  // namespace qforge
