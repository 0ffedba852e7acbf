// Hugging Face tokenizer.json (the `tokenizers` library's serialisation).
//
// Pipeline, as the library runs it: split the input on added tokens, then per text fragment
// normalizer -> pre-tokenizer (words) -> model (ids per word); add_special applies the
// post-processor's template (BOS/EOS, [CLS]/[SEP]). Supported pieces:
//   normalizers:    BertNormalizer, Lowercase, NFD, NFC, StripAccents, Prepend, Replace (string
//                   pattern), Strip, Sequence
//   pre-tokenizers: ByteLevel, Split (string patterns; regex patterns of GPT-2, Llama-3 and Qwen2),
//                   Metaspace, BertPreTokenizer, Whitespace, WhitespaceSplit, Digits, Punctuation,
//                   Sequence
//   models:         BPE (byte-level or with byte fallback; ignore_merges; fuse_unk), WordPiece
//   post-processors: TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence
// Anything else is an error naming the file and the feature. Added tokens are matched against
// the raw input (the `normalized` flag is not applied) and `single_word` is not honoured.
#include <algorithm>

#include <nlohmann/json.hpp>

#include "model/tokenizer_impl.h"

namespace qforge {
namespace {

using json = nlohmann::json;
constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581

// Thrown inside the loader only (caught in HfTokenizer::load and turned into a Status).
struct LoadError {
  Status status;
};
[[noreturn]] void fail(Status s) { throw LoadError{std::move(s)}; }

// ---------------------------------------------------------------------------------------------
// Normalizers

enum class NormKind { bert, lowercase, nfd, nfc, strip_accents, prepend, replace, strip };
struct NormStep {
  NormKind kind = NormKind::lowercase;
  bool clean_text = false, chinese = false, strip_accents = false, lowercase = false;
  bool left = false, right = false;
  std::string a, b;  // prepend: a; replace: a -> b
};

std::vector<uint32_t> lowercase_cps(const std::vector<uint32_t>& cps) {
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) {
    if (cp == 0x130) {  // the only code point whose full lowercase is two: "i" + combining dot
      out.push_back('i');
      out.push_back(0x307);
    } else {
      out.push_back(unicode_tolower(cp));
    }
  }
  return out;
}

std::vector<uint32_t> strip_marks(const std::vector<uint32_t>& cps) {
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  for (uint32_t cp : cps)
    if (unicode_category(cp) != UnicodeCategory::Mn) out.push_back(cp);
  return out;
}

std::string apply_normalizer(const NormStep& s, std::string text) {
  switch (s.kind) {
    case NormKind::bert: {
      std::vector<uint32_t> cps;
      for (uint32_t cp : utf8_to_codepoints(text)) {
        if (s.clean_text) {
          const UnicodeCategory cat = unicode_category(cp);
          const bool control = cp != '\t' && cp != '\n' && cp != '\r' &&
                               (cat == UnicodeCategory::Cc || cat == UnicodeCategory::Cf);
          if (cp == 0 || cp == 0xFFFD || control) continue;
          if (is_whitespace(cp)) cp = ' ';
        }
        if (s.chinese && is_cjk_ideograph(cp)) {
          cps.insert(cps.end(), {' ', cp, ' '});
        } else {
          cps.push_back(cp);
        }
      }
      if (s.strip_accents) cps = strip_marks(nfd(cps));
      if (s.lowercase) cps = lowercase_cps(cps);
      return codepoints_to_utf8(cps);
    }
    case NormKind::lowercase: return codepoints_to_utf8(lowercase_cps(utf8_to_codepoints(text)));
    case NormKind::nfd: return codepoints_to_utf8(nfd(utf8_to_codepoints(text)));
    case NormKind::nfc: return codepoints_to_utf8(nfc(utf8_to_codepoints(text)));
    case NormKind::strip_accents: return codepoints_to_utf8(strip_marks(utf8_to_codepoints(text)));
    case NormKind::prepend: return text.empty() ? text : s.a + text;
    case NormKind::replace: return replace_all(text, s.a, s.b);
    case NormKind::strip: {
      std::vector<CodePoint> cps = decode_utf8(text);
      size_t b = 0, e = cps.size();
      if (s.left)
        while (b < e && is_whitespace(cps[b].cp)) ++b;
      if (s.right)
        while (e > b && is_whitespace(cps[e - 1].cp)) --e;
      if (b == e) return "";
      return text.substr(cps[b].offset, cps[e - 1].offset + cps[e - 1].length - cps[b].offset);
    }
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

enum class PreKind { byte_level, split_regex, split_string, metaspace, bert, whitespace, whitespace_split, digits, punctuation };
enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };
struct PreStep {
  PreKind kind = PreKind::byte_level;
  bool add_prefix_space = false, use_regex = true;    // byte_level
  SplitPattern pattern = SplitPattern::gpt2;          // split_regex / byte_level
  std::string pattern_text;                           // split_string
  Behavior behavior = Behavior::isolated;             // split_string, punctuation
  std::string replacement;                            // metaspace
  int prepend = 0;                                    // metaspace: 0 never, 1 first, 2 always
  bool split = true;                                  // metaspace
  bool individual_digits = false;                     // digits
};

// A word cut into runs, each flagged as matching the splitter's pattern or not; `behavior`
// decides what becomes of the matches (HF SplitDelimiterBehavior).
void emit_runs(const std::string& word, const std::vector<std::pair<TextRange, bool>>& runs, Behavior behavior,
               std::vector<std::string>& out) {
  std::string pending;  // merged_with_next: matches waiting for the following run
  bool have_prev = false;
  for (const auto& [r, is_match] : runs) {
    std::string piece = word.substr(r.offset, r.length);
    if (!is_match) {
      out.push_back(pending + piece);
      pending.clear();
      have_prev = true;
      continue;
    }
    switch (behavior) {
      case Behavior::removed: break;
      case Behavior::isolated: out.push_back(piece); have_prev = true; break;
      case Behavior::merged_with_previous:
        if (have_prev) out.back() += piece; else out.push_back(piece);
        have_prev = true;
        break;
      case Behavior::merged_with_next: pending += piece; break;
      case Behavior::contiguous:
        if (have_prev && !out.empty() && out.back() == "\x01match") {}  // unreachable marker guard
        out.push_back(piece);
        have_prev = true;
        break;
    }
  }
  if (!pending.empty()) out.push_back(pending);
}

// Runs of code points where `pred` holds (matches) and does not; with `each`, every matching
// code point is its own run.
template <class Pred>
std::vector<std::pair<TextRange, bool>> class_runs(const std::string& word, Pred pred, bool each) {
  std::vector<std::pair<TextRange, bool>> runs;
  for (const CodePoint& c : decode_utf8(word)) {
    const bool m = pred(c.cp);
    if (!runs.empty() && runs.back().second == m && !(m && each)) {
      runs.back().first.length += c.length;
    } else {
      runs.push_back({{c.offset, c.length}, m});
    }
  }
  return runs;
}

bool is_bert_punctuation(uint32_t cp) {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) return true;
  return is_punctuation(unicode_category(cp));
}

bool is_word_char(uint32_t cp) {  // \w in the Rust regex crate (Unicode)
  const UnicodeCategory c = unicode_category(cp);
  return is_letter(c) || is_mark(c) || c == UnicodeCategory::Nd || c == UnicodeCategory::Nl ||
         c == UnicodeCategory::Pc || cp == 0x200C || cp == 0x200D;
}

void apply_pretokenizer(const PreStep& s, std::vector<std::string>& words, bool first_fragment) {
  std::vector<std::string> out;
  out.reserve(words.size());
  for (size_t wi = 0; wi < words.size(); ++wi) {
    std::string& word = words[wi];
    switch (s.kind) {
      case PreKind::byte_level: {
        if (s.add_prefix_space && !word.empty() && word[0] != ' ') word.insert(0, " ");
        if (s.use_regex) {
          for (const TextRange& r : split_words(word, SplitPattern::gpt2))
            out.push_back(byte_level_encode(std::string_view(word).substr(r.offset, r.length)));
        } else {
          out.push_back(byte_level_encode(word));
        }
        break;
      }
      case PreKind::split_regex:
        for (const TextRange& r : split_words(word, s.pattern)) out.push_back(word.substr(r.offset, r.length));
        break;
      case PreKind::split_string: {
        std::vector<std::pair<TextRange, bool>> runs;
        size_t pos = 0;
        for (size_t at; (at = word.find(s.pattern_text, pos)) != std::string::npos; pos = at + s.pattern_text.size()) {
          if (at > pos) runs.push_back({{pos, at - pos}, false});
          runs.push_back({{at, s.pattern_text.size()}, true});
        }
        if (pos < word.size()) runs.push_back({{pos, word.size() - pos}, false});
        emit_runs(word, runs, s.behavior, out);
        break;
      }
      case PreKind::metaspace: {
        std::string w = replace_all(word, " ", s.replacement);
        const bool prepend = s.prepend == 2 || (s.prepend == 1 && first_fragment && wi == 0);
        if (prepend && w.compare(0, s.replacement.size(), s.replacement) != 0) w.insert(0, s.replacement);
        if (!s.split) {
          out.push_back(std::move(w));
          break;
        }
        // Split before every replacement character (MergedWithNext).
        size_t start = 0;
        for (size_t at; (at = w.find(s.replacement, start + 1)) != std::string::npos && start < w.size(); start = at)
          out.push_back(w.substr(start, at - start));
        if (start < w.size()) out.push_back(w.substr(start));
        break;
      }
      case PreKind::bert: {
        // Whitespace removed, each punctuation character isolated.
        auto runs = class_runs(word, [](uint32_t cp) { return is_whitespace(cp) || is_bert_punctuation(cp); }, true);
        for (auto& [r, m] : runs) {
          const std::string piece = word.substr(r.offset, r.length);
          if (m && is_whitespace(utf8_to_codepoints(piece)[0])) continue;
          out.push_back(piece);
        }
        break;
      }
      case PreKind::whitespace: {
        // \w+|[^\w\s]+ : runs of word characters, runs of other non-space characters.
        auto cps = decode_utf8(word);
        for (size_t i = 0; i < cps.size();) {
          if (is_whitespace(cps[i].cp)) {
            ++i;
            continue;
          }
          const bool w = is_word_char(cps[i].cp);
          size_t j = i;
          while (j < cps.size() && !is_whitespace(cps[j].cp) && is_word_char(cps[j].cp) == w) ++j;
          out.push_back(word.substr(cps[i].offset, cps[j - 1].offset + cps[j - 1].length - cps[i].offset));
          i = j;
        }
        break;
      }
      case PreKind::whitespace_split: {
        auto runs = class_runs(word, [](uint32_t cp) { return is_whitespace(cp); }, false);
        emit_runs(word, runs, Behavior::removed, out);
        break;
      }
      case PreKind::digits: {
        auto runs = class_runs(word, [](uint32_t cp) { return is_number(cp); }, s.individual_digits);
        emit_runs(word, runs, Behavior::isolated, out);
        break;
      }
      case PreKind::punctuation: {
        auto runs = class_runs(word, is_bert_punctuation, true);
        emit_runs(word, runs, s.behavior, out);
        break;
      }
    }
  }
  words = std::move(out);
}

// ---------------------------------------------------------------------------------------------
// The tokenizer

enum class ModelKind { bpe, wordpiece };
enum class PieceStyle { plain, byte_level, metaspace, wordpiece };

class HfTokenizer final : public VocabTokenizer {
 public:
  static Expected<std::unique_ptr<Tokenizer>> load(std::string_view text, const std::string& label,
                                                  const json* config) {
    auto t = std::unique_ptr<HfTokenizer>(new HfTokenizer());
    t->source_ = label;
    try {
      json j;
      try {
        j = json::parse(text);
      } catch (const json::parse_error& e) {
        return parse_error(label + ": malformed JSON: " + e.what());
      }
      t->parse(j, label, config);
    } catch (const LoadError& e) {
      return e.status;
    } catch (const json::exception& e) {
      return parse_error(label + ": unexpected tokenizer.json structure: " + e.what());
    }
    return std::unique_ptr<Tokenizer>(std::move(t));
  }

