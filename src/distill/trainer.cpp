#include "kd/distill/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/distributed.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/progress.h"
#include "kd/distill/checkpoint.h"
#include "kd/eval/classify.h"

namespace kd {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& o,
                                                        std::vector<torch::Tensor> params) {
  namespace optim = torch::optim;
  if (o.name == "sgd")
    return std::make_unique<optim::SGD>(params, optim::SGDOptions(o.lr)
                                                    .momentum(o.momentum)
                                                    .nesterov(o.nesterov && o.momentum > 0)
                                                    .weight_decay(o.weight_decay));
  if (o.name == "adam")
    return std::make_unique<optim::Adam>(params,
                                         optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
  if (o.name == "adamw")
    return std::make_unique<optim::AdamW>(params,
                                          optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  usage_fail("optimizer '{}': expected sgd, adam or adamw", o.name);
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) group.options().set_lr(lr);
}

double scheduled_lr(const TrainConfig& cfg, int64_t it, int64_t iters_per_epoch) {
  const auto& s = cfg.schedule;
  const double base = cfg.optim.lr;
  const double warmup = s.warmup_epochs * static_cast<double>(iters_per_epoch);
  const double x = static_cast<double>(it);
  if (x < warmup) return base * (x + 1.0) / warmup;
  const double total = static_cast<double>(cfg.epochs * iters_per_epoch);
  if (s.name == "cosine") {
    const double t = std::min(1.0, (x - warmup) / std::max(1.0, total - warmup));
    return s.min_lr + 0.5 * (base - s.min_lr) * (1.0 + std::cos(M_PI * t));
  }
  if (s.name == "step") {
    const int64_t epoch = it / std::max<int64_t>(1, iters_per_epoch);
    return base * std::pow(s.gamma, static_cast<double>(epoch / std::max<int64_t>(1, s.step_size)));
  }
  return base;
}

int64_t rank_batch_size(const TrainConfig& cfg) {
  // With several ranks the configured batch is the global one: each rank takes its share, so
  // the optimisation matches one process with that batch.
  const int world = dist::world_size();
  KD_CHECK(cfg.batch_size % world == 0, "batch size {} does not split evenly over {} ranks",
           cfg.batch_size, world);
  return cfg.batch_size / world;
}

Trainer::Trainer(TrainConfig cfg, torch::Device device, uint64_t seed)
    : cfg_(std::move(cfg)), device_(device), seed_(seed) {}

TrainResult Trainer::fit(Model& student, Strategy& strategy, const Dataset& train,
                         const Dataset& eval, const std::string& run_dir) {
  ClassificationTask task(cfg_, device_, seed_, student, strategy, train, eval);
  return fit(task, run_dir);
}

TrainResult Trainer::fit(TrainingTask& task, const std::string& run_dir) {
  Model& model = task.model();
  auto params = model.parameters();
  auto extra = task.extra_parameters();
  for (auto& p : extra) params.push_back(p);
  auto optimizer = make_optimizer(cfg_.optim, params);
  const int64_t iters = task.num_batches();
  const fs::path dir(run_dir);
  const bool has_dir = !run_dir.empty();
  const bool write = has_dir && dist::is_main();  // only rank 0 writes the run directory
  if (write) fs::create_directories(dir / "checkpoints");

  TrainResult result;
  result.best_score = -1.0;
  double images_per_s_sum = 0.0;
  int64_t first_epoch = 1;
  // Every rank reads the checkpoint (the run directory must be visible to all of them).
  if (resume_ && has_dir) {
    // The task's state first: rebuilding a snapshot teacher draws from the global generator
    // (a clone initialises its weights), and the RNG state restored last must be the checkpoint's.
    auto load = [&](const FoundCheckpoint& c) {
      task.load_state(c.folder);
      load_training_state(c.folder, model, *optimizer, extra, device_);
    };
    if (auto found = find_checkpoint(dir, load)) {
      first_epoch = found->state.epoch + 1;
      result.best_score = found->state.best_score;
      result.best_epoch = found->state.best_epoch;
      result.history = found->state.history;
      images_per_s_sum = found->state.images_per_s_sum;
      spdlog::info("{}: resuming after epoch {} ({})", run_dir, found->state.epoch,
                   found->folder.filename().string());
    } else {
      spdlog::warn("{}: no usable checkpoint; training from epoch 1", run_dir);
    }
    if (!dist::same_on_all_ranks(first_epoch))
      fail(
          "{}: the ranks found different checkpoints; the run directory must be one folder all "
          "ranks share",
          run_dir);
    // metrics.jsonl again holds exactly the checkpoint's epochs: later lines were lost work.
    std::string lines;
    for (const auto& rec : result.history) lines += rec.dump() + "\n";
    if (write) write_text_atomically(dir / "metrics.jsonl", lines);
  }
  std::vector<torch::Tensor> buffers = model_buffers(model);
  dist::start_from_main(params, buffers);
  dist::GradientSync sync(params, task.may_skip_parameters());
  const double max_grad_norm = task.max_grad_norm();
  auto run_start = std::chrono::steady_clock::now();
  for (int64_t epoch = first_epoch; epoch <= cfg_.epochs; ++epoch) {
    task.begin_epoch(epoch);
    double loss_sum = 0.0;
    int64_t seen = 0;
    std::vector<double> sums;
    Progress progress(fmt::format("epoch {}/{}", epoch, cfg_.epochs), iters);
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) {
      check_interrupted();
      const double lr = scheduled_lr(cfg_, (epoch - 1) * iters + i, iters);
      set_lr(*optimizer, lr);
      // As DDP with broadcast_buffers: rank 0's running statistics are everyone's.
      dist::broadcast(buffers);
      TaskStep s = task.step(i);
      const double loss = s.loss.item<double>();
      if (!std::isfinite(loss))
        fail("epoch {} batch {}: loss is {} (learning rate {:.4g}); lower --lr or {}", epoch, i,
             std::isnan(loss) ? "NaN" : "infinite", lr, task.nan_hint());
      optimizer->zero_grad();
      sync.backward(s.loss);
      if (max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(params, max_grad_norm);
      optimizer->step();
      loss_sum += loss * static_cast<double>(s.samples);
      seen += s.samples;
      if (sums.empty()) sums.assign(s.sums.size(), 0.0);
      for (size_t k = 0; k < sums.size(); ++k) sums[k] += s.sums[k];
      progress.update(i + 1, s.samples, loss_sum / static_cast<double>(seen),
                      task.running_accuracy(sums));
    }
    progress.finish();
    const double train_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dist::active()) {
      std::vector<double> local = {loss_sum, static_cast<double>(seen)};
      local.insert(local.end(), sums.begin(), sums.end());
      auto total = dist::sum(local);
      loss_sum = total[0];
      seen = static_cast<int64_t>(total[1]);
      std::copy(total.begin() + 2, total.end(), sums.begin());
    }
    dist::broadcast(buffers);  // evaluate and save rank 0's statistics, the same on every rank
    const double ns = static_cast<double>(seen);
    images_per_s_sum += ns / train_s;

    TaskScore ev = task.evaluate();
    // Training and evaluation: what the dashboard's ETA of a live run is made from.
    const double epoch_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    nlohmann::json rec = {{"epoch", epoch},
                          {"lr", scheduled_lr(cfg_, epoch * iters - 1, iters)},
                          {"train_loss", loss_sum / ns},
                          {"train_seconds", train_s},
                          {"epoch_seconds", epoch_s},
                          {"train_images_per_s", ns / train_s}};
    const std::string trained = task.describe_training(loss_sum / ns, sums, ns, rec);
    rec.update(ev.record);
    result.history.push_back(rec);
    spdlog::info("epoch {}/{}: {} | {} | {:.0f} img/s", epoch, cfg_.epochs, trained, ev.log,
                 ns / train_s);
    const bool best = ev.score > result.best_score;
    if (best) {
      result.best_score = ev.score;
      result.best_epoch = epoch;
    }
    if (write) {
      // The best model before the checkpoint that says the epoch is done: killed in between,
      // the run resumes from the epoch before, redoes this one, finds it best again and
      // rewrites model.pt and model.json together. The other order could leave a model.pt whose
      // model.json is an earlier epoch's, and a resume that never rewrites them.
      if (best) {
        write_atomically(dir / "checkpoints" / "best.pt",
                         [&](const fs::path& tmp) { model.save(tmp.string()); });
        save_model(model, run_dir);
      }
      write_checkpoint(
          dir, {epoch, result.best_score, result.best_epoch, images_per_s_sum, result.history},
          [&](const fs::path& folder) {
            save_training_state(folder, model, *optimizer, extra);
            task.save_state(folder);
          });
      append_line(dir / "metrics.jsonl", rec.dump());
    }
  }
  result.train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  result.train_images_per_s = images_per_s_sum / static_cast<double>(cfg_.epochs);
  return result;
}

