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
}  // namespace

std::string shell_quote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") ==
                          std::string::npos)
    return arg;
  std::string q = "'";
  for (char c : arg) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

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

Expected<Architecture> checkpoint_architecture(const SafetensorsCheckpoint& ckpt) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path base(ckpt.path());
  fs::path config = (fs::is_directory(base, ec) ? base : base.parent_path()) / "config.json";
  if (fs::is_regular_file(config, ec)) return architecture_from_config_file(config.string());
  const std::vector<std::string> names = ckpt.tensor_names();
  for (Architecture arch : all_architectures()) {
    if (role_templates(arch, TensorNaming::hf).empty()) continue;
    bool all = !names.empty();
    for (const auto& n : names)
      if (!resolve_tensor_role(arch, n)) {
        all = false;
        break;
      }
    if (all) return arch;
  }
  return unsupported(ckpt.path() + ": no config.json beside it and its tensor names match no known architecture, "
                                   "so its linear weights are unknown; select tensors with --filter");
}

Expected<std::vector<SelectedTensor>> select_tensors(const SafetensorsCheckpoint& ckpt, const Selection& selection,
                                                     std::vector<std::string>* not_2d) {
  // With a filter the architecture is optional: it only tells which matches are transposed.
  Expected<Architecture> arch = checkpoint_architecture(ckpt);
  if (!arch && !selection.filter) return arch.status();
  const bool transposed_arch = arch && linear_weights_transposed(*arch, TensorNaming::hf);
  std::vector<SelectedTensor> out;
  for (const auto& name : ckpt.tensor_names()) {
    const SafetensorsTensorInfo* info = ckpt.find(name);
    if (info == nullptr) continue;
    bool linear = false;
    if (arch) {
      Expected<ResolvedTensor> role = resolve_tensor_role(*arch, name);
      if (!role && !selection.filter)
        return Status::error(role.status().code(), ckpt.path() + ": " + role.status().message() +
                                                       " (select tensors by name with --filter)");
      linear = role && !role->is_bias && is_linear_weight(role->role);
    }
    bool chosen = selection.filter ? std::regex_search(name, *selection.filter) : linear;
    if (!chosen) continue;
    if (selection.keep && std::regex_search(name, *selection.keep)) continue;
    if (info->shape.size() != 2) {
      if (not_2d) not_2d->push_back(name);
      continue;
    }
    out.push_back({name, linear && transposed_arch});
  }
  std::sort(out.begin(), out.end(),
            [](const SelectedTensor& a, const SelectedTensor& b) { return natural_less(a.name, b.name); });
  if (not_2d) std::sort(not_2d->begin(), not_2d->end(), natural_less);
  return out;
}

std::vector<float> transpose(const float* w, int64_t rows, int64_t cols) {
  std::vector<float> t(static_cast<size_t>(rows * cols));
  constexpr int64_t kTile = 32;  // cache blocking
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < cols; c0 += kTile)
      for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c)
          t[static_cast<size_t>(c * rows + r)] = w[r * cols + c];
  return t;
}

Expected<WeightMatrix> load_weight_matrix(const SafetensorsCheckpoint& ckpt, const SelectedTensor& sel) {
  QFORGE_ASSIGN_OR_RETURN(Tensor t, ckpt.tensor(sel.name));
  if (t.ndim() != 2) return invalid_argument(ckpt.path() + ": tensor '" + sel.name + "' is not 2-D");
  Expected<Tensor> f = t.to_f32();
  if (!f) return f.status().with_context(ckpt.path() + ": tensor '" + sel.name + "'");
  WeightMatrix m;
  m.dtype = t.dtype();
  m.stored_shape = t.shape();
  if (sel.transposed) {
    m.rows = t.dim(1);
    m.cols = t.dim(0);
    m.f32 = Tensor::from_f32({m.rows, m.cols}, transpose(f->data_as<float>(), t.dim(0), t.dim(1)));
  } else {
    m.rows = t.dim(0);
    m.cols = t.dim(1);
    m.f32 = std::move(*f);
  }
  return m;
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

double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

namespace {
std::atomic<bool> g_progress_enabled{true};
}

void set_progress_enabled(bool enabled) { g_progress_enabled.store(enabled); }

Progress::Options progress_options() {
  Progress::Options o;
  o.quiet = !g_progress_enabled.load();
  return o;
}

}  // namespace qforge::cli
