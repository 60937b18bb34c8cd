#pragma once
// Reader for the IDX format used by MNIST and Fashion-MNIST (raw or gzip-compressed).
#include <string>

#include <torch/types.h>

namespace kd {

// Returns a uint8 tensor with the file's dimensions. Throws kd::Error naming the file on a
// bad magic number, an unsupported element type, or data shorter/longer than the header says.
torch::Tensor read_idx(const std::string& path);
void write_idx(const std::string& path, const torch::Tensor& data);  // raw, uint8 only

}  // namespace kd
