// llama2.c tokenizer.bin (Karpathy's run.c format).
//
// Layout (little-endian): int32 max_token_length, then for each of vocab_size entries:
//   f32 score | int32 len | len bytes (the piece, spaces as ' ', raw bytes as "<0xXX>")
// The entry count is not stored: it is the model header's vocab_size. Ids 0, 1, 2 are <unk>, BOS
// and EOS (run.c hard-codes 1 and 2), and byte b is token b + 3.
//
// Encoding follows run.c's encode(): a dummy " " token when the text is not empty, one token per
// UTF-8 character (bytes grouped as run.c groups them; a character missing from the vocabulary
// becomes its byte tokens), then repeated merges of the adjacent pair whose concatenation is the
// best-scoring token (ties: leftmost). run.c rescans every pair per merge; merge_by_score gives
// the same result with a priority queue.
#include <cmath>
#include <cstring>

#include "model/tokenizer_impl.h"

namespace qforge {
namespace {

constexpr int32_t kBos = 1;
constexpr int32_t kEos = 2;
constexpr int32_t kByteOffset = 3;
// run.c starts its best score at -1e10 and takes strictly better pairs, so scores at or below it never merge.
constexpr float kNoMergeScore = -1e10f;

class Llama2cTokenizer final : public VocabTokenizer {
 public:
  static Expected<std::unique_ptr<Tokenizer>> parse(std::span<const uint8_t> bytes, int64_t vocab_size,
                                                    const std::string& label) {
    auto t = std::unique_ptr<Llama2cTokenizer>(new Llama2cTokenizer());
    t->source_ = label;
    if (vocab_size < 0 || vocab_size > (int64_t{1} << 31) - 1)
      return invalid_argument(label + ": vocab size " + std::to_string(vocab_size) + " is out of range");
    if (bytes.size() < 4)
      return parse_error(label + ": " + std::to_string(bytes.size()) + " bytes is too small for a llama2.c tokenizer header");
    auto read_i32 = [&](size_t at) {
      int32_t v;
      std::memcpy(&v, bytes.data() + at, 4);
      return v;
    };
    const int32_t max_len = read_i32(0);
    if (max_len <= 0) return parse_error(label + ": max_token_length " + std::to_string(max_len) + " must be positive");
    size_t pos = 4;
    Vocab& v = t->vocab_;
    for (int64_t i = 0; vocab_size == 0 ? pos < bytes.size() : i < vocab_size; ++i) {
      if (bytes.size() - pos < 8)
        return parse_error(label + ": truncated at token " + std::to_string(i) + " (byte offset " + std::to_string(pos) +
                           (vocab_size ? ", expected " + std::to_string(vocab_size) + " tokens)" : ")"));
      float score;
      std::memcpy(&score, bytes.data() + pos, 4);
      const int32_t len = read_i32(pos + 4);
      pos += 8;
      if (len < 0 || len > max_len)
        return parse_error(label + ": token " + std::to_string(i) + " has length " + std::to_string(len) +
                           " (max_token_length " + std::to_string(max_len) + ") at byte offset " + std::to_string(pos - 4));
      if (static_cast<size_t>(len) > bytes.size() - pos)
        return parse_error(label + ": truncated inside token " + std::to_string(i) + " (byte offset " +
                           std::to_string(pos) + ")");
      if (std::isnan(score)) return parse_error(label + ": token " + std::to_string(i) + " has a NaN score");
      v.texts.emplace_back(reinterpret_cast<const char*>(bytes.data() + pos), static_cast<size_t>(len));
      v.scores.push_back(score);
      pos += static_cast<size_t>(len);
    }
    if (v.texts.size() <= kEos) return parse_error(label + ": " + std::to_string(v.texts.size()) +
                                                   " tokens; a llama2.c vocabulary needs <unk>, BOS and EOS first");
    v.kinds.assign(v.texts.size(), TokenKind::normal);
    v.kinds[0] = TokenKind::unknown;
    v.kinds[kBos] = TokenKind::control;
    v.kinds[kEos] = TokenKind::control;
    for (size_t id = kEos + 1; id < v.texts.size(); ++id)
      if (parse_byte_token(v.texts[id])) v.kinds[id] = TokenKind::byte;
    v.build_index(/*last_wins=*/false);
    t->unk_ = 0;
    t->bos_ = kBos;
    t->eos_ = kEos;
    t->add_bos_ = true;
    t->strip_leading_space_ = true;
    t->space_ = v.find(" ");
    t->specials_.add(v.texts[kBos], kBos, /*control=*/true);
    t->specials_.add(v.texts[kEos], kEos, /*control=*/true);
    t->specials_.finalize();
    return std::unique_ptr<Tokenizer>(std::move(t));
  }