  std::string_view type_name() const override { return model_ == ModelKind::bpe ? "hf-bpe" : "hf-wordpiece"; }

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override {
    std::vector<int32_t> out;
    if (options.add_special) out.insert(out.end(), prefix_.begin(), prefix_.end());
    bool first = true;
    for (const Fragment& f : specials_.split(text, options.parse_special)) {
      if (f.token >= 0) {
        out.push_back(f.token);
      } else {
        encode_fragment(f.text, first, out);
      }
      first = false;
    }
    if (options.add_special) out.insert(out.end(), suffix_.begin(), suffix_.end());
    return out;
  }

  std::string token_to_piece(int32_t id, bool render_special) const override {
    if (!vocab_.valid(id)) return "";
    const std::string& text = vocab_.texts[static_cast<size_t>(id)];
    switch (vocab_.kind(id)) {
      case TokenKind::control: return render_special ? text : std::string();
      case TokenKind::unknown: return style_ == PieceStyle::wordpiece ? " " + text : text;  // [UNK] stands for a word
      case TokenKind::user_defined:
      case TokenKind::unused: return text;
      case TokenKind::byte: return std::string(1, static_cast<char>(*parse_byte_token(text)));
      case TokenKind::normal: break;
    }
    switch (style_) {
      case PieceStyle::byte_level: return byte_level_decode(text);
      case PieceStyle::metaspace: return replace_all(text, metaspace_, " ");
      case PieceStyle::wordpiece:
        if (text.compare(0, subword_prefix_.size(), subword_prefix_) == 0) return text.substr(subword_prefix_.size());
        return " " + text;
      case PieceStyle::plain: break;
    }
    return text;
  }

