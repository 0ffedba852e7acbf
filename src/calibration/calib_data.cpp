// Calibration windows sampled from a text file (the procedure is documented in ptq.h).
#include <algorithm>
#include <random>

#include "qforge/atomic_file.h"
#include "qforge/ptq.h"
#include "qforge/sha256.h"
#include "qforge/tokenizer.h"

namespace qforge {

Expected<CalibrationSet> make_calibration_set(std::string_view text, const std::string& label,
                                              const Tokenizer& tokenizer, const CalibrationOptions& options) {
  if (options.windows <= 0 || options.windows > (int64_t{1} << 20))
    return invalid_argument("--calib-windows must be in [1, 2^20], got " + std::to_string(options.windows));
  if (options.ctx < 2 || options.ctx > (int64_t{1} << 20))
    return invalid_argument("--calib-ctx must be in [2, 2^20], got " + std::to_string(options.ctx));
  CalibrationSet set;
  set.path = label;
  set.sha256 = sha256_hex(text);
  set.windows = options.windows;
  set.ctx = options.ctx;
  set.seed = options.seed;
  set.bos = tokenizer.bos_id().has_value();
  const std::vector<int32_t> stream = tokenizer.encode(text, false);
  set.file_tokens = static_cast<int64_t>(stream.size());
  const int64_t body = set.bos ? options.ctx - 1 : options.ctx;
  const int64_t slots = set.file_tokens / body;
  if (slots < options.windows)
    return invalid_argument(label + ": " + std::to_string(set.file_tokens) + " tokens give only " +
                            std::to_string(slots) + " non-overlapping windows of " + std::to_string(body) +
                            " text tokens; " + std::to_string(options.windows) +
                            " were asked for (lower --calib-windows or --calib-ctx, or use a longer file)");
  // Partial Fisher-Yates over the slot indices with a fixed generator (std::mt19937_64 is fully
  // specified, unlike the std distributions, so the choice is the same on every platform).
  std::vector<int64_t> order(static_cast<size_t>(slots));
  for (int64_t i = 0; i < slots; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(options.seed);
  for (int64_t i = 0; i < options.windows; ++i) {
    const uint64_t span = static_cast<uint64_t>(slots - i);
    const int64_t j = i + static_cast<int64_t>(rng() % span);
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  set.slots.assign(order.begin(), order.begin() + options.windows);
  std::sort(set.slots.begin(), set.slots.end());
  set.tokens.reserve(static_cast<size_t>(options.windows * options.ctx));
  for (int64_t s : set.slots) {
    if (set.bos) set.tokens.push_back(*tokenizer.bos_id());
    set.tokens.insert(set.tokens.end(), stream.begin() + s * body, stream.begin() + (s + 1) * body);
  }
  return set;
}

Expected<CalibrationSet> load_calibration_set(const std::string& path, const Tokenizer& tokenizer,
                                              const CalibrationOptions& options) {
  QFORGE_ASSIGN_OR_RETURN(std::string text, read_file(path));
  if (text.empty()) return invalid_argument("calibration file " + path + " is empty");
  return make_calibration_set(text, path, tokenizer, options);
}

std::map<std::string, std::string> CalibrationSet::metadata() const {
  return {
      {"calibration.file", path},
      {"calibration.sha256", sha256},
      {"calibration.file_tokens", std::to_string(file_tokens)},
      {"calibration.windows", std::to_string(windows)},
      {"calibration.ctx", std::to_string(ctx)},
      {"calibration.tokens", std::to_string(tokens_used())},
      {"calibration.seed", std::to_string(seed)},
      {"calibration.sampling", std::string("non-overlapping slots of ctx") + (bos ? "-1 tokens after BOS" : " tokens") +
                                   ", mt19937_64 partial Fisher-Yates, sorted"},
  };
}

}  // namespace qforge
