// Vocabularies stored in GGUF metadata (tokenizer.ggml.*), encoded as llama.cpp encodes them:
//   "llama": SentencePiece BPE (llm_tokenizer_spm): optional leading space, spaces as U+2581,
//            score-ordered merges of UTF-8 characters, <0xXX> byte fallback;
//   "gpt2":  byte-level BPE (llm_tokenizer_bpe): regex pre-split chosen by tokenizer.ggml.pre,
//            GPT-2 byte mapping, rank-ordered merges from tokenizer.ggml.merges;
//   "bert":  WordPiece (llm_tokenizer_wpm): lowercasing, accents dropped through the first code
//            point of each character's decomposition, punctuation and CJK split, then greedy
//            longest match against a vocabulary where word starts carry a "▁" prefix.
// Input is first split on special tokens (control tokens only when parse_special; user-defined
// ones always), longest first, as llama.cpp's tokenizer_st_partition does.
#include <algorithm>

#include "model/tokenizer_impl.h"
#include "qforge/gguf.h"

namespace qforge {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581

enum class GgufModel { spm, bpe, wpm };

class GgufTokenizer final : public VocabTokenizer {
 public:
  static Expected<std::unique_ptr<Tokenizer>> load(const GgufFile& f);

  std::string_view type_name() const override {
    switch (model_) {
      case GgufModel::spm: return "gguf-spm";
      case GgufModel::bpe: return "gguf-bpe";
      case GgufModel::wpm: return "gguf-wordpiece";
    }
    return "gguf";
  }

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override {
    std::vector<int32_t> out;
    if (options.add_special && add_bos_) out.push_back(*bos_);
    bool prev_special = true;  // SentencePiece: a text fragment at the start or after a special token gets the space prefix
    for (const Fragment& f : specials_.split(text, options.parse_special)) {
      if (f.token >= 0) {
        out.push_back(f.token);
        prev_special = true;
        continue;
      }
      switch (model_) {
        case GgufModel::spm: encode_spm(f.text, prev_special, out); break;
        case GgufModel::bpe: encode_bpe(f.text, out); break;
        case GgufModel::wpm: encode_wpm(f.text, out); break;
      }
      prev_special = false;
    }
    if (options.add_special && add_eos_) out.push_back(*eos_);
    return out;
  }

  std::string token_to_piece(int32_t id, bool render_special) const override {
    if (!vocab_.valid(id)) return "";
    const std::string& text = vocab_.texts[static_cast<size_t>(id)];
    switch (vocab_.kind(id)) {
      case TokenKind::control:
        return render_special ? text : std::string();
      case TokenKind::unknown:
      case TokenKind::user_defined:
        return text;
      case TokenKind::byte:
        if (auto b = parse_byte_token(text)) return std::string(1, static_cast<char>(*b));
        return text;
      default:
        if (model_ == GgufModel::bpe) return byte_level_decode(text);
        return replace_all(text, kSpaceMark, " ");
    }
  }

 private:
  GgufTokenizer() = default;

  // A token for byte b when a character has no token (SentencePiece byte fallback).
  int32_t byte_token(uint8_t b) const {
    if (auto id = vocab_.find(byte_token_text(b))) return *id;
    if (auto id = vocab_.find(std::string(1, static_cast<char>(b)))) return *id;
    return unk_.value_or(0);
  }

  void encode_spm(std::string_view fragment, bool prev_special, std::vector<int32_t>& out) const {
    std::string text;
    if (add_space_prefix_ && prev_special) text = " ";
    text.append(fragment);
    text = replace_all(text, " ", kSpaceMark);
    // Symbols are UTF-8 characters by their lead byte (as llama.cpp splits; no validation).
    std::vector<TextRange> chars;
    for (size_t pos = 0; pos < text.size();) {
      const size_t n = std::min(utf8_sequence_length(static_cast<uint8_t>(text[pos])), text.size() - pos);
      chars.push_back({pos, n});
      pos += n;
    }
    auto score_of = [this](std::string_view s) -> std::optional<float> {
      auto id = vocab_.find(s);
      if (!id) return std::nullopt;
      return vocab_.score(*id);
    };
    const std::vector<size_t> starts = merge_by_score(text, chars, score_of);
    for (size_t k = 0; k < starts.size(); ++k) {
      const size_t last = k + 1 < starts.size() ? starts[k + 1] : chars.size();
      const size_t b = chars[starts[k]].offset, e = chars[last - 1].offset + chars[last - 1].length;
      const std::string_view sym = std::string_view(text).substr(b, e - b);
      if (auto id = vocab_.find(sym)) {
        out.push_back(*id);
      } else {
        for (char c : sym) out.push_back(byte_token(static_cast<uint8_t>(c)));
      }
    }
  }

