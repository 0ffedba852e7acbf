// Fuzzes the JSON readers of qforge's own side files that users hand back to it: quantization
// cards (`qforge card FILE`) and sensitivity reports (`qforge plan --sensitivity FILE`). Any input
// must give an error with a message, or a value that survives a round trip and renders.
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "qforge/card.h"
#include "qforge/sensitivity.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto card = qforge::card_from_json(text, "fuzz-input");
  if (!card.has_value()) {
    if (card.status().message().empty()) __builtin_trap();
  } else {
    // What the reader accepted, the writer must write back into something the reader accepts.
    const std::string again = qforge::card_to_json(*card);
    auto reread = qforge::card_from_json(again, "fuzz-roundtrip");
    if (!reread.has_value()) __builtin_trap();
    if (qforge::card_to_json(*reread) != again) __builtin_trap();
    if (qforge::render_card_markdown(*card).empty() || qforge::render_card_html(*card).empty()) __builtin_trap();
  }
  const nlohmann::ordered_json j = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded()) {
    auto report = qforge::sensitivity_from_json(j, "fuzz-input");
    if (!report.has_value() && report.status().message().empty()) __builtin_trap();
  }
  return 0;
}
