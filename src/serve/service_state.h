#pragma once
// Private to the serve area: what Service keeps per served model, shared by its route files.
#include <memory>
#include <string>

#include "kd/serve/batcher.h"
#include "kd/serve/runner.h"
#include "kd/serve/service.h"

namespace kd {

struct Service::Served {
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<Batcher> batcher;
};

// What a request was, for the metrics: which model and which route.
struct Service::Routed {
  std::string model, route = "unknown";
};

}  // namespace kd