namespace {

// Each rank scores every world_size-th eval image; the counts are summed across ranks.
ClassificationReport evaluate_sharded(Model& model, const Dataset& data, int64_t batch_size,
                                      torch::Device device) {
  if (!dist::active()) return evaluate_classifier(model, data, batch_size, device);
  auto index = torch::arange(dist::rank(), data.size(), dist::world_size(), torch::kInt64);
  Dataset part = data.subset(index);
  ClassificationMeter meter(model.spec().num_classes());
  if (part.size() > 0) add_predictions(meter, model, part, batch_size, device);
  meter.all_reduce();
  return meter.report();
}

// Streamed images are cropped per image (RandomResizedCrop); the pad-crop is for in-memory ones.
Augment augment_of(const TrainConfig& cfg, const Dataset& train) {
  Augment a;
  a.crop_padding = train.streamed() ? 0 : cfg.crop_padding;
  a.hflip = cfg.hflip;
  a.mixup = cfg.mixup;
  a.cutmix = cfg.cutmix;
  a.random_resized_crop = train.streamed() && cfg.random_resized_crop;
  a.jitter = train.streamed() ? cfg.jitter : 0.0;
  return a;
}

}  // namespace

ClassificationTask::ClassificationTask(const TrainConfig& cfg, torch::Device device, uint64_t seed,
                                       Model& student, Strategy& strategy, const Dataset& train,
                                       const Dataset& eval)
    : student_(student),
      strategy_(strategy),
      eval_(eval),
      eval_batch_size_(cfg.eval_batch_size),
      device_(device),
      loader_(train,
              {rank_batch_size(cfg), true, false, augment_of(cfg, train), seed, dist::rank(),
               dist::world_size()},
              device) {
  student_.to(device_);
  strategy_.prepare(student_, train, augment_of(cfg, train), device_);
  extra_ = strategy_.parameters();
}

