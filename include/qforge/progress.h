// Progress reporting for long jobs, and cooperative cancellation on Ctrl-C / SIGTERM.
//
//   install_interrupt_handler();
//   Progress progress("quantize", tensors.size(), "tensors");
//   for (auto& t : tensors) {
//     QFORGE_RETURN_IF_ERROR(check_interrupted("quantize"));
//     ...
//     progress.tick();
//   }
//   progress.finish();
//
// On a terminal the bar is redrawn in place at most ~10 times a second; into a log or pipe it
// writes a plain line at most every few seconds, e.g.
//   quantize: 12/64 tensors (19%), 3.1 tensors/s, ETA 17s
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "qforge/status.h"

namespace qforge {

class Progress {
 public:
  // Seconds on a monotonic clock; injectable so tests control time.
  using Clock = std::function<double()>;

  struct Options {
    FILE* out = stderr;
    // -1: redraw a bar when `out` is a terminal (isatty), plain lines otherwise; 0: plain; 1: bar.
    int tty = -1;
    double bar_interval_s = 0.1;    // minimum time between bar redraws
    double line_interval_s = 5.0;   // minimum time between plain lines
    Clock clock;                    // empty: std::chrono::steady_clock
    bool quiet = false;             // count and time, print nothing
  };

  // total <= 0 means unknown: no percentage, no ETA.
  Progress(std::string label, int64_t total, std::string unit);
  Progress(std::string label, int64_t total, std::string unit, Options options);
  ~Progress();  // calls finish() if it was not called
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Adds n finished units; may print. Safe to call from several threads.
  void tick(int64_t n = 1);
  // Prints the final line ("quantize: 64 tensors in 20.6s (3.1 tensors/s)", or "stopped at 12/64
  // tensors after ..." when fewer than total were done). Idempotent.
  void finish();

  int64_t done() const { return done_.load(std::memory_order_relaxed); }
  int64_t total() const { return total_; }
  double elapsed_s() const;
  // Average units per second since construction; 0 before any time passed.
  double rate() const;
  // Seconds left at the average rate; negative when unknown (no total, or nothing done yet).
  double eta_s() const;
  // "quantize: 12/64 tensors (19%), 3.1 tensors/s, ETA 17s" for the current state.
  std::string status_text() const;

 private:
  double now() const;
  void maybe_print(bool force);
  std::string bar_text() const;

  std::string label_;
  int64_t total_;
  std::string unit_;
  Options options_;
  bool bar_mode_ = false;
  double start_ = 0;
  double last_print_ = 0;
  bool printed_bar_ = false;
  bool finished_ = false;
  std::atomic<int64_t> done_{0};
  std::mutex print_mutex_;
};

// "17s", "2m05s", "1h02m"; fractional seconds below 10s when precise is set ("3.4s").
std::string format_duration(double seconds, bool precise = false);
// "3.1", "12", "0.25", "1234": rates with about two significant digits shown.
std::string format_rate(double per_second);

// Installs SIGINT/SIGTERM handlers that set a flag (first signal) and restore the default action
// and re-raise (second signal), so a second Ctrl-C kills a job that does not stop. Idempotent.
void install_interrupt_handler();
// True once SIGINT or SIGTERM arrived after install_interrupt_handler().
bool interrupted();
// The signal that set the flag (0 when none).
int interrupt_signal();
// Clears the flag (tests; interactive tools that continue after a cancel).
void reset_interrupted();
// Status::ok(), or cancelled("<what>: interrupted by SIGINT") once the flag is set. Long loops call
// this between units of work and return its error.
Status check_interrupted(std::string_view what);

}  // namespace qforge
