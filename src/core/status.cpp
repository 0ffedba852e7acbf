#include "qforge/status.h"

namespace qforge {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::ok: return "ok";
    case ErrorCode::invalid_argument: return "invalid argument";
    case ErrorCode::io_error: return "I/O error";
    case ErrorCode::parse_error: return "parse error";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::out_of_range: return "out of range";
    case ErrorCode::cancelled: return "cancelled";
    case ErrorCode::internal: return "internal error";
  }
  return "unknown error";
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  return std::string(error_code_name(code_)) + ": " + message_;
}

Status Status::with_context(const std::string& context) const {
  if (is_ok()) return *this;
  return Status(code_, context + ": " + message_);
}

void check_failed(const char* expr, const char* file, int line, const char* msg) {
  std::fprintf(stderr, "qforge: internal check failed: %s at %s:%d%s%s\n", expr, file, line,
               msg ? ": " : "", msg ? msg : "");
  std::abort();
}

}  // namespace qforge
