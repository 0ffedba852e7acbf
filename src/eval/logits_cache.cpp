// The reference log-probability cache (qforge-ref-logits-v1): a safetensors file written in one
// streaming pass (the header is known up front, windows are appended as they are evaluated) and
// read back zero-copy through the mmapped safetensors reader. See eval.h for the layout.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "qforge/atomic_file.h"
#include "qforge/eval.h"
#include "qforge/safetensors.h"
#include "qforge/sha256.h"

namespace qforge {

uint64_t logits_cache_data_bytes(int64_t windows, int64_t ctx, int64_t vocab, DType dtype) {
  if (windows < 0 || ctx < 2 || vocab < 0) return 0;
  uint64_t rows = 0, values = 0, bytes = 0, tokens = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(windows), static_cast<uint64_t>(ctx - 1), &rows) ||
      __builtin_mul_overflow(rows, static_cast<uint64_t>(vocab), &values) ||
      __builtin_mul_overflow(values, static_cast<uint64_t>(dtype_size(dtype)), &bytes) ||
      __builtin_mul_overflow(static_cast<uint64_t>(windows), static_cast<uint64_t>(ctx) * 4u, &tokens) ||
      __builtin_add_overflow(bytes, tokens, &bytes))
    return 0;
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Writer

struct LogitsCacheWriter::State {
  std::string path;
  LogitsCacheInfo info;
  AtomicFile file;
  std::vector<uint8_t> row_buffer;  // one converted window
  explicit State(AtomicFile f) : file(std::move(f)) {}
};

LogitsCacheWriter::LogitsCacheWriter(std::unique_ptr<State> state) : state_(std::move(state)) {}
LogitsCacheWriter::~LogitsCacheWriter() = default;
const LogitsCacheInfo& LogitsCacheWriter::info() const { return state_->info; }
const std::string& LogitsCacheWriter::path() const { return state_->path; }

Expected<std::unique_ptr<LogitsCacheWriter>> LogitsCacheWriter::create(const std::string& path,
                                                                      const LogitsCacheInfo& info,
                                                                      const EvalWindows& windows) {
  if (info.dtype != DType::f16 && info.dtype != DType::f32)
    return invalid_argument(path + ": logits cache dtype must be f16 or f32, got " + dtype_name(info.dtype));
  if (info.ctx != windows.ctx || info.windows < 1 || info.windows > windows.count || info.vocab < 1)
    return invalid_argument(path + ": logits cache for " + std::to_string(info.windows) + " windows of " +
                            std::to_string(info.ctx) + " tokens does not fit the text's " +
                            std::to_string(windows.count) + " windows of " + std::to_string(windows.ctx));
  const uint64_t data_bytes = logits_cache_data_bytes(info.windows, info.ctx, info.vocab, info.dtype);
  if (data_bytes == 0) return invalid_argument(path + ": logits cache size overflows");
  const uint64_t token_bytes = static_cast<uint64_t>(info.windows) * static_cast<uint64_t>(info.ctx) * 4u;

  nlohmann::ordered_json header;
  header["__metadata__"] = {
      {"format", std::string(kLogitsCacheFormat)},
      {"protocol", info.protocol},
      {"ctx", std::to_string(info.ctx)},
      {"windows", std::to_string(info.windows)},
      {"vocab", std::to_string(info.vocab)},
      {"dtype", dtype_name(info.dtype)},
      {"text_sha256", info.text_sha256},
      {"text", info.text},
      {"model", info.model},
      {"model_sha256", info.model_sha256},
      {"qforge_version", QFORGE_VERSION},
  };
  header["tokens"] = {{"dtype", "I32"}, {"shape", {info.windows, info.ctx}}, {"data_offsets", {0, token_bytes}}};
  header["logprobs"] = {{"dtype", info.dtype == DType::f16 ? "F16" : "F32"},
                        {"shape", {info.windows, info.ctx - 1, info.vocab}},
                        {"data_offsets", {token_bytes, data_bytes}}};
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned

  QFORGE_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::create(path));
  auto state = std::make_unique<State>(std::move(file));
  state->path = path;
  state->info = info;
  uint8_t len[8];
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  QFORGE_RETURN_IF_ERROR(state->file.write(len, 8));
  QFORGE_RETURN_IF_ERROR(state->file.write(text.data(), text.size()));
  // Tokens are little-endian i32 (the host order on every platform qforge builds for).
  QFORGE_RETURN_IF_ERROR(state->file.write(windows.stream.data(), token_bytes));
  return std::unique_ptr<LogitsCacheWriter>(new LogitsCacheWriter(std::move(state)));
}

