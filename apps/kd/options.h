#pragma once
// Binds the flags shared by train, distill and eval to a RunConfig.
#include <memory>

#include <CLI/CLI.hpp>

#include "kd/runs/config.h"

namespace kd::cli {

void add_data_options(CLI::App& cmd, DataConfig& d);
void add_runtime_options(CLI::App& cmd, RuntimeConfig& r);
void add_training_options(CLI::App& cmd, RunConfig& c, bool& no_augment);

}  // namespace kd::cli
