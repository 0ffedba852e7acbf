// Status and Expected<T>: how qforge reports errors on untrusted input (files, shapes, options).
// Internal invariants use QFORGE_CHECK, which aborts with file:line.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace qforge {

enum class ErrorCode {
  ok = 0,
  invalid_argument,  // bad option, value, shape or scheme name
  io_error,          // open/read/write/rename failed
  parse_error,       // malformed file contents
  unsupported,       // valid input qforge does not handle
  out_of_range,      // offsets, sizes or indices outside bounds
  cancelled,         // the user interrupted the work
  internal,
};

const char* error_code_name(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status error(ErrorCode code, std::string message) { return Status(code, std::move(message)); }

  bool is_ok() const { return code_ == ErrorCode::ok; }
  explicit operator bool() const { return is_ok(); }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "parse_error: model.safetensors: tensor 'x': ..." style text for users.
  std::string to_string() const;
  // Returns a copy whose message is prefixed with "context: ".
  Status with_context(const std::string& context) const;

 private:
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}
  ErrorCode code_ = ErrorCode::ok;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return Status::error(ErrorCode::invalid_argument, std::move(m)); }
inline Status io_error(std::string m) { return Status::error(ErrorCode::io_error, std::move(m)); }
inline Status parse_error(std::string m) { return Status::error(ErrorCode::parse_error, std::move(m)); }
inline Status unsupported(std::string m) { return Status::error(ErrorCode::unsupported, std::move(m)); }
inline Status out_of_range(std::string m) { return Status::error(ErrorCode::out_of_range, std::move(m)); }
inline Status cancelled(std::string m) { return Status::error(ErrorCode::cancelled, std::move(m)); }

// A value or the Status explaining why there is none (std::expected is C++23).
template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}  // NOLINT(implicit)
  Expected(Status status) : v_(std::move(status)) {  // NOLINT(implicit)
    if (std::get<Status>(v_).is_ok()) v_ = Status::error(ErrorCode::internal, "Expected built from an ok Status");
  }
  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  T& value() & { check(); return std::get<T>(v_); }
  const T& value() const& { check(); return std::get<T>(v_); }
  T&& value() && { check(); return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Status& status() const {
    static const Status ok_status;
    return has_value() ? ok_status : std::get<Status>(v_);
  }

 private:
  void check() const {
    if (!has_value()) {
      std::fprintf(stderr, "qforge: value() on an error: %s\n", std::get<Status>(v_).to_string().c_str());
      std::abort();
    }
  }
  std::variant<T, Status> v_;
};

[[noreturn]] void check_failed(const char* expr, const char* file, int line, const char* msg);

}  // namespace qforge

// Internal invariant; never used for untrusted input.
#define QFORGE_CHECK(cond)                                                       \
  do {                                                                           \
    if (!(cond)) ::qforge::check_failed(#cond, __FILE__, __LINE__, nullptr);     \
  } while (0)
#define QFORGE_CHECK_MSG(cond, msg)                                              \
  do {                                                                           \
    if (!(cond)) ::qforge::check_failed(#cond, __FILE__, __LINE__, (msg));       \
  } while (0)

#define QFORGE_CONCAT_INNER(a, b) a##b
#define QFORGE_CONCAT(a, b) QFORGE_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` (a Status) is an error.
#define QFORGE_RETURN_IF_ERROR(expr)                        \
  do {                                                      \
    ::qforge::Status qforge_status_ = (expr);               \
    if (!qforge_status_.is_ok()) return qforge_status_;     \
  } while (0)

// `lhs = value of expr` (an Expected<T>), or returns its Status from the enclosing function.
#define QFORGE_ASSIGN_OR_RETURN(lhs, expr) \
  QFORGE_ASSIGN_OR_RETURN_IMPL(QFORGE_CONCAT(qforge_expected_, __LINE__), lhs, expr)
#define QFORGE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.has_value()) return tmp.status();         \
  lhs = std::move(tmp).value()