Status LogitsCacheWriter::write_window(const float* logprobs) {
  const LogitsCacheInfo& info = state_->info;
  if (written_ >= info.windows)
    return invalid_argument(state_->path + ": all " + std::to_string(info.windows) + " windows were already written");
  const size_t values = static_cast<size_t>((info.ctx - 1) * info.vocab);
  if (info.dtype == DType::f32) {
    QFORGE_RETURN_IF_ERROR(state_->file.write(logprobs, values * sizeof(float)));
  } else {
    state_->row_buffer.resize(values * 2);
    QFORGE_RETURN_IF_ERROR(convert_from_f32(DType::f16, logprobs, state_->row_buffer.data(), values));
    QFORGE_RETURN_IF_ERROR(state_->file.write(state_->row_buffer.data(), state_->row_buffer.size()));
  }
  ++written_;
  return Status::ok();
}

Status LogitsCacheWriter::commit() {
  if (written_ != state_->info.windows)
    return invalid_argument(state_->path + ": " + std::to_string(written_) + " of " +
                            std::to_string(state_->info.windows) + " windows written; not committing");
  return state_->file.commit();
}

// ---------------------------------------------------------------------------------------------
// Reader

LogitsCacheReader::LogitsCacheReader(LogitsCacheReader&&) noexcept = default;
LogitsCacheReader& LogitsCacheReader::operator=(LogitsCacheReader&&) noexcept = default;
LogitsCacheReader::~LogitsCacheReader() = default;

namespace {

Expected<std::string> meta(const SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  if (it == f.metadata().end())
    return parse_error(f.path() + ": not a qforge logits file (metadata key '" + key + "' is missing)");
  return it->second;
}

Expected<int64_t> meta_int(const SafetensorsFile& f, const std::string& key) {
  QFORGE_ASSIGN_OR_RETURN(std::string s, meta(f, key));
  int64_t v = 0;
  size_t used = 0;
  try {
    v = std::stoll(s, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != s.size() || v < 0)
    return parse_error(f.path() + ": metadata '" + key + "' = '" + s + "' is not a non-negative integer");
  return v;
}

}  // namespace

Expected<LogitsCacheReader> LogitsCacheReader::open(const std::string& path) {
  QFORGE_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(path));
  QFORGE_ASSIGN_OR_RETURN(std::string format, meta(f, "format"));
  if (format != kLogitsCacheFormat)
    return parse_error(path + ": format '" + format + "', expected '" + std::string(kLogitsCacheFormat) + "'");
  LogitsCacheReader r;
  r.path_ = path;
  LogitsCacheInfo& info = r.info_;
  QFORGE_ASSIGN_OR_RETURN(info.protocol, meta(f, "protocol"));
  QFORGE_ASSIGN_OR_RETURN(info.ctx, meta_int(f, "ctx"));
  QFORGE_ASSIGN_OR_RETURN(info.windows, meta_int(f, "windows"));
  QFORGE_ASSIGN_OR_RETURN(info.vocab, meta_int(f, "vocab"));
  QFORGE_ASSIGN_OR_RETURN(info.text_sha256, meta(f, "text_sha256"));
  QFORGE_ASSIGN_OR_RETURN(info.text, meta(f, "text"));
  QFORGE_ASSIGN_OR_RETURN(info.model, meta(f, "model"));
  QFORGE_ASSIGN_OR_RETURN(info.model_sha256, meta(f, "model_sha256"));
  const SafetensorsTensorInfo* tok = f.find("tokens");
  const SafetensorsTensorInfo* lp = f.find("logprobs");
  if (tok == nullptr || lp == nullptr) return parse_error(path + ": tensors 'tokens' and 'logprobs' are required");
  if (lp->dtype != DType::f16 && lp->dtype != DType::f32)
    return parse_error(path + ": 'logprobs' has dtype " + dtype_name(lp->dtype) + ", expected f16 or f32");
  info.dtype = lp->dtype;
  if (info.ctx < 2 || info.windows < 1 || info.vocab < 1)
    return parse_error(path + ": metadata ctx/windows/vocab out of range");
  if (tok->dtype != DType::i32 || tok->shape != Shape{info.windows, info.ctx})
    return parse_error(path + ": 'tokens' is " + dtype_name(tok->dtype) + " " + shape_to_string(tok->shape) +
                       ", expected i32 [" + std::to_string(info.windows) + ", " + std::to_string(info.ctx) + "]");
  if (lp->shape != Shape{info.windows, info.ctx - 1, info.vocab})
    return parse_error(path + ": 'logprobs' has shape " + shape_to_string(lp->shape) + ", expected [" +
                       std::to_string(info.windows) + ", " + std::to_string(info.ctx - 1) + ", " +
                       std::to_string(info.vocab) + "]");
  // Views keep the mapping alive and are aligned copies if the file is misaligned.
  QFORGE_ASSIGN_OR_RETURN(Tensor tokens, f.tensor("tokens"));
  QFORGE_ASSIGN_OR_RETURN(Tensor logprobs, f.tensor("logprobs"));
  r.tokens_ = tokens.data_as<int32_t>();
  r.logprobs_ = static_cast<const uint8_t*>(logprobs.data());
  r.tokens_tensor_ = std::move(tokens);
  r.logprobs_tensor_ = std::move(logprobs);
  return r;
}

