// Models as llama.cpp expects them in GGUF: tensor names, the Q/K row order of its RoPE, the
// architecture metadata and the tokenizer vocabulary. This is the input side of `qforge convert`
// and `qforge quantize --format gguf` (qforge/gguf_quantize.h chooses types and writes the file).
//
// Inputs (GgufModelInput::open):
//   - an HF directory (config.json + safetensors) of llama, mistral or qwen2;
//   - a llama2.c v0 checkpoint (.bin), with its tokenizer.bin;
//   - a GGUF file of architecture llama or qwen2 (re-quantization).
// docs/gguf.md has the name mapping, the permutation and the metadata keys.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qforge/gguf.h"
#include "qforge/model.h"
#include "qforge/status.h"
#include "qforge/tensor.h"
#include "qforge/tensor_roles.h"

namespace qforge {

// ---------------------------------------------------------------------------------------------
// Vocabulary (tokenizer.ggml.* keys)

// llama.cpp's llama_token_type, stored in tokenizer.ggml.token_type.
enum class GgufTokenType : int32_t {
  undefined = 0,
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

struct GgufVocab {
  std::string model = "llama";  // tokenizer.ggml.model ("llama" = SentencePiece)
  std::string pre = "default";  // tokenizer.ggml.pre
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> token_types;  // GgufTokenType values
  int64_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;  // -1: none
  bool add_bos = true;
  bool add_eos = false;
  std::string source;  // the file it was read from

  size_t size() const { return tokens.size(); }
};

// A SentencePiece model file (tokenizer.model), read as llama.cpp's convert_hf_to_gguf.py does
// (_set_vocab_sentencepiece): piece, score and type per id (unknown, control, unused, byte,
// else normal). `vocab_size` > 0 is the model's embedding row count: missing ids are padded with
// "[PAD<i>]" (unused, score -10000); a tokenizer larger than the model is an error.
Expected<GgufVocab> read_sentencepiece_vocab(const std::string& path, int64_t vocab_size);

// A llama2.c tokenizer.bin (i32 max_token_length, then per token: f32 score, i32 length, bytes),
// read as llama.cpp's convert-llama2c-to-ggml does: id 0 "<unk>" (unknown), 1 "<s>" and 2
// "</s>" (control), empty pieces control, "<0xHH>" byte tokens, spaces written as U+2581.
// The file must hold exactly `vocab_size` tokens.
Expected<GgufVocab> read_llama2c_vocab(const std::string& path, int64_t vocab_size);
// The same from a buffer (fuzzing, tests); `label` stands for the path in messages.
Expected<GgufVocab> parse_llama2c_vocab(const uint8_t* data, size_t size, const std::string& label,
                                        int64_t vocab_size);

// ---------------------------------------------------------------------------------------------
// Q/K row permutation

// llama.cpp's llama architecture applies RoPE to adjacent pairs (2i, 2i+1) of each head, HF
// Llama/Mistral to (i, i + head_dim/2). convert_hf_to_gguf.py therefore reorders the rows of
// q_proj (n_head heads) and k_proj (n_kv_head heads), and of their biases:
//   permute(w, n) = w.reshape(n, 2, rows / n / 2, cols).swapaxes(1, 2).reshape(rows, cols)
// i.e. output row h*hd + 2i + j comes from input row h*hd + j*hd/2 + i (hd = rows / n).
// A 1-D tensor (bias) is the case cols = 1. Requires rows % (2 n) == 0.
void permute_qk_rows(const float* in, int64_t rows, int64_t cols, int64_t n_head, float* out);
// The inverse: GGUF row order back to HF's.
void unpermute_qk_rows(const float* in, int64_t rows, int64_t cols, int64_t n_head, float* out);

// ---------------------------------------------------------------------------------------------
// Model input

enum class GgufInputKind : uint8_t {
  hf = 0,       // HF directory (config.json + safetensors)
  llama2c = 1,  // llama2.c v0 .bin
  gguf = 2,     // a GGUF file
};
const char* gguf_input_kind_name(GgufInputKind kind);

// One tensor of the model, named as in the GGUF file to write.
struct GgufInputTensor {
  std::string name;         // GGUF name ("blk.3.attn_q.weight")
  std::string source_name;  // its name in the input (HF name; the GGUF name for GGUF input)
  ResolvedTensor role;
  Shape shape;              // row-major; 2-D weights are [out_features, in_features]
  GgmlType type = GgmlType::F32;  // its type in the input
  int64_t permute_heads = 0;      // > 0: rows reordered by permute_qk_rows with this many heads

  int64_t numel() const { return shape_numel(shape); }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }  // ggml's ne[0]
  int64_t rows() const { return cols() > 0 ? numel() / cols() : 0; }
};

struct GgufModelInputOptions {
  std::string tokenizer;   // tokenizer file; empty: tokenizer.model beside an HF config
  bool no_vocab = false;   // write no vocabulary (tokenizer.ggml.model = "none")
  std::string name;        // general.name; empty: the directory or file name
};

class GgufModelInput {
 public:
  // Opens and validates the input: every tensor must resolve to a known role of the
  // architecture, 2-D weights must have the shapes the config implies, and required tensors must
  // be present. Errors name the file and tensor.
  static Expected<GgufModelInput> open(const std::string& path, const GgufModelInputOptions& options = {});

  GgufModelInput(GgufModelInput&&) noexcept;
  GgufModelInput& operator=(GgufModelInput&&) noexcept;
  ~GgufModelInput();

  const std::string& path() const;
  GgufInputKind kind() const;
  // The architecture written to general.architecture ("llama" for llama, mistral and llama2.c;
  // "qwen2") and the one tensor names resolve against.
  const std::string& gguf_architecture() const;
  Architecture architecture() const;
  // Layer count and head counts (the inputs of the presets' layer rules); for GGUF input read
  // from {arch}.block_count / attention.head_count(_kv).
  const ModelConfig& config() const;
  // True when the file has no output.weight: llama.cpp then uses token_embd for the output head.
  bool tied_embeddings() const;
  // Metadata to write, in order, before any keys the quantizer adds: general.*, {arch}.*,
  // tokenizer.*. For GGUF input: the input's metadata unchanged.
  const std::vector<GgufKeyValue>& metadata() const;
  const std::optional<GgufVocab>& vocab() const;  // null for GGUF input and --no-vocab
  // Tensors in the order they will be written: token_embd, then each layer's tensors, then
  // output_norm and output (GGUF input: the input's order).
  const std::vector<GgufInputTensor>& tensors() const;
  // The input GGUF file (GGUF input only), else null.
  const GgufFile* gguf_file() const;
  // Things that convert but behave differently in llama.cpp (e.g. a Mistral sliding window,
  // which llama.cpp's llama architecture does not apply).
  const std::vector<std::string>& warnings() const;

  // Tensor `index` as f32, row-major, with the permutation applied; quantized GGUF tensors are
  // dequantized through the format table. Safe to call from several threads.
  Expected<std::vector<float>> load_f32(size_t index) const;
  // The tensor's bytes in the input file (GGUF input only: copied when its type is kept), else
  // an empty span.
  std::span<const uint8_t> raw_bytes(size_t index) const;

  struct Impl;

 private:
  explicit GgufModelInput(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qforge
