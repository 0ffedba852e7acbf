// HF GPTQ- and AWQ-format checkpoints: export of qforge integer-quantized weights into the layouts
// that transformers, vLLM, GPTQModel and AutoAWQ load, and the reader that loads them back into a
// qforge Model (QuantizedLinear layers with the matching int scheme of the format table).
//
// Both layouts are documented field by field in docs/formats.md ("HF GPTQ and AWQ checkpoints").
// In short, for a linear weight W [out, in] (qforge codes q, scale s and zero-point z per group of
// `group_size` input columns, value = (q - z) * s):
//
//   GPTQ (checkpoint_format "gptq", i.e. GPTQ v1), bits in {2, 3, 4, 8}:
//     P.qweight  I32 [in * bits / 32, out]   column o holds the in-dim codes of output o as one
//                                            little-endian bit stream (word r, bit b = stream bit
//                                            32 r + b); 3-bit codes straddle word boundaries
//     P.qzeros   I32 [groups, out * bits / 32]  (z - 1) mod 2^bits, packed the same way along out
//     P.scales   F16 [groups, out]
//     P.g_idx    I32 [in]                    group of each input column (i / group_size)
//   AWQ (version "gemm"), bits 4:
//     P.qweight  I32 [in, out / 8]           8 codes per word along out, AutoAWQ's interleaved
//                                            order: nibble k of word j holds output 8 j + kAwqOrder[k]
//     P.qzeros   I32 [groups, out / 8]       z, same packing
//     P.scales   F16 [groups, out]
// where P is the weight's name without ".weight". Symmetric schemes are exported with the explicit
// zero-point 2^(bits-1) (GPTQ: sym true; AWQ: zero_point true, as its GEMM kernels require).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qforge/format.h"
#include "qforge/model.h"
#include "qforge/status.h"
#include "qforge/tensor.h"

