// The quantization card: the record of what one `qforge quantize` did (source, output, machine,
// command), how (per-tensor types, scheme, method parameters, calibration data, what was kept in
// higher precision and why) and what it cost (per-tensor and per-layer weight-space error, size,
// and — when measured — perplexity/KLD against the source). Written beside every quantize output
// as <out>.card.json (the record, schema in docs/card-schema.md and docs/card.schema.json),
// <out>.card.md and a self-contained <out>.card.html with three inline SVG charts.
//
// A card is deterministic: identical inputs and flags on the same machine give byte-identical
// files (no timestamps; every list has a defined order). Nothing is ever estimated: a quantity
// that was not measured is null with a reason.
//
//   Card card = ...;                         // filled by the quantize paths (tools/qforge/card_build.cpp)
//   QFORGE_RETURN_IF_ERROR(write_card_files(card, card_base_path(output)));
//   QFORGE_ASSIGN_OR_RETURN(Card again, card_from_json(text, "m.card.json"));  // validating
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qforge/status.h"

namespace qforge {

inline constexpr int kCardSchemaVersion = 1;
inline constexpr const char* kCardSchemaId = "qforge-quantization-card";

// ---------------------------------------------------------------------------------------------
// Weight-space error

// Accumulated ||ref||², ||ref - approx||² and max |ref - approx| over some elements (one tensor,
// or a sum over tensors for per-layer and total aggregates).
struct WeightError {
  double signal = 0;  // sum ref²
  double noise = 0;   // sum (ref - approx)²
  double max_abs = 0;
  int64_t count = 0;

  void add(const WeightError& other);
  // ||ref - approx|| / ||ref|| (0 when both are 0; +inf when only the signal is 0).
  double rel_l2() const;
  // 10 log10(signal / noise); nullopt when noise == 0 (exact) or signal == 0.
  std::optional<double> sqnr_db() const;
};
// Summed in double, in element order (deterministic, independent of threads).
WeightError measure_weight_error(const float* ref, const float* approx, int64_t n);

// ---------------------------------------------------------------------------------------------
// The card

struct CardFile {
  std::string path;    // as given / as written (relative paths stay relative)
  uint64_t bytes = 0;
  std::string sha256;  // lowercase hex
};

struct CardSource {
  std::string path;
  std::string kind;  // "hf-directory", "safetensors", "llama2c", "gguf"
  std::vector<CardFile> files;
  uint64_t total_bytes = 0;
  std::string architecture;  // "llama", "qwen2", ...
  int64_t parameters = 0;    // elements of all tensors (a tied embedding counted once)
  int64_t layers = 0;
};

struct CardOutput {
  std::string path;
  std::string format;  // "qforge-packed", "gguf", "gptq", "awq"
  std::vector<CardFile> files;
  uint64_t total_bytes = 0;      // all files
  uint64_t tensor_bytes = 0;     // bytes of all tensor data (headers excluded)
  double bits_per_weight = 0;            // 8 * tensor_bytes / source parameters
  double quantized_bits_per_weight = 0;  // over the quantized tensors only
  double size_ratio = 0;                 // source total_bytes / output total_bytes
};

struct CardMachine {
  std::string cpu;  // /proc/cpuinfo "model name" (or "unknown")
  std::string isa;  // the CPU kernels' dispatch level (include/qforge/kernels.h), e.g. "avx2"
  std::string gpu;  // the CUDA device, or "none"
};

struct CardTool {
  std::string version;  // QFORGE_VERSION
  std::string command;  // the full command line as typed (argv[0] shown as "qforge")
  std::optional<uint64_t> seed;  // the seed that determined the result (calibration sampling), if any
  CardMachine machine;
};

struct CardScheme {
  std::string name;         // canonical scheme name ("int4-g128-asym") or GGUF type ("Q4_K")
  std::string family;       // format-table row ("int-asym", "nf4", "gguf-q4_k", ...)
  int bits = 0;             // code width
  std::string granularity;  // "tensor", "channel", "group" (GGUF blocks: "group")
  int64_t group_size = 0;   // 0 unless granularity == "group"
  bool symmetric = true;    // false when a zero-point / minimum is stored
};

// Method parameters: only the block of the method that ran is set.
struct CardGptq {
  double damp = 0;
  int64_t block_size = 0;
  bool act_order = false;
  bool static_groups = false;
  bool sequential = false;
  bool mse_clip = false;     // --gptq-clip (absent in cards written before it was recorded: false)
  int64_t refit_passes = 0;  // --gptq-refit: sweep + scale-refit passes; 0 = no refit
};
struct CardAwq {
  int grid = 0;
  bool clip = false;
  int clip_grid = 0;
  double max_shrink = 0;
};
struct CardActivations {
  std::string scheme;    // "int8-token-dyn", ...
  std::string observer;  // static schemes' observer ("" for dynamic)
};
struct CardGguf {
  std::string preset;        // "Q4_K_M"
  std::string default_type;  // "Q4_K"
  bool pure = false;
  bool allow_fallback = false;
  std::vector<std::string> overrides;  // "REGEX=TYPE (origin)"
  std::string output_tensor_type, token_embedding_type;  // "" when not given
  std::optional<CardFile> imatrix;
};
struct CardMethod {
  std::string name;  // "rtn", "gptq", "awq", "awq+gptq", "smoothquant", "gguf-preset"
  // What the per-tensor error compares with: "source" (the source weight) or "rescaled" (the
  // weight the quantizer received after AWQ/SmoothQuant folded their exact per-channel scales).
  std::string error_reference = "source";
  std::string filter, keep;  // tensor selection regexes ("" when not given)
  std::optional<CardGptq> gptq;
  std::optional<CardAwq> awq;
  std::optional<double> smoothquant_alpha;
  std::optional<CardActivations> activations;
  std::optional<CardGguf> gguf;
  int64_t batch_windows = 0;  // calibrated runs: windows per block forward (0 otherwise)
  std::string hidden_dtype;   // calibrated runs: "bf16" / "f32"
};

struct CardCalibration {
  CardFile file;  // path, bytes, sha256 of the text
  int64_t file_tokens = 0;
  int64_t windows = 0;
  int64_t ctx = 0;
  int64_t tokens_used = 0;
  uint64_t seed = 0;
};

// Why a tensor has its type.
//   quantized: "scheme" (the requested scheme), "preset-default", "preset-rule", "override"
//              (--tensor-type / --output-tensor-type / --token-embedding-type), "pure"
//   kept in higher precision: "not-selected" (not a linear weight / outside --filter),
//              "keep-regex" (--keep), "incompatible" (the scheme cannot represent the shape),
//              "fallback" (GGUF: the type's block does not divide the row), "non-weight"
//              (norms, biases, 1-D tensors), "preset-float" (F16/BF16/F32 presets)
struct CardTensor {
  std::string name;
  std::string role;  // tensor_role_name, or "other"
  int layer = -1;    // -1: not in a block
  std::vector<int64_t> shape;
  std::string source_dtype;  // "bf16", "f32", or the GGUF type of a GGUF input
  std::string type;          // scheme name, GGUF type name, or dtype for tensors kept as they were
  bool quantized = false;
  double bits_per_weight = 0;
  uint64_t bytes = 0;
  uint64_t source_bytes = 0;
  std::string reason_kind;
  std::string reason;  // human-readable ("Q4_K_M rule: attn_v, use_more_bits layer")
  std::optional<WeightError> error;  // null: not measured (error_note says why)
  std::string error_note;
  int64_t numel() const;
};

struct CardTypeSummary {  // one per distinct stored type
  std::string type;
  int64_t tensors = 0;
  int64_t parameters = 0;
  uint64_t bytes = 0;
};

struct CardLayer {
  int layer = -1;
  int64_t parameters = 0;
  uint64_t bytes = 0;
  WeightError error;  // over its quantized tensors
  int64_t quantized_tensors = 0;
};

struct CardEvaluation {
  bool measured = false;
  std::string reason;  // why not measured (empty when measured)
  CardFile text;
  std::string protocol;
  int64_t ctx = 0, windows = 0, windows_total = 0, tokens_scored = 0;
  double ppl = 0, ppl_source = 0, ln_ppl_ratio = 0;
  double kld_mean = 0, kld_median = 0, kld_p90 = 0, kld_p99 = 0, kld_max = 0;
  double top1_agreement = 0;
  double delta_p_rms = 0;
};

struct CardSpeed {
  bool measured = false;
  std::string reason;
  std::optional<double> prefill_tokens_per_second, decode_tokens_per_second;
  std::optional<uint64_t> peak_rss_bytes;
};

struct Card {
  int schema_version = kCardSchemaVersion;
  CardSource source;
  CardOutput output;
  CardTool tool;
  std::optional<CardScheme> scheme;  // null for GGUF presets (per-tensor types in `types`)
  CardMethod method;
  std::optional<CardCalibration> calibration;
  std::vector<CardTensor> tensors;  // in output order
  std::vector<std::string> notes;   // warnings worth keeping with the record
  CardEvaluation evaluation;
  CardSpeed speed;
  // Filled by a sweep (qforge sweep); kept verbatim as JSON text (an object) and drawn in chart 3.
  std::optional<std::string> sweep_json;

