// Helpers shared by the unit tests: fixture paths and skip-if-missing.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace qforge::test {

// ../shared beside the checkout (QFORGE_SHARED env var overrides).
std::string shared_dir();
// True when shared_dir()/relative exists.
bool shared_exists(const std::string& relative);
// Path of the built qforge CLI.
std::string cli_path();
// A fresh empty temporary directory, removed at process exit.
std::string temp_dir();
// Runs a shell command; returns its exit status and captures stdout+stderr.
int run_command(const std::string& command, std::string* output);

}  // namespace qforge::test

// Skips the current test with a message when a fixture under ../shared is missing.
// Skips a test in sanitizer builds (ASan/UBSan), where it would take minutes; `why` names the slow work.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
#define QFORGE_UNDER_SANITIZERS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define QFORGE_UNDER_SANITIZERS 1
#endif
#endif
#ifdef QFORGE_UNDER_SANITIZERS
#define QFORGE_SKIP_UNDER_SANITIZERS(why) GTEST_SKIP() << why << ": too slow under sanitizers"
#else
#define QFORGE_SKIP_UNDER_SANITIZERS(why) \
  do {                                    \
  } while (0)
#endif

#define QFORGE_REQUIRE_SHARED(relative)                                                       \
  do {                                                                                        \
    if (!::qforge::test::shared_exists(relative))                                             \
      GTEST_SKIP() << "fixture " << (relative) << " not found under "                        \
                   << ::qforge::test::shared_dir() << " (../shared missing): skipping";       \
  } while (0)