 private:
  HfTokenizer() = default;

  void parse(const json& j, const std::string& label, const json* config);
  void parse_model(const json& m, const std::string& label);
  void parse_normalizer(const json& n, const std::string& label);
  void parse_pretokenizer(const json& p, const std::string& label);
  void parse_post_processor(const json& p, const std::string& label);
  void parse_decoder_style(const json& d);

  void encode_fragment(std::string_view fragment, bool first, std::vector<int32_t>& out) const {
    std::string text(fragment);
    for (const NormStep& s : normalizers_) text = apply_normalizer(s, std::move(text));
    std::vector<std::string> words;
    if (!text.empty()) words.push_back(std::move(text));
    for (const PreStep& s : pretokenizers_) apply_pretokenizer(s, words, first);
    for (const std::string& w : words) {
      if (w.empty()) continue;
      if (model_ == ModelKind::bpe) {
        encode_bpe_word(w, out);
      } else {
        encode_wordpiece_word(w, out);
      }
    }
  }

  void encode_bpe_word(const std::string& word, std::vector<int32_t>& out) const {
    if (ignore_merges_) {
      if (auto id = vocab_.find(word)) {
        out.push_back(*id);
        return;
      }
    }
    std::vector<int32_t> ids;
    bool last_unk = false;
    for (const CodePoint& c : decode_utf8(word)) {
      const std::string_view ch = std::string_view(word).substr(c.offset, c.length);
      if (auto id = vocab_.find(ch)) {
        ids.push_back(*id);
        last_unk = false;
        continue;
      }
      if (byte_fallback_) {
        std::vector<int32_t> bytes;
        for (char b : ch) {
          if (auto id = vocab_.find(byte_token_text(static_cast<uint8_t>(b)))) bytes.push_back(*id);
        }
        if (bytes.size() == ch.size()) {
          ids.insert(ids.end(), bytes.begin(), bytes.end());
          last_unk = false;
          continue;
        }
      }
      if (unk_) {
        if (!(fuse_unk_ && last_unk)) ids.push_back(*unk_);
        last_unk = true;
      }
    }
    merges_.apply(ids);
    out.insert(out.end(), ids.begin(), ids.end());
  }

