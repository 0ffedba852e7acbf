// Unicode helpers for the tokenizers (see tokenizer_unicode.h).
#include "model/tokenizer_unicode.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>

namespace qforge {

using namespace unicode_data;

// ---------------------------------------------------------------------------------------------
// UTF-8

size_t utf8_sequence_length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

namespace {

// Decodes a well-formed sequence at text[pos]; returns its length, or 0 when malformed
// (bad continuation, overlong form, surrogate, above U+10FFFF, or truncated).
size_t decode_one(std::string_view text, size_t pos, uint32_t* cp) {
  const auto b0 = static_cast<uint8_t>(text[pos]);
  const size_t n = utf8_sequence_length(b0);
  if (n == 1) {
    if (b0 >= 0x80) return 0;
    *cp = b0;
    return 1;
  }
  if (pos + n > text.size()) return 0;
  uint32_t v = b0 & (0x7F >> n);
  for (size_t i = 1; i < n; ++i) {
    const auto b = static_cast<uint8_t>(text[pos + i]);
    if ((b & 0xC0) != 0x80) return 0;
    v = (v << 6) | (b & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < kMin[n] || v > kMaxCodePoint || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return n;
}

}  // namespace

std::vector<CodePoint> decode_utf8(std::string_view text) {
  std::vector<CodePoint> out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cp = 0;
    size_t n = decode_one(text, pos, &cp);
    if (n == 0) {
      cp = kInvalidByteBase + static_cast<uint8_t>(text[pos]);
      n = 1;
    }
    out.push_back({cp, static_cast<uint32_t>(pos), static_cast<uint32_t>(n)});
    pos += n;
  }
  return out;
}

std::vector<uint32_t> utf8_to_codepoints(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  for (const CodePoint& c : decode_utf8(text)) out.push_back(c.cp);
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp >= kInvalidByteBase) {
    out.push_back(static_cast<char>(cp - kInvalidByteBase));
  } else if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string codepoints_to_utf8(const std::vector<uint32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) append_utf8(out, cp);
  return out;
}

size_t utf8_complete_prefix(std::string_view bytes) {
  // Only the last (up to) 3 bytes can be the start of an unfinished sequence.
  const size_t n = bytes.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto b = static_cast<uint8_t>(bytes[n - back]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const size_t need = utf8_sequence_length(b);
    if (need > back && b >= 0xC0) {
      // Hold back only if the bytes so far are a valid beginning of a sequence.
      for (size_t i = 1; i < back; ++i)
        if ((static_cast<uint8_t>(bytes[n - back + i]) & 0xC0) != 0x80) return n;
      return n - back;
    }
    return n;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Properties

UnicodeCategory unicode_category(uint32_t cp) {
  if (cp > kMaxCodePoint) return UnicodeCategory::Cn;
  const uint32_t key = (cp << 5) | 31u;
  const uint32_t* end = kCategoryRuns + kCategoryRunCount;
  const uint32_t* it = std::upper_bound(kCategoryRuns, end, key);
  return static_cast<UnicodeCategory>(it == kCategoryRuns ? 0 : (*(it - 1) & 31u));
}

bool is_letter(uint32_t cp) { return is_letter(unicode_category(cp)); }
bool is_number(uint32_t cp) { return is_number(unicode_category(cp)); }

bool is_whitespace(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool is_cjk_ideograph(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

uint32_t unicode_tolower(uint32_t cp) {
  if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
  const LowerRun* end = kLowerRuns + kLowerRunCount;
  const LowerRun* it =
      std::upper_bound(kLowerRuns, end, cp, [](uint32_t v, const LowerRun& r) { return v < r.first; });
  if (it == kLowerRuns) return cp;
  const LowerRun& r = *(it - 1);
  const uint32_t k = (cp - r.first) / r.stride;
  if (k < r.count && (cp - r.first) % r.stride == 0) return static_cast<uint32_t>(static_cast<int64_t>(cp) + r.delta);
  return cp;
}

uint8_t combining_class(uint32_t cp) {
  if (cp < 0x300 || cp > kMaxCodePoint) return 0;
  const uint32_t key = (cp << 8) | 0xFFu;
  const uint32_t* end = kCombiningClassRuns + kCombiningClassRunCount;
  const uint32_t* it = std::upper_bound(kCombiningClassRuns, end, key);
  return it == kCombiningClassRuns ? 0 : static_cast<uint8_t>(*(it - 1) & 0xFFu);
}

// ---------------------------------------------------------------------------------------------
// Normalisation

namespace {

constexpr uint32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161, kHangulT = 0x11A7;
constexpr uint32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr uint32_t kHangulNCount = kHangulVCount * kHangulTCount, kHangulSCount = kHangulLCount * kHangulNCount;

const Decomposition* find_decomposition(uint32_t cp) {
  const Decomposition* end = kDecompositions + kDecompositionCount;
  const Decomposition* it =
      std::lower_bound(kDecompositions, end, cp, [](const Decomposition& d, uint32_t v) { return d.cp < v; });
  return (it != end && it->cp == cp) ? it : nullptr;
}

const std::unordered_map<uint64_t, uint32_t>& composition_map() {
  static const std::unordered_map<uint64_t, uint32_t> map = [] {
    std::unordered_map<uint64_t, uint32_t> m;
    for (size_t i = 0; i < kDecompositionCount; ++i) {
      const Decomposition& d = kDecompositions[i];
      if (d.composes) m.emplace((uint64_t{d.first} << 32) | d.second, d.cp);
    }
    return m;
  }();
  return map;
}

uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kHangulL && a < kHangulL + kHangulLCount && b >= kHangulV && b < kHangulV + kHangulVCount)
    return kHangulS + ((a - kHangulL) * kHangulVCount + (b - kHangulV)) * kHangulTCount;
  if (a >= kHangulS && a < kHangulS + kHangulSCount && (a - kHangulS) % kHangulTCount == 0 && b > kHangulT &&
      b < kHangulT + kHangulTCount)
    return a + (b - kHangulT);
  const auto& m = composition_map();
  auto it = m.find((uint64_t{a} << 32) | b);
  return it == m.end() ? 0 : it->second;
}

}  // namespace

uint32_t nfd_first(uint32_t cp) {
  if (cp >= kHangulS && cp < kHangulS + kHangulSCount) return kHangulL + (cp - kHangulS) / kHangulNCount;
  const Decomposition* d = find_decomposition(cp);
  return d ? kDecompositionData[d->offset] : cp;
}

std::vector<uint32_t> nfd(const std::vector<uint32_t>& cps) {
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) {
    if (cp >= kHangulS && cp < kHangulS + kHangulSCount) {
      const uint32_t s = cp - kHangulS;
      out.push_back(kHangulL + s / kHangulNCount);
      out.push_back(kHangulV + (s % kHangulNCount) / kHangulTCount);
      if (s % kHangulTCount != 0) out.push_back(kHangulT + s % kHangulTCount);
    } else if (const Decomposition* d = find_decomposition(cp)) {
      out.insert(out.end(), kDecompositionData + d->offset, kDecompositionData + d->offset + d->length);
    } else {
      out.push_back(cp);
    }
  }
  // Canonical ordering: a stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < out.size();) {
    if (combining_class(out[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < out.size() && combining_class(out[j]) != 0) ++j;
    std::stable_sort(out.begin() + static_cast<std::ptrdiff_t>(i), out.begin() + static_cast<std::ptrdiff_t>(j),
                     [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  return out;
}

std::vector<uint32_t> nfc(const std::vector<uint32_t>& cps) {
  // Fast path: ASCII is always NFC.
  if (std::all_of(cps.begin(), cps.end(), [](uint32_t c) { return c < 0x80; })) return cps;
  std::vector<uint32_t> d = nfd(cps);
  // Canonical composition (UAX #15): each character either combines with the last starter (when
  // not blocked by an intervening character of equal or higher class) or is kept.
  std::vector<uint32_t> out;
  out.reserve(d.size());
  size_t starter = SIZE_MAX;
  for (uint32_t cp : d) {
    const int cc = combining_class(cp);
    if (starter != SIZE_MAX) {
      // Characters between the starter and cp are non-starters in canonical order, so cp is
      // blocked exactly when the last of them has a class >= cp's.
      const bool adjacent = out.size() == starter + 1;
      if (adjacent || combining_class(out.back()) < cc) {
        if (uint32_t composite = compose_pair(out[starter], cp)) {
          out[starter] = composite;
          continue;
        }
      }
    }
    if (cc == 0) starter = out.size();
    out.push_back(cp);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer splits

const char* split_pattern_regex(SplitPattern pattern) {
  switch (pattern) {
    case SplitPattern::gpt2:
      return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    case SplitPattern::llama3:
      return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
             "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    case SplitPattern::qwen2:
      return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
             "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  }
  return "";
}

namespace {

// Character classes the patterns test, precomputed per code point.
enum : uint8_t { kLetter = 1, kNumber = 2, kSpace = 4 };

class Splitter {
 public:
  explicit Splitter(std::string_view text) : text_(text), cps_(decode_utf8(text)) {
    cls_.reserve(cps_.size());
    for (const CodePoint& c : cps_) {
      const UnicodeCategory cat = unicode_category(c.cp);
      uint8_t f = 0;
      if (is_letter(cat)) f |= kLetter;
      if (is_number(cat)) f |= kNumber;
      if (is_whitespace(c.cp)) f |= kSpace;
      cls_.push_back(f);
    }
  }
  size_t size() const { return cps_.size(); }
  // Past the end: no class and code point 0 (never matches anything).
  uint8_t cls(size_t i) const { return i < cls_.size() ? cls_[i] : 0; }
  uint32_t cp(size_t i) const { return i < cps_.size() ? cps_[i].cp : 0; }
  bool other(size_t i) const { return i < cps_.size() && cls_[i] == 0; }  // [^\s\p{L}\p{N}]
  bool valid(size_t i) const { return i < cps_.size(); }
  // Emits code points [prev_, end) as one word.
  void emit(size_t end) {
    if (end > prev_) {
      const size_t b = cps_[prev_].offset;
      const size_t e = end < cps_.size() ? cps_[end].offset : text_.size();
      out_.push_back({b, e - b});
    }
    prev_ = end;
  }
  std::vector<TextRange> take() { return std::move(out_); }

  // Shared tail of all patterns: \s+(?!\S)|\s+ , with \s*[\r\n]+ first when `newline_rule`.
  size_t whitespace(size_t pos, bool newline_rule) {
    size_t n = 0, last_newline_end = 0;
    while (cls(pos + n) & kSpace) {
      const uint32_t c = cp(pos + n);
      if (c == '\r' || c == '\n') last_newline_end = pos + n + 1;
      ++n;
    }
    if (newline_rule && last_newline_end > 0) return last_newline_end;
    if (n > 1 && valid(pos + n)) return pos + n - 1;  // leave the last space for the next word
    if (n > 0) return pos + n;
    return pos + 1;  // no alternative matched: a single-character word
  }

 private:
  std::string_view text_;
  std::vector<CodePoint> cps_;
  std::vector<uint8_t> cls_;
  std::vector<TextRange> out_;
  size_t prev_ = 0;
};

// 's 't 're 've 'm 'll 'd at pos (case-insensitive when asked); returns the match end or 0.
size_t contraction(const Splitter& s, size_t pos, bool ignore_case) {
  if (s.cp(pos) != '\'') return 0;
  auto at = [&](size_t i) { return ignore_case ? unicode_tolower(s.cp(i)) : s.cp(i); };
  const uint32_t a = at(pos + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return pos + 2;
  const uint32_t b = at(pos + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return pos + 3;
  return 0;
}

std::vector<TextRange> split_gpt2(std::string_view text) {
  Splitter s(text);
  for (size_t pos = 0; pos < s.size();) {
    if (size_t end = contraction(s, pos, false)) {
      s.emit(pos = end);
      continue;
    }
    const bool space = s.cp(pos) == ' ';
    const size_t first = space ? pos + 1 : pos;  // the optional leading space
    if (s.cls(first) & (kLetter | kNumber)) {
      const uint8_t want = (s.cls(first) & kLetter) ? kLetter : kNumber;
      pos = first;
      while (s.cls(pos) & want) ++pos;
      s.emit(pos);
      continue;
    }
    if (s.other(first)) {
      pos = first;
      while (s.other(pos)) ++pos;
      s.emit(pos);
      continue;
    }
    s.emit(pos = s.whitespace(pos, false));
  }
  return s.take();
}

std::vector<TextRange> split_llama3(std::string_view text, size_t max_digits) {
  Splitter s(text);
  for (size_t pos = 0; pos < s.size();) {
    if (size_t end = contraction(s, pos, true)) {
      s.emit(pos = end);
      continue;
    }
    const uint32_t c = s.cp(pos);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (c != '\r' && c != '\n' && !(s.cls(pos) & kNumber) && ((s.cls(pos) & kLetter) || (s.cls(pos + 1) & kLetter))) {
      ++pos;
      while (s.cls(pos) & kLetter) ++pos;
      s.emit(pos);
      continue;
    }
    // \p{N}{1,max_digits}
    if (s.cls(pos) & kNumber) {
      size_t n = 0;
      while ((s.cls(pos) & kNumber) && n < max_digits) ++pos, ++n;
      s.emit(pos);
      continue;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    const size_t first = c == ' ' ? pos + 1 : pos;
    if (s.other(first)) {
      pos = first;
      while (s.other(pos)) ++pos;
      while (s.cp(pos) == '\r' || s.cp(pos) == '\n') ++pos;
      s.emit(pos);
      continue;
    }
    s.emit(pos = s.whitespace(pos, true));
  }
  return s.take();
}

}  // namespace

std::vector<TextRange> split_words(std::string_view text, SplitPattern pattern) {
  switch (pattern) {
    case SplitPattern::gpt2:
      return split_gpt2(text);
    case SplitPattern::llama3:
      return split_llama3(text, 3);
    case SplitPattern::qwen2:
      return split_llama3(text, 1);
  }
  return {};
}

}  // namespace qforge
