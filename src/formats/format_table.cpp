// The format table: one row per FormatId, and everything that is derived from it (scheme names,
// validation, plane sizes, bits per weight) plus the public quantize/dequantize entry points.
// Adding a format = one row here + its functions in its own .cpp (declared in format_impl.h).
#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <limits>
#include <string>

#include <fmt/format.h>

#include "formats/format_impl.h"
#include "formats/gguf_impl.h"
#include "qforge/format.h"

namespace qforge {
namespace {

using namespace formats;  // NOLINT: the row functions

constexpr uint8_t kT = granularity_bit(Granularity::tensor);
constexpr uint8_t kC = granularity_bit(Granularity::channel);
constexpr uint8_t kG = granularity_bit(Granularity::group);
constexpr Granularity kTensor = Granularity::tensor;
constexpr Granularity kChannel = Granularity::channel;
constexpr Granularity kGroup = Granularity::group;

// clang-format off
// Columns: id, row name, description, stem, suffix, min/max bits, granularities, granularity
// optional in names, default granularity, default group, "-dq" allowed, block, bytes per block,
// blocks in codes plane, has scales, scale dtype, zero-point, quantize_ref, dequantize_ref,
// GGUF type, error bound, extra-plane bytes.
constexpr std::array kFormats = std::to_array<FormatTraits>({
  {FormatId::int_sym,  "int-sym",  "signed intN, f16 scale = absmax / (2^(N-1) - 1)",       "int",      "-sym",  2, 8,   kT|kC|kG, false, kGroup,   0,  false, 0,  0,  false, true,  DType::f16,       false, int_sym_quantize_ref,  int_sym_dequantize_ref,  -1, int_sym_error_bound,  nullptr},
  {FormatId::int_asym, "int-asym", "unsigned intN + u8 zero-point, f16 scale = range / (2^N - 1)", "int", "-asym", 2, 8,   kT|kC|kG, false, kGroup,   0,  false, 0,  0,  false, true,  DType::f16,       true,  int_asym_quantize_ref, int_asym_dequantize_ref, -1, int_asym_error_bound, nullptr},
  {FormatId::nf4,      "nf4",      "NormalFloat4 codebook, f32 absmax per block (bitsandbytes)", "nf4",  "",      4, 4,   kG,       true,  kGroup,   64, true,  0,  0,  false, true,  DType::f32,       false, nf4_quantize_ref,      nf4_dequantize_ref,      -1, nf4_error_bound,      nf4_extra_bytes},
  {FormatId::fp4_e2m1, "fp4",      "FP4 E2M1 codes, f32 absmax per block (bitsandbytes fp4)", "fp4",     "",      4, 4,   kG,       true,  kGroup,   64, false, 0,  0,  false, true,  DType::f32,       false, fp4_quantize_ref,      fp4_dequantize_ref,      -1, fp4_error_bound,      nullptr},
  {FormatId::mxfp4,    "mxfp4",    "OCP MX: 32 x E2M1 + one E8M0 scale",                    "mxfp4",    "",      4, 4,   kG,       false, kGroup,   32, false, 32, 17, false, true,  DType::f8_e8m0,   false, mxfp4_quantize_ref,    mxfp4_dequantize_ref,    -1, mxfp4_error_bound,    nullptr},
  {FormatId::nvfp4,    "nvfp4",    "NVIDIA: 16 x E2M1 + one E4M3 scale, f32 tensor scale",  "nvfp4",    "",      4, 4,   kG,       false, kGroup,   16, false, 16, 9,  false, true,  DType::f8_e4m3fn, false, nvfp4_quantize_ref,    nvfp4_dequantize_ref,    -1, nvfp4_error_bound,    nvfp4_extra_bytes},
  {FormatId::fp8_e4m3, "fp8-e4m3", "E4M3FN codes, f32 scale per tensor or channel",         "fp8-e4m3", "",      8, 8,   kT|kC,    false, kChannel, 0,  false, 0,  0,  false, true,  DType::f32,       false, fp8_quantize_ref,      fp8_dequantize_ref,      -1, fp8_error_bound,      nullptr},
  {FormatId::fp8_e5m2, "fp8-e5m2", "E5M2 codes, f32 scale per tensor or channel",           "fp8-e5m2", "",      8, 8,   kT|kC,    false, kChannel, 0,  false, 0,  0,  false, true,  DType::f32,       false, fp8_quantize_ref,      fp8_dequantize_ref,      -1, fp8_error_bound,      nullptr},
  {FormatId::f16,      "f16",      "IEEE half cast",                                        "f16",      "",      16, 16, kT,       false, kTensor,  0,  false, 0,  0,  false, false, DType::f16,       false, float_cast_quantize_ref, float_cast_dequantize_ref, 1, float_cast_error_bound, nullptr},
  {FormatId::bf16,     "bf16",     "bfloat16 cast",                                         "bf16",     "",      16, 16, kT,       false, kTensor,  0,  false, 0,  0,  false, false, DType::bf16,      false, float_cast_quantize_ref, float_cast_dequantize_ref, 30, float_cast_error_bound, nullptr},
  {FormatId::binary,   "binary",   "sign(w) * mean|w| per row, 1-bit codes",                "binary",   "",      1, 1,   kC,       false, kChannel, 0,  false, 0,  0,  false, true,  DType::f16,       false, binary_quantize_ref,   binary_dequantize_ref,   -1, binary_error_bound,   nullptr},
  {FormatId::ternary,  "ternary",  "{-1, 0, +1} * scale per row (TWN), 2-bit codes",        "ternary",  "",      2, 2,   kC,       false, kChannel, 0,  false, 0,  0,  false, true,  DType::f16,       false, ternary_quantize_ref,  ternary_dequantize_ref,  -1, ternary_error_bound,  nullptr},
  {FormatId::f32,      "f32",      "f32 passthrough (unquantized)",                         "f32",      "",      32, 32, kT,       false, kTensor,  0,  false, 0,  0,  false, false, DType::f32,       false, f32_quantize_ref,      f32_dequantize_ref,      0,  f32_error_bound,      nullptr},
  // GGUF block formats (gguf_legacy.cpp, gguf_kquants.cpp, gguf_ternary.cpp): ggml blocks in the codes plane.
  {FormatId::gguf_q8_0,    "q8_0",   "GGUF Q8_0: 32 x int8, f16 scale",                 "q8_0",   "", 8, 8, kG, false, kGroup, 32, false, 32, 34, true, false, DType::f16, false, gguf_q8_0_quantize_ref, gguf_q8_0_dequantize_ref, 8, gguf_q8_0_error_bound, nullptr},
  {FormatId::gguf_q4_0,    "q4_0",   "GGUF Q4_0: 32 x 4-bit, d (q - 8)",                "q4_0",   "", 4, 4, kG, false, kGroup, 32, false, 32, 18, true, false, DType::f16, false, gguf_q4_0_quantize_ref, gguf_q4_0_dequantize_ref, 2, gguf_q4_0_error_bound, nullptr},
  {FormatId::gguf_q4_1,    "q4_1",   "GGUF Q4_1: 32 x 4-bit, d q + m",                  "q4_1",   "", 4, 4, kG, false, kGroup, 32, false, 32, 20, true, false, DType::f16, false, gguf_q4_1_quantize_ref, gguf_q4_1_dequantize_ref, 3, gguf_q4_1_error_bound, nullptr},
  {FormatId::gguf_q5_0,    "q5_0",   "GGUF Q5_0: 32 x 5-bit, d (q - 16)",               "q5_0",   "", 5, 5, kG, false, kGroup, 32, false, 32, 22, true, false, DType::f16, false, gguf_q5_0_quantize_ref, gguf_q5_0_dequantize_ref, 6, gguf_q5_0_error_bound, nullptr},
  {FormatId::gguf_q5_1,    "q5_1",   "GGUF Q5_1: 32 x 5-bit, d q + m",                  "q5_1",   "", 5, 5, kG, false, kGroup, 32, false, 32, 24, true, false, DType::f16, false, gguf_q5_1_quantize_ref, gguf_q5_1_dequantize_ref, 7, gguf_q5_1_error_bound, nullptr},
  {FormatId::gguf_q2_k,    "q2_k",   "GGUF Q2_K: 16 x 16 x 2-bit, 4-bit scales/mins",   "q2_k",   "", 2, 2, kG, false, kGroup, 256, false, 256, 84, true, false, DType::f16, false, gguf_q2_k_quantize_ref, gguf_q2_k_dequantize_ref, 10, gguf_q2_k_error_bound, nullptr},
  {FormatId::gguf_q3_k,    "q3_k",   "GGUF Q3_K: 16 x 16 x 3-bit, 6-bit scales",        "q3_k",   "", 3, 3, kG, false, kGroup, 256, false, 256, 110, true, false, DType::f16, false, gguf_q3_k_quantize_ref, gguf_q3_k_dequantize_ref, 11, gguf_q3_k_error_bound, nullptr},
  {FormatId::gguf_q4_k,    "q4_k",   "GGUF Q4_K: 8 x 32 x 4-bit, 6-bit scales/mins",    "q4_k",   "", 4, 4, kG, false, kGroup, 256, false, 256, 144, true, false, DType::f16, false, gguf_q4_k_quantize_ref, gguf_q4_k_dequantize_ref, 12, gguf_q4_k_error_bound, nullptr},
  {FormatId::gguf_q5_k,    "q5_k",   "GGUF Q5_K: 8 x 32 x 5-bit, 6-bit scales/mins",    "q5_k",   "", 5, 5, kG, false, kGroup, 256, false, 256, 176, true, false, DType::f16, false, gguf_q5_k_quantize_ref, gguf_q5_k_dequantize_ref, 13, gguf_q5_k_error_bound, nullptr},
  {FormatId::gguf_q6_k,    "q6_k",   "GGUF Q6_K: 16 x 16 x 6-bit, int8 scales",         "q6_k",   "", 6, 6, kG, false, kGroup, 256, false, 256, 210, true, false, DType::f16, false, gguf_q6_k_quantize_ref, gguf_q6_k_dequantize_ref, 14, gguf_q6_k_error_bound, nullptr},
  {FormatId::gguf_q8_k,    "q8_k",   "GGUF Q8_K: 256 x int8, f32 scale, block sums",    "q8_k",   "", 8, 8, kG, false, kGroup, 256, false, 256, 292, true, false, DType::f32, false, gguf_q8_k_quantize_ref, gguf_q8_k_dequantize_ref, 15, gguf_q8_k_error_bound, nullptr},
  {FormatId::gguf_iq4_nl,  "iq4_nl", "GGUF IQ4_NL: 32 x 4-bit non-linear table",        "iq4_nl", "", 4, 4, kG, false, kGroup, 32, false, 32, 18, true, false, DType::f16, false, gguf_iq4_nl_quantize_ref, gguf_iq4_nl_dequantize_ref, 20, gguf_iq4_nl_error_bound, nullptr},
  {FormatId::gguf_tq1_0,   "tq1_0",  "GGUF TQ1_0: 256 ternary, base-3 packed",          "tq1_0",  "", 2, 2, kG, false, kGroup, 256, false, 256, 54, true, false, DType::f16, false, gguf_tq1_0_quantize_ref, gguf_tq1_0_dequantize_ref, 34, gguf_tq1_0_error_bound, nullptr},
  {FormatId::gguf_tq2_0,   "tq2_0",  "GGUF TQ2_0: 256 ternary, 2 bits each",            "tq2_0",  "", 2, 2, kG, false, kGroup, 256, false, 256, 66, true, false, DType::f16, false, gguf_tq2_0_quantize_ref, gguf_tq2_0_dequantize_ref, 35, gguf_tq2_0_error_bound, nullptr},
});
// clang-format on

constexpr bool equal(const char* a, const char* b) { return std::string_view(a) == std::string_view(b); }

// Compile-time consistency of the table: unique ids, names and GGUF types; sane bit ranges;
// granularity defaults that the row accepts; fixed blocks only with group granularity. (Function
// pointers are checked by test_format_table: comparing them is not a constant expression under
// sanitizers.)
constexpr bool table_is_consistent() {
  for (size_t i = 0; i < kFormats.size(); ++i) {
    const FormatTraits& a = kFormats[i];
    if (a.min_bits < 1 || a.min_bits > a.max_bits || a.max_bits > 32) return false;
    if (a.granularities == 0 || (a.granularities & ~(kT | kC | kG)) != 0) return false;
    if ((a.granularities & granularity_bit(a.default_granularity)) == 0) return false;
    if ((a.default_granularity == kGroup) != (a.default_group > 0) && a.granularity_optional) return false;
    if (a.block > 0 && (a.granularities != kG || a.default_group != a.block)) return false;
    if (a.blocks_in_codes && (a.block <= 0 || a.bytes_per_block <= 0 || a.has_scales || a.zero_point)) return false;
    for (size_t j = 0; j < i; ++j) {
      const FormatTraits& b = kFormats[j];
      if (a.id == b.id || equal(a.name, b.name)) return false;
      if (a.gguf_type >= 0 && a.gguf_type == b.gguf_type) return false;
    }
  }
  return true;
}
static_assert(table_is_consistent(), "format table rows are inconsistent");

const char* granularity_token(Granularity g) {
  switch (g) {
    case Granularity::tensor: return "tensor";
    case Granularity::channel: return "ch";
    case Granularity::group: return "g";
  }
  return "?";
}

// Whether a row lets the scheme choose its granularity (several granularities, or a free group size).
bool offers_granularity_choice(const FormatTraits& t) {
  return std::popcount(t.granularities) > 1 || (t.granularities == kG && t.block == 0);
}

bool is_default_granularity(const FormatTraits& t, const Scheme& s) {
  const int64_t default_group = t.default_granularity == Granularity::group ? t.default_group : 0;
  return s.granularity == t.default_granularity && s.group_size == default_group;
}

std::string shape_text(int64_t rows, int64_t cols) {
  return fmt::format("[{}, {}]", rows, cols);
}

// "int<2..8>-{g<N>|ch|tensor}-sym"
std::string name_form(const FormatTraits& t) {
  std::string form = t.stem;
  if (t.min_bits < t.max_bits) form += fmt::format("<{}..{}>", t.min_bits, t.max_bits);
  if (offers_granularity_choice(t)) {
    std::string choices;
    int n = 0;
    for (Granularity g : {Granularity::group, Granularity::channel, Granularity::tensor}) {
      if ((t.granularities & granularity_bit(g)) == 0) continue;
      if (n++ > 0) choices += "|";
      choices += g == Granularity::group ? "g<N>" : granularity_token(g);
    }
    if (n > 1) choices = "{" + choices + "}";
    form += t.granularity_optional ? "[-" + choices + "]" : "-" + choices;
  }
  if (t.double_quant) form += "[-dq]";
  form += t.suffix;
  return form;
}

std::string join_forms(const std::vector<const FormatTraits*>& rows) {
  std::string s;
  for (size_t i = 0; i < rows.size(); ++i) s += (i ? ", " : "") + name_form(*rows[i]);
  return s;
}

// Parses a positive decimal integer without sign or leading zeros; false on anything else.
bool parse_positive(std::string_view text, int64_t max, int64_t* out) {
  if (text.empty() || text[0] == '0') return false;
  int64_t v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size() || v <= 0 || v > max) return false;
  *out = v;
  return true;
}

enum class Match { none, ok, error };

// Tries one row's grammar on `name`. none: the name is not of this row's shape; error: it is, but
// something in it is wrong (`*error` says what).
Match parse_with_row(const FormatTraits& t, std::string_view name, Scheme* scheme, std::string* error) {
  const std::string_view stem = t.stem, suffix = t.suffix;
  if (name.size() < stem.size() + suffix.size() || !name.starts_with(stem) || !name.ends_with(suffix))
    return Match::none;
  std::string_view middle = name.substr(stem.size(), name.size() - stem.size() - suffix.size());

  Scheme s;
  s.format = t.id;
  s.bits = t.min_bits;
  if (t.min_bits < t.max_bits) {
    const size_t digits = std::min(middle.find('-'), middle.size());
    int64_t bits = 0;
    if (digits == 0) {
      *error = "missing the bit width after '" + std::string(stem) + "'";
      return Match::error;
    }
    if (!parse_positive(middle.substr(0, digits), 1000, &bits)) {
      *error = "bit width '" + std::string(middle.substr(0, digits)) + "' is not a number";
      return Match::error;
    }
    if (bits < t.min_bits || bits > t.max_bits) {
      *error = "bits must be " + std::to_string(t.min_bits) + ".." + std::to_string(t.max_bits);
      return Match::error;
    }
    s.bits = static_cast<int>(bits);
    middle.remove_prefix(digits);
  }
  if (!middle.empty() && middle[0] != '-') return Match::none;  // e.g. "nf4x": another word

  bool have_granularity = false;
  while (!middle.empty()) {
    middle.remove_prefix(1);  // '-'
    const size_t end = std::min(middle.find('-'), middle.size());
    const std::string_view token = middle.substr(0, end);
    middle.remove_prefix(end);
    if (token == "dq") {
      if (!t.double_quant) {
        *error = std::string(t.name) + " has no double quantization (-dq)";
        return Match::error;
      }
      if (s.double_quant) {
        *error = "'-dq' given twice";
        return Match::error;
      }
      s.double_quant = true;
      continue;
    }
    Granularity g;
    int64_t group = 0;
    if (token == "ch") {
      g = Granularity::channel;
    } else if (token == "tensor") {
      g = Granularity::tensor;
    } else if (token.size() > 1 && token[0] == 'g' && token[1] >= '0' && token[1] <= '9') {
      g = Granularity::group;
      if (!parse_positive(token.substr(1), int64_t{1} << 30, &group)) {
        *error = "group size '" + std::string(token.substr(1)) + "' must be a positive integer without leading zeros";
        return Match::error;
      }
    } else {
      *error = "unexpected '" + std::string(token) + "'";
      return Match::error;
    }
    if (have_granularity) {
      *error = "more than one granularity";
      return Match::error;
    }
    if (!offers_granularity_choice(t)) {
      *error = std::string(t.name) + " has a fixed granularity; its name takes none";
      return Match::error;
    }
    if ((t.granularities & granularity_bit(g)) == 0) {
      *error = std::string(t.name) + " does not support " + (g == Granularity::group ? std::string("group") : std::string(token)) + " granularity";
      return Match::error;
    }
    have_granularity = true;
    s.granularity = g;
    s.group_size = group;
  }
  if (!have_granularity) {
    if (offers_granularity_choice(t) && !t.granularity_optional) {
      *error = "missing the granularity (g<N>, ch or tensor)";
      return Match::error;
    }
    s.granularity = t.default_granularity;
    s.group_size = t.default_granularity == Granularity::group ? t.default_group : 0;
  }
  *scheme = s;
  return Match::ok;
}

// Aliases accepted by Scheme::parse (documented in docs/formats.md).
constexpr std::pair<std::string_view, std::string_view> kAliases[] = {
    {"fp16", "f16"}, {"float16", "f16"}, {"half", "f16"}, {"bfloat16", "bf16"},
    {"fp32", "f32"}, {"float32", "f32"}, {"float", "f32"},
};

size_t checked_elements(int64_t rows, int64_t cols) {
  return static_cast<size_t>(rows) * static_cast<size_t>(cols);
}

// Largest weight qforge accepts: 2^48 elements keeps every plane size and bit count in range.
constexpr int64_t kMaxElements = int64_t{1} << 48;

}  // namespace