  // Derived (not stored in from_json input; recomputed from `tensors`).
  std::vector<CardTypeSummary> types() const;
  std::vector<CardLayer> layers() const;
  WeightError total_error() const;  // over quantized tensors
};

// ---------------------------------------------------------------------------------------------
// JSON and rendering

// The card as JSON text (2-space indent, fixed key order, trailing newline). Deterministic.
std::string card_to_json(const Card& card);
// Parses and validates a card (schema_version, every required field and its type, enumerations);
// errors name `label` (the file) and the field path, e.g. "m.card.json: tensors[3].bytes: expected
// an unsigned integer".
Expected<Card> card_from_json(const std::string& text, const std::string& label);

std::string render_card_markdown(const Card& card);
std::string render_card_html(const Card& card);
// The three charts (inline SVG), exposed for tests and other reports.
std::string card_error_chart_svg(const Card& card);
std::string card_bits_heatmap_svg(const Card& card);
std::string card_pareto_chart_svg(const Card& card);

// "<out>" for "<out>.card.json" etc.: the output path without trailing '/'.
std::string card_base_path(const std::string& output);
// Writes <base>.card.json, <base>.card.md and <base>.card.html atomically (each file).
Status write_card_files(const Card& card, const std::string& base);

// ---------------------------------------------------------------------------------------------
// Facts the quantize paths collect

// Path, size and SHA-256 of each file (read in chunks).
Expected<std::vector<CardFile>> describe_files(const std::vector<std::string>& paths);
// The regular files of a directory (recursively, sorted by path), or the file itself.
Expected<std::vector<CardFile>> describe_path(const std::string& path);
CardMachine card_machine();

}  // namespace qforge
