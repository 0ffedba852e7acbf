// Internals shared by the tokenizer implementations: the vocabulary table, special-token
// splitting, the two merge algorithms (score-ordered SentencePiece BPE and rank-ordered BPE),
// the GPT-2 byte <-> character mapping and the two WordPiece flavours.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "model/tokenizer_unicode.h"
#include "qforge/tokenizer.h"

namespace qforge {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using TokenIndex = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// The vocabulary: entry text, score and kind per id, and an index from text to id.
struct Vocab {
  std::vector<std::string> texts;
  std::vector<float> scores;  // empty when the format has none
  std::vector<TokenKind> kinds;
  TokenIndex index;

  int32_t size() const { return static_cast<int32_t>(texts.size()); }
  bool valid(int32_t id) const { return id >= 0 && id < size(); }
  std::optional<int32_t> find(std::string_view text) const {
    auto it = index.find(text);
    if (it == index.end()) return std::nullopt;
    return it->second;
  }
  float score(int32_t id) const { return scores.empty() ? 0.f : scores[static_cast<size_t>(id)]; }
  TokenKind kind(int32_t id) const { return valid(id) ? kinds[static_cast<size_t>(id)] : TokenKind::normal; }
  // Builds `index`; with duplicates the last id wins when `last_wins` (llama.cpp), else the first.
  void build_index(bool last_wins);
};

// Implements the vocabulary accessors of Tokenizer over a Vocab.
class VocabTokenizer : public Tokenizer {
 public:
  int32_t vocab_size() const override { return vocab_.size(); }
  std::string_view token_text(int32_t id) const override {
    return vocab_.valid(id) ? std::string_view(vocab_.texts[static_cast<size_t>(id)]) : std::string_view();
  }
  TokenKind token_kind(int32_t id) const override { return vocab_.kind(id); }
  std::optional<int32_t> find_token(std::string_view text) const override { return vocab_.find(text); }

 protected:
  // Checks that every configured special id lies inside the vocabulary.
  Status check_special_ids() const;
  Vocab vocab_;
};

// A piece of input: plain text, or a special token matched verbatim.
struct Fragment {
  std::string_view text;
  int32_t token = -1;  // >= 0: this fragment is that token
};

// Splits text on special tokens the way llama.cpp's tokenizer_st_partition does: tokens are tried
// longest first, each splitting every remaining text fragment at all its (non-overlapping,
// leftmost-first) occurrences.
class SpecialTokenMatcher {
 public:
  // `control`: matched only when EncodeOptions::parse_special. lstrip/rstrip (HF added tokens):
  // whitespace before/after an occurrence is absorbed into it.
  void add(std::string text, int32_t id, bool control, bool lstrip = false, bool rstrip = false);
  void finalize();  // sorts by length; call after the last add()
  std::vector<Fragment> split(std::string_view text, bool parse_special) const;
  bool empty() const { return entries_.empty(); }

 private:
  struct Entry {
    std::string text;
    int32_t id;
    bool control, lstrip, rstrip;
  };
  std::vector<Entry> entries_;
};

// SentencePiece BPE (llama.cpp llm_tokenizer_spm, llama2.c encode): starting from consecutive
// pieces of `text`, repeatedly merges the adjacent pair whose concatenation has the highest
// score (ties: the leftmost pair) until no concatenation is a token. `score_of` returns nullopt
// for strings that are not (mergeable) tokens. Returns, for each final symbol, the index of its
// first piece: symbol k covers pieces [starts[k], starts[k + 1]).
std::vector<size_t> merge_by_score(std::string_view text, const std::vector<TextRange>& pieces,
                                   const std::function<std::optional<float>(std::string_view)>& score_of);

// Rank-ordered BPE merges over token ids (GPT-2 style): (left, right) -> (rank, merged id).
class BpeMerges {
 public:
  void add(int32_t left, int32_t right, int32_t merged, int32_t rank) {
    map_.emplace(key(left, right), std::make_pair(rank, merged));
  }
  size_t size() const { return map_.size(); }
  // Merges `ids` in place: the lowest-rank adjacent pair first (ties: leftmost) until none
  // applies. Entries < 0 (not in the vocabulary) never merge.
  void apply(std::vector<int32_t>& ids) const;

 private:
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t{static_cast<uint32_t>(a)} << 32) | static_cast<uint32_t>(b); }
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> map_;
};

// GPT-2's reversible byte -> printable character mapping ("Ġ" for space), as UTF-8 strings.
const std::array<std::string, 256>& byte_level_chars();
std::string byte_level_encode(std::string_view bytes);
// The inverse; characters outside the mapping are kept as their UTF-8 bytes.
std::string byte_level_decode(std::string_view text);

// "<0x41>" -> 0x41.
std::optional<uint8_t> parse_byte_token(std::string_view text);
std::string byte_token_text(uint8_t byte);  // 0x41 -> "<0x41>"

// Replaces every occurrence of `from` with `to`.
std::string replace_all(std::string_view text, std::string_view from, std::string_view to);

// Reads a whole file; errors name it.
Expected<std::string> read_file_bytes(const std::string& path);

// Constructors of the implementations (one file each).
Expected<std::unique_ptr<Tokenizer>> make_sentencepiece_tokenizer(std::string serialized, const std::string& label,
                                                                  std::optional<bool> add_bos,
                                                                  std::optional<bool> add_eos);
// `config`: the parsed tokenizer_config.json beside it, or null.
Expected<std::unique_ptr<Tokenizer>> make_hf_tokenizer(std::string_view json_text, const std::string& label,
                                                       const nlohmann::json* config);

}  // namespace qforge
