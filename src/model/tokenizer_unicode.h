// Unicode support for the tokenizers: UTF-8 walking that never fails (invalid bytes stay bytes),
// general categories, simple lowercasing, NFD/NFC, and the hand-written equivalents of the
// pre-tokenizer regexes that GPT-2, Llama-3 and Qwen2 use. The tables come from
// scripts/gen_unicode_tables.py (tokenizer_unicode_data.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qforge {

// Unicode general categories, in the order of the generator's CATEGORIES list.
enum class UnicodeCategory : uint8_t {
  Cn, Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps,
  Pe, Pi, Pf, Po, Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co,
};

namespace unicode_data {
struct LowerRun {
  uint32_t first;
  uint16_t count;
  uint8_t stride;
  int32_t delta;
};
struct Decomposition {
  uint32_t cp;
  uint16_t offset;  // into kDecompositionData
  uint8_t length;
  uint8_t composes;  // (first, second) is a primary composite pair for NFC
  uint32_t first;
  uint32_t second;
};
extern const char* const kUnicodeVersion;
extern const uint32_t kCategoryRuns[];
extern const size_t kCategoryRunCount;
extern const LowerRun kLowerRuns[];
extern const size_t kLowerRunCount;
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionCount;
extern const uint32_t kDecompositionData[];
extern const size_t kDecompositionDataSize;
extern const uint32_t kCombiningClassRuns[];
extern const size_t kCombiningClassRunCount;
}  // namespace unicode_data

// Code points above this never occur; a byte that is not valid UTF-8 decodes to
// kInvalidByteBase + byte so that it keeps its identity (and has category Cn).
inline constexpr uint32_t kMaxCodePoint = 0x10FFFF;
inline constexpr uint32_t kInvalidByteBase = 0x110000;

// One decoded code point and where its bytes are.
struct CodePoint {
  uint32_t cp;
  uint32_t offset;  // byte offset in the text
  uint32_t length;  // bytes (1 for an invalid byte)
};

// Number of bytes of the UTF-8 sequence that starts with `lead` (1 for a stray byte).
size_t utf8_sequence_length(uint8_t lead);
// Decodes `text` leniently: a malformed, overlong, surrogate or truncated sequence yields one
// invalid-byte entry per byte, so concatenating the entries' bytes gives back `text` exactly.
std::vector<CodePoint> decode_utf8(std::string_view text);
// Only the code points (invalid bytes appear as kInvalidByteBase + byte).
std::vector<uint32_t> utf8_to_codepoints(std::string_view text);
// Appends the UTF-8 encoding of `cp` (an invalid-byte value appends that raw byte).
void append_utf8(std::string& out, uint32_t cp);
std::string codepoints_to_utf8(const std::vector<uint32_t>& cps);
// Length of the valid UTF-8 prefix of `bytes` that does not end inside a sequence that could
// still be completed by more bytes (streaming output holds the rest back).
size_t utf8_complete_prefix(std::string_view bytes);

UnicodeCategory unicode_category(uint32_t cp);
inline bool is_letter(UnicodeCategory c) { return c >= UnicodeCategory::Lu && c <= UnicodeCategory::Lo; }
inline bool is_mark(UnicodeCategory c) { return c >= UnicodeCategory::Mn && c <= UnicodeCategory::Me; }
inline bool is_number(UnicodeCategory c) { return c >= UnicodeCategory::Nd && c <= UnicodeCategory::No; }
inline bool is_punctuation(UnicodeCategory c) { return c >= UnicodeCategory::Pc && c <= UnicodeCategory::Po; }
inline bool is_symbol(UnicodeCategory c) { return c >= UnicodeCategory::Sm && c <= UnicodeCategory::So; }
inline bool is_separator(UnicodeCategory c) { return c >= UnicodeCategory::Zs && c <= UnicodeCategory::Zp; }
inline bool is_other(UnicodeCategory c) { return c == UnicodeCategory::Cn || c >= UnicodeCategory::Cc; }
bool is_letter(uint32_t cp);
bool is_number(uint32_t cp);
// The Unicode White_Space property (what \s matches in the Oniguruma and PCRE regexes that
// tokenizers use): 9-13, 32, 0x85, 0xA0, 0x1680, 0x2000-0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000.
bool is_whitespace(uint32_t cp);
// CJK ideographs as BERT's BasicTokenizer defines them (split into single-character words).
bool is_cjk_ideograph(uint32_t cp);

// Simple (one to one) lowercase mapping.
uint32_t unicode_tolower(uint32_t cp);
uint8_t combining_class(uint32_t cp);
// Canonical decomposition (NFD) and composition (NFC). Invalid-byte values pass through.
std::vector<uint32_t> nfd(const std::vector<uint32_t>& cps);
std::vector<uint32_t> nfc(const std::vector<uint32_t>& cps);
// The first code point of cp's canonical decomposition (cp itself when it has none): llama.cpp's
// WordPiece normalisation, which drops accents by keeping only the base character.
uint32_t nfd_first(uint32_t cp);

// Pre-tokenizer splits: the byte ranges ("words") the regex would match, in order, covering the
// text exactly. Each mirrors a regex used by published tokenizers:
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//           \s*[\r\n]+|\s+(?!\S)|\s+          (qwen2: the same with \p{N} instead of \p{N}{1,3})
struct TextRange {
  size_t offset;
  size_t length;
};
enum class SplitPattern : uint8_t { gpt2, llama3, qwen2 };
std::vector<TextRange> split_words(std::string_view text, SplitPattern pattern);
// The exact regex source string of a pattern (to recognise it in tokenizer.json).
const char* split_pattern_regex(SplitPattern pattern);

}  // namespace qforge
