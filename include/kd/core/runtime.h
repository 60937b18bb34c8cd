#pragma once
// Process-wide set-up: device choice, threads, seeding, allocator and BLAS tuning.
#include <cstdint>
#include <string>

#include <torch/types.h>

namespace kd {

struct RuntimeOptions {
  std::string device = "auto";  // auto | cpu | cuda
  int threads = 0;              // 0: one per core
  uint64_t seed = 0;
  bool deterministic = false;
};

// Tunes the allocator and BLAS once per process (see runtime.cpp for why), sets threads
// and seeds. Returns the device models and tensors should live on.
torch::Device init_runtime(const RuntimeOptions& opts);
torch::Device parse_device(const std::string& name);
void seed_everything(uint64_t seed);
// Describes what init_runtime did (threads, BLAS, allocator) for logs and benchmark output.
std::string runtime_summary();

}  // namespace kd