  void encode_wordpiece_word(const std::string& word, std::vector<int32_t>& out) const {
    const std::vector<CodePoint> cps = decode_utf8(word);
    if (cps.size() > max_input_chars_) {
      if (unk_) out.push_back(*unk_);
      return;
    }
    std::vector<int32_t> ids;
    for (size_t start = 0; start < cps.size();) {
      std::optional<int32_t> found;
      size_t end = cps.size();
      for (; end > start; --end) {
        const size_t b = cps[start].offset, e = cps[end - 1].offset + cps[end - 1].length;
        std::string piece = word.substr(b, e - b);
        if (start > 0) piece.insert(0, subword_prefix_);
        if ((found = vocab_.find(piece))) break;
      }
      if (!found) {
        if (unk_) out.push_back(*unk_);
        return;
      }
      ids.push_back(*found);
      start = end;
    }
    out.insert(out.end(), ids.begin(), ids.end());
  }

  ModelKind model_ = ModelKind::bpe;
  PieceStyle style_ = PieceStyle::plain;
  std::vector<NormStep> normalizers_;
  std::vector<PreStep> pretokenizers_;
  BpeMerges merges_;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::string subword_prefix_ = "##";
  size_t max_input_chars_ = 100;
  std::string metaspace_ = std::string(kSpaceMark);
  std::vector<int32_t> prefix_, suffix_;  // added by add_special
  SpecialTokenMatcher specials_;
};

// Small typed accessors that fail with the file, the JSON path and what was expected.
const json& member(const json& obj, const char* key, const std::string& where, const std::string& label) {
  if (!obj.is_object() || !obj.contains(key)) fail(parse_error(label + ": " + where + " has no '" + key + "'"));
  return obj.at(key);
}
std::string string_or(const json& obj, const char* key, std::string fallback) {
  if (obj.is_object() && obj.contains(key) && obj.at(key).is_string()) return obj.at(key).get<std::string>();
  return fallback;
}
bool bool_or(const json& obj, const char* key, bool fallback) {
  if (obj.is_object() && obj.contains(key) && obj.at(key).is_boolean()) return obj.at(key).get<bool>();
  return fallback;
}
// A token named in tokenizer_config.json: a string or an AddedToken object with "content".
std::optional<std::string> config_token(const json* config, const char* key) {
  if (!config || !config->contains(key)) return std::nullopt;
  const json& v = config->at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) return v.at("content").get<std::string>();
  return std::nullopt;
}