  void encode_bpe(std::string_view fragment, std::vector<int32_t>& out) const {
    const auto& chars = byte_level_chars();
    for (const TextRange& w : split_words(fragment, pattern_)) {
      const std::string_view word = fragment.substr(w.offset, w.length);
      if (ignore_merges_) {
        if (auto id = vocab_.find(byte_level_encode(word))) {
          out.push_back(*id);
          continue;
        }
      }
      // Each byte is one byte-level character, hence one initial symbol.
      std::vector<int32_t> ids;
      ids.reserve(word.size());
      for (char c : word) ids.push_back(byte_level_ids_[static_cast<uint8_t>(c)]);
      merges_.apply(ids);
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] >= 0) {
          out.push_back(ids[i]);
        } else {
          // No token for this byte's character: llama.cpp tries each of its UTF-8 bytes alone.
          const std::string& ch = chars[static_cast<uint8_t>(word[i])];
          for (char c : ch)
            if (auto id = vocab_.find(std::string_view(&c, 1))) out.push_back(*id);
        }
      }
    }
  }

  void encode_wpm(std::string_view fragment, std::vector<int32_t>& out) const {
    // Normalise and split into words (llm_tokenizer_wpm_session::preprocess).
    std::vector<std::string> words(1);
    for (uint32_t cp0 : utf8_to_codepoints(fragment)) {
      const uint32_t cp = nfd_first(cp0);
      if (is_whitespace(cp)) {
        if (!words.back().empty()) words.emplace_back();
        continue;
      }
      const UnicodeCategory cat = unicode_category(cp);
      if (cp == 0 || cp == 0xFFFD || cp >= kInvalidByteBase ||
          (cat >= UnicodeCategory::Cc && cat <= UnicodeCategory::Co))
        continue;
      std::string s;
      append_utf8(s, unicode_tolower(cp));
      if (is_punctuation(cat) || (cp < 0x7F && is_symbol(cat)) || is_cjk_ideograph(cp)) {
        if (!words.back().empty()) words.emplace_back();
        words.back() = std::move(s);
        words.emplace_back();
      } else {
        words.back() += s;
      }
    }
    // Greedy longest match at every byte position of "▁" + word; a word with an unmatched
    // position becomes a single UNK.
    for (const std::string& word : words) {
      if (word.empty()) continue;
      const std::string w = std::string(kSpaceMark) + word;
      const size_t start = out.size();
      const size_t n = w.size();
      for (size_t i = 0; i < n; ++i) {
        bool matched = false;
        for (size_t j = std::min(n, i + max_token_len_ + 1); j > i; --j) {
          if (auto id = vocab_.find(std::string_view(w).substr(i, j - i))) {
            out.push_back(*id);
            matched = true;
            i = j - 1;
            break;
          }
        }
        if (!matched) {
          out.resize(start);
          break;
        }
      }
      if (out.size() == start) out.push_back(unk_.value_or(0));
    }
  }

  GgufModel model_ = GgufModel::spm;
  bool add_space_prefix_ = true;
  SplitPattern pattern_ = SplitPattern::gpt2;
  bool ignore_merges_ = false;
  BpeMerges merges_;
  std::array<int32_t, 256> byte_level_ids_{};
  size_t max_token_len_ = 0;
  SpecialTokenMatcher specials_;
};

