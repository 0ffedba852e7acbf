// SentencePiece models (tokenizer.model) through libsentencepiece: encoding is the library's own
// (so it is exact for BPE and unigram models alike); this file adds special-token handling,
// BOS/EOS and byte-exact pieces for streaming output.
#include <sentencepiece_processor.h>

#include "model/tokenizer_impl.h"

namespace qforge {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581, SentencePiece's space

class SentencePieceTokenizer final : public Tokenizer {
 public:
  static Expected<std::unique_ptr<Tokenizer>> create(const std::string& serialized, const std::string& label,
                                                    std::optional<bool> add_bos, std::optional<bool> add_eos) {
    auto t = std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer());
    t->source_ = label;
    if (serialized.empty()) return parse_error(label + ": empty file, not a SentencePiece model");
    const auto status = t->sp_.LoadFromSerializedProto(serialized);
    if (!status.ok())
      return parse_error(label + ": not a valid SentencePiece model (" + std::string(status.message()) + ")");
    const int n = t->sp_.GetPieceSize();
    if (n <= 0) return parse_error(label + ": SentencePiece model has an empty vocabulary");
    auto id_or_none = [n](int id) -> std::optional<int32_t> {
      return (id >= 0 && id < n) ? std::optional<int32_t>(id) : std::nullopt;
    };
    t->bos_ = id_or_none(t->sp_.bos_id());
    t->eos_ = id_or_none(t->sp_.eos_id());
    t->unk_ = id_or_none(t->sp_.unk_id());
    t->pad_ = id_or_none(t->sp_.pad_id());
    t->add_bos_ = add_bos.value_or(true) && t->bos_.has_value();
    t->add_eos_ = add_eos.value_or(false) && t->eos_.has_value();
    t->kinds_.resize(static_cast<size_t>(n), TokenKind::normal);
    for (int id = 0; id < n; ++id) {
      TokenKind& k = t->kinds_[static_cast<size_t>(id)];
      if (t->sp_.IsControl(id)) {
        k = TokenKind::control;
        t->specials_.add(t->sp_.IdToPiece(id), id, /*control=*/true);
      } else if (t->sp_.IsUnknown(id)) {
        k = TokenKind::unknown;
      } else if (t->sp_.IsByte(id)) {
        k = TokenKind::byte;
      } else if (t->sp_.IsUnused(id)) {
        k = TokenKind::unused;
      }
    }
    t->specials_.finalize();
    // The model's normalizer may add a dummy "▁" prefix (add_dummy_prefix); decoding then drops
    // the leading space again. The option is not exposed by the library's API, so probe it.
    std::vector<std::string> probe;
    if (t->sp_.Encode("x", &probe).ok() && !probe.empty())
      t->strip_leading_space_ = std::string_view(probe.front()).substr(0, kSpaceMark.size()) == kSpaceMark;
    return std::unique_ptr<Tokenizer>(std::move(t));
  }

  std::string_view type_name() const override { return "sentencepiece"; }
  int32_t vocab_size() const override { return static_cast<int32_t>(kinds_.size()); }

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override {
    std::vector<int32_t> out;
    if (options.add_special && add_bos_) out.push_back(*bos_);
    for (const Fragment& f : specials_.split(text, options.parse_special)) {
      if (f.token >= 0) {
        out.push_back(f.token);
        continue;
      }
      std::vector<int> ids;
      if (!sp_.Encode(std::string(f.text), &ids).ok()) continue;  // only fails on an unloaded model
      out.insert(out.end(), ids.begin(), ids.end());
    }
    if (options.add_special && add_eos_) out.push_back(*eos_);
    return out;
  }

  std::string token_to_piece(int32_t id, bool render_special) const override {
    if (id < 0 || id >= vocab_size()) return "";
    const std::string& piece = sp_.IdToPiece(id);
    switch (kinds_[static_cast<size_t>(id)]) {
      case TokenKind::control:
        return render_special ? piece : std::string();
      case TokenKind::byte:
        if (auto b = parse_byte_token(piece)) return std::string(1, static_cast<char>(*b));
        return piece;
      default:
        return replace_all(piece, kSpaceMark, " ");
    }
  }

  std::string_view token_text(int32_t id) const override {
    if (id < 0 || id >= vocab_size()) return {};
    return sp_.IdToPiece(id);
  }
  TokenKind token_kind(int32_t id) const override {
    return (id >= 0 && id < vocab_size()) ? kinds_[static_cast<size_t>(id)] : TokenKind::normal;
  }
  std::optional<int32_t> find_token(std::string_view text) const override {
    const int id = sp_.PieceToId(text);
    // PieceToId answers unk_id for unknown strings.
    if (id < 0 || id >= vocab_size() || sp_.IdToPiece(id) != text) return std::nullopt;
    return id;
  }

 private:
  SentencePieceTokenizer() = default;
  sentencepiece::SentencePieceProcessor sp_;
  std::vector<TokenKind> kinds_;
  SpecialTokenMatcher specials_;
};

}  // namespace

Expected<std::unique_ptr<Tokenizer>> make_sentencepiece_tokenizer(std::string serialized, const std::string& label,
                                                                  std::optional<bool> add_bos,
                                                                  std::optional<bool> add_eos) {
  return SentencePieceTokenizer::create(serialized, label, add_bos, add_eos);
}

}  // namespace qforge
