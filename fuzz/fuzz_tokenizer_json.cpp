// libFuzzer target for the tokenizer.json loader: malformed JSON, wrong types, ids out of range
// and unsupported features must all be errors with a message; whatever loads must encode and
// decode without touching memory it does not own and produce ids inside the vocabulary.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "qforge/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string json(reinterpret_cast<const char*>(data), size);
  auto tok = qforge::parse_hf_tokenizer_json(json, "fuzz.json");
  if (!tok.has_value()) {
    if (tok.status().message().empty()) std::abort();
    return 0;
  }
  const qforge::Tokenizer& t = **tok;
  const std::string texts[] = {"", "Hello, world!", "  caf\xC3\xA9 123 \xF0\x9F\xA6\x99\n\t", "[CLS] <s> <|endoftext|> \xFF\xFE"};
  for (const std::string& text : texts) {
    for (int mode = 0; mode < 3; ++mode) {
      qforge::EncodeOptions o;
      o.add_special = mode >= 1;
      o.parse_special = mode == 2;
      const std::vector<int32_t> ids = t.encode(text, o);
      for (int32_t id : ids)
        if (id < 0 || id >= t.vocab_size()) std::abort();
      (void)t.decode(ids, mode == 2);
    }
  }
  return 0;
}
