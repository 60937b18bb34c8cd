#include "kd/eval/profile.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <torch/torch.h>

#include "kd/models/input.h"

namespace kd {
namespace {
double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i =
      std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

}  // namespace

nlohmann::json LatencyReport::to_json() const {
  return {{"batch1_median_ms", batch1_median_ms},
          {"batch1_p95_ms", batch1_p95_ms},
          {"throughput_per_s", throughput_per_s},
          {"throughput_batch", throughput_batch}};
}

LatencyReport measure_latency(Model& model, torch::Device device, const LatencyOptions& opts) {
  using clock = std::chrono::steady_clock;
  torch::InferenceMode guard;
  model.train(false);
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  auto x1 = random_input(model.spec(), 1, device);
  for (int i = 0; i < opts.warmup; ++i) model.forward(x1);
  std::vector<double> ms;
  for (int i = 0; i < opts.iterations; ++i) {
    auto t0 = clock::now();
    model.forward(x1);
    sync();
    ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  }
  LatencyReport r;
  r.batch1_median_ms = percentile(ms, 0.5);
  r.batch1_p95_ms = percentile(ms, 0.95);
  auto xb = random_input(model.spec(), opts.throughput_batch, device);
  model.forward(xb);
  sync();
  auto t0 = clock::now();
  for (int i = 0; i < opts.throughput_iterations; ++i) model.forward(xb);
  sync();
  const double s = std::chrono::duration<double>(clock::now() - t0).count();
  r.throughput_batch = opts.throughput_batch;
  r.throughput_per_s = static_cast<double>(opts.throughput_batch * opts.throughput_iterations) / s;
  return r;
}

}  // namespace kd
