#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "qforge/progress.h"

namespace qforge {
namespace {

// Captures what a Progress writes, with a clock the test moves by hand.
struct Capture {
  char* buf = nullptr;
  size_t size = 0;
  FILE* file = open_memstream(&buf, &size);
  double t = 100.0;  // arbitrary epoch: only differences matter
  ~Capture() {
    if (file) std::fclose(file);
    std::free(buf);
  }
  std::string text() {
    std::fflush(file);
    return std::string(buf, size);
  }
  Progress::Options options(int tty, double interval) {
    Progress::Options o;
    o.out = file;
    o.tty = tty;
    o.line_interval_s = interval;
    o.bar_interval_s = interval;
    o.clock = [this] { return t; };
    return o;
  }
};

TEST(Progress, PlainLinesFormatAndRateLimit) {
  Capture cap;
  Progress p("quantize", 64, "tensors", cap.options(/*tty=*/0, /*interval=*/3.0));
  cap.t += 1.0;
  p.tick(2);  // 1 s after start: too early for a line
  EXPECT_EQ(cap.text(), "");
  cap.t += 2.87;
  p.tick(10);  // 12 done at 3.87 s: 3.1/s, 52 left -> 16.8 s
  EXPECT_EQ(cap.text(), "quantize: 12/64 tensors (19%), 3.1 tensors/s, ETA 17s\n");
  cap.t += 1.0;
  p.tick(4);  // only 1 s since the last line
  EXPECT_EQ(cap.text(), "quantize: 12/64 tensors (19%), 3.1 tensors/s, ETA 17s\n");
  cap.t += 2.5;
  p.tick(48);  // 64 done at 7.37 s
  cap.t += 0.63;
  p.finish();
  p.finish();  // idempotent
  EXPECT_EQ(cap.text(),
            "quantize: 12/64 tensors (19%), 3.1 tensors/s, ETA 17s\n"
            "quantize: 64/64 tensors (100%), 8.7 tensors/s, ETA 0s\n"
            "quantize: 64 tensors in 8.0s (8.0 tensors/s)\n");
}

TEST(Progress, RateAndEtaArithmetic) {
  Capture cap;
  Progress p("eval", 1000, "chunks", cap.options(0, 1e9));
  EXPECT_EQ(p.rate(), 0.0);
  EXPECT_LT(p.eta_s(), 0.0);  // unknown before any time/work
  cap.t += 4.0;
  EXPECT_LT(p.eta_s(), 0.0);  // time passed, nothing done
  p.tick(100);
  EXPECT_DOUBLE_EQ(p.elapsed_s(), 4.0);
  EXPECT_DOUBLE_EQ(p.rate(), 25.0);
  EXPECT_DOUBLE_EQ(p.eta_s(), 36.0);  // 900 left at 25/s
  cap.t += 6.0;
  p.tick(150);
  EXPECT_DOUBLE_EQ(p.rate(), 25.0);
  EXPECT_DOUBLE_EQ(p.eta_s(), 30.0);
  EXPECT_EQ(p.status_text(), "eval: 250/1000 chunks (25%), 25 chunks/s, ETA 30s");
  p.tick(750);
  EXPECT_DOUBLE_EQ(p.eta_s(), 0.0);
}

TEST(Progress, PercentNeverShows100BeforeDone) {
  Capture cap;
  Progress p("x", 1000, "items", cap.options(0, 1e9));
  cap.t += 1;
  p.tick(999);
  EXPECT_NE(p.status_text().find("(99%)"), std::string::npos) << p.status_text();
}

TEST(Progress, StoppedEarlyReportsWhereItStopped) {
  Capture cap;
  {
    Progress p("quantize", 64, "tensors", cap.options(0, 1e9));
    cap.t += 3.25;
    p.tick(12);
  }  // destructor finishes
  EXPECT_EQ(cap.text(), "quantize: stopped at 12/64 tensors after 3.2s\n");
}

TEST(Progress, UnknownTotalHasNoPercentOrEta) {
  Capture cap;
  Progress p("read", 0, "MiB", cap.options(0, 1e9));
  cap.t += 2;
  p.tick(5);
  EXPECT_EQ(p.status_text(), "read: 5 MiB, 2.5 MiB/s");
}

TEST(Progress, BarRedrawsInPlaceAtMostEveryInterval) {
  Capture cap;
  Progress p("quantize", 10, "tensors", cap.options(/*tty=*/1, /*interval=*/0.1));
  cap.t += 0.05;
  p.tick();
  EXPECT_EQ(cap.text(), "");  // within the first 0.1 s
  cap.t += 0.06;
  p.tick();
  const std::string first = cap.text();
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first.front(), '\r');
  EXPECT_EQ(first.find('\n'), std::string::npos);  // redrawn in place, no newline
  EXPECT_NE(first.find("[####...."), std::string::npos) << first;
  EXPECT_NE(first.find(" 20% 2/10 tensors"), std::string::npos) << first;
  cap.t += 0.01;
  p.tick();
  EXPECT_EQ(cap.text(), first);  // 10 ms later: no redraw
  cap.t += 0.2;
  p.tick(7);
  cap.t += 0.1;
  p.finish();
  const std::string all = cap.text();
  EXPECT_NE(all.find("100% 10/10"), std::string::npos) << all;
  // The final line replaces the bar and ends with a newline.
  const std::string tail = "\r\033[Kquantize: 10 tensors in 0.4s (24 tensors/s)\n";
  ASSERT_GE(all.size(), tail.size());
  EXPECT_EQ(all.substr(all.size() - tail.size()), tail);
}

TEST(Progress, QuietPrintsNothing) {
  Capture cap;
  auto o = cap.options(0, 0.0);
  o.quiet = true;
  {
    Progress p("x", 3, "u", o);
    cap.t += 10;
    p.tick(3);
    EXPECT_EQ(p.done(), 3);
  }
  EXPECT_EQ(cap.text(), "");
}

TEST(Progress, FormatHelpers) {
  EXPECT_EQ(format_duration(0.4), "0s");
  EXPECT_EQ(format_duration(16.77), "17s");
  EXPECT_EQ(format_duration(3.25, true), "3.2s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(59.6), "1m00s");
  EXPECT_EQ(format_duration(125), "2m05s");
  EXPECT_EQ(format_duration(3725), "1h02m");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_rate(3.1), "3.1");
  EXPECT_EQ(format_rate(12.4), "12");
  EXPECT_EQ(format_rate(1234.4), "1234");
  EXPECT_EQ(format_rate(0.25), "0.25");
  EXPECT_EQ(format_rate(0.0012), "0.0012");
  EXPECT_EQ(format_rate(0), "0");
}

TEST(Interrupt, FlagSetByRaise) {
  install_interrupt_handler();
  reset_interrupted();
  EXPECT_FALSE(interrupted());
  EXPECT_TRUE(check_interrupted("quantize").is_ok());
  ASSERT_EQ(std::raise(SIGINT), 0);
  EXPECT_TRUE(interrupted());
  EXPECT_EQ(interrupt_signal(), SIGINT);
  Status s = check_interrupted("quantize");
  EXPECT_EQ(s.code(), ErrorCode::cancelled);
  EXPECT_EQ(s.message(), "quantize: interrupted by SIGINT");
  reset_interrupted();
  EXPECT_FALSE(interrupted());

  ASSERT_EQ(std::raise(SIGTERM), 0);
  EXPECT_EQ(interrupt_signal(), SIGTERM);
  reset_interrupted();
}

TEST(InterruptDeathTest, SecondSignalKills) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        install_interrupt_handler();
        reset_interrupted();
        std::raise(SIGINT);  // sets the flag, process survives
        if (!interrupted()) std::_Exit(3);
        std::raise(SIGINT);  // default action: killed
        std::_Exit(0);
      },
      testing::KilledBySignal(SIGINT), "press Ctrl-C again");
}

}  // namespace
}  // namespace qforge
