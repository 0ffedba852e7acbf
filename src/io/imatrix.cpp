// Reading llama.cpp importance matrices (GGUF and legacy .dat layouts; see qforge/imatrix.h).
#include "qforge/imatrix.h"

#include <cmath>
#include <cstring>

#include "qforge/gguf.h"
#include "qforge/sha256.h"
#include "qforge/tensor.h"

namespace qforge {
namespace {

bool remove_suffix(std::string* s, std::string_view suffix) {
  if (s->size() <= suffix.size() || s->compare(s->size() - suffix.size(), suffix.size(), suffix) != 0) return false;
  s->resize(s->size() - suffix.size());
  return true;
}

Status check_values(const std::string& path, const std::string& name, const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]) || v[i] < 0.0f)
      return parse_error(path + ": imatrix entry '" + name + "' value " + std::to_string(i) + " is " +
                         std::to_string(v[i]) + " (importance must be finite and >= 0)");
  return Status::ok();
}

Status load_gguf(const uint8_t* data, size_t size, const std::string& path, std::map<std::string, ImatrixEntry>* entries,
                 std::vector<std::string>* datasets, int64_t* chunk_count, int64_t* chunk_size) {
  QFORGE_ASSIGN_OR_RETURN(GgufFile f, GgufFile::parse(data, size, path));
  if (const GgufValue* type = f.find("general.type")) {
    const std::string* s = type->get_if<std::string>();
    if (s == nullptr || *s != "imatrix")
      return invalid_argument(path + ": general.type is " + type->describe() + ", not \"imatrix\"");
  }
  if (const GgufValue* d = f.find("imatrix.datasets")) {
    if (const auto* list = d->array_if<std::string>()) *datasets = *list;
  }
  if (f.contains("imatrix.chunk_count")) {
    QFORGE_ASSIGN_OR_RETURN(*chunk_count, f.get_u32("imatrix.chunk_count"));
  }
  if (f.contains("imatrix.chunk_size")) {
    QFORGE_ASSIGN_OR_RETURN(*chunk_size, f.get_u32("imatrix.chunk_size"));
  }
  std::map<std::string, std::pair<const GgufTensorInfo*, const GgufTensorInfo*>> pairs;
  for (const GgufTensorInfo& t : f.tensors()) {
    std::string name = t.name;
    if (remove_suffix(&name, ".in_sum2"))
      pairs[name].first = &t;
    else if (remove_suffix(&name, ".counts"))
      pairs[name].second = &t;
    // other tensors (e.g. ".in_sum" of newer collectors) are not needed
  }
  if (pairs.empty()) return parse_error(path + ": no '<tensor>.in_sum2' / '<tensor>.counts' pairs: not an imatrix");
  for (const auto& [name, pair] : pairs) {
    const auto [sums, counts] = pair;
    if (sums == nullptr || counts == nullptr)
      return parse_error(path + ": imatrix entry '" + name + "' has " + (sums ? "in_sum2 but no counts" : "counts but no in_sum2"));
    if (sums->type != GgmlType::F32 || counts->type != GgmlType::F32)
      return parse_error(path + ": imatrix entry '" + name + "': in_sum2 and counts must be F32");
    if (sums->ne.size() > 2 || sums->ne.empty() || sums->ne[0] <= 0)
      return parse_error(path + ": imatrix entry '" + name + "': in_sum2 must be 2-D {columns, matrices}");
    const int64_t n_cols = sums->ne[0];
    const int64_t n_mat = sums->ne.size() == 2 ? sums->ne[1] : 1;
    if (n_mat <= 0)
      return parse_error(path + ": imatrix entry '" + name + "': in_sum2 has no matrices (ne[1] = 0)");
    if (counts->numel() != n_mat)
      return parse_error(path + ": imatrix entry '" + name + "': " + std::to_string(counts->numel()) +
                         " counts for " + std::to_string(n_mat) + " matrices");
    QFORGE_ASSIGN_OR_RETURN(Tensor s, f.tensor(*sums));
    QFORGE_ASSIGN_OR_RETURN(Tensor c, f.tensor(*counts));
    const float* sv = s.data_as<float>();
    const float* cv = c.data_as<float>();
    ImatrixEntry e;
    e.n_cols = n_cols;
    e.n_mat = n_mat;
    e.importance.resize(static_cast<size_t>(n_cols * n_mat));
    for (int64_t j = 0; j < n_mat; ++j) {
      const float count = cv[j];
      if (!std::isfinite(count) || count < 0)
        return parse_error(path + ": imatrix entry '" + name + "' has count " + std::to_string(count));
      for (int64_t i = 0; i < n_cols; ++i) {
        // A matrix that saw no tokens gets uniform importance, as llama-quantize does.
        const float v = count > 0 ? sv[j * n_cols + i] / count : 1.0f;
        e.importance[static_cast<size_t>(j * n_cols + i)] = v;
      }
    }
    QFORGE_RETURN_IF_ERROR(check_values(path, name, e.importance));
    entries->emplace(name, std::move(e));
  }
  return Status::ok();
}

