// Tokenizer vocabularies for GGUF metadata (SentencePiece models, llama2.c tokenizer.bin) and the
// Q/K row permutation of llama.cpp's HF converter.
#include <sentencepiece_processor.h>

#include <cstring>
#include <string>

#include "qforge/gguf_convert.h"
#include "qforge/tensor.h"

namespace qforge {
namespace {

constexpr float kPadScore = -10000.0f;  // convert_hf_to_gguf.py's score for padding ids

void pad_vocab(GgufVocab* v, int64_t vocab_size) {
  for (int64_t id = static_cast<int64_t>(v->tokens.size()); id < vocab_size; ++id) {
    v->tokens.push_back("[PAD" + std::to_string(id) + "]");
    v->scores.push_back(kPadScore);
    v->token_types.push_back(static_cast<int32_t>(GgufTokenType::unused));
  }
}

// "<0xHH>" with two hex digits: llama.cpp's byte-token spelling.
bool is_byte_token(const std::string& s) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
  return s.size() == 6 && s.compare(0, 3, "<0x") == 0 && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

std::string escape_spaces(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == ' ')
      out += "\xe2\x96\x81";  // U+2581, SentencePiece's word-boundary marker
    else
      out += c;
  }
  return out;
}

}  // namespace

Expected<GgufVocab> read_sentencepiece_vocab(const std::string& path, int64_t vocab_size) {
  sentencepiece::SentencePieceProcessor sp;
  const auto st = sp.Load(path);
  if (!st.ok()) return parse_error(path + ": not a SentencePiece model: " + st.ToString());
  const int n = sp.GetPieceSize();
  if (n <= 0) return parse_error(path + ": SentencePiece model has no pieces");
  if (vocab_size > 0 && n > vocab_size)
    return invalid_argument(path + ": the tokenizer has " + std::to_string(n) + " pieces but the model only " +
                            std::to_string(vocab_size) + " embedding rows");
  GgufVocab v;
  v.source = path;
  v.tokens.reserve(static_cast<size_t>(std::max<int64_t>(n, vocab_size)));
  for (int id = 0; id < n; ++id) {
    GgufTokenType type = GgufTokenType::normal;
    if (sp.IsUnknown(id))
      type = GgufTokenType::unknown;
    else if (sp.IsControl(id))
      type = GgufTokenType::control;
    else if (sp.IsUnused(id))
      type = GgufTokenType::unused;
    else if (sp.IsByte(id))
      type = GgufTokenType::byte;
    v.tokens.push_back(sp.IdToPiece(id));
    v.scores.push_back(sp.GetScore(id));
    v.token_types.push_back(static_cast<int32_t>(type));
  }
  pad_vocab(&v, vocab_size);
  v.bos_id = sp.bos_id();
  v.eos_id = sp.eos_id();
  v.unk_id = sp.unk_id();
  v.pad_id = sp.pad_id();
  return v;
}

Expected<GgufVocab> read_llama2c_vocab(const std::string& path, int64_t vocab_size) {
  QFORGE_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  return parse_llama2c_vocab(file->data(), file->size(), path, vocab_size);
}

Expected<GgufVocab> parse_llama2c_vocab(const uint8_t* p, size_t size, const std::string& path, int64_t vocab_size) {
  if (vocab_size <= 0) return invalid_argument(path + ": vocab size " + std::to_string(vocab_size) + " is not positive");
  size_t at = 0;
  auto read_u32 = [&](const char* what, int64_t id) -> Expected<uint32_t> {
    if (size - at < 4)
      return parse_error(path + ": truncated at byte " + std::to_string(at) + " reading the " + what +
                         (id >= 0 ? " of token " + std::to_string(id) : std::string()) + " (expected " +
                         std::to_string(vocab_size) + " tokens)");
    uint32_t v;
    std::memcpy(&v, p + at, 4);
    at += 4;
    return v;
  };
  QFORGE_ASSIGN_OR_RETURN(uint32_t max_len, read_u32("max token length", -1));
  GgufVocab v;
  v.source = path;
  for (int64_t id = 0; id < vocab_size; ++id) {
    QFORGE_ASSIGN_OR_RETURN(uint32_t score_bits, read_u32("score", id));
    QFORGE_ASSIGN_OR_RETURN(uint32_t len, read_u32("length", id));
    if (len > max_len || len > size - at)
      return parse_error(path + ": token " + std::to_string(id) + " has length " + std::to_string(len) +
                         (len > max_len ? " above the file's max_token_length " + std::to_string(max_len)
                                        : " past the end of the file"));
    std::string text(reinterpret_cast<const char*>(p + at), len);
    at += len;
    float score;
    std::memcpy(&score, &score_bits, 4);
    GgufTokenType type = GgufTokenType::normal;
    if (id == 0) {
      text = "<unk>";
      type = GgufTokenType::unknown;
    } else if (id == 1) {
      text = "<s>";
      type = GgufTokenType::control;
    } else if (id == 2) {
      text = "</s>";
      type = GgufTokenType::control;
    } else if (text.empty()) {
      type = GgufTokenType::control;
    } else if (is_byte_token(text)) {
      type = GgufTokenType::byte;
    }
    v.tokens.push_back(escape_spaces(text));
    v.scores.push_back(score);
    v.token_types.push_back(static_cast<int32_t>(type));
  }
  if (at != size)
    return parse_error(path + ": " + std::to_string(size - at) + " bytes after the model's " +
                       std::to_string(vocab_size) + " tokens (a tokenizer for another vocabulary size?)");
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  return v;
}

void permute_qk_rows(const float* in, int64_t rows, int64_t cols, int64_t n_head, float* out) {
  QFORGE_CHECK(n_head > 0 && rows % (2 * n_head) == 0);
  const int64_t hd = rows / n_head, half = hd / 2;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const float* src = in + (h * hd + j * half + i) * cols;
        std::memcpy(out + (h * hd + 2 * i + j) * cols, src, static_cast<size_t>(cols) * sizeof(float));
      }
}

void unpermute_qk_rows(const float* in, int64_t rows, int64_t cols, int64_t n_head, float* out) {
  QFORGE_CHECK(n_head > 0 && rows % (2 * n_head) == 0);
  const int64_t hd = rows / n_head, half = hd / 2;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const float* src = in + (h * hd + 2 * i + j) * cols;
        std::memcpy(out + (h * hd + j * half + i) * cols, src, static_cast<size_t>(cols) * sizeof(float));
      }
}

}  // namespace qforge
