// qforge's packed quantized safetensors layout.
//
// A packed file is an ordinary .safetensors file. Each quantized 2-D weight W is stored as planes:
//   "W.qcodes"   U8 [rows, packed_row_bytes]     packed codes (QuantizedTensor::codes)
//   "W.qscales"  scale dtype [n_scales]          QuantizedTensor::scales (the format table's scale dtype)
//   "W.qzeros"   U8 [n_scales]                   QuantizedTensor::zeros, only for zero-point formats
//   "W.qextra"   U8 [n]                          QuantizedTensor::extra, only when non-empty
// where n_scales = rows * groups_per_row (per-tensor granularity: 1). Every other tensor is stored
// as-is. The header's __metadata__ holds, under the key "qforge", a JSON manifest:
//   {"format_version": 1, "qforge_version": "0.1.0", "command": "...",
//    "tensors": {"W": {"scheme": "int4-g128-asym", "format_id": 2, "shape": [rows, cols],
//                      "dtype_orig": "bf16"}, ...}}
// An entry may add "transposed": true when the checkpoint stored the weight as [in, out] (GPT-2
// Conv1D): the planes then hold its [out, in] transpose ("shape" is that of the transpose), and
// dequantizing restores the stored [cols, rows] layout.
// The manifest is untrusted on reading: unknown schemes, mismatched format ids, shapes that do not
// match the planes and missing or unexpected planes are errors naming the tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qforge/format.h"
#include "qforge/safetensors.h"
#include "qforge/status.h"
#include "qforge/tensor.h"

namespace qforge {

inline constexpr const char* kPackedMetadataKey = "qforge";
inline constexpr int kPackedFormatVersion = 1;
inline constexpr const char* kPlaneCodes = ".qcodes";
inline constexpr const char* kPlaneScales = ".qscales";
inline constexpr const char* kPlaneZeros = ".qzeros";
inline constexpr const char* kPlaneExtra = ".qextra";

// One quantized tensor as the manifest describes it.
struct PackedTensorInfo {
  std::string name;
  Scheme scheme;
  int64_t rows = 0;
  int64_t cols = 0;
  DType dtype_orig = DType::f32;  // dtype of the weight before quantization
  bool transposed = false;        // the original tensor is [cols, rows] (see above)
  uint64_t nbytes = 0;            // bytes of all its planes in the file
  double bits_per_weight() const {
    return rows > 0 && cols > 0 ? static_cast<double>(nbytes) * 8.0 / (static_cast<double>(rows) * cols) : 0.0;
  }
};

// Writes a packed file. Quantized planes are spooled to an unlinked temporary file beside the
// output as they are added, and plain tensors are referenced (zero-copy, e.g. from a memory-mapped
// source), so memory stays bounded by the largest tensor. finish() writes atomically: nothing
// appears at `path` unless the whole file was written. Not thread-safe: add from one thread.
class PackedWriter {
 public:
  explicit PackedWriter(std::string path);
  ~PackedWriter();
  PackedWriter(const PackedWriter&) = delete;
  PackedWriter& operator=(const PackedWriter&) = delete;

  // Extra __metadata__ entries (e.g. carried over from the source). The key "qforge" is reserved.
  Status set_metadata(const std::string& key, const std::string& value);
  // Recorded in the manifest as "command" (how the file was made).
  void set_command(std::string command) { command_ = std::move(command); }

  // A tensor stored as-is. The tensor (and its owner) is kept alive until finish().
  Status add_plain(const std::string& name, const Tensor& tensor);
  // A plain tensor whose bytes are produced during finish().
  Status add_plain_lazy(const std::string& name, DType dtype, const Shape& shape,
                        std::function<Status(uint8_t* out, size_t nbytes)> produce);
  // A quantized weight; its planes are copied to the spool now, so `q` may be freed afterwards.
  Status add_quantized(const std::string& name, const QuantizedTensor& q, DType dtype_orig, bool transposed = false);

  Status finish();

 private:
  struct Spooled {
    uint64_t offset;
    size_t nbytes;
  };
  Status check_new_name(const std::string& name);
  Status open_spool();
  Expected<Spooled> spool(const std::vector<uint8_t>& bytes);
  Status read_spool(const Spooled& s, uint8_t* out, size_t nbytes) const;

  std::string path_;
  std::string command_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, PackedTensorInfo> quantized_;
  std::map<std::string, bool> names_;  // every tensor name in the file (planes included)
  struct Entry;  // one added tensor, in the order added
  std::vector<std::unique_ptr<Entry>> entries_;
  int spool_fd_ = -1;
  uint64_t spool_size_ = 0;
  bool finished_ = false;
};

// Reads a packed file (or any safetensors file: without a manifest every tensor is plain).
class PackedFile {
 public:
  // Opens and validates the manifest against the file's tensors; errors name the file and tensor.
  static Expected<PackedFile> open(const std::string& path);
  // Validates a safetensors file already opened or parsed (fuzzing, tests).
  static Expected<PackedFile> from_safetensors(SafetensorsFile file);

  const std::string& path() const { return file_.path(); }
  bool has_manifest() const { return has_manifest_; }
  // The manifest's tensors, sorted by name.
  const std::vector<PackedTensorInfo>& quantized() const { return quantized_; }
  const PackedTensorInfo* find_quantized(const std::string& name) const;
  // Tensors stored as-is (not planes of a quantized tensor), sorted by name.
  const std::vector<std::string>& plain_names() const { return plain_; }
  // The file's metadata without the "qforge" manifest.
  std::map<std::string, std::string> user_metadata() const;
  const std::string& manifest_command() const { return command_; }
  const std::string& manifest_version() const { return qforge_version_; }
  const SafetensorsFile& safetensors() const { return file_; }

  // Copies the planes of one quantized tensor. Plane sizes are checked against the shape here;
  // the format's own checks run in qforge::dequantize.
  Expected<QuantizedTensor> load_quantized(const std::string& name) const;
  // Zero-copy view of a plain tensor.
  Expected<Tensor> plain(const std::string& name) const;

 private:
  SafetensorsFile file_;
  bool has_manifest_ = false;
  std::string command_;
  std::string qforge_version_;
  std::vector<PackedTensorInfo> quantized_;
  std::vector<std::string> plain_;
};

// Everything in a packed file, loaded into memory.
struct PackedCheckpoint {
  std::map<std::string, PackedTensorInfo> info;
  std::map<std::string, QuantizedTensor> quantized;
  std::map<std::string, Tensor> plain;  // views into the file's mapping (kept alive by the tensors)
  std::map<std::string, std::string> metadata;  // without the manifest
};

// Writes quantized and plain tensors to `path` (atomically). `dtype_orig` gives the original
// dtype of each quantized tensor (f32 when absent).
Status write_packed(const std::string& path, const std::map<std::string, QuantizedTensor>& quantized,
                    const std::map<std::string, Tensor>& plain, const std::map<std::string, DType>& dtype_orig = {},
                    const std::map<std::string, std::string>& metadata = {}, const std::string& command = "");
// Reads and fully validates a packed file: every quantized tensor is also checked by dequantizing it.
Expected<PackedCheckpoint> read_packed(const std::string& path);

}  // namespace qforge
