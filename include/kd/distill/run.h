#pragma once
/// @file
/// One `kd train` / `kd distill` run from a resolved config to a complete run directory (the
/// layout: kd/runs/run.h). Classification here; a detector architecture runs detect_run.h.
#include <nlohmann/json.hpp>

#include "kd/runs/config.h"

namespace kd {

/// Executes the run and returns its summary. `overwrite` removes an existing run directory.
nlohmann::json execute_run(const RunConfig& cfg, bool overwrite, bool resume = false);

}  // namespace kd