  std::string_view type_name() const override { return "llama2c"; }

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override {
    std::vector<int32_t> out;
    if (options.add_special) out.push_back(kBos);
    for (const Fragment& f : specials_.split(text, options.parse_special)) {
      if (f.token >= 0) {
        out.push_back(f.token);
      } else {
        encode_text(f.text, out);
      }
    }
    if (options.add_special && add_eos_) out.push_back(kEos);
    return out;
  }

  std::string token_to_piece(int32_t id, bool render_special) const override {
    if (!vocab_.valid(id)) return "";
    const std::string& text = vocab_.texts[static_cast<size_t>(id)];
    switch (vocab_.kind(id)) {
      case TokenKind::control:
        return render_special ? text : std::string();
      case TokenKind::byte:
        return std::string(1, static_cast<char>(*parse_byte_token(text)));
      default:
        return text;
    }
  }

 private:
  Llama2cTokenizer() = default;

  void encode_text(std::string_view text, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    // Initial tokens and, for merging, the concatenation of their pieces.
    std::vector<int32_t> ids;
    if (space_) ids.push_back(*space_);
    for (size_t pos = 0; pos < text.size();) {
      // run.c: a character is a non-continuation byte plus up to 3 following continuation bytes.
      size_t len = 1;
      while (len < 4 && pos + len < text.size() && (static_cast<uint8_t>(text[pos + len]) & 0xC0) == 0x80) ++len;
      if (auto id = vocab_.find(text.substr(pos, len))) {
        ids.push_back(*id);
      } else {
        for (size_t i = 0; i < len; ++i) {
          const int32_t b = static_cast<uint8_t>(text[pos + i]) + kByteOffset;
          ids.push_back(b < vocab_.size() ? b : 0);
        }
      }
      pos += len;
    }
    std::string joined;
    std::vector<TextRange> pieces;
    for (int32_t id : ids) {
      const std::string& p = vocab_.texts[static_cast<size_t>(id)];
      pieces.push_back({joined.size(), p.size()});
      joined += p;
    }
    auto score_of = [this](std::string_view s) -> std::optional<float> {
      auto id = vocab_.find(s);
      if (!id || !(vocab_.score(*id) > kNoMergeScore)) return std::nullopt;
      return vocab_.score(*id);
    };
    const std::vector<size_t> starts = merge_by_score(joined, pieces, score_of);
    for (size_t k = 0; k < starts.size(); ++k) {
      const size_t first = starts[k], last = k + 1 < starts.size() ? starts[k + 1] : pieces.size();
      if (last == first + 1) {
        out.push_back(ids[first]);  // unmerged: keep the id (a byte token's text need not map back to it)
      } else {
        const size_t b = pieces[first].offset, e = pieces[last - 1].offset + pieces[last - 1].length;
        out.push_back(*vocab_.find(std::string_view(joined).substr(b, e - b)));
      }
    }
  }

  std::optional<int32_t> space_;
  SpecialTokenMatcher specials_;
};

}  // namespace

Expected<std::unique_ptr<Tokenizer>> parse_llama2c_tokenizer(std::span<const uint8_t> bytes, int64_t vocab_size,
                                                             const std::string& label) {
  return Llama2cTokenizer::parse(bytes, vocab_size, label);
}

}  // namespace qforge
