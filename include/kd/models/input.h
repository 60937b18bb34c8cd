#pragma once
/// @file
/// A batch of random images of a model's input shape: what tracing, MAC counting, INT8
/// conversion and latency measurement feed a model when the values do not matter.
#include <cstdint>

#include <torch/types.h>

#include "kd/models/model.h"

namespace kd {

/// Uniform [0, 1) tensor of shape [batch, C, H, W] from the spec's input shape.
torch::Tensor random_input(const ModelSpec& spec, int64_t batch,
                           torch::Device device = torch::kCPU);

}  // namespace kd
