#pragma once
/// @file
/// Multiply-accumulates per image of a model.
#include <cstdint>

#include <torch/types.h>

#include "kd/models/model.h"

namespace kd {

/// MACs of one forward pass on a single input, counted from the convolutions and matrix
/// products LibTorch actually executes (RecordFunction observers), so it works the same for
/// registry models and TorchScript modules; an INT8 model reports its fp32 model's.
int64_t count_macs(Model& model, torch::Device device);

}  // namespace kd
