// Tokenizer base class, streaming decoder, shared algorithms (special-token splitting, the two
// BPE merge orders, GPT-2's byte mapping) and load_tokenizer's dispatch on the path.
#include "qforge/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <queue>

#include <nlohmann/json.hpp>

#include "model/tokenizer_impl.h"
#include "qforge/gguf.h"

namespace qforge {

const char* token_kind_name(TokenKind kind) {
  switch (kind) {
    case TokenKind::normal: return "normal";
    case TokenKind::unknown: return "unknown";
    case TokenKind::control: return "control";
    case TokenKind::user_defined: return "user_defined";
    case TokenKind::unused: return "unused";
    case TokenKind::byte: return "byte";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// Decoding

std::string Tokenizer::decode(std::span<const int32_t> ids, bool render_special) const {
  TokenStreamDecoder stream(*this, render_special);
  std::string out;
  for (int32_t id : ids) out += stream.push(id);
  out += stream.finish();
  return out;
}

std::string TokenStreamDecoder::push(int32_t id) {
  const bool is_bos = tok_.bos_id() && *tok_.bos_id() == id;
  std::string piece = tok_.token_to_piece(id, render_special_);
  if (is_bos) {
    at_start_ = true;  // SentencePiece and llama2.c drop the dummy space after BOS too
  } else if (!piece.empty()) {
    if (at_start_ && tok_.strips_leading_space() && piece[0] == ' ') piece.erase(0, 1);
    at_start_ = false;
  }
  pending_ += piece;
  const size_t n = utf8_complete_prefix(pending_);
  std::string ready = pending_.substr(0, n);
  pending_.erase(0, n);
  return ready;
}

std::string TokenStreamDecoder::finish() {
  std::string rest = std::move(pending_);
  pending_.clear();
  at_start_ = true;
  return rest;
}

// ---------------------------------------------------------------------------------------------
// Vocabulary

void Vocab::build_index(bool last_wins) {
  index.clear();
  index.reserve(texts.size());
  for (int32_t id = 0; id < size(); ++id) {
    if (last_wins) {
      index[texts[static_cast<size_t>(id)]] = id;
    } else {
      index.emplace(texts[static_cast<size_t>(id)], id);
    }
  }
}

Status VocabTokenizer::check_special_ids() const {
  const std::pair<const char*, std::optional<int32_t>> ids[] = {{"BOS", bos_}, {"EOS", eos_}, {"UNK", unk_}, {"PAD", pad_}};
  for (const auto& [name, id] : ids) {
    if (id && !vocab_.valid(*id))
      return parse_error(source_ + ": " + name + " token id " + std::to_string(*id) + " is outside the vocabulary of " +
                         std::to_string(vocab_.size()) + " tokens");
  }
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// Special tokens

void SpecialTokenMatcher::add(std::string text, int32_t id, bool control, bool lstrip, bool rstrip) {
  if (text.empty()) return;
  entries_.push_back({std::move(text), id, control, lstrip, rstrip});
}

void SpecialTokenMatcher::finalize() {
  std::stable_sort(entries_.begin(), entries_.end(),
                   [](const Entry& a, const Entry& b) { return a.text.size() > b.text.size(); });
}

std::vector<Fragment> SpecialTokenMatcher::split(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  if (!text.empty()) frags.push_back({text, -1});
  for (const Entry& e : entries_) {
    if (e.control && !parse_special) continue;
    std::vector<Fragment> next;
    next.reserve(frags.size());
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      std::string_view rest = f.text;
      for (size_t at; (at = rest.find(e.text)) != std::string_view::npos;) {
        std::string_view before = rest.substr(0, at);
        std::string_view match = rest.substr(at, e.text.size());
        rest.remove_prefix(at + e.text.size());
        if (e.lstrip)
          while (!before.empty() && is_whitespace(static_cast<uint8_t>(before.back()))) before.remove_suffix(1);
        if (e.rstrip)
          while (!rest.empty() && is_whitespace(static_cast<uint8_t>(rest.front()))) rest.remove_prefix(1);
        if (!before.empty()) next.push_back({before, -1});
        next.push_back({match, e.id});
      }
      if (!rest.empty()) next.push_back({rest, -1});
    }
    frags = std::move(next);
  }
  return frags;
}

// ---------------------------------------------------------------------------------------------
// Merges

std::vector<size_t> merge_by_score(std::string_view text, const std::vector<TextRange>& pieces,
                                   const std::function<std::optional<float>(std::string_view)>& score_of) {
  struct Symbol {
    size_t begin, end;
    int64_t prev, next;
    bool alive;
  };
  struct Pair {
    float score;
    int64_t left, right;
    size_t size;
  };
  // Highest score first; among equal scores the leftmost pair.
  auto worse = [](const Pair& a, const Pair& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
  std::vector<Symbol> sym;
  sym.reserve(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i)
    sym.push_back({pieces[i].offset, pieces[i].offset + pieces[i].length, static_cast<int64_t>(i) - 1,
                   i + 1 < pieces.size() ? static_cast<int64_t>(i) + 1 : -1, true});
  std::priority_queue<Pair, std::vector<Pair>, decltype(worse)> queue(worse);
  auto try_pair = [&](int64_t l, int64_t r) {
    if (l < 0 || r < 0) return;
    const Symbol& a = sym[static_cast<size_t>(l)];
    const Symbol& b = sym[static_cast<size_t>(r)];
    std::string_view joined = text.substr(a.begin, b.end - a.begin);
    if (std::optional<float> s = score_of(joined); s && !std::isnan(*s)) queue.push({*s, l, r, joined.size()});
  };
  for (size_t i = 1; i < sym.size(); ++i) try_pair(static_cast<int64_t>(i) - 1, static_cast<int64_t>(i));
  while (!queue.empty()) {
    const Pair p = queue.top();
    queue.pop();
    Symbol& a = sym[static_cast<size_t>(p.left)];
    Symbol& b = sym[static_cast<size_t>(p.right)];
    // Stale entries: a side was merged away or has grown since the pair was queued.
    if (!a.alive || !b.alive || a.next != p.right || b.end - a.begin != p.size) continue;
    a.end = b.end;
    a.next = b.next;
    b.alive = false;
    if (b.next >= 0) sym[static_cast<size_t>(b.next)].prev = p.left;
    try_pair(a.prev, p.left);
    try_pair(p.left, a.next);
  }
  std::vector<size_t> starts;
  for (int64_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[static_cast<size_t>(i)].next) starts.push_back(static_cast<size_t>(i));
  return starts;
}

void BpeMerges::apply(std::vector<int32_t>& ids) const {
  if (ids.size() < 2 || map_.empty()) return;
  struct Pair {
    int32_t rank;
    int64_t left;
    int32_t left_id, right_id;
  };
  auto worse = [](const Pair& a, const Pair& b) { return a.rank > b.rank || (a.rank == b.rank && a.left > b.left); };
  const size_t n = ids.size();
  std::vector<int64_t> prev(n), next(n);
  std::vector<int32_t> cur(ids);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int64_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int64_t>(i) + 1 : -1;
  }
  std::priority_queue<Pair, std::vector<Pair>, decltype(worse)> queue(worse);
  auto try_pair = [&](int64_t l, int64_t r) {
    if (l < 0 || r < 0) return;
    const int32_t a = cur[static_cast<size_t>(l)], b = cur[static_cast<size_t>(r)];
    if (a < 0 || b < 0) return;
    auto it = map_.find(key(a, b));
    if (it != map_.end()) queue.push({it->second.first, l, a, b});
  };
  for (size_t i = 1; i < n; ++i) try_pair(static_cast<int64_t>(i) - 1, static_cast<int64_t>(i));
  while (!queue.empty()) {
    const Pair p = queue.top();
    queue.pop();
    const auto l = static_cast<size_t>(p.left);
    const int64_t r = next[l];
    // Stale: the left symbol changed, or its right neighbour is no longer the queued one.
    if (cur[l] != p.left_id || r < 0 || cur[static_cast<size_t>(r)] != p.right_id) continue;
    cur[l] = map_.find(key(p.left_id, p.right_id))->second.second;
    cur[static_cast<size_t>(r)] = -2;  // dead
    next[l] = next[static_cast<size_t>(r)];
    if (next[l] >= 0) prev[static_cast<size_t>(next[l])] = p.left;
    try_pair(prev[l], p.left);
    try_pair(p.left, next[l]);
  }
  ids.clear();
  for (int64_t i = 0; i >= 0; i = next[static_cast<size_t>(i)]) ids.push_back(cur[static_cast<size_t>(i)]);
}

// ---------------------------------------------------------------------------------------------
// Byte-level mapping and small helpers

const std::array<std::string, 256>& byte_level_chars() {
  static const std::array<std::string, 256> table = [] {
    // Printable Latin-1 bytes map to themselves; the rest to U+0100 upwards, in byte order.
    std::array<std::string, 256> t;
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      append_utf8(t[b], printable ? b : next++);
    }
    return t;
  }();
  return table;
}

std::string byte_level_encode(std::string_view bytes) {
  const auto& chars = byte_level_chars();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += chars[static_cast<uint8_t>(c)];
  return out;
}

std::string byte_level_decode(std::string_view text) {
  static const std::unordered_map<uint32_t, uint8_t> inverse = [] {
    std::unordered_map<uint32_t, uint8_t> m;
    const auto& chars = byte_level_chars();
    for (uint32_t b = 0; b < 256; ++b) m.emplace(utf8_to_codepoints(chars[b])[0], static_cast<uint8_t>(b));
    return m;
  }();
  std::string out;
  out.reserve(text.size());
  for (const CodePoint& c : decode_utf8(text)) {
    auto it = inverse.find(c.cp);
    if (it != inverse.end()) {
      out.push_back(static_cast<char>(it->second));
    } else {
      out.append(text.substr(c.offset, c.length));
    }
  }
  return out;
}

std::optional<uint8_t> parse_byte_token(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(text[3]), lo = hex(text[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

std::string byte_token_text(uint8_t byte) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "<0x%02X>", byte);
  return buf;
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  for (size_t at; !from.empty() && (at = text.find(from, pos)) != std::string_view::npos; pos = at + from.size()) {
    out.append(text.substr(pos, at - pos));
    out.append(to);
  }
  out.append(text.substr(pos));
  return out;
}

Expected<std::string> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return io_error(path + ": cannot open for reading");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return io_error(path + ": read failed");
  return data;
}

// ---------------------------------------------------------------------------------------------
// Loading

Expected<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& path, const TokenizerOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) {
    for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer.bin"}) {
      if (fs::is_regular_file(p / name, ec)) return load_tokenizer((p / name).string(), options);
    }
    return io_error(path + ": no tokenizer.model, tokenizer.json or tokenizer.bin in this directory");
  }
  if (!fs::exists(p, ec)) return io_error(path + ": no such file");
  const std::string ext = p.extension().string();
  const std::string name = p.filename().string();

  if (ext == ".gguf") {
    QFORGE_ASSIGN_OR_RETURN(GgufFile file, GgufFile::open(path));
    return load_gguf_tokenizer(file);
  }
  QFORGE_ASSIGN_OR_RETURN(std::string bytes, read_file_bytes(path));
  // HF model directories say in tokenizer_config.json which tokens are BOS/EOS and whether they
  // are added.
  std::optional<nlohmann::json> config;
  const fs::path config_path = p.parent_path() / "tokenizer_config.json";
  if ((ext == ".json" || ext == ".model") && name != "tokenizer_config.json" && fs::is_regular_file(config_path, ec)) {
    QFORGE_ASSIGN_OR_RETURN(std::string text, read_file_bytes(config_path.string()));
    auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return parse_error(config_path.string() + ": not a JSON object");
    config = std::move(j);
  }
  if (ext == ".json") return make_hf_tokenizer(bytes, path, config ? &*config : nullptr);
  if (ext == ".model") {
    std::optional<bool> add_bos, add_eos;
    if (config) {
      if (auto it = config->find("add_bos_token"); it != config->end() && it->is_boolean()) add_bos = it->get<bool>();
      if (auto it = config->find("add_eos_token"); it != config->end() && it->is_boolean()) add_eos = it->get<bool>();
    }
    return make_sentencepiece_tokenizer(std::move(bytes), path, add_bos, add_eos);
  }
  if (ext == ".bin") {
    return parse_llama2c_tokenizer(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
                                   options.vocab_size, path);
  }
  return unsupported(path + ": unknown tokenizer file type '" + name +
                     "' (expected tokenizer.model, tokenizer.json, a .gguf file or a llama2.c tokenizer .bin)");
}

Expected<std::unique_ptr<Tokenizer>> parse_sentencepiece_model(std::string_view serialized, const std::string& label) {
  return make_sentencepiece_tokenizer(std::string(serialized), label, std::nullopt, std::nullopt);
}

}  // namespace qforge