// ---- table lookups -------------------------------------------------------------------------

std::span<const FormatTraits> all_formats() { return kFormats; }

const FormatTraits* find_format_by_id(FormatId id) {
  for (const FormatTraits& t : kFormats)
    if (t.id == id) return &t;
  return nullptr;
}

const FormatTraits& format_traits(FormatId id) {
  const FormatTraits* t = find_format_by_id(id);
  QFORGE_CHECK_MSG(t != nullptr, "format id not in the table");
  return *t;
}

const FormatTraits* find_format(std::string_view family_name) {
  for (const FormatTraits& t : kFormats)
    if (family_name == t.name) return &t;
  return nullptr;
}

const FormatTraits* find_format_by_gguf_type(int ggml_type) {
  if (ggml_type < 0) return nullptr;
  for (const FormatTraits& t : kFormats)
    if (t.gguf_type == ggml_type) return &t;
  return nullptr;
}

std::vector<std::string> scheme_name_forms() {
  std::vector<std::string> forms;
  for (const FormatTraits& t : kFormats) forms.push_back(name_form(t));
  return forms;
}

// ---- scheme names ----------------------------------------------------------------------------

std::string Scheme::name() const {
  const FormatTraits* t = find_format_by_id(format);
  if (t == nullptr) return "format#" + std::to_string(static_cast<int>(format));
  std::string s = t->stem;
  if (t->min_bits < t->max_bits) s += std::to_string(bits);
  if (offers_granularity_choice(*t) && !(t->granularity_optional && is_default_granularity(*t, *this))) {
    s += "-";
    s += granularity_token(granularity);
    if (granularity == Granularity::group) s += std::to_string(group_size);
  }
  if (double_quant) s += "-dq";
  s += t->suffix;
  return s;
}

