#pragma once
// Binds the flags shared by train, distill and eval to a RunConfig.
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "kd/runs/config.h"

namespace kd::cli {

// An option whose value is one of an enum's words (kd/core/kinds.h), limited to `allowed`.
template <typename E>
CLI::Option* add_kind_option(CLI::App& cmd, const std::string& name, E& ref,
                             const std::string& help, const std::vector<E>& allowed) {
  std::vector<std::string> words;
  for (E e : allowed) words.emplace_back(to_string(e));
  return cmd
      .add_option_function<std::string>(
          name, [&ref](const std::string& s) { ref = parse_kind<E>(s, ""); }, help)
      ->check(CLI::IsMember(words))
      ->default_str(std::string(to_string(ref)));
}

void add_data_options(CLI::App& cmd, DataConfig& d);
void add_runtime_options(CLI::App& cmd, RuntimeConfig& r);
void add_training_options(CLI::App& cmd, RunConfig& c, bool& no_augment);
/// The paths `kd compare` and `kd report` take: run directories and TorchScript teachers. Other
/// files (`runs/exp/*` names compare.md and compare.json too) are left out with a warning.
std::vector<std::string> runs_and_teachers(const std::vector<std::string>& paths);

}  // namespace kd::cli