namespace qforge {

enum class HfQuantFormat : uint8_t {
  gptq = 0,  // AutoGPTQ / GPTQModel v1 ("checkpoint_format": "gptq")
  awq = 1,   // AutoAWQ GEMM ("version": "gemm")
};
const char* hf_quant_format_name(HfQuantFormat f);  // "gptq", "awq"
Expected<HfQuantFormat> parse_hf_quant_format(const std::string& name);

// AutoAWQ's GEMM packing order: nibble k (bits 4k..4k+3) of a word holds output column
// 8 * word + kAwqOrder[k].
inline constexpr std::array<int, 8> kAwqOrder = {0, 2, 4, 6, 1, 3, 5, 7};

// The tensors of one quantized linear in an HF layout (row-major, little-endian values).
struct HfQuantLinear {
  HfQuantFormat format = HfQuantFormat::gptq;
  int bits = 0;
  int64_t group_size = 0;   // columns per group (= in_features for per-channel schemes)
  int64_t in_features = 0;
  int64_t out_features = 0;
  std::vector<int32_t> qweight;  // GPTQ [in * bits / 32, out]; AWQ [in, out * bits / 32]
  std::vector<int32_t> qzeros;   // [groups, out * bits / 32]
  std::vector<uint16_t> scales;  // f16 bits [groups, out]
  std::vector<int32_t> g_idx;    // GPTQ only: [in]
  Shape qweight_shape() const;
  Shape qzeros_shape() const;
  Shape scales_shape() const;
};

// Whether a scheme/shape can be stored in `format`: int-sym or int-asym at group or channel
// granularity; GPTQ: bits {2, 3, 4, 8} with in * bits and out * bits multiples of 32 (whole words);
// AWQ: bits 4 with out a multiple of 8. The error says why not.
Status check_hf_quant_compatible(HfQuantFormat format, const Scheme& scheme, int64_t rows, int64_t cols);

// Packs a qforge int-sym/int-asym tensor ([rows = out, cols = in]) into the format's tensors.
// `zero_point_zero_groups` (optional) receives the number of groups whose zero-point is 0: GPTQ v1
// stores them as 2^bits - 1, which readers that add 1 without wrapping (exllama kernels) misread.
Expected<HfQuantLinear> pack_hf_quant(HfQuantFormat format, const QuantizedTensor& q,
                                      int64_t* zero_point_zero_groups = nullptr);
// The inverse: validates shapes and contents (g_idx must be i / group_size) and rebuilds the
// qforge tensor. `symmetric`: the config says sym; the result is int-sym only when every zero-point
// is 2^(bits-1), else int-asym (which represents any zero-point exactly). `channel`: the config's
// group_size was -1 (per-channel scheme). `label` names the tensor in errors.
Expected<QuantizedTensor> unpack_hf_quant(const HfQuantLinear& t, bool symmetric, bool channel, const std::string& label);

struct HfQuantExportOptions {
  HfQuantFormat format = HfQuantFormat::gptq;
  // The source model directory: config.json is copied (with quantization_config added) and the
  // tokenizer / generation files present there are copied.
  std::string source_dir;
  bool desc_act = false;  // recorded in quantization_config (GPTQ); static groups keep g_idx trivial
  // Merged into quantization_config.qforge (e.g. method, calibration hash): JSON object text or
  // empty. The exporter itself records "scheme" there (the reader uses it to restore int-sym).
  std::string qforge_metadata_json;
  // Extra safetensors __metadata__ entries (e.g. act_quant.h's kActQuantMetadataKey record).
  std::map<std::string, std::string> metadata;
};

struct HfQuantExportSummary {
  int64_t quantized = 0;
  int64_t plain = 0;
  int64_t zero_point_zero_groups = 0;  // see pack_hf_quant
  uint64_t bytes = 0;
};

// Writes an HF model directory at `out_dir` (which must not exist, or be empty): config.json with
// quantization_config, the tokenizer files of options.source_dir, and safetensors holding the
// quantized linears (keys "<name without .weight>.qweight" ...) and every plain tensor as given
// (its dtype is kept). `quantized` is keyed by the HF weight name ("model.layers.0.mlp.up_proj.weight");
// all must share one scheme. The directory appears atomically (built beside it, then renamed).
Expected<HfQuantExportSummary> export_hf_quantized(const std::string& out_dir,
                                                   const std::map<std::string, QuantizedTensor>& quantized,
                                                   const std::map<std::string, Tensor>& plain,
                                                   const HfQuantExportOptions& options);

// The quantization_config of an HF model directory, if it declares a GPTQ or AWQ one.
struct HfQuantConfig {
  HfQuantFormat format = HfQuantFormat::gptq;
  int bits = 4;
  int64_t group_size = 128;  // -1: per channel
  bool sym = false;
  bool desc_act = false;
};
// True when config.json in `model_dir` has a quantization_config (filled into *config), false when
// it has none. Malformed configs and unsupported methods or variants (anything but "gptq" with
// checkpoint_format "gptq" or absent, and "awq" with version "gemm") are errors naming the field.
Expected<bool> read_hf_quant_config(const std::string& model_dir, HfQuantConfig* config);

// Reads every quantized linear of a GPTQ/AWQ directory back into qforge tensors, keyed by the HF
// weight name ("....q_proj.weight"), and the plain tensors (views into the mapping).
struct HfQuantCheckpoint {
  HfQuantConfig config;
  std::map<std::string, QuantizedTensor> quantized;
  std::map<std::string, Tensor> plain;
  std::map<std::string, std::string> metadata;  // safetensors __metadata__ (without "format")
};
Expected<HfQuantCheckpoint> read_hf_quantized(const std::string& model_dir);

// Builds a Model from a GPTQ/AWQ directory: every quantized linear becomes a QuantizedLinear
// (exactly the exported weights), everything else loads as in an ordinary HF directory. A recorded
// activation-quantization record (act_quant.h) wraps the linears again as it was exported.
// Model::load calls this for directories whose config.json has such a quantization_config.
Expected<Model> load_hf_quantized_model(const std::string& model_dir, const ModelConfig& config);

}  // namespace qforge
