// qforge command-line entry point. Each subcommand lives in its own cmd_*.cpp.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "cli_common.h"
#include "commands.h"
#include "quantize_calibrated.h"
#include "qforge/progress.h"

int main(int argc, char** argv) {
  using namespace qforge::cli;
  CLI::App app{"qforge: quantize neural networks and measure what it cost"};
  app.name("qforge");
  app.set_version_flag("--version", QFORGE_VERSION);
  app.require_subcommand(1);
  app.footer("Run 'qforge <command> --help' for a command's options.");

  int exit_code = 0;
  add_inspect_command(app, &exit_code);
  add_analyze_command(app, &exit_code);
  add_quantize_command(app, &exit_code);
  add_dequantize_command(app, &exit_code);
  add_convert_command(app, &exit_code);
  add_demo_command(app, &exit_code);
  add_eval_command(app, &exit_code);
  add_run_command(app, &exit_code);
  add_bench_command(app, &exit_code);
  add_imatrix_command(app, &exit_code);  // cmd_imatrix.cpp
  add_card_command(app, &exit_code);     // card_build.cpp
  add_sensitivity_command(app, &exit_code);
  add_plan_command(app, &exit_code);
  add_sweep_command(app, &exit_code);

  set_command_line(argc, argv);
  qforge::install_interrupt_handler();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports an unknown command as a missing one; name it instead.
    if (app.get_subcommands().empty() && argc > 1 && argv[1][0] != '-') {
      std::string known;
      for (const CLI::App* sub : app.get_subcommands({})) known += (known.empty() ? "" : ", ") + sub->get_name();
      std::fprintf(stderr, "qforge: error: unknown command '%s' (commands: %s)\n", argv[1], known.c_str());
    } else {
      std::fprintf(stderr, "qforge: error: %s\n", e.what());
    }
    std::fprintf(stderr, "Run 'qforge --help' or 'qforge <command> --help' for usage.\n");
    return kExitUsage;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "qforge: error: out of memory\n");
    return kExitError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qforge: error: %s\n", e.what());
    return kExitError;
  }
  return exit_code;
}