Expected<Scheme> Scheme::parse(std::string_view name) {
  std::string_view canonical = name;
  for (const auto& [alias, target] : kAliases)
    if (name == alias) canonical = target;
  // GGUF block formats are also known by ggml's upper-case type names ("Q4_K", "IQ4_NL").
  std::string lowered(name);
  std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                 [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
  for (const FormatTraits& t : kFormats)
    if (t.blocks_in_codes && lowered == t.stem) canonical = t.stem;

  std::vector<const FormatTraits*> near;  // rows whose stem the name starts with
  std::string first_error;                // from the first row whose shape the name has
  for (const FormatTraits& t : kFormats) {
    Scheme scheme;
    std::string error;
    switch (parse_with_row(t, canonical, &scheme, &error)) {
      case Match::ok: return scheme;
      case Match::error:
        if (first_error.empty()) first_error = error + " (form: " + name_form(t) + ")";
        break;
      case Match::none:
        if (canonical.starts_with(t.stem)) near.push_back(&t);
        break;
    }
  }
  if (!first_error.empty()) return invalid_argument("unknown scheme '" + std::string(name) + "': " + first_error);
  if (!near.empty())
    return invalid_argument("unknown scheme '" + std::string(name) + "': expected " + join_forms(near));
  std::vector<const FormatTraits*> all;
  for (const FormatTraits& t : kFormats) all.push_back(&t);
  return invalid_argument("unknown scheme '" + std::string(name) + "'; valid forms: " + join_forms(all));
}

// ---- validation and sizes --------------------------------------------------------------------

Status validate_scheme(const Scheme& scheme, int64_t rows, int64_t cols) {
  const FormatTraits* t = find_format_by_id(scheme.format);
  if (t == nullptr)
    return invalid_argument("unknown format id " + std::to_string(static_cast<int>(scheme.format)));
  const std::string where = "scheme " + scheme.name() + " on a " + shape_text(rows, cols) + " weight: ";
  if (rows <= 0 || cols <= 0) return invalid_argument(where + "the weight is empty or has a negative dimension");
  if (rows > kMaxElements / cols)
    return invalid_argument(where + "more than 2^48 elements");
  if (scheme.bits < t->min_bits || scheme.bits > t->max_bits)
    return invalid_argument(where + t->name + " takes " + std::to_string(t->min_bits) + ".." +
                            std::to_string(t->max_bits) + " bits, not " + std::to_string(scheme.bits));
  const auto g = static_cast<unsigned>(scheme.granularity);
  if (g > 2 || (t->granularities & granularity_bit(scheme.granularity)) == 0)
    return invalid_argument(where + t->name + " does not support this granularity (form: " + name_form(*t) + ")");
  if (scheme.granularity == Granularity::group) {
    if (t->block > 0 && scheme.group_size != t->block)
      return invalid_argument(where + t->name + " has a fixed block of " + std::to_string(t->block) +
                              " columns, not " + std::to_string(scheme.group_size));
    if (scheme.group_size <= 0)
      return invalid_argument(where + "group size must be positive, not " + std::to_string(scheme.group_size));
    if (cols % scheme.group_size != 0)
      return invalid_argument(where + "group size " + std::to_string(scheme.group_size) + " does not divide the " +
                              std::to_string(cols) + " columns");
  } else if (scheme.group_size != 0) {
    return invalid_argument(where + "group size " + std::to_string(scheme.group_size) +
                            " given for a per-tensor or per-channel scheme");
  }
  if (scheme.double_quant && !t->double_quant)
    return invalid_argument(where + t->name + " has no double quantization");
  return Status::ok();
}

PlaneSizes scheme_plane_sizes(const Scheme& scheme, int64_t rows, int64_t cols) {
  const FormatTraits& t = format_traits(scheme.format);
  PlaneSizes p;
  const size_t r = static_cast<size_t>(rows);
  if (t.blocks_in_codes) {
    p.codes = r * static_cast<size_t>(cols / t.block) * static_cast<size_t>(t.bytes_per_block);
  } else {
    p.codes = r * ((static_cast<size_t>(cols) * static_cast<size_t>(scheme.bits) + 7) / 8);
  }
  const size_t groups = scheme.granularity == Granularity::tensor ? 1
                        : scheme.granularity == Granularity::channel ? r
                                                                     : r * static_cast<size_t>(cols / scheme.group_size);
  if (t.has_scales) p.scales = groups * dtype_size(scheme.double_quant ? DType::u8 : t.scale_dtype);
  if (t.zero_point) p.zeros = groups;
  if (t.extra_bytes != nullptr) p.extra = t.extra_bytes(scheme, rows, cols);
  return p;
}

double scheme_bits_per_weight(const Scheme& scheme, int64_t rows, int64_t cols) {
  if (!validate_scheme(scheme, rows, cols).is_ok()) return 0.0;
  const PlaneSizes p = scheme_plane_sizes(scheme, rows, cols);
  return static_cast<double>(p.total()) * 8.0 / (static_cast<double>(rows) * static_cast<double>(cols));
}

int64_t QuantizedTensor::groups_per_row() const {
  if (scheme.granularity != Granularity::group || scheme.group_size <= 0) return 1;
  return (cols + scheme.group_size - 1) / scheme.group_size;
}

size_t QuantizedTensor::packed_row_bytes() const {
  const FormatTraits* t = find_format_by_id(scheme.format);
  if (t == nullptr || cols <= 0 || scheme.bits <= 0) return 0;
  if (t->blocks_in_codes) return static_cast<size_t>(cols / t->block) * static_cast<size_t>(t->bytes_per_block);
  return (static_cast<size_t>(cols) * static_cast<size_t>(scheme.bits) + 7) / 8;
}

double QuantizedTensor::bits_per_weight() const {
  if (rows <= 0 || cols <= 0) return 0.0;
  return static_cast<double>(nbytes()) * 8.0 / (static_cast<double>(rows) * static_cast<double>(cols));
}

// ---- quantize / dequantize -------------------------------------------------------------------

Expected<QuantizedTensor> quantize(const Scheme& scheme, const float* w, int64_t rows, int64_t cols,
                                   const QuantizeOptions& options) {
  QFORGE_RETURN_IF_ERROR(validate_scheme(scheme, rows, cols));
  const std::string name = scheme.name();
  if (w == nullptr) return invalid_argument("quantize " + name + ": no weight data");
  if (!(options.clip_ratio > 0.0f && options.clip_ratio <= 1.0f))
    return invalid_argument("quantize " + name + ": clip_ratio " + std::to_string(options.clip_ratio) +
                            " is outside (0, 1]");
  const size_t n = checked_elements(rows, cols);
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(w[i]))
      return invalid_argument("quantize " + name + ": weight element " + std::to_string(i) + " (row " +
                              std::to_string(i / static_cast<size_t>(cols)) + ", column " +
                              std::to_string(i % static_cast<size_t>(cols)) + ") is " +
                              (std::isnan(w[i]) ? "NaN" : "infinite"));
  }
  if (options.importance != nullptr) {
    if (options.importance_size != n && options.importance_size != static_cast<size_t>(cols))
      return invalid_argument("quantize " + name + ": importance has " + std::to_string(options.importance_size) +
                              " values; expected rows * cols = " + std::to_string(n) + " or cols = " +
                              std::to_string(cols) + " for a " + shape_text(rows, cols) + " weight");
    for (size_t i = 0; i < options.importance_size; ++i) {
      const float v = options.importance[i];
      if (!(v >= 0.0f) || !std::isfinite(v))
        return invalid_argument("quantize " + name + ": importance value " + std::to_string(i) + " is " +
                                std::to_string(v) + "; importance must be finite and >= 0");
    }
  } else if (options.importance_size != 0) {
    return invalid_argument("quantize " + name + ": importance_size " + std::to_string(options.importance_size) +
                            " given without importance values");
  }

  const FormatTraits& t = format_traits(scheme.format);
  QuantizedTensor q;
  q.scheme = scheme;
  q.rows = rows;
  q.cols = cols;
  QFORGE_RETURN_IF_ERROR(t.quantize_ref(scheme, w, rows, cols, options, &q));
  const PlaneSizes want = scheme_plane_sizes(scheme, rows, cols);
  if (q.codes.size() != want.codes || q.scales.size() != want.scales || q.zeros.size() != want.zeros ||
      q.extra.size() != want.extra)
    return Status::error(ErrorCode::internal, "quantize " + name + ": " + t.name +
                                                  " produced planes of the wrong size (a bug in its quantize_ref)");
  return q;
}

