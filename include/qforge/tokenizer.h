// Tokenizers: text <-> token ids for the models qforge evaluates.
//
// Supported sources (load_tokenizer picks the implementation from the path):
//   tokenizer.model   SentencePiece model (through libsentencepiece)
//   tokenizer.json    Hugging Face tokenizers: BPE (byte-level as GPT-2/Llama-3/Qwen2, or
//                     SentencePiece-style with byte fallback) and WordPiece (BERT)
//   *.gguf            the vocabulary in a GGUF file's tokenizer.ggml.* metadata: "llama"
//                     (SentencePiece BPE), "gpt2" (byte-level BPE), "bert" (WordPiece); encodes
//                     exactly as llama.cpp does
//   tokenizer.bin     Karpathy's llama2.c format (vocab size from the model)
//   a directory       tokenizer.model, else tokenizer.json, else tokenizer.bin inside it
//
// Token ids are int32 in [0, vocab_size()). Decoding works on bytes: a token may stand for part
// of a UTF-8 character (byte-fallback and byte-level vocabularies), so TokenStreamDecoder holds
// incomplete characters back when printing generated text token by token.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/status.h"

namespace qforge {

class GgufFile;

// What a vocabulary entry is (the values of GGUF's tokenizer.ggml.token_type).
enum class TokenKind : uint8_t {
  normal = 1,
  unknown = 2,       // <unk>
  control = 3,       // <s>, </s>, [CLS], <|endoftext|>: never produced from plain text
  user_defined = 4,  // added tokens matched verbatim in the input
  unused = 5,
  byte = 6,          // <0x41>: one raw byte
};
const char* token_kind_name(TokenKind kind);

struct EncodeOptions {
  // Add the special tokens the model's own tokenizer adds around a sequence: BOS (and EOS where
  // configured) for Llama-style models, [CLS] ... [SEP] for BERT.
  bool add_special = false;
  // Recognise control tokens written in the text ("<s>", "<|endoftext|>") as those tokens. When
  // false they are ordinary text. User-defined tokens are always recognised.
  bool parse_special = false;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // "sentencepiece", "llama2c", "gguf-spm", "gguf-bpe", "gguf-wordpiece", "hf-bpe", "hf-wordpiece".
  virtual std::string_view type_name() const = 0;
  // The file it was loaded from (for messages).
  const std::string& source() const { return source_; }

  virtual int32_t vocab_size() const = 0;
  std::optional<int32_t> bos_id() const { return bos_; }  // BERT: [CLS]
  std::optional<int32_t> eos_id() const { return eos_; }  // BERT: [SEP]
  std::optional<int32_t> unk_id() const { return unk_; }
  std::optional<int32_t> pad_id() const { return pad_; }
  // Whether encode(..., add_special) adds BOS / EOS.
  bool adds_bos() const { return add_bos_; }
  bool adds_eos() const { return add_eos_; }

  virtual std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const = 0;
  std::vector<int32_t> encode(std::string_view text, bool add_special) const {
    EncodeOptions o;
    o.add_special = add_special;
    return encode(text, o);
  }

  // The bytes token `id` stands for when it appears in generated text: "▁the" -> " the",
  // "<0x0A>" -> "\n", byte-level "Ġthe" -> " the", WordPiece "##ing" -> "ing" and "the" -> " the".
  // Control tokens give "" unless `render_special` (then their text, e.g. "</s>"). An id out of
  // range gives "".
  virtual std::string token_to_piece(int32_t id, bool render_special = false) const = 0;
  // Whole-sequence decoding: the pieces joined, with the leading space that the encoder's dummy
  // prefix (SentencePiece, WordPiece) introduces removed from the first piece and after BOS.
  // Control tokens are skipped unless `render_special`. Returns bytes (possibly invalid UTF-8 when
  // `ids` cut a character).
  virtual std::string decode(std::span<const int32_t> ids, bool render_special = false) const;

  // The vocabulary entry as stored ("▁the", "Ġthe", "##ing", "<0x0A>"); "" when out of range.
  virtual std::string_view token_text(int32_t id) const = 0;
  virtual TokenKind token_kind(int32_t id) const = 0;
  // The id of a stored vocabulary entry, if any.
  virtual std::optional<int32_t> find_token(std::string_view text) const = 0;
  bool is_control(int32_t id) const { return token_kind(id) == TokenKind::control; }

  // Whether decoding drops one leading space from the first piece (and from the piece after BOS).
  bool strips_leading_space() const { return strip_leading_space_; }

 protected:
  std::string source_;
  std::optional<int32_t> bos_, eos_, unk_, pad_;
  bool add_bos_ = false;
  bool add_eos_ = false;
  bool strip_leading_space_ = false;
};

// Turns generated ids into printable text one token at a time: push() returns the text that is
// complete so far (a character split over several byte tokens comes out once its last byte
// arrives), finish() returns whatever is still held back.
class TokenStreamDecoder {
 public:
  explicit TokenStreamDecoder(const Tokenizer& tokenizer, bool render_special = false)
      : tok_(tokenizer), render_special_(render_special) {}
  std::string push(int32_t id);
  std::string finish();

 private:
  const Tokenizer& tok_;
  bool render_special_;
  bool at_start_ = true;  // the next text piece is the first (or follows BOS)
  std::string pending_;
};

struct TokenizerOptions {
  // llama2.c tokenizer.bin: the number of entries to read, which the file does not store (the
  // model header's vocab_size). 0 reads entries up to the end of the file.
  int64_t vocab_size = 0;
};

// Loads the tokenizer at `path` (a file or a model directory; see the top of this header).
// Errors name the file and, for unsupported features, the feature.
Expected<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& path, const TokenizerOptions& options = {});

// The vocabulary stored in an open GGUF file's tokenizer.ggml.* metadata.
Expected<std::unique_ptr<Tokenizer>> load_gguf_tokenizer(const GgufFile& file);

// Parsers over bytes already in memory (tests and fuzzing); `label` names the input in errors.
Expected<std::unique_ptr<Tokenizer>> parse_llama2c_tokenizer(std::span<const uint8_t> bytes, int64_t vocab_size,
                                                             const std::string& label);
Expected<std::unique_ptr<Tokenizer>> parse_hf_tokenizer_json(std::string_view json, const std::string& label);
Expected<std::unique_ptr<Tokenizer>> parse_sentencepiece_model(std::string_view serialized, const std::string& label);

}  // namespace qforge