Status load_legacy(const uint8_t* p, size_t size, const std::string& path, std::map<std::string, ImatrixEntry>* entries,
                   std::vector<std::string>* datasets, int64_t* chunk_count) {
  size_t at = 0;
  auto read_i32 = [&](const std::string& what) -> Expected<int32_t> {
    if (size - at < 4) return parse_error(path + ": truncated reading " + what + " (legacy imatrix)");
    int32_t v;
    std::memcpy(&v, p + at, 4);
    at += 4;
    return v;
  };
  QFORGE_ASSIGN_OR_RETURN(int32_t n_entries, read_i32("the entry count"));
  if (n_entries < 1 || static_cast<uint64_t>(n_entries) > size / 12)
    return parse_error(path + ": not an imatrix (neither GGUF nor a legacy .dat with a plausible entry count)");
  for (int32_t k = 0; k < n_entries; ++k) {
    const std::string what = "entry " + std::to_string(k);
    QFORGE_ASSIGN_OR_RETURN(int32_t len, read_i32(what + " name length"));
    if (len <= 0 || static_cast<size_t>(len) > size - at)
      return parse_error(path + ": " + what + " has a name length of " + std::to_string(len));
    std::string name(reinterpret_cast<const char*>(p + at), static_cast<size_t>(len));
    at += static_cast<size_t>(len);
    QFORGE_ASSIGN_OR_RETURN(int32_t ncall, read_i32(what + " call count"));
    QFORGE_ASSIGN_OR_RETURN(int32_t nval, read_i32(what + " value count"));
    if (nval < 1 || static_cast<size_t>(nval) > (size - at) / 4)
      return parse_error(path + ": imatrix entry '" + name + "' has " + std::to_string(nval) + " values");
    ImatrixEntry e;
    e.n_cols = nval;
    e.importance.resize(static_cast<size_t>(nval));
    std::memcpy(e.importance.data(), p + at, static_cast<size_t>(nval) * 4);
    at += static_cast<size_t>(nval) * 4;
    if (ncall > 0)
      for (float& v : e.importance) v /= static_cast<float>(ncall);
    QFORGE_RETURN_IF_ERROR(check_values(path, name, e.importance));
    if (!entries->emplace(name, std::move(e)).second)
      return parse_error(path + ": imatrix entry '" + name + "' appears twice");
  }
  if (at < size) {  // optional trailer: chunk count and dataset name
    QFORGE_ASSIGN_OR_RETURN(int32_t chunks, read_i32("the chunk count"));
    *chunk_count = std::max(chunks, 0);
    if (at < size) {
      QFORGE_ASSIGN_OR_RETURN(int32_t len, read_i32("the dataset name length"));
      if (len > 0 && static_cast<size_t>(len) <= size - at)
        datasets->emplace_back(reinterpret_cast<const char*>(p + at), static_cast<size_t>(len));
    }
  }
  return Status::ok();
}

}  // namespace

Expected<Imatrix> Imatrix::load(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  return parse(file->data(), file->size(), path);
}

Expected<Imatrix> Imatrix::parse(const uint8_t* data, size_t size, const std::string& label) {
  Imatrix m;
  m.path_ = label;
  Sha256 sha;
  sha.update(data, size);
  m.sha256_ = sha.final_hex();
  if (size >= 4 && std::memcmp(data, "GGUF", 4) == 0) {
    QFORGE_RETURN_IF_ERROR(load_gguf(data, size, label, &m.entries_, &m.datasets_, &m.chunk_count_, &m.chunk_size_));
  } else {
    m.legacy_ = true;
    QFORGE_RETURN_IF_ERROR(load_legacy(data, size, label, &m.entries_, &m.datasets_, &m.chunk_count_));
  }
  return m;
}

const ImatrixEntry* Imatrix::find(const std::string& tensor_name) const {
  auto it = entries_.find(tensor_name);
  return it == entries_.end() ? nullptr : &it->second;
}

}  // namespace qforge