void ClassificationTask::begin_epoch(int64_t epoch) {
  strategy_.begin_epoch(epoch, student_);
  student_.train(true);
  loader_.start_epoch(epoch);
}

TaskStep ClassificationTask::step(int64_t i) {
  Batch batch = loader_.get(i);
  StepResult r = strategy_.step(student_, batch);
  // Train accuracy counts labeled samples only.
  const double labeled = static_cast<double>((batch.y >= 0).sum().item<int64_t>());
  const double correct =
      static_cast<double>(r.logits.detach().argmax(1).eq(batch.y).sum().item<int64_t>());
  return {r.loss, batch.y.size(0), {labeled, correct}};
}

double ClassificationTask::running_accuracy(const std::vector<double>& sums) const {
  return sums[1] / std::max(1.0, sums[0]);
}

std::string ClassificationTask::describe_training(double mean_loss, const std::vector<double>& sums,
                                                  double, nlohmann::json& record) const {
  const double top1 = running_accuracy(sums);
  record["train_top1"] = top1;
  return fmt::format("train loss {:.4f} top1 {:.2f}%", mean_loss, 100 * top1);
}

TaskScore ClassificationTask::evaluate() {
  ClassificationReport ev = evaluate_sharded(student_, eval_, eval_batch_size_, device_);
  return {ev.top1,
          {{"eval_loss", ev.loss}, {"eval_top1", ev.top1}, {"eval_top5", ev.top5}},
          fmt::format("eval loss {:.4f} top1 {:.2f}%", ev.loss, 100 * ev.top1)};
}

void ClassificationTask::save_state(const std::filesystem::path& folder) {
  strategy_.save_state(folder.string());
}

void ClassificationTask::load_state(const std::filesystem::path& folder) {
  strategy_.load_state(folder.string(), student_);
}

}  // namespace kd
