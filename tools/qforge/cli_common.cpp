#include "cli_common.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <mutex>

namespace qforge::cli {

int report_error(const Status& status) {
  std::fflush(stdout);
  std::fprintf(stderr, "qforge: error: %s\n", status.message().c_str());
  return status.code() == ErrorCode::cancelled ? kExitInterrupted : kExitError;
}

void warn(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "qforge: warning: %s\n", message.c_str());
}

namespace {
std::string& command_line_storage() {
  static std::string s;
  return s;
}

// Quotes an argument for display when it holds characters a shell would interpret.
std::string shell_quote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") ==
                          std::string::npos)
    return arg;
  std::string q = "'";
  for (char c : arg) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
}  // namespace

void set_command_line(int argc, char** argv) {
  std::string s = "qforge";
  for (int i = 1; i < argc; ++i) s += " " + shell_quote(argv[i]);
  command_line_storage() = s;
}

const std::string& command_line() { return command_line_storage(); }

Expected<std::vector<Scheme>> parse_schemes(const std::vector<std::string>& names, const std::string& option) {
  std::vector<Scheme> out;
  for (const auto& n : names) {
    Expected<Scheme> s = Scheme::parse(n);
    if (!s) return invalid_argument(option + " '" + n + "': " + s.status().message());
    if (std::find(out.begin(), out.end(), *s) != out.end())
      return invalid_argument(option + " '" + n + "' given twice (as " + s->name() + ")");
    out.push_back(*s);
  }
  return out;
}

Expected<std::optional<std::regex>> compile_regex(const std::string& pattern, const std::string& option) {
  if (pattern.empty()) return std::optional<std::regex>{};
  try {
    return std::optional<std::regex>(std::regex(pattern, std::regex::ECMAScript));
  } catch (const std::regex_error& e) {
    return invalid_argument(option + " '" + pattern + "' is not a valid regular expression: " + e.what());
  }
}

namespace {

// Linear-layer weights of the transformer blocks (and the LM head when untied). Roles come from
// the weight's place in the architecture: the projections of attention and MLP blocks.
// TODO(h-engine): replace with qforge::tensor_roles once include/qforge/tensor_roles.h lands.
bool is_linear_weight_name(const std::string& name) {
  static const std::regex linear(
      R"((^|\.)(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|qkv_proj|gate_up_proj|dense|fc1|fc2|c_attn|c_proj|c_fc|query|key|value|lm_head)\.weight$)");
  return std::regex_search(name, linear);
}

}  // namespace

Expected<std::vector<std::string>> select_tensors(const SafetensorsCheckpoint& ckpt, const Selection& selection,
                                                  std::vector<std::string>* not_2d) {
  std::vector<std::string> out;
  for (const auto& name : ckpt.tensor_names()) {
    const SafetensorsTensorInfo* info = ckpt.find(name);
    if (info == nullptr) continue;
    bool chosen = selection.filter ? std::regex_search(name, *selection.filter) : is_linear_weight_name(name);
    if (!chosen) continue;
    if (selection.keep && std::regex_search(name, *selection.keep)) continue;
    if (info->shape.size() != 2) {
      if (not_2d) not_2d->push_back(name);
      continue;
    }
    out.push_back(name);
  }
  std::sort(out.begin(), out.end(), natural_less);
  if (not_2d) std::sort(not_2d->begin(), not_2d->end(), natural_less);
  return out;
}

Status check_output_path(const std::string& path, const std::string& option) {
  if (path.empty()) return invalid_argument(option + ": empty path");
  std::filesystem::path p(path);
  std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    return io_error(option + " '" + path + "': directory '" + dir.string() + "' does not exist");
  if (std::filesystem::is_directory(p, ec)) return io_error(option + " '" + path + "' is a directory");
  return Status::ok();
}

bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && a[i2] == '0') ++i2;
      while (j2 < b.size() && b[j2] == '0') ++j2;
      size_t ie = i2, je = j2;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      if (ie - i2 != je - j2) return ie - i2 < je - j2;
      int c = a.compare(i2, ie - i2, b, j2, je - j2);
      if (c != 0) return c < 0;
      if (ie - i != je - j) return ie - i < je - j;  // fewer leading zeros first
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof(buf), "%.1f %s", v, units[u]);
  return buf;
}

std::string format_count(uint64_t n) {
  char buf[32];
  if (n < 10000) {
    std::snprintf(buf, sizeof(buf), "%llu", static_cast<unsigned long long>(n));
  } else if (n < 1000000ull * 1000) {
    bool mega = n >= 1000000;
    std::snprintf(buf, sizeof(buf), "%.2f%s", static_cast<double>(n) / (mega ? 1e6 : 1e3), mega ? "M" : "K");
  } else {
    std::snprintf(buf, sizeof(buf), "%.2fB", static_cast<double>(n) / 1e9);
  }
  return buf;
}

std::string format_fixed(double v, int decimals) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

std::string format_sci(double v, int digits) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*e", digits, v);
  return buf;
}

std::string format_seconds(double s) {
  char buf[32];
  if (s < 1.0)
    std::snprintf(buf, sizeof(buf), "%.0f ms", s * 1000.0);
  else
    std::snprintf(buf, sizeof(buf), "%.1f s", s);
  return buf;
}

void Table::add_column(std::string header, Align align) {
  headers_.push_back(std::move(header));
  aligns_.push_back(align);
}

void Table::add_row(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

void Table::add_separator() { rows_.emplace_back(); }

void Table::print(std::FILE* out) const {
  std::vector<size_t> width(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) width[c] = headers_[c].size();
  for (const auto& r : rows_)
    for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (size_t c = 0; c < headers_.size(); ++c) {
      const std::string& v = cells[c];
      std::string pad(width[c] - v.size(), ' ');
      if (c) s += "  ";
      s += aligns_[c] == Align::left ? v + (c + 1 == headers_.size() ? "" : pad) : pad + v;
    }
    std::fprintf(out, "%s\n", s.c_str());
  };
  line(headers_);
  size_t total = 0;
  for (size_t c = 0; c < width.size(); ++c) total += width[c] + (c ? 2 : 0);
  std::string rule(total, '-');
  std::fprintf(out, "%s\n", rule.c_str());
  for (const auto& r : rows_) {
    if (r.empty())
      std::fprintf(out, "%s\n", rule.c_str());
    else
      line(r);
  }
}

namespace {
std::mutex g_progress_mutex;
}

double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

ProgressLine::ProgressLine(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), enabled_(::isatty(STDERR_FILENO) == 1), start_(now_seconds()) {}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::tick(const std::string& item) {
  std::lock_guard<std::mutex> lock(g_progress_mutex);
  ++done_;
  if (!enabled_ || finished_) return;
  double t = now_seconds();
  if (t - last_print_ < 0.1 && done_ < total_) return;
  last_print_ = t;
  std::fprintf(stderr, "\r\033[K%s: %lld/%lld %s", label_.c_str(), static_cast<long long>(done_),
               static_cast<long long>(total_), item.c_str());
  std::fflush(stderr);
}

void ProgressLine::finish() {
  std::lock_guard<std::mutex> lock(g_progress_mutex);
  if (finished_) return;
  finished_ = true;
  if (enabled_ && done_ > 0) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
}

namespace {
std::atomic<bool> g_interrupted{false};
extern "C" void qforge_cli_on_signal(int) { g_interrupted.store(true); }
}  // namespace

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = qforge_cli_on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool interrupted() { return g_interrupted.load(std::memory_order_relaxed); }

}  // namespace qforge::cli
