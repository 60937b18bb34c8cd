#pragma once
// Private to the data area: the streamed loader's worker pool. Worker threads read, decode and
// transform the samples of the batches ahead of the one the trainer takes, into a ring of reused
// uint8 batch buffers (a bounded prefetch queue of `depth` batches). Each sample's random draws
// come from (seed, epoch, its dataset index), so the batches are the same for any number of
// workers. While it waits, the taking thread decodes samples of its own batch too (which makes
// workers = 0 decode in the training thread).
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <torch/types.h>

#include "kd/data/dataset.h"
#include "kd/data/source.h"
#include "kd/data/transform.h"

namespace kd {

class BatchPipeline {
 public:
  struct Options {
    std::shared_ptr<const SampleSource> files;
    InputGeometry geometry;
    ImageAugment augment;
    uint64_t seed = 0;
    int workers = 2;
    bool strict = false;  // a sample that fails is an error instead of a skipped, counted warning
    int64_t batch_size = 128;
    torch::Device device = torch::kCPU;  // CUDA: buffers in pinned memory
  };
  explicit BatchPipeline(Options opts);
  ~BatchPipeline();
  BatchPipeline(const BatchPipeline&) = delete;
  BatchPipeline& operator=(const BatchPipeline&) = delete;

  // An epoch over `ids` (source sample ids, in batch order) whose dataset indices are `index`
  // (the key of each sample's draws).
  void start(const torch::Tensor& ids, const torch::Tensor& index, int64_t epoch);
  // Batch b's pixels (uint8 [n, C, S, S]) given to `use` while the buffer is held, and the rows
  // of the batch that decoded (int64 [n]); samples that failed are left out, each named in a
  // warning (or, strict, an error).
  std::pair<torch::Tensor, torch::Tensor> take(
      int64_t b, const std::function<torch::Tensor(const torch::Tensor&)>& use);
  int64_t skipped() const { return skipped_; }

 private:
  struct Slot {
    int64_t batch = -1;
    int64_t remaining = 0;
    torch::Tensor pixels;                                   // uint8 [batch_size, C, S, S], reused
    std::vector<std::pair<int64_t, std::string>> failures;  // row, why
  };
  int64_t rows(int64_t b) const;
  void work();
  // Claims the next job (lock held); false when there is none the window allows.
  bool claim(int64_t limit_batch, int64_t& job, uint64_t& generation);
  void run(int64_t job, uint64_t generation, std::unique_lock<std::mutex>& lock);
  void restart(int64_t b, std::unique_lock<std::mutex>& lock);
  // Stops claiming and waits for the jobs under way (their results are dropped).
  void quiesce(std::unique_lock<std::mutex>& lock);

  Options opts_;
  int64_t sample_bytes_;
  std::vector<int64_t> ids_, index_;
  int64_t epoch_ = 0;
  int64_t num_batches_ = 0;
  std::vector<Slot> slots_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  int64_t next_job_ = 0;  // jobs are the epoch's samples in order
  int64_t consumed_ =
      0;  // the next batch to be taken: workers fill batches below consumed_ + depth
  int64_t in_flight_ = 0;  // jobs being run outside the lock
  uint64_t generation_ = 0;
  bool stop_ = false;
  int64_t skipped_ = 0;
  std::vector<std::thread> threads_;
};

// The options that read `data` (its source, geometry, workers, strictness) in batches of
// batch_size, without augmentation.
BatchPipeline::Options pipeline_options(const Dataset& data, int64_t batch_size);

}  // namespace kd
