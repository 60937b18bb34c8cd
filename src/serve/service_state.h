#pragma once
// Private to the serve area: what Service keeps per served model, shared by its route files.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "kd/eval/runner.h"
#include "kd/serve/batcher.h"
#include "kd/serve/service.h"
#include "protocol.h"

namespace kd {

struct Service::Served {
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<Batcher> batcher;
  // What GET /v2/models/{m}/stats reports (Triton's statistics extension): only what is measured.
  struct Stats {
    std::mutex mu;
    uint64_t success = 0, success_ns = 0, fail = 0, fail_ns = 0;  // inference requests
    uint64_t inferences = 0, executions = 0, infer_ns = 0;        // rows, batches, forward time
    int64_t last_inference_ms = 0;                                // since the epoch
    std::map<int64_t, std::pair<uint64_t, uint64_t>> batches;     // size -> (count, ns)
  } stats;
};

struct Service::InferResult {
  std::vector<InferOutput> wanted;               // in the order asked, each binary or not
  std::map<std::string, torch::Tensor> outputs;  // every output the model computed
};

struct Service::InferPlan {
  torch::Tensor input;                // float [N, C, H, W]
  std::vector<PreparedImage> images;  // BYTES inputs: each image's size and letterbox scale
  std::vector<InferOutput> wanted;    // in the order asked
};

// What a request was, for the metrics: which model and which route.
struct Service::Routed {
  std::string model, route = "unknown";
};

}  // namespace kd
