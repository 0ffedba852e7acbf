// libFuzzer target for the llama2.c tokenizer.bin parser (entries read to the end of the input),
// then encoding and decoding with whatever vocabulary it accepted: every id produced must lie in
// the vocabulary and nothing may read out of bounds, however odd the pieces and scores.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "qforge/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A heap copy of exactly `size` bytes so ASan sees reads past the end.
  std::vector<uint8_t> buf(data, data + size);
  auto tok = qforge::parse_llama2c_tokenizer(buf, 0, "fuzz.bin");
  if (!tok.has_value()) {
    if (tok.status().message().empty()) std::abort();  // every rejection must explain itself
    return 0;
  }
  const qforge::Tokenizer& t = **tok;
  // Reading exactly the entries it found must give the same vocabulary.
  auto again = qforge::parse_llama2c_tokenizer(buf, t.vocab_size(), "fuzz.bin");
  if (!again.has_value() || (*again)->vocab_size() != t.vocab_size()) std::abort();

  const std::string tail(reinterpret_cast<const char*>(data) + size - std::min<size_t>(size, 48), std::min<size_t>(size, 48));
  const std::string texts[] = {"", "Zoo", " hello  world\n", "h\xC3\xA9llo \xF0\x9F\xA6\x99 \xFF", tail};
  for (const std::string& text : texts) {
    for (int mode = 0; mode < 3; ++mode) {
      qforge::EncodeOptions o;
      o.add_special = mode >= 1;
      o.parse_special = mode == 2;
      const std::vector<int32_t> ids = t.encode(text, o);
      for (int32_t id : ids)
        if (id < 0 || id >= t.vocab_size()) std::abort();
      std::string out = t.decode(ids, mode == 2);
      qforge::TokenStreamDecoder stream(t);
      for (int32_t id : ids) out += stream.push(id);
      out += stream.finish();
    }
  }
  for (int32_t id = -1; id <= std::min(t.vocab_size(), 512); ++id) {
    (void)t.token_to_piece(id, true);
    (void)t.token_text(id);
    (void)t.token_kind(id);
  }
  return 0;
}
