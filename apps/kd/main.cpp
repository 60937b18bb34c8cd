// kd: knowledge distillation in C++. Exit codes: 0 ok, 1 bad input or failure, 2 usage error.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "kd/core/error.h"
#include "kd/core/runtime.h"
#include "kd/core/version.h"

int main(int argc, char** argv) {
  // See openblas_core_to_force: OpenBLAS's kernels are chosen as it loads, before main.
  if (const std::string core = kd::openblas_core_to_force(); !core.empty()) {
    ::setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    ::execv("/proc/self/exe", argv);  // on failure, carry on with the slow kernels
  }
  CLI::App app{
      "kd: train a teacher, distill a small student, measure and compare them.\n"
      "Example: kd train --arch fmnist-teacher --epochs 15 --out runs/teacher"};
  app.require_subcommand(1);
  app.set_version_flag(
      "--version",
      fmt::format("kd {} (serve {}, grpc {}, onnx {})", kd::kVersion, kd::kWithServe ? "on" : "off",
                  kd::kWithGrpc ? "on" : "off", kd::kWithOnnx ? "on" : "off"));
  // Logs go to stderr so stdout carries only results (tables, JSON, run paths).
  spdlog::set_default_logger(spdlog::stderr_color_mt("kd"));
  spdlog::set_pattern("[%H:%M:%S] %v");
  kd::cli::add_train_commands(app);
  kd::cli::add_eval_command(app);
  kd::cli::add_data_commands(app);
  kd::cli::add_models_command(app);
  kd::cli::add_compare_command(app);
  kd::cli::add_run_command(app);
  kd::cli::add_predict_command(app);
  kd::cli::add_export_command(app);
  kd::cli::add_quantize_command(app);
#if KD_WITH_SERVE
  kd::cli::add_serve_command(app);
#else
  // Named, so `kd serve` says why it is missing instead of "unexpected argument".
  app.add_subcommand("serve", "(not in this build: cmake -DKD_WITH_SERVE=ON)")
      ->allow_extras()
      ->callback([] {
        kd::usage_fail("kd serve: this kd was built without serving (KD_WITH_SERVE=OFF)");
      });
#endif
  kd::cli::add_launch_command(app);
  kd::cli::add_report_command(app);
  // KD_PARSE_ONLY=1: the command line is parsed and checked (options, values, required ones) and
  // nothing runs: how tests/integration/docs_test.py checks every `kd ...` line of the docs.
  // The commands' callbacks hold their arguments, so they stay; the main app's parse-complete
  // callback runs after every check and before any command, and ends there (exit 0).
  if (std::getenv("KD_PARSE_ONLY")) app.parse_complete_callback([] { throw CLI::Success(); });
  // CLI11 says only "A subcommand is required" for `kd nosuchcommand`.
  if (argc > 1 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const auto* sub : app.get_subcommands([](CLI::App*) { return true; })) {
      known = known || sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "kd: error: unknown command '%s' (commands: %s; see --help)\n", argv[1],
                   names.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "kd: error: %s (see --help)\n", e.what());
    return 2;
  } catch (const kd::Interrupted& e) {
    std::fprintf(stderr, "kd: %s\n", e.what());
    return 128 + e.signal();
  } catch (const kd::UsageError& e) {
    std::fprintf(stderr, "kd: error: %s\n", e.what());
    return 2;
  } catch (const kd::Error& e) {
    std::fprintf(stderr, "kd: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "kd: error: %s\n", kd::first_line(e.what_without_backtrace()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kd: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
