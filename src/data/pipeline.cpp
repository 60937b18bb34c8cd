#include "pipeline.h"

#include <opencv2/core.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/data/loader.h"

namespace kd {
namespace {

constexpr int64_t kDepth = 3;  // batches decoded ahead of the one being trained on

}  // namespace

BatchPipeline::Options pipeline_options(const Dataset& data, int64_t batch_size) {
  BatchPipeline::Options p;
  p.files = data.files;
  p.geometry = data.stream.geometry;
  p.workers = resolve_workers(data.stream.workers);
  p.strict = data.stream.strict;
  p.batch_size = batch_size;
  return p;
}

BatchPipeline::BatchPipeline(Options opts) : opts_(std::move(opts)) {
  KD_CHECK(opts_.workers >= 0, "data.workers must be 0 or more, got {}", opts_.workers);
  KD_CHECK(opts_.batch_size > 0, "batch size must be positive, got {}", opts_.batch_size);
  const auto& g = opts_.geometry;
  sample_bytes_ = int64_t{g.channels} * g.size * g.size;
  // The workers are the parallelism: OpenCV's own threads inside each resize would only contend.
  cv::setNumThreads(0);
  const auto options =
      torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(opts_.device.is_cuda());
  slots_.resize(kDepth);
  for (auto& s : slots_)
    s.pixels = torch::empty({opts_.batch_size, g.channels, g.size, g.size}, options);
  for (int w = 0; w < opts_.workers; ++w) threads_.emplace_back([this] { work(); });
}

BatchPipeline::~BatchPipeline() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

int64_t BatchPipeline::rows(int64_t b) const {
  return std::min<int64_t>(opts_.batch_size,
                           static_cast<int64_t>(ids_.size()) - b * opts_.batch_size);
}

void BatchPipeline::start(const torch::Tensor& ids, const torch::Tensor& index, int64_t epoch) {
  std::unique_lock<std::mutex> lock(mu_);
  quiesce(lock);
  auto i = ids.to(torch::kCPU).contiguous(), x = index.to(torch::kCPU).contiguous();
  ids_.assign(i.data_ptr<int64_t>(), i.data_ptr<int64_t>() + i.numel());
  index_.assign(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel());
  epoch_ = epoch;
  num_batches_ = (static_cast<int64_t>(ids_.size()) + opts_.batch_size - 1) / opts_.batch_size;
  restart(0, lock);
}

void BatchPipeline::quiesce(std::unique_lock<std::mutex>& lock) {
  ++generation_;
  next_job_ = static_cast<int64_t>(ids_.size());  // nothing more is claimed
  done_cv_.wait(lock, [&] { return in_flight_ == 0; });
}

void BatchPipeline::restart(int64_t b, std::unique_lock<std::mutex>& lock) {
  quiesce(lock);
  for (auto& s : slots_) s.batch = -1;
  consumed_ = b;
  next_job_ = b * opts_.batch_size;
  work_cv_.notify_all();
}

bool BatchPipeline::claim(int64_t limit_batch, int64_t& job, uint64_t& generation) {
  if (next_job_ >= static_cast<int64_t>(ids_.size())) return false;
  const int64_t b = next_job_ / opts_.batch_size;
  if (b >= limit_batch) return false;
  job = next_job_++;
  generation = generation_;
  Slot& slot = slots_[static_cast<size_t>(b % kDepth)];
  if (job % opts_.batch_size == 0) {  // the batch's first job: the slot's last batch was taken
    slot.batch = b;
    slot.remaining = rows(b);
    slot.failures.clear();
  }
  ++in_flight_;
  return true;
}

void BatchPipeline::run(int64_t job, uint64_t generation, std::unique_lock<std::mutex>& lock) {
  const int64_t b = job / opts_.batch_size, row = job % opts_.batch_size;
  Slot& slot = slots_[static_cast<size_t>(b % kDepth)];
  uint8_t* out = slot.pixels.data_ptr<uint8_t>() + row * sample_bytes_;
  const int64_t id = ids_[static_cast<size_t>(job)], index = index_[static_cast<size_t>(job)];
  const int64_t epoch = epoch_;
  lock.unlock();
  std::string why;
  try {
    const std::string bytes = opts_.files->read(id);
    transform_image(bytes, opts_.geometry, opts_.augment, sample_seed(opts_.seed, epoch, index),
                    out);
  } catch (const std::exception& e) {
    why = e.what();
    const std::string name = opts_.files->name(id);
    if (why.rfind(name, 0) != 0) why = name + ": " + why;
  }
  lock.lock();
  --in_flight_;
  if (generation == generation_) {
    if (!why.empty()) slot.failures.emplace_back(row, std::move(why));
    --slot.remaining;
  }
  done_cv_.notify_all();
}

void BatchPipeline::work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    int64_t job = 0;
    uint64_t generation = 0;
    work_cv_.wait(lock, [&] { return stop_ || claim(consumed_ + kDepth, job, generation); });
    if (stop_) return;
    run(job, generation, lock);
  }
}

std::pair<torch::Tensor, torch::Tensor> BatchPipeline::take(
    int64_t b, const std::function<torch::Tensor(const torch::Tensor&)>& use) {
  std::unique_lock<std::mutex> lock(mu_);
  KD_CHECK(b >= 0 && b < num_batches_, "batch {} of {}", b, num_batches_);
  Slot& slot = slots_[static_cast<size_t>(b % kDepth)];
  // Any batch may be asked for (a resumed epoch starts mid-way); the next one is ready or under
  // way, another one restarts the window there.
  if (b != consumed_) restart(b, lock);
  work_cv_.notify_all();
  while (!(slot.batch == b && slot.remaining == 0)) {
    int64_t job = 0;
    uint64_t generation = 0;
    if (claim(b + 1, job, generation))
      run(job, generation, lock);
    else
      done_cv_.wait(lock);
  }
  const int64_t n = rows(b);
  std::vector<int64_t> kept;
  if (!slot.failures.empty()) {
    std::sort(slot.failures.begin(), slot.failures.end());
    if (opts_.strict)
      fail("{} (data.strict: failing instead of skipping it)", slot.failures[0].second);
    size_t f = 0;
    for (int64_t r = 0; r < n; ++r) {
      if (f < slot.failures.size() && slot.failures[f].first == r) {
        ++skipped_;
        spdlog::warn("skipped {} ({} skipped so far)", slot.failures[f].second, skipped_);
        ++f;
      } else {
        kept.push_back(r);
      }
    }
    KD_CHECK(!kept.empty(), "every image of a batch failed to load; the first: {}",
             slot.failures[0].second);
  }
  lock.unlock();
  torch::Tensor rows_kept =
      kept.empty() ? torch::arange(n, torch::kInt64) : torch::tensor(kept, torch::kInt64);
  torch::Tensor pixels = slot.pixels.narrow(0, 0, n);
  if (!kept.empty()) pixels = pixels.index_select(0, rows_kept);
  torch::Tensor out = use(pixels);
  lock.lock();
  consumed_ = b + 1;
  lock.unlock();
  work_cv_.notify_all();
  return {out, rows_kept};
}

}  // namespace kd