Status LogitsCacheReader::check_compatible(const EvalWindows& windows, int64_t windows_needed, int64_t vocab) const {
  const LogitsCacheInfo& i = info_;
  if (i.protocol != kPerplexityProtocol)
    return invalid_argument(path_ + ": made under protocol '" + i.protocol + "', this evaluation uses '" +
                            std::string(kPerplexityProtocol) + "'");
  if (i.ctx != windows.ctx)
    return invalid_argument(path_ + ": made with context length " + std::to_string(i.ctx) + ", this evaluation uses " +
                            std::to_string(windows.ctx));
  if (!windows.text_sha256.empty() && i.text_sha256 != windows.text_sha256)
    return invalid_argument(path_ + ": made from another text (" + i.text + ", SHA-256 " + i.text_sha256 + "), not " +
                            windows.label + " (SHA-256 " + windows.text_sha256 + ")");
  if (i.vocab != vocab)
    return invalid_argument(path_ + ": vocabulary of " + std::to_string(i.vocab) + " tokens, the model has " +
                            std::to_string(vocab));
  if (i.windows < windows_needed)
    return invalid_argument(path_ + ": holds " + std::to_string(i.windows) + " windows, this evaluation needs " +
                            std::to_string(windows_needed) + " (use --max-windows " + std::to_string(i.windows) +
                            " or save the reference over more windows)");
  const size_t n = static_cast<size_t>(windows_needed * windows.ctx);
  if (windows.stream.size() < n || std::memcmp(tokens_, windows.stream.data(), n * sizeof(int32_t)) != 0) {
    size_t k = 0;
    while (k < n && k < windows.stream.size() && tokens_[k] == windows.stream[k]) ++k;
    return invalid_argument(path_ + ": its windows hold other tokens than " + windows.label +
                            " tokenized now (first difference at token " + std::to_string(k) +
                            "): another tokenizer or BOS setting?");
  }
  return Status::ok();
}

void LogitsCacheReader::row(int64_t w, int64_t pos, float* out) const {
  const size_t values = static_cast<size_t>(info_.vocab);
  const size_t index = static_cast<size_t>((w * (info_.ctx - 1) + pos)) * values;
  const Status s = convert_to_f32(info_.dtype, logprobs_ + index * dtype_size(info_.dtype), out, values);
  QFORGE_CHECK(s.is_ok());
}

// ---------------------------------------------------------------------------------------------
// Model fingerprint

Expected<std::string> model_fingerprint(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec)) {
      const std::string name = e.path().filename().string();
      const std::string ext = e.path().extension().string();
      if (name == "config.json" || name == "model.safetensors.index.json" || ext == ".safetensors")
        files.push_back(e.path());
    }
    if (ec) return io_error(path + ": cannot list the directory: " + ec.message());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  Sha256 h;
  std::vector<char> buf(1 << 20);
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) return io_error(f.string() + ": cannot open for reading");
    const std::string name = f.filename().string();
    const uint64_t size = fs::file_size(f, ec);
    h.update(name.data(), name.size() + 0);
    h.update("\0", 1);
    h.update(&size, sizeof(size));
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      const std::streamsize got = in.gcount();
      if (got > 0) h.update(buf.data(), static_cast<size_t>(got));
    }
    if (in.bad()) return io_error(f.string() + ": read error");
  }
  return h.final_hex();
}

}  // namespace qforge