Status dequantize(const QuantizedTensor& q, float* out) {
  Status valid = validate_scheme(q.scheme, q.rows, q.cols);
  if (!valid.is_ok()) return valid.with_context("dequantize");
  if (out == nullptr) return invalid_argument("dequantize: no output buffer");
  const PlaneSizes want = scheme_plane_sizes(q.scheme, q.rows, q.cols);
  const std::string where = "dequantize " + q.scheme.name() + " " + shape_text(q.rows, q.cols) + ": ";
  const struct {
    const char* plane;
    size_t have, want;
  } planes[] = {{"codes", q.codes.size(), want.codes},
                {"scales", q.scales.size(), want.scales},
                {"zeros", q.zeros.size(), want.zeros},
                {"extra", q.extra.size(), want.extra}};
  for (const auto& p : planes)
    if (p.have != p.want)
      return invalid_argument(where + p.plane + " plane has " + std::to_string(p.have) + " bytes, expected " +
                              std::to_string(p.want));
  format_traits(q.scheme.format).dequantize_ref(q, out);
  return Status::ok();
}

// ---- bit packing -----------------------------------------------------------------------------

size_t packed_size(int64_t n, int bits) {
  if (n <= 0 || bits <= 0) return 0;
  return (static_cast<size_t>(n) * static_cast<size_t>(bits) + 7) / 8;
}