Expected<std::unique_ptr<Tokenizer>> GgufTokenizer::load(const GgufFile& f) {
  auto t = std::unique_ptr<GgufTokenizer>(new GgufTokenizer());
  t->source_ = f.path();
  const std::string& label = f.path();
  QFORGE_ASSIGN_OR_RETURN(const std::string model, f.get_string("tokenizer.ggml.model"));
  if (model == "llama") {
    t->model_ = GgufModel::spm;
  } else if (model == "gpt2") {
    t->model_ = GgufModel::bpe;
  } else if (model == "bert") {
    t->model_ = GgufModel::wpm;
  } else {
    return unsupported(label + ": tokenizer.ggml.model '" + model +
                       "' is not supported (supported: llama, gpt2, bert)");
  }

  Vocab& v = t->vocab_;
  QFORGE_ASSIGN_OR_RETURN(const std::span<const std::string> tokens, f.get_array<std::string>("tokenizer.ggml.tokens"));
  if (tokens.empty()) return parse_error(label + ": tokenizer.ggml.tokens is empty");
  if (tokens.size() > static_cast<size_t>(INT32_MAX))
    return parse_error(label + ": tokenizer.ggml.tokens has too many entries");
  v.texts.assign(tokens.begin(), tokens.end());
  const size_t n = v.texts.size();
  if (f.contains("tokenizer.ggml.scores")) {
    QFORGE_ASSIGN_OR_RETURN(v.scores, f.get_float_array("tokenizer.ggml.scores"));
    if (v.scores.size() != n)
      return parse_error(label + ": tokenizer.ggml.scores has " + std::to_string(v.scores.size()) + " entries for " +
                         std::to_string(n) + " tokens");
  }
  v.kinds.assign(n, TokenKind::normal);
  if (f.contains("tokenizer.ggml.token_type")) {
    QFORGE_ASSIGN_OR_RETURN(const std::vector<int64_t> types, f.get_int_array("tokenizer.ggml.token_type"));
    if (types.size() != n)
      return parse_error(label + ": tokenizer.ggml.token_type has " + std::to_string(types.size()) + " entries for " +
                         std::to_string(n) + " tokens");
    for (size_t i = 0; i < n; ++i) {
      if (types[i] < 0 || types[i] > 6)
        return parse_error(label + ": tokenizer.ggml.token_type[" + std::to_string(i) + "] = " +
                           std::to_string(types[i]) + " is not a token type (0..6)");
      if (types[i] != 0) v.kinds[i] = static_cast<TokenKind>(types[i]);
    }
  }
  v.build_index(/*last_wins=*/true);  // llama.cpp's token_to_id keeps the last duplicate

  auto optional_id = [&](const char* key) -> Expected<std::optional<int32_t>> {
    if (!f.contains(key)) return std::optional<int32_t>();
    QFORGE_ASSIGN_OR_RETURN(const int64_t id, f.get_int(key));
    if (id < 0) return std::optional<int32_t>();  // -1: none
    if (id >= static_cast<int64_t>(n))
      return parse_error(label + ": " + key + " = " + std::to_string(id) + " is outside the vocabulary of " +
                         std::to_string(n) + " tokens");
    return std::optional<int32_t>(static_cast<int32_t>(id));
  };
  auto optional_bool = [&](const char* key, bool fallback) -> Expected<bool> {
    if (!f.contains(key)) return fallback;
    return f.get_bool(key);
  };
  auto default_id = [&](int32_t id) { return id < static_cast<int32_t>(n) ? std::optional<int32_t>(id) : std::nullopt; };
  QFORGE_ASSIGN_OR_RETURN(t->bos_, optional_id("tokenizer.ggml.bos_token_id"));
  QFORGE_ASSIGN_OR_RETURN(t->eos_, optional_id("tokenizer.ggml.eos_token_id"));
  QFORGE_ASSIGN_OR_RETURN(t->unk_, optional_id("tokenizer.ggml.unknown_token_id"));
  QFORGE_ASSIGN_OR_RETURN(t->pad_, optional_id("tokenizer.ggml.padding_token_id"));

  bool add_bos_default = false, add_eos_default = false;
  switch (t->model_) {
    case GgufModel::spm: {
      // llama.cpp's defaults for SentencePiece vocabularies.
      if (!t->bos_) t->bos_ = default_id(1);
      if (!t->eos_) t->eos_ = default_id(2);
      if (!t->unk_) t->unk_ = default_id(0);
      add_bos_default = true;
      QFORGE_ASSIGN_OR_RETURN(t->add_space_prefix_, optional_bool("tokenizer.ggml.add_space_prefix", true));
      t->strip_leading_space_ = t->add_space_prefix_;
      break;
    }
    case GgufModel::bpe: {
      std::string pre = "default";
      if (f.contains("tokenizer.ggml.pre")) {
        QFORGE_ASSIGN_OR_RETURN(pre, f.get_string("tokenizer.ggml.pre"));
      }
      if (pre == "default" || pre == "gpt-2" || pre == "gpt2") {
        t->pattern_ = SplitPattern::gpt2;
      } else if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe") {
        t->pattern_ = SplitPattern::llama3;
        t->ignore_merges_ = true;
        add_bos_default = true;
      } else if (pre == "qwen2") {
        t->pattern_ = SplitPattern::qwen2;
      } else {
        return unsupported(label + ": pre-tokenizer tokenizer.ggml.pre = '" + pre +
                           "' is not supported (supported: default, gpt-2, llama3/llama-bpe, qwen2)");
      }
      QFORGE_ASSIGN_OR_RETURN(const std::span<const std::string> merges, f.get_array<std::string>("tokenizer.ggml.merges"));
      for (size_t rank = 0; rank < merges.size() && rank < static_cast<size_t>(INT32_MAX); ++rank) {
        const std::string& m = merges[rank];
        const size_t space = m.find(' ', 1);
        if (space == std::string::npos)
          return parse_error(label + ": tokenizer.ggml.merges[" + std::to_string(rank) + "] = '" + m +
                             "' is not two tokens separated by a space");
        const std::string_view left = std::string_view(m).substr(0, space), right = std::string_view(m).substr(space + 1);
        auto l = v.find(left), r = v.find(right);
        auto merged = v.find(std::string(left) + std::string(right));
        if (l && r && merged) t->merges_.add(*l, *r, *merged, static_cast<int32_t>(rank));
      }
      const auto& chars = byte_level_chars();
      for (size_t b = 0; b < 256; ++b) t->byte_level_ids_[b] = v.find(chars[b]).value_or(-1);
      break;
    }
    case GgufModel::wpm: {
      // BERT: [CLS] text [SEP]; llama.cpp keeps them as BOS/EOS.
      QFORGE_ASSIGN_OR_RETURN(std::optional<int32_t> cls, optional_id("tokenizer.ggml.cls_token_id"));
      QFORGE_ASSIGN_OR_RETURN(std::optional<int32_t> sep, optional_id("tokenizer.ggml.seperator_token_id"));
      if (cls) t->bos_ = cls;
      if (sep) t->eos_ = sep;
      if (!t->bos_) t->bos_ = default_id(101);
      if (!t->eos_) t->eos_ = default_id(102);
      if (!t->unk_) t->unk_ = default_id(100);
      add_bos_default = add_eos_default = true;
      t->strip_leading_space_ = true;
      for (const std::string& s : v.texts) t->max_token_len_ = std::max(t->max_token_len_, s.size());
      break;
    }
  }
  QFORGE_ASSIGN_OR_RETURN(t->add_bos_, optional_bool("tokenizer.ggml.add_bos_token", add_bos_default));
  QFORGE_ASSIGN_OR_RETURN(t->add_eos_, optional_bool("tokenizer.ggml.add_eos_token", add_eos_default));
  if (t->add_bos_ && !t->bos_) return parse_error(label + ": tokenizer.ggml.add_bos_token is set but there is no BOS token");
  if (t->add_eos_ && !t->eos_) return parse_error(label + ": tokenizer.ggml.add_eos_token is set but there is no EOS token");
  QFORGE_RETURN_IF_ERROR(t->check_special_ids());

  for (int32_t id = 0; id < v.size(); ++id) {
    const TokenKind k = v.kinds[static_cast<size_t>(id)];
    if (k == TokenKind::control || k == TokenKind::user_defined || k == TokenKind::unknown)
      t->specials_.add(v.texts[static_cast<size_t>(id)], id, k != TokenKind::user_defined);
  }
  t->specials_.finalize();
  return std::unique_ptr<Tokenizer>(std::move(t));
}

}  // namespace

Expected<std::unique_ptr<Tokenizer>> load_gguf_tokenizer(const GgufFile& file) { return GgufTokenizer::load(file); }

}  // namespace qforge
