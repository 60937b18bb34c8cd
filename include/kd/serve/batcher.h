#pragma once
/// @file
/// Dynamic batching for one served model: requests from any thread wait in a bounded queue;
/// worker threads take up to max_batch inputs at a time (waiting at most max_wait after the
/// oldest one arrived for more to join), run them as one batch under inference mode, and hand
/// each request its rows of the output, through its callback on the worker thread (nobody waits
/// on a thread of their own) or a future. A full queue refuses new work instead of growing.
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <torch/types.h>

namespace kd {

struct BatchOptions {
  int64_t max_batch = 32;                    ///< inputs (rows) per forward pass
  std::chrono::microseconds max_wait{2000};  ///< how long the oldest request waits for company
  int64_t max_queue = 256;                   ///< requests waiting; more are refused
  int workers = 1;  ///< threads running batches (each with its own forward)
  /// Input bytes queued or running, all requests together; a request past it is refused
  /// (QueueFull: 503 with Retry-After) unless nothing else is in flight.
  int64_t max_bytes_in_flight = int64_t{512} << 20;
};

/// Thrown by submit() when the queue is full (the server answers 503).
class QueueFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Batcher {
 public:
  /// run: float [B, ...] -> [B, ...]; called on worker threads, never concurrently with itself
  /// on one worker. on_batch(size, seconds) reports each batch (metrics).
  Batcher(std::function<torch::Tensor(const torch::Tensor&)> run, BatchOptions options,
          std::function<void(int64_t, double)> on_batch = {});
  ~Batcher();  ///< stops the workers; requests still queued fail with an error
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  /// A request on its way (its body still being parsed). Workers wait for company (up to
  /// max_wait) only while some are announced: a lone request runs at once, without max_wait's
  /// latency, while under load batches still fill. Released by submit() or when it goes out of
  /// scope.
  class Arrival {
   public:
    explicit Arrival(Batcher* b) : batcher_(b) {}
    Arrival(Arrival&& o) noexcept : batcher_(o.batcher_) { o.batcher_ = nullptr; }
    Arrival(const Arrival&) = delete;
    ~Arrival() { release(); }
    void release();
    bool pending() const { return batcher_ != nullptr; }

   private:
    Batcher* batcher_;
  };
  Arrival expect();

  /// Called on a worker thread with a request's output rows, or with the batch's failure (rows
  /// undefined). It should be quick: the worker's next batch waits for it.
  using Done = std::function<void(torch::Tensor rows, std::exception_ptr failure)>;
  /// Queues input [n, ...] (n >= 1; an input larger than max_batch runs alone, in forward passes
  /// of max_batch rows, so memory for activations stays that of max_batch);
  /// `done` gets its output rows. Throws QueueFull when max_queue requests are already waiting
  /// or the bytes in flight would pass max_bytes_in_flight (`done` is then never called).
  /// may_run_here: when nothing is queued, running or announced
  /// but this request, its batch runs on the calling thread and `done` is called before submit
  /// returns: a lone request skips the two thread hand-offs (to a worker and back), which on a
  /// busy host cost more than its forward pass.
  void submit(torch::Tensor input, Done done, Arrival* arrival = nullptr,
              bool may_run_here = false);
  /// The same, for a caller that waits.
  std::future<torch::Tensor> submit(torch::Tensor input, Arrival* arrival = nullptr);
  int64_t depth() const;
  const BatchOptions& options() const { return options_; }

 private:
  struct Job {
    torch::Tensor input;
    Done done;
    std::chrono::steady_clock::time_point queued;
  };
  /// The model on `input`, max_batch rows at a time.
  torch::Tensor run_in_chunks(const torch::Tensor& input);
  void work();
  void run_batch(std::vector<Job>& batch);
  static void finish(Job& job, torch::Tensor rows, std::exception_ptr failure) noexcept;
  std::vector<Job> take_batch(std::unique_lock<std::mutex>& lock);

  std::function<torch::Tensor(const torch::Tensor&)> run_;
  BatchOptions options_;
  std::function<void(int64_t, double)> on_batch_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  int64_t expected_ = 0;         ///< announced requests not yet submitted
  int64_t running_ = 0;          ///< batches in a forward pass (on workers or callers)
  int64_t bytes_in_flight_ = 0;  ///< input bytes of the requests queued or running
  std::vector<std::thread> workers_;
};

}  // namespace kd
