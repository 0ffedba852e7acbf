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
#include "qforge/progress.h"
#include "qforge/safetensors.h"
#include "qforge/status.h"
#include "qforge/tensor_roles.h"

namespace qforge::cli {

// Exit codes: 0 success, 1 a library/input error, 2 bad usage (CLI11), 130 interrupted.
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitInterrupted = 130;

// Prints "qforge: error: <message>" to stderr and returns the exit code for `status`.
int report_error(const Status& status);
void warn(const std::string& message);  // "qforge: warning: <message>"

// The command line as one string (argv[0] reduced to "qforge"), recorded in reports.
void set_command_line(int argc, char** argv);
const std::string& command_line();
// Quotes an argument for a POSIX shell when it holds characters the shell would interpret.
std::string shell_quote(const std::string& arg);

// Parses each --scheme value; errors name the option and the offending value.
Expected<std::vector<Scheme>> parse_schemes(const std::vector<std::string>& names, const std::string& option);
// Compiles a regex (ECMAScript, matched anywhere in the name); errors name the option.
Expected<std::optional<std::regex>> compile_regex(const std::string& pattern, const std::string& option);

// The architecture of a checkpoint: from config.json beside it (the directory's, or the file's
// directory's) or, without one, the first architecture whose name table resolves every tensor.
Expected<Architecture> checkpoint_architecture(const SafetensorsCheckpoint& ckpt);

// Which tensors of a checkpoint a command works on.
struct Selection {
  std::optional<std::regex> filter;  // replaces the default selection when set
  std::optional<std::regex> keep;    // excludes matching names
  std::string filter_pattern, keep_pattern;  // their source text (empty when unset)
};
struct SelectedTensor {
  std::string name;
  // The checkpoint stores this linear weight [in, out] (GPT-2 Conv1D): it is quantized as its
  // transpose, so groups run along the input dimension as for every other model.
  bool transposed = false;
};
// The 2-D weights to quantize: by default the linear-layer weights by tensor role (every tensor
// must resolve to a role of the checkpoint's architecture); with a filter, the tensors whose name
// matches it. `keep` removes names from either. Returned in natural order (layers.2 before
// layers.10). Selected tensors that are not 2-D go to `not_2d` (when given) instead.
Expected<std::vector<SelectedTensor>> select_tensors(const SafetensorsCheckpoint& ckpt, const Selection& selection,
                                                     std::vector<std::string>* not_2d = nullptr);

// [rows, cols] row-major -> its [cols, rows] transpose.
std::vector<float> transpose(const float* w, int64_t rows, int64_t cols);
// Loads a selected tensor as the f32 [rows, cols] matrix that is quantized (transposed if needed).
struct WeightMatrix {
  Tensor f32;  // contiguous f32 [rows, cols]
  int64_t rows = 0, cols = 0;
  const float* data() const { return f32.data_as<float>(); }
  DType dtype = DType::f32;  // dtype in the checkpoint
  Shape stored_shape;        // shape in the checkpoint
};
Expected<WeightMatrix> load_weight_matrix(const SafetensorsCheckpoint& ckpt, const SelectedTensor& t);

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

// Progress of the commands' long loops (stderr); the demo turns it off to keep its report tidy.
void set_progress_enabled(bool enabled);
Progress::Options progress_options();

// Wall-clock seconds since an arbitrary start.
double now_seconds();

}  // namespace qforge::cli