namespace {

// 8 codes of B bits are exactly B bytes: the bulk of a row is packed 8 codes at a time through a
// 64-bit word (B is a template constant so the loops unroll); the tail of < 8 codes goes bit by bit.
// Widths dividing 8 (1, 2, 4) go a byte at a time instead, a loop compilers vectorise.
template <int B>
void pack_bits_fixed(const uint8_t* codes, int64_t n, uint8_t* out) {
  constexpr uint64_t mask = (1u << B) - 1;
  const int64_t blocks = n / 8;
  if constexpr (8 % B == 0) {
    constexpr int per_byte = 8 / B;
    const int64_t bytes = n / per_byte;
    for (int64_t j = 0; j < bytes; ++j) {
      unsigned byte = 0;
      for (int k = 0; k < per_byte; ++k) byte |= (codes[j * per_byte + k] & mask) << (k * B);
      out[j] = static_cast<uint8_t>(byte);
    }
    codes += bytes * per_byte;
    out += bytes;
    n -= bytes * per_byte;
    unsigned last = 0;
    for (int64_t k = 0; k < n; ++k) last |= (codes[k] & mask) << (k * B);
    if (n > 0) *out = static_cast<uint8_t>(last);
    return;
  }
  for (int64_t blk = 0; blk < blocks; ++blk, codes += 8, out += B) {
    uint64_t word = 0;
    for (int k = 0; k < 8; ++k) word |= (codes[k] & mask) << (k * B);
    for (int j = 0; j < B; ++j) out[j] = static_cast<uint8_t>(word >> (8 * j));
  }
  uint32_t acc = 0;  // tail: pending bits, lowest first
  int pending = 0;
  for (int64_t i = blocks * 8; i < n; ++i, ++codes) {
    acc |= static_cast<uint32_t>(*codes & mask) << pending;
    pending += B;
    while (pending >= 8) {
      *out++ = static_cast<uint8_t>(acc);
      acc >>= 8;
      pending -= 8;
    }
  }
  if (pending > 0) *out = static_cast<uint8_t>(acc);
}

template <int B>
void unpack_bits_fixed(const uint8_t* packed, int64_t n, uint8_t* codes) {
  constexpr uint64_t mask = (1u << B) - 1;
  const int64_t blocks = n / 8;
  if constexpr (8 % B == 0) {
    constexpr int per_byte = 8 / B;
    const int64_t bytes = n / per_byte;
    for (int64_t j = 0; j < bytes; ++j)
      for (int k = 0; k < per_byte; ++k) codes[j * per_byte + k] = static_cast<uint8_t>((packed[j] >> (k * B)) & mask);
    for (int64_t i = bytes * per_byte; i < n; ++i)  // the last, partial byte
      codes[i] = static_cast<uint8_t>((packed[bytes] >> ((i - bytes * per_byte) * B)) & mask);
    return;
  }
  for (int64_t blk = 0; blk < blocks; ++blk, packed += B, codes += 8) {
    uint64_t word = 0;
    for (int j = 0; j < B; ++j) word |= static_cast<uint64_t>(packed[j]) << (8 * j);
    for (int k = 0; k < 8; ++k) codes[k] = static_cast<uint8_t>((word >> (k * B)) & mask);
  }
  uint32_t acc = 0;  // tail: reads exactly the remaining packed bytes
  int available = 0;
  for (int64_t i = blocks * 8; i < n; ++i) {
    if (available < B) {
      acc |= static_cast<uint32_t>(*packed++) << available;
      available += 8;
    }
    *codes++ = static_cast<uint8_t>(acc & mask);
    acc >>= B;
    available -= B;
  }
}

}  // namespace