void HfTokenizer::parse(const json& j, const std::string& label, const json* config) {
  if (!j.is_object()) fail(parse_error(label + ": not a JSON object"));
  const json& model = member(j, "model", "tokenizer.json", label);
  parse_model(model, label);

  // Added tokens: ids may lie beyond the model's vocabulary (Llama-3's specials do).
  if (j.contains("added_tokens") && !j.at("added_tokens").is_null()) {
    const json& added = j.at("added_tokens");
    if (!added.is_array()) fail(parse_error(label + ": added_tokens is not an array"));
    for (size_t i = 0; i < added.size(); ++i) {
      const json& a = added[i];
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      const json& id_j = member(a, "id", where, label);
      const json& content_j = member(a, "content", where, label);
      if (!id_j.is_number_integer() || id_j.get<int64_t>() < 0 || id_j.get<int64_t>() > INT32_MAX - 1 || !content_j.is_string())
        fail(parse_error(label + ": " + where + " needs a non-negative integer id and a string content"));
      const auto id = static_cast<int32_t>(id_j.get<int64_t>());
      const std::string content = content_j.get<std::string>();
      if (id >= vocab_.size()) {
        if (id > vocab_.size() + 1000000) fail(parse_error(label + ": " + where + " id " + std::to_string(id) + " is implausibly far beyond the vocabulary"));
        vocab_.texts.resize(static_cast<size_t>(id) + 1);
        vocab_.kinds.resize(static_cast<size_t>(id) + 1, TokenKind::unused);
      }
      const bool special = bool_or(a, "special", false);
      vocab_.texts[static_cast<size_t>(id)] = content;
      vocab_.kinds[static_cast<size_t>(id)] = special ? TokenKind::control : TokenKind::user_defined;
      specials_.add(content, id, special, bool_or(a, "lstrip", false), bool_or(a, "rstrip", false));
    }
  }
  specials_.finalize();
  if (unk_) vocab_.kinds[static_cast<size_t>(*unk_)] = TokenKind::unknown;
  if (byte_fallback_)
    for (int32_t id = 0; id < vocab_.size(); ++id)
      if (vocab_.kinds[static_cast<size_t>(id)] == TokenKind::normal && parse_byte_token(vocab_.texts[static_cast<size_t>(id)]))
        vocab_.kinds[static_cast<size_t>(id)] = TokenKind::byte;
  vocab_.build_index(/*last_wins=*/false);

  if (j.contains("normalizer") && !j.at("normalizer").is_null()) parse_normalizer(j.at("normalizer"), label);
  if (j.contains("pre_tokenizer") && !j.at("pre_tokenizer").is_null()) parse_pretokenizer(j.at("pre_tokenizer"), label);
  if (j.contains("post_processor") && !j.at("post_processor").is_null()) parse_post_processor(j.at("post_processor"), label);
  if (model_ == ModelKind::wordpiece) style_ = PieceStyle::wordpiece;
  if (j.contains("decoder") && !j.at("decoder").is_null()) parse_decoder_style(j.at("decoder"));
  if (style_ == PieceStyle::plain)
    for (const PreStep& s : pretokenizers_) {
      if (s.kind == PreKind::byte_level) style_ = PieceStyle::byte_level;
      if (s.kind == PreKind::metaspace) {
        style_ = PieceStyle::metaspace;
        metaspace_ = s.replacement;
        strip_leading_space_ = s.prepend != 0;
      }
    }
  strip_leading_space_ = strip_leading_space_ || style_ == PieceStyle::wordpiece;

  // Special ids: tokenizer_config.json names them; otherwise the template's first/last token.
  auto named = [&](const char* key) -> std::optional<int32_t> {
    if (auto text = config_token(config, key)) return vocab_.find(*text);
    return std::nullopt;
  };
  bos_ = named("bos_token");
  eos_ = named("eos_token");
  pad_ = named("pad_token");
  if (auto u = named("unk_token")) unk_ = u;
  if (!bos_ && !prefix_.empty()) bos_ = prefix_.front();
  if (!eos_ && !suffix_.empty()) eos_ = suffix_.back();
  // LlamaTokenizerFast-style configs say directly whether BOS/EOS are added.
  if (config && config->contains("add_bos_token") && config->at("add_bos_token").is_boolean()) {
    prefix_.clear();
    if (config->at("add_bos_token").get<bool>() && bos_) prefix_.push_back(*bos_);
  }
  if (config && config->contains("add_eos_token") && config->at("add_eos_token").is_boolean()) {
    suffix_.clear();
    if (config->at("add_eos_token").get<bool>() && eos_) suffix_.push_back(*eos_);
  }
  add_bos_ = bos_ && std::find(prefix_.begin(), prefix_.end(), *bos_) != prefix_.end();
  add_eos_ = eos_ && std::find(suffix_.begin(), suffix_.end(), *eos_) != suffix_.end();
  const Status s = check_special_ids();
  if (!s.is_ok()) fail(s);
}

