#include "kd/serve/batcher.h"

#include <torch/torch.h>

#include "kd/core/error.h"

namespace kd {

Batcher::Batcher(std::function<torch::Tensor(const torch::Tensor&)> run, BatchOptions options,
                 std::function<void(int64_t, double)> on_batch)
    : run_(std::move(run)), options_(options), on_batch_(std::move(on_batch)) {
  KD_CHECK(options_.max_batch >= 1, "max batch must be at least 1 (got {})", options_.max_batch);
  KD_CHECK(options_.max_queue >= 1, "max queue must be at least 1 (got {})", options_.max_queue);
  KD_CHECK(options_.workers >= 1, "workers must be at least 1 (got {})", options_.workers);
  KD_CHECK(options_.max_wait.count() >= 0, "max wait must not be negative");
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { work(); });
}

Batcher::~Batcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  for (auto& job : queue_)
    finish(job, {}, std::make_exception_ptr(QueueFull("the server is shutting down")));
}

Batcher::Arrival Batcher::expect() {
  std::lock_guard<std::mutex> lock(mu_);
  ++expected_;
  return Arrival(this);
}

void Batcher::Arrival::release() {
  if (!batcher_) return;
  {
    std::lock_guard<std::mutex> lock(batcher_->mu_);
    --batcher_->expected_;
  }
  batcher_->cv_.notify_all();
  batcher_ = nullptr;
}

std::future<torch::Tensor> Batcher::submit(torch::Tensor input, Arrival* arrival) {
  auto promise = std::make_shared<std::promise<torch::Tensor>>();
  auto future = promise->get_future();
  submit(
      std::move(input),
      [promise](torch::Tensor rows, std::exception_ptr failure) {
        if (failure)
          promise->set_exception(failure);
        else
          promise->set_value(std::move(rows));
      },
      arrival);
  return future;
}

void Batcher::submit(torch::Tensor input, Done done, Arrival* arrival, bool may_run_here) {
  KD_CHECK(input.dim() >= 1 && input.size(0) >= 1, "a request needs at least one input");
  const auto bytes = static_cast<int64_t>(input.nbytes());
  // The bytes are counted until `done` has been called.
  Done counted = [this, bytes, done = std::move(done)](torch::Tensor rows,
                                                       std::exception_ptr failure) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      bytes_in_flight_ -= bytes;
    }
    done(std::move(rows), failure);
  };
  Job job{std::move(input), std::move(counted), std::chrono::steady_clock::now()};
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) throw QueueFull("the server is shutting down");
    if (bytes_in_flight_ > 0 && bytes_in_flight_ + bytes > options_.max_bytes_in_flight)
      throw QueueFull(fmt::format(
          "{} MiB of inputs are in flight, and this request's {} MiB would pass the limit of {} "
          "MiB; retry later",
          bytes_in_flight_ >> 20, bytes >> 20, options_.max_bytes_in_flight >> 20));
    bytes_in_flight_ += bytes;
    const int64_t others = expected_ - (arrival && arrival->pending() ? 1 : 0);
    if (may_run_here && queue_.empty() && running_ == 0 && others == 0) {
      ++running_;
      lock.unlock();
      if (arrival) arrival->release();
      std::vector<Job> batch;
      batch.push_back(std::move(job));
      run_batch(batch);
      lock.lock();
      --running_;
      return;
    }
    if (static_cast<int64_t>(queue_.size()) >= options_.max_queue) {
      bytes_in_flight_ -= bytes;
      throw QueueFull(
          fmt::format("the queue is full ({} requests waiting); retry later", queue_.size()));
    }
    queue_.push_back(std::move(job));
  }
  if (arrival) arrival->release();
  cv_.notify_all();
}

// A callback that throws must not take the worker (and every later request) down with it.
void Batcher::finish(Job& job, torch::Tensor rows, std::exception_ptr failure) noexcept {
  try {
    job.done(std::move(rows), failure);
  } catch (...) {
  }
}

int64_t Batcher::depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

// Waits while more requests are on their way, until the oldest has company enough to fill a
// batch or has waited max_wait; then takes the longest run of requests that fits max_batch (at
// least the oldest one).
std::vector<Batcher::Job> Batcher::take_batch(std::unique_lock<std::mutex>& lock) {
  auto rows_waiting = [this] {
    int64_t n = 0;
    for (const auto& j : queue_) n += j.input.size(0);
    return n;
  };
  const auto deadline = queue_.front().queued + options_.max_wait;
  while (!stopping_ && expected_ > 0 && rows_waiting() < options_.max_batch &&
         std::chrono::steady_clock::now() < deadline)
    cv_.wait_until(lock, deadline);
  std::vector<Job> batch;
  int64_t rows = 0;
  while (!queue_.empty() &&
         (batch.empty() || rows + queue_.front().input.size(0) <= options_.max_batch)) {
    rows += queue_.front().input.size(0);
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return batch;
}

void Batcher::work() {
  // Inference mode on this thread: no autograd bookkeeping, no version counters.
  c10::InferenceMode inference;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    auto batch = take_batch(lock);
    if (batch.empty()) continue;
    ++running_;
    const bool more = !queue_.empty();
    lock.unlock();
    if (more) cv_.notify_one();  // another worker may start on what is left
    run_batch(batch);
    lock.lock();
    --running_;
  }
}

torch::Tensor Batcher::run_in_chunks(const torch::Tensor& input) {
  std::vector<torch::Tensor> parts;
  for (int64_t at = 0; at < input.size(0); at += options_.max_batch) {
    const auto start = std::chrono::steady_clock::now();
    parts.push_back(run_(input.narrow(0, at, std::min(options_.max_batch, input.size(0) - at))));
    if (on_batch_)
      on_batch_(parts.back().size(0),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return torch::cat(parts);
}

void Batcher::run_batch(std::vector<Job>& batch) {
  c10::InferenceMode inference;  // (a worker is in it already; a caller of submit may not be)
  const auto start = std::chrono::steady_clock::now();
  try {
    std::vector<torch::Tensor> inputs;
    for (const auto& j : batch) inputs.push_back(j.input);
    torch::Tensor output;
    if (inputs.size() == 1 && inputs[0].size(0) > options_.max_batch) {
      output = run_in_chunks(inputs[0]);
    } else {
      output = run_(inputs.size() == 1 ? inputs[0] : torch::cat(inputs));
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (on_batch_) on_batch_(output.size(0), seconds);
    }
    int64_t row = 0;
    for (auto& j : batch) {
      const int64_t n = j.input.size(0);
      finish(j, output.narrow(0, row, n), nullptr);
      row += n;
    }
  } catch (...) {
    for (auto& j : batch) finish(j, {}, std::current_exception());
  }
}

}  // namespace kd