void pack_bits(const uint8_t* codes, int64_t n, int bits, uint8_t* out) {
  QFORGE_CHECK(bits >= 1 && bits <= 8);
  if (n <= 0) return;
  switch (bits) {
    case 1: return pack_bits_fixed<1>(codes, n, out);
    case 2: return pack_bits_fixed<2>(codes, n, out);
    case 3: return pack_bits_fixed<3>(codes, n, out);
    case 4: return pack_bits_fixed<4>(codes, n, out);
    case 5: return pack_bits_fixed<5>(codes, n, out);
    case 6: return pack_bits_fixed<6>(codes, n, out);
    case 7: return pack_bits_fixed<7>(codes, n, out);
    default: std::copy(codes, codes + n, out);
  }
}

void unpack_bits(const uint8_t* packed, int64_t n, int bits, uint8_t* codes) {
  QFORGE_CHECK(bits >= 1 && bits <= 8);
  if (n <= 0) return;
  switch (bits) {
    case 1: return unpack_bits_fixed<1>(packed, n, codes);
    case 2: return unpack_bits_fixed<2>(packed, n, codes);
    case 3: return unpack_bits_fixed<3>(packed, n, codes);
    case 4: return unpack_bits_fixed<4>(packed, n, codes);
    case 5: return unpack_bits_fixed<5>(packed, n, codes);
    case 6: return unpack_bits_fixed<6>(packed, n, codes);
    case 7: return unpack_bits_fixed<7>(packed, n, codes);
    default: std::copy(packed, packed + n, codes);
  }
}

// ---- error statistics ------------------------------------------------------------------------

ErrorStats error_stats(const float* ref, const float* approx, int64_t n) {
  ErrorStats s;
  s.count = std::max<int64_t>(n, 0);
  double signal = 0, noise = 0, max_abs = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double r = ref[i], d = r - static_cast<double>(approx[i]);
    signal += r * r;
    noise += d * d;
    max_abs = std::max(max_abs, std::fabs(d));
    if (std::isnan(d)) max_abs = d;  // a NaN anywhere must show
  }
  constexpr double inf = std::numeric_limits<double>::infinity();
  s.max_abs = max_abs;
  s.mse = n > 0 ? noise / static_cast<double>(n) : 0.0;
  s.sqnr_db = noise == 0 ? inf : (signal == 0 ? -inf : 10.0 * std::log10(signal / noise));
  s.rel_rmse = noise == 0 ? 0.0 : (signal == 0 ? inf : std::sqrt(noise / signal));
  return s;
}

}  // namespace qforge