void HfTokenizer::parse_model(const json& m, const std::string& label) {
  const std::string type = string_or(m, "type", "");
  const json& vocab = member(m, "vocab", "model", label);
  if (!vocab.is_object()) fail(unsupported(label + ": model.vocab is not an object (model type '" + type + "')"));
  // Models without "type" are BPE when they have merges (old serialisations).
  if (type == "BPE" || (type.empty() && m.contains("merges"))) {
    model_ = ModelKind::bpe;
  } else if (type == "WordPiece") {
    model_ = ModelKind::wordpiece;
  } else {
    fail(unsupported(label + ": model type '" + type + "' is not supported (supported: BPE, WordPiece)"));
  }
  for (const auto& [text, id_j] : vocab.items()) {
    if (!id_j.is_number_integer() || id_j.get<int64_t>() < 0 || id_j.get<int64_t>() > INT32_MAX - 1)
      fail(parse_error(label + ": model.vocab['" + text + "'] is not a valid id"));
    const auto id = static_cast<size_t>(id_j.get<int64_t>());
    if (id >= vocab.size() + 1000000) fail(parse_error(label + ": model.vocab['" + text + "'] = " + std::to_string(id) + " is implausibly large"));
    if (id >= vocab_.texts.size()) {
      vocab_.texts.resize(id + 1);
      vocab_.kinds.resize(id + 1, TokenKind::unused);
    }
    vocab_.texts[id] = text;
    vocab_.kinds[id] = TokenKind::normal;
  }
  if (vocab_.texts.empty()) fail(parse_error(label + ": model.vocab is empty"));
  vocab_.build_index(/*last_wins=*/false);
  if (const std::string unk = string_or(m, "unk_token", ""); !unk.empty()) {
    if (auto id = vocab_.find(unk)) unk_ = *id;
  }
  if (model_ == ModelKind::wordpiece) {
    subword_prefix_ = string_or(m, "continuing_subword_prefix", "##");
    if (m.contains("max_input_chars_per_word") && m.at("max_input_chars_per_word").is_number_unsigned())
      max_input_chars_ = m.at("max_input_chars_per_word").get<size_t>();
    return;
  }
  if (m.contains("dropout") && m.at("dropout").is_number() && m.at("dropout").get<double>() > 0)
    fail(unsupported(label + ": BPE dropout is not supported (it makes encoding random)"));
  if (!string_or(m, "continuing_subword_prefix", "").empty() || !string_or(m, "end_of_word_suffix", "").empty())
    fail(unsupported(label + ": BPE continuing_subword_prefix / end_of_word_suffix are not supported"));
  byte_fallback_ = bool_or(m, "byte_fallback", false);
  fuse_unk_ = bool_or(m, "fuse_unk", false);
  ignore_merges_ = bool_or(m, "ignore_merges", false);
  const json& merges = member(m, "merges", "model", label);
  if (!merges.is_array()) fail(parse_error(label + ": model.merges is not an array"));
  for (size_t rank = 0; rank < merges.size() && rank < static_cast<size_t>(INT32_MAX); ++rank) {
    const json& e = merges[rank];
    std::string left, right;
    if (e.is_string()) {  // "a b"
      const std::string s = e.get<std::string>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos)
        fail(parse_error(label + ": model.merges[" + std::to_string(rank) + "] = '" + s + "' is not two tokens separated by a space"));
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
      left = e[0].get<std::string>();
      right = e[1].get<std::string>();
    } else {
      fail(parse_error(label + ": model.merges[" + std::to_string(rank) + "] is neither \"a b\" nor [\"a\", \"b\"]"));
    }
    auto l = vocab_.find(left), r = vocab_.find(right), merged = vocab_.find(left + right);
    if (!l || !r || !merged)
      fail(parse_error(label + ": model.merges[" + std::to_string(rank) + "] ('" + left + "', '" + right +
                       "') uses a token that is not in the vocabulary"));
    merges_.add(*l, *r, *merged, static_cast<int32_t>(rank));
  }
}

