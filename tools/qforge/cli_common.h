// Shared pieces of the qforge command-line tool: error reporting, option parsing helpers, tensor
// selection, table printing and number formatting.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "qforge/format.h"
#include "qforge/safetensors.h"
#include "qforge/status.h"

namespace qforge::cli {

// Exit codes: 0 success, 1 a library/input error, 2 bad usage (CLI11), 130 interrupted.
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitInterrupted = 130;

// Prints "qforge: error: <message>" to stderr and returns the exit code for `status`.
int report_error(const Status& status);
void warn(const std::string& message);  // "qforge: warning: <message>"

// The command line as one string (argv[0] reduced to "qforge"), recorded in output manifests.
void set_command_line(int argc, char** argv);
const std::string& command_line();

// Parses each --scheme value; errors name the option and the offending value.
Expected<std::vector<Scheme>> parse_schemes(const std::vector<std::string>& names, const std::string& option);
// Compiles a regex (ECMAScript, matched anywhere in the name); errors name the option.
Expected<std::optional<std::regex>> compile_regex(const std::string& pattern, const std::string& option);

// Which tensors of a checkpoint a command works on.
struct Selection {
  std::optional<std::regex> filter;  // replaces the default selection when set
  std::optional<std::regex> keep;    // excludes matching names
};
// The 2-D weights to quantize: by default the linear-layer weights (by tensor role); with a
// filter, the tensors whose name matches it. `keep` removes names from either. Names are returned
// in natural order (layers.2 before layers.10). Selected tensors that are not 2-D go to
// `not_2d` (when given) instead.
Expected<std::vector<std::string>> select_tensors(const SafetensorsCheckpoint& ckpt, const Selection& selection,
                                                  std::vector<std::string>* not_2d = nullptr);

// Checks that `path`'s directory exists, so commands fail before doing any work.
Status check_output_path(const std::string& path, const std::string& option);

// Natural ordering: digit runs compare by value.
bool natural_less(const std::string& a, const std::string& b);

// Formatting.
std::string format_bytes(uint64_t bytes);   // "12.3 MiB"
std::string format_count(uint64_t n);        // "24.9M", "512", "1.2B"
std::string format_fixed(double v, int decimals);  // "inf"/"-inf"/"nan" for non-finite
std::string format_sci(double v, int digits);      // "1.23e-03"
std::string format_seconds(double s);

// A plain-text table with right-aligned numeric columns.
class Table {
 public:
  enum class Align { left, right };
  void add_column(std::string header, Align align = Align::right);
  void add_row(std::vector<std::string> cells);
  void add_separator();
  void print(std::FILE* out) const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> headers_;
  std::vector<Align> aligns_;
  std::vector<std::vector<std::string>> rows_;  // an empty row is a separator
};

// Progress on stderr for long runs ("label: 12/56 name"), shown only when stderr is a terminal.
class ProgressLine {
 public:
  ProgressLine(std::string label, int64_t total);
  ~ProgressLine();
  void tick(const std::string& item = "");  // thread-safe
  void finish();

 private:
  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  bool enabled_;
  bool finished_ = false;
  double start_;
  double last_print_ = 0;
};

// SIGINT/SIGTERM set a flag that long loops poll, so they stop cleanly (no partial files).
void install_interrupt_handler();
bool interrupted();

// Wall-clock seconds since an arbitrary start.
double now_seconds();

}  // namespace qforge::cli
