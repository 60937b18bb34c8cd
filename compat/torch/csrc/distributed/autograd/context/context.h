#pragma once
// Debian's libtorch-dev 1.13 ships torch/csrc/distributed/c10d/reducer.hpp (PyTorch's DDP
// engine, compiled into libtorch_cpu) but not this header, which reducer.hpp includes for two
// names only: the gradient callback type and a shared_ptr to the distributed-autograd context.
// The Reducer stores that context by pointer and kd never uses distributed autograd, so these
// declarations match the real ones in every way the compiled library depends on.
// Only src/core/distributed.cpp sees this folder.
#include <functional>
#include <memory>

#include <ATen/core/Tensor.h>

namespace torch::distributed::autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};
using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace torch::distributed::autograd
