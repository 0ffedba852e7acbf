// Fuzzes the readers of the GGUF side files: importance matrices (GGUF and legacy .dat layouts)
// and llama2.c tokenizer.bin vocabularies. Any input must give an error with a message or a
// result that satisfies the readers' promises (sizes consistent, importance finite and >= 0).
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qforge/gguf_convert.h"
#include "qforge/imatrix.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = qforge::Imatrix::parse(data, size, "fuzz-input");
  if (!m.has_value()) {
    if (m.status().message().empty()) __builtin_trap();
  } else {
    for (const auto& [name, e] : m->entries()) {
      if (e.n_cols <= 0 || e.n_mat <= 0) __builtin_trap();
      if (e.importance.size() != static_cast<size_t>(e.n_cols * e.n_mat)) __builtin_trap();
      for (float v : e.importance)
        if (!std::isfinite(v) || v < 0.0f) __builtin_trap();
    }
  }
  for (int64_t vocab : {1, 3, 512}) {
    auto v = qforge::parse_llama2c_vocab(data, size, "fuzz-input", vocab);
    if (!v.has_value()) {
      if (v.status().message().empty()) __builtin_trap();
      continue;
    }
    if (v->tokens.size() != static_cast<size_t>(vocab) || v->scores.size() != v->tokens.size() ||
        v->token_types.size() != v->tokens.size())
      __builtin_trap();
  }
  return 0;
}