void HfTokenizer::parse_normalizer(const json& n, const std::string& label) {
  const std::string type = string_or(n, "type", "");
  NormStep s;
  if (type == "Sequence") {
    const json& list = member(n, "normalizers", "normalizer", label);
    if (!list.is_array()) fail(parse_error(label + ": normalizer Sequence has no list"));
    for (const json& item : list) parse_normalizer(item, label);
    return;
  } else if (type == "BertNormalizer") {
    s.kind = NormKind::bert;
    s.clean_text = bool_or(n, "clean_text", true);
    s.chinese = bool_or(n, "handle_chinese_chars", true);
    s.lowercase = bool_or(n, "lowercase", true);
    s.strip_accents = bool_or(n, "strip_accents", s.lowercase);  // null: follows lowercase
  } else if (type == "Lowercase") {
    s.kind = NormKind::lowercase;
  } else if (type == "NFD") {
    s.kind = NormKind::nfd;
  } else if (type == "NFC") {
    s.kind = NormKind::nfc;
  } else if (type == "StripAccents") {
    s.kind = NormKind::strip_accents;
  } else if (type == "Prepend") {
    s.kind = NormKind::prepend;
    s.a = string_or(n, "prepend", "");
  } else if (type == "Replace") {
    s.kind = NormKind::replace;
    const json& pattern = member(n, "pattern", "Replace normalizer", label);
    if (!pattern.contains("String") || !pattern.at("String").is_string())
      fail(unsupported(label + ": normalizer Replace with a regex pattern is not supported"));
    s.a = pattern.at("String").get<std::string>();
    s.b = string_or(n, "content", "");
  } else if (type == "Strip") {
    s.kind = NormKind::strip;
    s.left = bool_or(n, "strip_left", true);
    s.right = bool_or(n, "strip_right", true);
  } else {
    fail(unsupported(label + ": normalizer '" + type + "' is not supported"));
  }
  normalizers_.push_back(std::move(s));
}

Behavior parse_behavior(const json& p, const std::string& label) {
  const std::string b = string_or(p, "behavior", "Isolated");
  if (b == "Removed") return Behavior::removed;
  if (b == "Isolated") return Behavior::isolated;
  if (b == "MergedWithPrevious") return Behavior::merged_with_previous;
  if (b == "MergedWithNext") return Behavior::merged_with_next;
  fail(unsupported(label + ": split behavior '" + b + "' is not supported"));
}

void HfTokenizer::parse_pretokenizer(const json& p, const std::string& label) {
  const std::string type = string_or(p, "type", "");
  PreStep s;
  if (type == "Sequence") {
    const json& list = member(p, "pretokenizers", "pre_tokenizer", label);
    if (!list.is_array()) fail(parse_error(label + ": pre_tokenizer Sequence has no list"));
    for (const json& item : list) parse_pretokenizer(item, label);
    return;
  } else if (type == "ByteLevel") {
    s.kind = PreKind::byte_level;
    s.add_prefix_space = bool_or(p, "add_prefix_space", true);
    s.use_regex = bool_or(p, "use_regex", true);
  } else if (type == "Split") {
    if (bool_or(p, "invert", false)) fail(unsupported(label + ": pre-tokenizer Split with invert is not supported"));
    const json& pattern = member(p, "pattern", "Split pre-tokenizer", label);
    if (pattern.contains("Regex") && pattern.at("Regex").is_string()) {
      const std::string re = pattern.at("Regex").get<std::string>();
      bool known = false;
      for (SplitPattern sp : {SplitPattern::gpt2, SplitPattern::llama3, SplitPattern::qwen2}) {
        if (re == split_pattern_regex(sp)) {
          s.pattern = sp;
          known = true;
        }
      }
      if (!known)
        fail(unsupported(label + ": pre-tokenizer Split regex '" + re +
                         "' is not supported (supported: the GPT-2, Llama-3 and Qwen2 patterns)"));
      // These patterns match every character, so the words are the matches whatever the behavior
      // (except Removed).
      if (parse_behavior(p, label) == Behavior::removed)
        fail(unsupported(label + ": pre-tokenizer Split regex with behavior Removed is not supported"));
      s.kind = PreKind::split_regex;
    } else if (pattern.contains("String") && pattern.at("String").is_string()) {
      s.kind = PreKind::split_string;
      s.pattern_text = pattern.at("String").get<std::string>();
      s.behavior = parse_behavior(p, label);
      if (s.pattern_text.empty()) fail(parse_error(label + ": pre-tokenizer Split has an empty pattern"));
    } else {
      fail(parse_error(label + ": pre-tokenizer Split pattern is neither Regex nor String"));
    }
  } else if (type == "Metaspace") {
    s.kind = PreKind::metaspace;
    s.replacement = string_or(p, "replacement", std::string(kSpaceMark));
    if (s.replacement.empty()) fail(parse_error(label + ": Metaspace replacement is empty"));
    const std::string scheme = string_or(p, "prepend_scheme", bool_or(p, "add_prefix_space", true) ? "always" : "never");
    s.prepend = scheme == "never" ? 0 : scheme == "first" ? 1 : 2;
    s.split = bool_or(p, "split", true);
  } else if (type == "BertPreTokenizer") {
    s.kind = PreKind::bert;
  } else if (type == "Whitespace") {
    s.kind = PreKind::whitespace;
  } else if (type == "WhitespaceSplit") {
    s.kind = PreKind::whitespace_split;
  } else if (type == "Digits") {
    s.kind = PreKind::digits;
    s.individual_digits = bool_or(p, "individual_digits", false);
  } else if (type == "Punctuation") {
    s.kind = PreKind::punctuation;
    s.behavior = parse_behavior(p, label);
  } else {
    fail(unsupported(label + ": pre-tokenizer '" + type + "' is not supported"));
  }
  pretokenizers_.push_back(std::move(s));
}

