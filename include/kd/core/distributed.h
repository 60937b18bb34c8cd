#pragma once
/// @file
/// Data-parallel training on PyTorch's own distributed engine: a c10d process group on the Gloo
/// backend, joined the way torchrun does it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
/// MASTER_PORT), and PyTorch's DDP Reducer for gradients (bucketed allreduce that starts while
/// backward is still running). With WORLD_SIZE unset or 1 every call here is a no-op, so the
/// training loops read the same either way.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace kd::dist {

struct Env {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::chrono::seconds timeout{300};  ///< KD_DIST_TIMEOUT: how long a collective waits for a peer
};

/// The torchrun variables of this process; a malformed one is a usage error naming it.
Env env_from_environment();

/// Joins the job described by the environment (once per process; later calls return at once).
/// Every rank must call it. Fails with one line when the rendezvous times out.
void init_from_environment();

int rank();
int world_size();
inline bool is_main() { return rank() == 0; }
inline bool active() { return world_size() > 1; }

/// In-place collectives over all ranks. Failures (a peer died, a timeout) become kd::Error.
void all_reduce_sum(torch::Tensor& t);
void broadcast(std::vector<torch::Tensor> ts, int root = 0);  // tensors are written in place
void barrier();
/// Rows of `part` from every rank concatenated in rank order; all parts must have equal shapes.
torch::Tensor all_gather_rows(const torch::Tensor& part);

/// Sums a few host-side counters across ranks.
std::vector<double> sum(std::vector<double> values);
/// Whether every rank holds the same value (e.g. the epoch each resumed from).
bool same_on_all_ranks(int64_t value);
/// Every rank starts from rank 0's parameters and buffers, as DistributedDataParallel does.
void start_from_main(const std::vector<torch::Tensor>& params,
                     const std::vector<torch::Tensor>& buffers);

/// Gradient averaging for one model: PyTorch's DDP Reducer over `params` (25 MiB buckets, the
/// first 1 MiB, in reverse registration order as DDP does). backward(loss) runs autograd with the
/// buckets' allreduces overlapping it; afterwards each parameter's grad holds the mean over ranks.
/// Without a process group it is plain loss.backward().
class GradientSync {
 public:
  /// find_unused: some parameters may get no gradient in a step (e.g. hint adapters before a
  /// snapshot teacher exists); costs one extra graph traversal per step.
  GradientSync(std::vector<torch::Tensor> params, bool find_unused);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;
  void backward(const torch::Tensor& loss);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kd::dist
