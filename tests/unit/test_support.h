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
#define QFORGE_REQUIRE_SHARED(relative)                                                       \
  do {                                                                                        \
    if (!::qforge::test::shared_exists(relative))                                             \
      GTEST_SKIP() << "fixture " << (relative) << " not found under "                        \
                   << ::qforge::test::shared_dir() << " (../shared missing): skipping";       \
  } while (0)
