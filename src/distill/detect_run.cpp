#include "detect_run.h"

#include <algorithm>
#include <cmath>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/distributed.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/detect/loss.h"
#include "kd/distill/trainer.h"
#include "kd/eval/detection.h"
#include "kd/eval/profile.h"
#include "kd/losses/classification.h"
#include "kd/losses/zoo.h"
#include "kd/models/registry.h"
#include "kd/runs/run.h"
#include "kd/runs/run_dir.h"
#include "qat.h"
#include "summary.h"

namespace kd {

namespace {

std::unique_ptr<Model> build_detector(const RunConfig& cfg, const DetectionDataset& train,
                                      int64_t size) {
  KD_CHECK(find_architecture(cfg.arch).task == Task::detect,
           "architecture {} is not a detector (see kd models)", cfg.arch);
  ModelSpec spec;
  spec.arch = cfg.arch;
  spec.options = parse_arch_options(cfg.arch_options);
  spec.options["image_size"] = size;
  spec.input_shape = {3, size, size};
  spec.class_names = train.class_names;
  // Normalization from the training pixels (letterbox padding included: it is what the model sees).
  spec.norm = compute_normalization(train.images);
  return create_model(spec);
}

// Frozen detector teacher, checked against the student: same classes (by name, in order) and the
// same anchors, since the class and box heads are compared anchor by anchor.
std::shared_ptr<Model> load_detector_teacher(const std::string& path, const Model& student) {
  std::shared_ptr<Model> t = load_teacher_model(path);
  const auto& ts = t->spec();
  KD_CHECK(ts.task == Task::detect, "teacher {} is a {} model; a detector needs a detector teacher",
           path, ts.task);
  KD_CHECK(ts.class_names == student.spec().class_names,
           "teacher {} detects [{}] but the data has [{}]", path, fmt::join(ts.class_names, ", "),
           fmt::join(student.spec().class_names, ", "));
  KD_CHECK(
      ts.options.value("anchor_scale", 0.0) == student.spec().options.value("anchor_scale", -1.0),
      "teacher {} uses anchor_scale {} but the student {}: their anchors must align", path,
      ts.options.value("anchor_scale", 0.0), student.spec().options.value("anchor_scale", -1.0));
  return t;
}

}  // namespace

DetectionTask::DetectionTask(const RunConfig& cfg, torch::Device device, Model& student,
                             std::shared_ptr<Model> teacher, const DetectionDataset& train,
                             const DetectionDataset& eval)
    : cfg_(cfg),
      device_(device),
      student_(student),
      teacher_(std::move(teacher)),
      eval_(eval),
      classes_(train.num_classes()),
      // The pyramid levels' imitation loss from the registry (fitnet: normalised MSE).
      feature_term_(make_loss(cfg.detect.kd_feature_loss, {{"teacher", "P"}, {"student", "P"}},
                              "--kd-feature-loss")),
      loss_options_{cfg.detect.focal_alpha, cfg.detect.focal_gamma, cfg.detect.huber_delta,
                    cfg.detect.box_weight},
      loader_(train, rank_batch_size(cfg.train), true, {cfg.train.hflip, cfg.detect.scale_jitter},
              cfg.runtime.seed, device, dist::rank(), dist::world_size()) {
  const auto& k = cfg.detect;
  const int64_t size = train.image_size();
  student_.to(device_);
  if (teacher_) {
    teacher_->to(device_);
    teacher_->train(false);
    if (k.kd_feature > 0) {
      levels_ = k.kd_levels;
      torch::NoGradGuard no_grad;
      auto probe = torch::zeros({1, 3, size, size}, torch::TensorOptions().device(device_));
      student_.train(false);
      auto sf = student_.forward_with_features(probe, levels_).second;
      auto tf = teacher_->forward_with_features(probe, levels_).second;
      for (size_t l = 0; l < levels_.size(); ++l) {
        // A 1x1 conv maps the student's pyramid width to the teacher's (learned with the student).
        torch::nn::Conv2d a(torch::nn::Conv2dOptions(sf[l].size(1), tf[l].size(1), 1));
        a->to(device_);
        adapters_.push_back(a);
      }
    }
  }
  anchors_ = make_anchors(student_.spec().options, size, size).to(device_);
  post_.score_threshold = k.score_threshold;
  post_.iou_threshold = k.nms_iou;
}

std::vector<torch::Tensor> DetectionTask::extra_parameters() {
  std::vector<torch::Tensor> out;
  for (auto& a : adapters_)
    for (auto& p : a->parameters()) out.push_back(p);
  return out;
}

void DetectionTask::begin_epoch(int64_t epoch) {
  student_.train(true);
  for (auto& a : adapters_) a->train(true);
  loader_.start_epoch(epoch);
}

TaskStep DetectionTask::step(int64_t i) {
  const auto& k = cfg_.detect;
  const int64_t C = classes_;
  DetectionBatch b = loader_.get(i);
  auto targets = assign_anchors(anchors_, b.boxes, b.labels, C);
  auto [out, feats] = student_.forward_with_features(b.x, levels_);
  auto det = detection_loss(out, targets, C, loss_options_);
  torch::Tensor loss = det.total, kd = torch::zeros({}, out.options());
  if (teacher_) {
    torch::Tensor t_out;
    std::vector<torch::Tensor> t_feats;
    {
      torch::NoGradGuard no_grad;
      std::tie(t_out, t_feats) = teacher_->forward_with_features(b.x, levels_);
    }
    auto s_cls = out.narrow(2, 0, C), t_cls = t_out.narrow(2, 0, C);
    if (k.kd_class > 0)
      kd = kd + k.kd_class * class_distill_loss(s_cls, t_cls, cfg_.distill.temperature,
                                                targets.num_positive);
    if (k.kd_box > 0)
      kd = kd +
           k.kd_box * k.box_weight *
               box_distill_loss(out.narrow(2, C, 4), t_out.narrow(2, C, 4), t_cls, k.huber_delta);
    for (size_t l = 0; l < levels_.size(); ++l)
      kd = kd +
           k.kd_feature / static_cast<double>(levels_.size()) *
               loss_term(feature_term_, {}, {}, {}, adapters_[l]->forward(feats[l]), t_feats[l]);
    loss = loss + kd;
  }
  const int64_t n = b.x.size(0);
  const double nd = static_cast<double>(n);
  return {loss,
          n,
          {det.classification.item<double>() * nd, det.box.item<double>() * nd,
           kd.item<double>() * nd}};
}

std::string DetectionTask::describe_training(double mean_loss, const std::vector<double>& sums,
                                             double samples, nlohmann::json& record) const {
  record["train_class_loss"] = sums[0] / samples;
  record["train_box_loss"] = sums[1] / samples;
  record["train_kd_loss"] = sums[2] / samples;
  return fmt::format("loss {:.4f} (class {:.4f} box {:.4f}{})", mean_loss, sums[0] / samples,
                     sums[1] / samples,
                     teacher_ ? fmt::format(" kd {:.4f}", sums[2] / samples) : "");
}

TaskScore DetectionTask::evaluate() {
  // Every rank scores the whole eval set (the same weights give the same mAP); no rank waits on
  // another's evaluation.
  CocoMetrics ev = evaluate_detector(student_, eval_, cfg_.train.eval_batch_size, device_, post_);
  return {ev.map(),
          {{"eval_map", ev.map()}, {"eval_map50", ev.map50()}},
          fmt::format("eval mAP {:.2f} mAP50 {:.2f}", 100 * ev.map(), 100 * ev.map50())};
}

nlohmann::json execute_detect_run(const RunConfig& cfg, const std::string& run_dir,
                                  torch::Device device, bool resume) {
  const int64_t size = detection_input_size(cfg);
  DetectionRunData data = load_detection_run_data(cfg.data, size);
  int64_t train_boxes = 0;
  for (const auto& b : data.train.boxes) train_boxes += b.size(0);
  spdlog::info("data {}: train {} images ({} boxes) / eval {} / {} {}, {} classes, input {}x{}",
               cfg.data.source, data.train.size(), train_boxes, data.eval.size(), data.test_name,
               data.test.size(), data.train.num_classes(), size, size);

  auto student = build_detector(cfg, data.train, size);
  check_quantizable(cfg, *student);
  student->to(device);
  std::shared_ptr<Model> teacher;
  if (cfg.mode == Mode::offline) teacher = load_detector_teacher(cfg.distill.teacher, *student);
  DetectionTask task(cfg, device, *student, teacher, data.train, data.eval);
  Trainer trainer(cfg.train, device, cfg.runtime.seed);
  trainer.set_resume(resume);
  const TrainResult tr = trainer.fit(task, run_dir);
  if (!dist::is_main()) return {{"rank", dist::rank()}};

  const auto& po = task.postprocess_options();
  nlohmann::json summary;
  std::unique_ptr<Model> best;
  if (cfg.qat.precision.empty()) {
    best = load_model(run_dir);
  } else {
    // The quantization-aware epochs train the traced graph, which has no named pyramid levels:
    // the class and box terms of the teacher stay, the feature term is left out.
    RunConfig qc = cfg;
    qc.detect.kd_feature = 0;
    if (teacher && cfg.detect.kd_feature > 0)
      spdlog::info("--qat: the quantization-aware epochs distill the class and box heads only");
    best = train_quantization_aware(
        qc, resume,
        [&](Model& fp32) {
          fp32.to(device);
          return evaluate_detector(fp32, data.test, cfg.train.eval_batch_size, device, po)
              .to_json();
        },
        [&](Model& m) {
          m.to(torch::kCPU);
          return evaluate_detector(m, data.eval, cfg.train.eval_batch_size, torch::kCPU, po)
              .stats[0];
        },
        [&](Model& qat, const TrainConfig& q, uint64_t seed, const std::string& dir) {
          RunConfig phase = qc;
          phase.train = q;
          DetectionTask t(phase, device, qat, teacher, data.train, data.eval);
          Trainer trainer(q, device, seed);
          trainer.set_resume(resume);
          return trainer.fit(t, dir).train_seconds;
        },
        summary);
  }
  best->to(device);
  CocoMetrics test = evaluate_detector(*best, data.test, cfg.train.eval_batch_size, device, po);
  summary.update(run_summary(cfg, "detect", *best, tr, task.score_name(), device));
  summary.update({{"train_samples", data.train.size()},
                  {"input_size", size},
                  {"test_set", data.test_name},
                  {"test", test.to_json(best->spec().class_names)}});
  summary["test"]["images"] = data.test.size();
  if (teacher) {
    const auto& k = cfg.detect;
    // The teacher as the student saw it: at the student's input size.
    summary["teacher_at_student_size"] =
        evaluate_detector(*teacher, data.test, cfg.train.eval_batch_size, device, po).to_json();
    summary["strategy"] = {
        {"strategy", "offline"},      {"temperature", cfg.distill.temperature},
        {"kd_class", k.kd_class},     {"kd_box", k.kd_box},
        {"kd_feature", k.kd_feature}, {"kd_feature_loss", format_loss(task.feature_term())},
        {"kd_levels", task.levels()}};
  }
  write_summary(cfg, summary, *best, device);
  spdlog::info("{}: {} mAP@[.5:.95] {:.2f} mAP@.5 {:.2f} (best epoch {})", run_dir, data.test_name,
               100 * test.map(), 100 * test.map50(), tr.best_epoch);
  return summary;
}

}  // namespace kd
