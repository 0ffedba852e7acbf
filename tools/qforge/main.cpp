// qforge command-line entry point (skeleton; commands are added in tools/qforge/cmd_*.cpp).
#include <CLI/CLI.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  CLI::App app{"qforge: quantize neural networks and measure what it cost"};
  app.set_version_flag("--version", QFORGE_VERSION);
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
