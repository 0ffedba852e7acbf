// Importance matrices (llama.cpp's llama-imatrix output): per weight tensor, the mean of the
// squared activations entering each input column, used to weight the quantization error.
//
// Layouts read (docs/gguf.md, "imatrix"):
//   GGUF (llama.cpp since 2025): general.type = "imatrix"; imatrix.datasets (string array),
//     imatrix.chunk_count, imatrix.chunk_size (u32); per weight tensor W two F32 tensors
//     "W.in_sum2" ne = {n_cols, n_mat} (sums of x^2 over the tokens seen) and "W.counts"
//     ne = {1, n_mat} (tokens seen). importance[j][c] = in_sum2[j][c] / counts[j] (1 where a
//     count is 0, as llama-quantize does).
//   legacy .dat: i32 n_entries; per entry: i32 name length, name, i32 ncall, i32 nval,
//     nval f32 (already averaged x^2 times ncall); then optionally i32 chunk count, i32 length,
//     dataset name. importance = value / ncall.
// Entry names are GGUF tensor names ("blk.0.attn_q.weight").
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qforge/status.h"

namespace qforge {

struct ImatrixEntry {
  std::vector<float> importance;  // n_mat * n_cols values, >= 0 and finite
  int64_t n_cols = 0;
  int64_t n_mat = 1;  // > 1 only for stacked (MoE expert) tensors
};

class Imatrix {
 public:
  // Reads a GGUF imatrix or a legacy .dat file; errors name the file and entry.
  static Expected<Imatrix> load(const std::string& path);
  // The same from a buffer the caller keeps alive during the call (fuzzing, tests); `label`
  // stands for the path in messages.
  static Expected<Imatrix> parse(const uint8_t* data, size_t size, const std::string& label);

  const std::string& path() const { return path_; }
  const std::string& sha256() const { return sha256_; }  // of the file's bytes
  bool legacy() const { return legacy_; }
  const std::vector<std::string>& datasets() const { return datasets_; }
  int64_t chunk_count() const { return chunk_count_; }  // 0 when the file does not say
  int64_t chunk_size() const { return chunk_size_; }
  const std::map<std::string, ImatrixEntry>& entries() const { return entries_; }
  // The entry for a GGUF tensor name, or null.
  const ImatrixEntry* find(const std::string& tensor_name) const;

 private:
  std::string path_;
  std::string sha256_;
  bool legacy_ = false;
  std::vector<std::string> datasets_;
  int64_t chunk_count_ = 0;
  int64_t chunk_size_ = 0;
  std::map<std::string, ImatrixEntry> entries_;
};

// Accumulated squared activations of one weight tensor, as llama-imatrix collects them.
struct ImatrixSums {
  std::vector<float> in_sum2;  // n_mat * n_cols: Σ x² per input column over the tokens seen
  std::vector<float> counts;   // n_mat: tokens seen
  int64_t n_cols = 0;
  int64_t n_mat = 1;
};

// Writes llama.cpp's GGUF imatrix layout (see the top of this header): general.type "imatrix",
// imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size, then per entry (sorted by name, as
// llama-imatrix does) "<name>.in_sum2" F32 ne {n_cols, n_mat} and "<name>.counts" F32 ne {1, n_mat}.
// Keys are GGUF tensor names. Written atomically; values must be finite and >= 0.
Status write_imatrix_gguf(const std::string& path, const std::map<std::string, ImatrixSums>& entries,
                          const std::vector<std::string>& datasets, int64_t chunk_count, int64_t chunk_size);

}  // namespace qforge
