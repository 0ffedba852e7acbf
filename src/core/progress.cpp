#include "qforge/progress.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>

namespace qforge {
namespace {

double steady_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string printf_string(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

}  // namespace

std::string format_duration(double seconds, bool precise) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "?";
  if (precise && seconds < 9.95) return printf_string("%.1fs", seconds);
  const long long total = std::llround(seconds);
  char buf[64];
  if (total < 60) {
    std::snprintf(buf, sizeof buf, "%llds", total);
  } else if (total < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", total / 60, total % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", total / 3600, (total % 3600) / 60);
  }
  return buf;
}

std::string format_rate(double v) {
  if (!std::isfinite(v) || v <= 0) return "0";
  if (v >= 9.95) return printf_string("%.0f", v);
  if (v >= 0.995) return printf_string("%.1f", v);
  if (v >= 0.0995) return printf_string("%.2f", v);
  return printf_string("%.2g", v);
}

Progress::Progress(std::string label, int64_t total, std::string unit)
    : Progress(std::move(label), total, std::move(unit), Options{}) {}

Progress::Progress(std::string label, int64_t total, std::string unit, Options options)
    : label_(std::move(label)), total_(total > 0 ? total : 0), unit_(std::move(unit)), options_(std::move(options)) {
  if (options_.out == nullptr) options_.quiet = true;
  if (options_.tty < 0) {
    bar_mode_ = !options_.quiet && isatty(fileno(options_.out)) == 1;
  } else {
    bar_mode_ = options_.tty > 0;
  }
  start_ = now();
  last_print_ = start_;
}

Progress::~Progress() { finish(); }

double Progress::now() const { return options_.clock ? options_.clock() : steady_seconds(); }

double Progress::elapsed_s() const {
  double e = now() - start_;
  return e > 0 ? e : 0;
}

double Progress::rate() const {
  double e = elapsed_s();
  return e > 0 ? double(done()) / e : 0.0;
}

double Progress::eta_s() const {
  const int64_t d = done();
  const double r = rate();
  if (total_ <= 0 || d <= 0 || r <= 0) return -1.0;
  if (d >= total_) return 0.0;
  return double(total_ - d) / r;
}

std::string Progress::status_text() const {
  const int64_t d = done();
  std::string s = label_ + ": ";
  if (total_ > 0) {
    // Nearest percent, but never "100%" before the last unit.
    long long pct = std::llround(100.0 * double(d) / double(total_));
    if (d < total_ && pct > 99) pct = 99;
    s += std::to_string(d) + "/" + std::to_string(total_) + " " + unit_ + " (" + std::to_string(pct) + "%)";
  } else {
    s += std::to_string(d) + " " + unit_;
  }
  s += ", " + format_rate(rate()) + " " + unit_ + "/s";
  const double eta = eta_s();
  if (eta >= 0) s += ", ETA " + format_duration(std::ceil(eta));  // never "ETA 0s" with work left
  return s;
}

std::string Progress::bar_text() const {
  const int64_t d = done();
  std::string s = "\r" + label_ + " ";
  if (total_ > 0) {
    constexpr int kWidth = 24;
    const double frac = std::min(1.0, double(d) / double(total_));
    const int filled = int(frac * kWidth);
    s += '[';
    s.append(size_t(filled), '#');
    s.append(size_t(kWidth - filled), '.');
    s += "] ";
    long long pct = std::llround(100.0 * frac);
    if (d < total_ && pct > 99) pct = 99;
    char buf[8];
    std::snprintf(buf, sizeof buf, "%3lld%%", pct);
    s += buf;
    s += ' ';
    s += std::to_string(d);
    s += '/';
    s += std::to_string(total_);
    s += ' ';
    s += unit_;
  } else {
    s += std::to_string(d);
    s += ' ';
    s += unit_;
  }
  s += ", ";
  s += format_rate(rate());
  s += ' ';
  s += unit_;
  s += "/s";
  const double eta = eta_s();
  if (eta >= 0) {
    s += ", ETA ";
    s += format_duration(std::ceil(eta));
  }
  s += "\033[K";  // clear what a longer previous line left
  return s;
}

void Progress::tick(int64_t n) {
  done_.fetch_add(n, std::memory_order_relaxed);
  if (!options_.quiet) maybe_print(false);
}

void Progress::maybe_print(bool force) {
  // A thread that finds another one printing skips: progress output is advisory.
  std::unique_lock<std::mutex> lock(print_mutex_, std::defer_lock);
  if (force) {
    lock.lock();
  } else if (!lock.try_lock()) {
    return;
  }
  if (finished_) return;
  const double t = now();
  const double interval = bar_mode_ ? options_.bar_interval_s : options_.line_interval_s;
  if (!force && t - last_print_ < interval) return;
  last_print_ = t;
  if (bar_mode_) {
    std::fputs(bar_text().c_str(), options_.out);
    printed_bar_ = true;
  } else {
    std::fprintf(options_.out, "%s\n", status_text().c_str());
  }
  std::fflush(options_.out);
}

void Progress::finish() {
  std::lock_guard<std::mutex> lock(print_mutex_);
  if (finished_) return;
  finished_ = true;
  if (options_.quiet) return;
  const int64_t d = done();
  const double e = elapsed_s();
  std::string line;
  if (total_ > 0 && d < total_) {
    line = label_ + ": stopped at " + std::to_string(d) + "/" + std::to_string(total_) + " " + unit_ + " after " +
           format_duration(e, true);
  } else {
    line = label_ + ": " + std::to_string(d) + " " + unit_ + " in " + format_duration(e, true);
    if (e > 0) line += " (" + format_rate(double(d) / e) + " " + unit_ + "/s)";
  }
  if (bar_mode_ && printed_bar_) std::fputs("\r\033[K", options_.out);
  std::fprintf(options_.out, "%s\n", line.c_str());
  std::fflush(options_.out);
}

// ---- cancellation -------------------------------------------------------------------------------

namespace {

std::atomic<int> g_interrupt_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "signal handler needs a lock-free flag");

extern "C" void qforge_on_interrupt(int sig) {
  int expected = 0;
  if (g_interrupt_signal.compare_exchange_strong(expected, sig)) {
    static const char kMsg[] =
        "\nqforge: interrupted; stopping after the current step (press Ctrl-C again to abort now)\n";
    ssize_t ignored = write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
    (void)ignored;
    return;
  }
  // Second signal: the job did not stop in time; die the default way.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  raise(sig);
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    default: return "a signal";
  }
}

}  // namespace

void install_interrupt_handler() {
  struct sigaction action;
  std::memset(&action, 0, sizeof action);
  action.sa_handler = qforge_on_interrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool interrupted() { return g_interrupt_signal.load(std::memory_order_relaxed) != 0; }

int interrupt_signal() { return g_interrupt_signal.load(std::memory_order_relaxed); }

void reset_interrupted() { g_interrupt_signal.store(0, std::memory_order_relaxed); }

Status check_interrupted(std::string_view what) {
  const int sig = interrupt_signal();
  if (sig == 0) return Status::ok();
  return cancelled(std::string(what) + ": interrupted by " + signal_name(sig));
}

}  // namespace qforge
