#include "kd/distill/trainer.h"

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
    return std::make_unique<optim::SGD>(
        params, optim::SGDOptions(o.lr).momentum(o.momentum).nesterov(o.nesterov && o.momentum > 0)
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

namespace {

// Each rank scores every world_size-th eval image; the counts are summed across ranks.
ClassificationReport evaluate_sharded(Model& model, const Dataset& data, int64_t batch_size,
                                      torch::Device device) {
  if (!dist::active()) return evaluate_classifier(model, data, batch_size, device);
  auto index = torch::arange(dist::rank(), data.size(), dist::world_size(), torch::kInt64);
  Dataset part = data.subset(index);
  ClassificationMeter meter(model.spec().num_classes());
  if (part.size() > 0) meter.add(predict_logits(model, part, batch_size, device), part.labels);
  meter.all_reduce();
  return meter.report();
}

}  // namespace

Trainer::Trainer(TrainConfig cfg, torch::Device device, uint64_t seed)
    : cfg_(std::move(cfg)), device_(device), seed_(seed) {}

TrainResult Trainer::fit(Model& student, Strategy& strategy, const Dataset& train,
                         const Dataset& eval, const std::string& run_dir) {
  const Augment augment{cfg_.crop_padding, cfg_.hflip, cfg_.mixup, cfg_.cutmix};
  // With several ranks the configured batch is the global one: each rank takes its share, so
  // the optimisation matches one process with that batch.
  const int world = dist::world_size();
  KD_CHECK(cfg_.batch_size % world == 0, "batch size {} does not split evenly over {} ranks",
           cfg_.batch_size, world);
  Loader loader(train, {cfg_.batch_size / world, true, false, augment, seed_, dist::rank(), world}, device_);
  student.to(device_);
  strategy.prepare(student, train, augment, device_);
  auto params = student.parameters();
  auto extra = strategy.parameters();
  for (auto& p : extra) params.push_back(p);
  auto optimizer = make_optimizer(cfg_.optim, params);
  const int64_t iters = loader.num_batches();
  const fs::path dir(run_dir);
  const bool has_dir = !run_dir.empty();
  const bool write = has_dir && dist::is_main();  // only rank 0 writes the run directory
  if (write) fs::create_directories(dir / "checkpoints");

  TrainResult result;
  result.best_eval_top1 = -1.0;
  double images_per_s_sum = 0.0;
  int64_t first_epoch = 1;
  // Every rank reads the checkpoint (the run directory must be visible to all of them).
  if (resume_ && has_dir) {
    // The strategy's state first: rebuilding a snapshot teacher draws from the global generator
    // (a clone initialises its weights), and the RNG state restored last must be the checkpoint's.
    auto load = [&](const FoundCheckpoint& c) {
      strategy.load_state(c.folder.string(), student);
      load_training_state(c.folder, student, *optimizer, extra, device_);
    };
    if (auto found = find_checkpoint(dir, load)) {
      const fs::path f = found->folder;
      first_epoch = found->state.epoch + 1;
      result.best_eval_top1 = found->state.best_score;
      result.best_epoch = found->state.best_epoch;
      result.history = found->state.history;
      images_per_s_sum = found->state.images_per_s_sum;
      spdlog::info("{}: resuming after epoch {} ({})", run_dir, found->state.epoch, f.filename().string());
    } else {
      spdlog::warn("{}: no usable checkpoint; training from epoch 1", run_dir);
    }
    if (!dist::same_on_all_ranks(first_epoch))
      fail("{}: the ranks found different checkpoints; the run directory must be one folder all ranks share", run_dir);
    // metrics.jsonl again holds exactly the checkpoint's epochs: later lines were lost work.
    std::string lines;
    for (const auto& rec : result.history) lines += rec.dump() + "\n";
    if (write) write_text_atomically(dir / "metrics.jsonl", lines);
  }
  std::vector<torch::Tensor> buffers = model_buffers(student);
  dist::start_from_main(params, buffers);
  dist::GradientSync sync(params, !extra.empty());
  auto run_start = std::chrono::steady_clock::now();
  for (int64_t epoch = first_epoch; epoch <= cfg_.epochs; ++epoch) {
    strategy.begin_epoch(epoch, student);
    student.train(true);
    loader.start_epoch(epoch);
    double loss_sum = 0.0;
    int64_t seen = 0, labeled = 0, correct = 0;  // train accuracy counts labeled samples only
    Progress progress(fmt::format("epoch {}/{}", epoch, cfg_.epochs), iters);
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) {
      check_interrupted();
      const double lr = scheduled_lr(cfg_, (epoch - 1) * iters + i, iters);
      set_lr(*optimizer, lr);
      Batch batch = loader.get(i);
      // As DDP with broadcast_buffers: rank 0's running statistics are everyone's.
      dist::broadcast(buffers);
      StepResult r = strategy.step(student, batch);
      const double loss = r.loss.item<double>();
      if (!std::isfinite(loss))
        fail("epoch {} batch {}: loss is {} (learning rate {:.4g}); lower --lr or check the data",
             epoch, i, std::isnan(loss) ? "NaN" : "infinite", lr);
      optimizer->zero_grad();
      sync.backward(r.loss);
      optimizer->step();
      const int64_t b = batch.y.size(0);
      loss_sum += loss * static_cast<double>(b);
      seen += b;
      labeled += (batch.y >= 0).sum().item<int64_t>();
      correct += r.logits.detach().argmax(1).eq(batch.y).sum().item<int64_t>();
      progress.update(i + 1, b, loss_sum / static_cast<double>(seen),
                      static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(1, labeled)));
    }
    progress.finish();
    const double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dist::active()) {
      auto total = dist::sum({loss_sum, static_cast<double>(seen), static_cast<double>(labeled),
                              static_cast<double>(correct)});
      loss_sum = total[0];
      seen = static_cast<int64_t>(total[1]);
      labeled = static_cast<int64_t>(total[2]);
      correct = static_cast<int64_t>(total[3]);
    }
    dist::broadcast(buffers);  // evaluate and save rank 0's statistics, the same on every rank
    images_per_s_sum += static_cast<double>(seen) / train_s;

    ClassificationReport ev = evaluate_sharded(student, eval, cfg_.eval_batch_size, device_);
    nlohmann::json rec = {{"epoch", epoch},
                          {"lr", scheduled_lr(cfg_, epoch * iters - 1, iters)},
                          {"train_loss", loss_sum / static_cast<double>(seen)},
                          {"train_top1", static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(1, labeled))},
                          {"eval_loss", ev.loss},
                          {"eval_top1", ev.top1},
                          {"eval_top5", ev.top5},
                          {"train_seconds", train_s},
                          {"train_images_per_s", static_cast<double>(seen) / train_s}};
    result.history.push_back(rec);
    spdlog::info("epoch {}/{}: train loss {:.4f} top1 {:.2f}% | eval loss {:.4f} top1 {:.2f}% | {:.0f} img/s",
                 epoch, cfg_.epochs, rec["train_loss"].get<double>(),
                 100 * rec["train_top1"].get<double>(), ev.loss, 100 * ev.top1,
                 rec["train_images_per_s"].get<double>());
    const bool best = ev.top1 > result.best_eval_top1;
    if (best) {
      result.best_eval_top1 = ev.top1;
      result.best_epoch = epoch;
    }
    if (write) {
      write_checkpoint(dir, {epoch, result.best_eval_top1, result.best_epoch, images_per_s_sum, result.history},
                       [&](const fs::path& folder) {
                         save_training_state(folder, student, *optimizer, extra);
                         strategy.save_state(folder.string());
                       });
      if (best) {
        write_atomically(dir / "checkpoints" / "best.pt",
                         [&](const fs::path& tmp) { student.save(tmp.string()); });
        save_model(student, run_dir);
      }
      append_line(dir / "metrics.jsonl", rec.dump());
    }
  }
  result.train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  result.train_images_per_s = images_per_s_sum / static_cast<double>(cfg_.epochs);
  return result;
}

}  // namespace kd