void HfTokenizer::parse_post_processor(const json& p, const std::string& label) {
  const std::string type = string_or(p, "type", "");
  auto token_id = [&](const json& pair, const char* what) -> int32_t {
    // BertProcessing / RobertaProcessing: ["[CLS]", 101].
    if (!pair.is_array() || pair.size() != 2 || !pair[1].is_number_integer())
      fail(parse_error(label + ": post_processor " + what + " is not [token, id]"));
    const int64_t id = pair[1].get<int64_t>();
    if (id < 0 || id >= vocab_.size()) fail(parse_error(label + ": post_processor " + what + " id is outside the vocabulary"));
    return static_cast<int32_t>(id);
  };
  if (type == "Sequence") {
    const json& list = member(p, "processors", "post_processor", label);
    if (!list.is_array()) fail(parse_error(label + ": post_processor Sequence has no list"));
    for (const json& item : list) parse_post_processor(item, label);
  } else if (type == "ByteLevel") {
    // Offsets only.
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    prefix_ = {token_id(member(p, "cls", type, label), "cls")};
    suffix_ = {token_id(member(p, "sep", type, label), "sep")};
  } else if (type == "TemplateProcessing") {
    const json& single = member(p, "single", "TemplateProcessing", label);
    const json& specials = p.contains("special_tokens") ? p.at("special_tokens") : json::object();
    if (!single.is_array()) fail(parse_error(label + ": TemplateProcessing.single is not a list"));
    prefix_.clear();
    suffix_.clear();
    bool seen_sequence = false;
    for (const json& piece : single) {
      if (piece.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!piece.contains("SpecialToken")) fail(parse_error(label + ": TemplateProcessing piece is neither Sequence nor SpecialToken"));
      const std::string name = string_or(piece.at("SpecialToken"), "id", "");
      std::vector<int32_t> ids;
      if (specials.contains(name) && specials.at(name).contains("ids") && specials.at(name).at("ids").is_array()) {
        for (const json& id : specials.at(name).at("ids")) {
          if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab_.size())
            fail(parse_error(label + ": TemplateProcessing special token '" + name + "' has an id outside the vocabulary"));
          ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
        }
      } else if (auto id = vocab_.find(name)) {
        ids.push_back(*id);
      } else {
        fail(parse_error(label + ": TemplateProcessing special token '" + name + "' is unknown"));
      }
      auto& dst = seen_sequence ? suffix_ : prefix_;
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
  } else {
    fail(unsupported(label + ": post-processor '" + type + "' is not supported"));
  }
}

void HfTokenizer::parse_decoder_style(const json& d) {
  // Only what decides how a token's text becomes bytes, and whether a leading space is dropped.
  const std::string type = string_or(d, "type", "");
  if (type == "Sequence" && d.contains("decoders") && d.at("decoders").is_array()) {
    for (const json& item : d.at("decoders")) parse_decoder_style(item);
  } else if (type == "ByteLevel") {
    style_ = PieceStyle::byte_level;
  } else if (type == "Metaspace") {
    style_ = PieceStyle::metaspace;
    metaspace_ = string_or(d, "replacement", std::string(kSpaceMark));
    const std::string scheme = string_or(d, "prepend_scheme", bool_or(d, "add_prefix_space", true) ? "always" : "never");
    strip_leading_space_ = scheme != "never";
  } else if (type == "Replace" && d.contains("pattern") && d.at("pattern").contains("String")) {
    if (string_or(d, "content", "") == " ") {
      style_ = PieceStyle::metaspace;
      metaspace_ = string_or(d.at("pattern"), "String", std::string(kSpaceMark));
    }
  } else if (type == "Strip") {
    if (string_or(d, "content", "") == " " && d.contains("start") && d.at("start").is_number() && d.at("start").get<int64_t>() > 0)
      strip_leading_space_ = true;
  } else if (type == "WordPiece") {
    style_ = PieceStyle::wordpiece;
    subword_prefix_ = string_or(d, "prefix", subword_prefix_);
  }
}

}  // namespace

Expected<std::unique_ptr<Tokenizer>> parse_hf_tokenizer_json(std::string_view json_text, const std::string& label) {
  return HfTokenizer::load(json_text, label, nullptr);
}

Expected<std::unique_ptr<Tokenizer>> make_hf_tokenizer(std::string_view json_text, const std::string& label,
                                                       const nlohmann::json* config) {
  return HfTokenizer::load(json_text, label, config);
}

}  // namespace qforge
