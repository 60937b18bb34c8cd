#include "kd/detect/run.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/distributed.h"
#include "../data/opencv_image.h"
#include "kd/core/error.h"
#include "kd/distill/run_dir.h"
#include "kd/distill/checkpoint.h"
#include "kd/core/fs.h"
#include "kd/core/progress.h"
#include "kd/data/split.h"
#include "kd/detect/loss.h"
#include "kd/distill/run.h"
#include "kd/distill/trainer.h"
#include "kd/eval/profile.h"
#include "kd/losses/classification.h"
#include "kd/losses/zoo.h"
#include "kd/models/registry.h"

namespace kd {

int64_t detection_input_size(const RunConfig& cfg) {
  if (cfg.data.height > 0) {
    KD_CHECK(cfg.data.width == 0 || cfg.data.width == cfg.data.height,
             "detection inputs are square: data.height {} != data.width {}", cfg.data.height, cfg.data.width);
    return cfg.data.height;
  }
  KD_CHECK(find_architecture(cfg.arch).task == "detect", "architecture {} is not a detector (see kd models)",
           cfg.arch);
  return resolve_arch_options(cfg.arch, parse_arch_options(cfg.arch_options))["image_size"].get<int64_t>();
}

DetectionRunData load_detection_run_data(const DataConfig& cfg, int64_t size) {
  DetectionDataset full = load_detection(cfg.source, "train", size);
  // Images, not boxes, are split: one label per image makes the stratified split a plain
  // seeded shuffle, the same manifest format `kd data split` writes.
  Split split = resolve_split(cfg.split, torch::zeros({full.size()}, torch::kLong), cfg.train_ratio,
                              cfg.split_seed, cfg.source);
  DetectionRunData d;
  d.train = full.subset(split.train);
  d.eval = full.subset(split.eval);
  if (has_detection_part(cfg.source, "test")) {
    d.test = load_detection(cfg.source, "test", size);
    KD_CHECK(d.test.class_names == d.train.class_names, "{}: the test part's categories differ from train's",
             cfg.source);
    d.test_name = "test";
  } else {
    d.test = d.eval;
    d.test_name = "eval";
  }
  if (cfg.limit > 0) {
    auto head = [](const DetectionDataset& x, int64_t n) {
      return x.subset(torch::arange(std::min(n, x.size()), torch::kLong));
    };
    d.train = head(d.train, cfg.limit);
    d.eval = head(d.eval, std::max<int64_t>(1, cfg.limit / 4));
    d.test = head(d.test, std::max<int64_t>(1, cfg.limit / 4));
  }
  KD_CHECK(d.train.size() > 0 && d.eval.size() > 0, "{}: too few images to split", cfg.source);
  // mAP needs boxes to score against; without them every epoch would read -100 and the best
  // epoch would never be chosen. Refused before training.
  auto scored = [](const DetectionDataset& x) {
    return std::count_if(x.ground_truth.begin(), x.ground_truth.end(),
                         [](const GroundTruthBox& g) { return !g.iscrowd && !g.ignore; });
  };
  KD_CHECK(scored(d.eval) > 0, "{}: the eval split's {} images have no boxes to score (none, or only crowd or "
           "difficult ones): mAP cannot pick the best epoch", cfg.source, d.eval.size());
  KD_CHECK(scored(d.test) > 0, "{}: the {} part's {} images have no boxes to score (none, or only crowd or difficult ones)",
           cfg.source, d.test_name, d.test.size());
  return d;
}

namespace {

torch::Tensor anchors_of(const Model& model, int64_t size) {
  KD_CHECK(model.spec().task == "detect", "model {} is not a detector", model.spec().arch);
  return make_anchors(model.spec().options, size, size);
}

}  // namespace

std::vector<DetectionBox> detect_boxes(Model& model, const DetectionDataset& data, int64_t batch_size,
                                       torch::Device device, const PostprocessOptions& opts) {
  torch::InferenceMode guard;
  model.train(false);
  const int64_t size = data.images.size(3);
  auto anchors = anchors_of(model, size);
  const int64_t C = model.spec().num_classes();
  KD_CHECK(C == data.num_classes(), "model {} has {} classes but the data has {}", model.spec().arch, C,
           data.num_classes());
  std::vector<DetectionBox> out;
  for (int64_t start = 0; start < data.size(); start += batch_size) {
    const int64_t n = std::min(batch_size, data.size() - start);
    auto x = data.images.narrow(0, start, n).to(device).to(torch::kFloat).div_(255.0);
    auto y = model.forward(x).to(torch::kCPU);
    for (int64_t i = 0; i < n; ++i) {
      const auto& info = data.info[static_cast<size_t>(start + i)];
      // Boxes are clipped to the letterboxed image, not to the padding.
      auto det = postprocess(y[i], anchors, C, info.width * info.scale, info.height * info.scale, opts);
      auto b = (det.boxes / info.scale).contiguous();
      auto ba = b.accessor<float, 2>();
      auto sa = det.scores.accessor<float, 1>();
      auto ca = det.classes.accessor<int64_t, 1>();
      for (int64_t k = 0; k < b.size(0); ++k)
        out.push_back({info.id, data.category_ids[static_cast<size_t>(ca[k])],
                       {ba[k][0], ba[k][1], ba[k][2] - ba[k][0], ba[k][3] - ba[k][1]}, sa[k]});
    }
  }
  return out;
}

CocoMetrics evaluate_detector(Model& model, const DetectionDataset& data, int64_t batch_size,
                              torch::Device device, const PostprocessOptions& opts) {
  return evaluate_coco(data.ground_truth, detect_boxes(model, data, batch_size, device, opts), data.image_ids(),
                       data.category_ids);
}

namespace {

std::unique_ptr<Model> build_detector(const RunConfig& cfg, const DetectionDataset& train, int64_t size) {
  KD_CHECK(find_architecture(cfg.arch).task == "detect", "architecture {} is not a detector (see kd models)",
           cfg.arch);
  ModelSpec spec;
  spec.arch = cfg.arch;
  spec.options = parse_arch_options(cfg.arch_options);
  spec.options["image_size"] = size;
  spec.input_shape = {3, size, size};
  spec.class_names = train.class_names;
  // Normalization from the training pixels (letterbox padding included: it is what the model sees).
  Dataset pixels;
  pixels.images = train.images;
  spec.norm = compute_normalization(pixels);
  return create_model(spec);
}

// Frozen detector teacher, checked against the student: same classes (by name, in order) and the
// same anchors, since the class and box heads are compared anchor by anchor.
std::shared_ptr<Model> load_detector_teacher(const std::string& path, const Model& student) {
  warn_if_unfinished_run(path, "teacher");
  std::shared_ptr<Model> t = load_model(path);
  const auto& ts = t->spec();
  KD_CHECK(ts.task == "detect", "teacher {} is a {} model; a detector needs a detector teacher", path, ts.task);
  KD_CHECK(ts.class_names == student.spec().class_names, "teacher {} detects [{}] but the data has [{}]", path,
           fmt::join(ts.class_names, ", "), fmt::join(student.spec().class_names, ", "));
  KD_CHECK(ts.options.value("anchor_scale", 0.0) == student.spec().options.value("anchor_scale", -1.0),
           "teacher {} uses anchor_scale {} but the student {}: their anchors must align", path,
           ts.options.value("anchor_scale", 0.0), student.spec().options.value("anchor_scale", -1.0));
  return t;
}

}  // namespace

nlohmann::json execute_detect_run(const RunConfig& cfg, const std::string& run_dir, torch::Device device,
                                  bool resume) {
  const fs::path dir(run_dir);
  const int64_t size = detection_input_size(cfg);
  DetectionRunData data = load_detection_run_data(cfg.data, size);
  int64_t train_boxes = 0;
  for (const auto& b : data.train.boxes) train_boxes += b.size(0);
  spdlog::info("data {}: train {} images ({} boxes) / eval {} / {} {}, {} classes, input {}x{}", cfg.data.source,
               data.train.size(), train_boxes, data.eval.size(), data.test_name, data.test.size(),
               data.train.num_classes(), size, size);
  const int64_t C = data.train.num_classes();

  auto student = build_detector(cfg, data.train, size);
  student->to(device);
  std::shared_ptr<Model> teacher;
  const auto& k = cfg.detect;
  std::vector<torch::nn::Conv2d> adapters;
  std::vector<std::string> levels;
  // The pyramid levels' imitation loss from the registry (fitnet: normalised MSE).
  const LossSpec feature_term = make_loss(k.kd_feature_loss, {{"teacher", "P"}, {"student", "P"}}, "--kd-feature-loss");
  if (cfg.mode == "offline") {
    teacher = load_detector_teacher(cfg.distill.teacher, *student);
    teacher->to(device);
    teacher->train(false);
    if (k.kd_feature > 0) {
      levels = k.kd_levels;
      torch::NoGradGuard no_grad;
      auto probe = torch::zeros({1, 3, size, size}, torch::TensorOptions().device(device));
      student->train(false);
      auto sf = student->forward_with_features(probe, levels).second;
      auto tf = teacher->forward_with_features(probe, levels).second;
      for (size_t l = 0; l < levels.size(); ++l) {
        // A 1x1 conv maps the student's pyramid width to the teacher's (learned with the student).
        torch::nn::Conv2d a(torch::nn::Conv2dOptions(sf[l].size(1), tf[l].size(1), 1));
        a->to(device);
        adapters.push_back(a);
      }
    }
  }
  const auto anchors = make_anchors(student->spec().options, size, size).to(device);
  DetectionLossOptions lo{k.focal_alpha, k.focal_gamma, k.huber_delta, k.box_weight};
  PostprocessOptions po;
  po.score_threshold = k.score_threshold;
  po.iou_threshold = k.nms_iou;

  const auto& tc = cfg.train;
  // Data parallel (kd/core/distributed.h): --batch-size is the global batch, each rank takes its
  // share; rank 0 writes the run directory.
  const int world = dist::world_size();
  KD_CHECK(tc.batch_size % world == 0, "batch size {} does not split evenly over {} ranks", tc.batch_size, world);
  DetectionLoader loader(data.train, tc.batch_size / world, true, {tc.hflip, k.scale_jitter}, cfg.runtime.seed,
                         device, dist::rank(), world);
  auto params = student->parameters();
  for (auto& a : adapters)
    for (auto& p : a->parameters()) params.push_back(p);
  auto optimizer = make_optimizer(tc.optim, params);
  const int64_t iters = loader.num_batches();
  const bool write = dist::is_main();
  if (write) fs::create_directories(dir / "checkpoints");
  const auto buffers = model_buffers(*student);

  std::vector<nlohmann::json> history;
  double best_map = -1, images_per_s_sum = 0;
  int64_t best_epoch = 0, first_epoch = 1;
  std::vector<torch::Tensor> adapter_params;
  for (auto& a : adapters)
    for (auto& p : a->parameters()) adapter_params.push_back(p);
  if (resume) {
    // The same epoch checkpoints as classification runs (kd/distill/checkpoint.h); every rank reads them.
    auto load = [&](const FoundCheckpoint& c) {
      load_training_state(c.folder, *student, *optimizer, adapter_params, device);
    };
    if (auto found = find_checkpoint(dir, load)) {
      first_epoch = found->state.epoch + 1;
      best_map = found->state.best_score;
      best_epoch = found->state.best_epoch;
      history = found->state.history;
      images_per_s_sum = found->state.images_per_s_sum;
      spdlog::info("{}: resuming after epoch {} ({})", run_dir, found->state.epoch, found->folder.filename().string());
    } else {
      spdlog::warn("{}: no usable checkpoint; training from epoch 1", run_dir);
    }
    if (!dist::same_on_all_ranks(first_epoch))
      fail("{}: the ranks found different checkpoints; the run directory must be one folder all ranks share", run_dir);
    std::string lines;
    for (const auto& rec : history) lines += rec.dump() + "\n";
    if (write) write_text_atomically(dir / "metrics.jsonl", lines);
  }
  dist::start_from_main(params, buffers);
  dist::GradientSync sync(params, false);

  const auto run_start = std::chrono::steady_clock::now();
  for (int64_t epoch = first_epoch; epoch <= tc.epochs; ++epoch) {
    student->train(true);
    for (auto& a : adapters) a->train(true);
    loader.start_epoch(epoch);
    double sums[5] = {0, 0, 0, 0, 0};  // total, class, box, kd, positives
    int64_t seen = 0;
    Progress progress(fmt::format("epoch {}/{}", epoch, tc.epochs), iters);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) {
      check_interrupted();
      const double lr = scheduled_lr(tc, (epoch - 1) * iters + i, iters);
      set_lr(*optimizer, lr);
      DetectionBatch b = loader.get(i);
      dist::broadcast(buffers);  // rank 0's BatchNorm statistics, as DDP's broadcast_buffers
      auto targets = assign_anchors(anchors, b.boxes, b.labels, C);
      auto [out, feats] = student->forward_with_features(b.x, levels);
      auto det = detection_loss(out, targets, C, lo);
      torch::Tensor loss = det.total, kd = torch::zeros({}, out.options());
      if (teacher) {
        torch::Tensor t_out;
        std::vector<torch::Tensor> t_feats;
        {
          torch::NoGradGuard no_grad;
          std::tie(t_out, t_feats) = teacher->forward_with_features(b.x, levels);
        }
        auto s_cls = out.narrow(2, 0, C), t_cls = t_out.narrow(2, 0, C);
        if (k.kd_class > 0)
          kd = kd + k.kd_class * class_distill_loss(s_cls, t_cls, cfg.distill.temperature, targets.num_positive);
        if (k.kd_box > 0)
          kd = kd + k.kd_box * k.box_weight * box_distill_loss(out.narrow(2, C, 4), t_out.narrow(2, C, 4), t_cls, k.huber_delta);
        for (size_t l = 0; l < levels.size(); ++l)
          kd = kd + k.kd_feature / static_cast<double>(levels.size()) *
                        loss_term(feature_term, {}, {}, {}, adapters[l]->forward(feats[l]), t_feats[l]);
        loss = loss + kd;
      }
      const double lv = loss.item<double>();
      if (!std::isfinite(lv))
        fail("epoch {} batch {}: loss is {} (learning rate {:.4g}); lower --lr or check the boxes", epoch, i,
             std::isnan(lv) ? "NaN" : "infinite", lr);
      optimizer->zero_grad();
      sync.backward(loss);
      // Detection losses spike on early batches; clip as EfficientDet does (norm 10).
      torch::nn::utils::clip_grad_norm_(params, 10.0);
      optimizer->step();
      const int64_t n = b.x.size(0);
      sums[0] += lv * static_cast<double>(n);
      sums[1] += det.classification.item<double>() * static_cast<double>(n);
      sums[2] += det.box.item<double>() * static_cast<double>(n);
      sums[3] += kd.item<double>() * static_cast<double>(n);
      seen += n;
      progress.update(i + 1, n, sums[0] / static_cast<double>(seen), -1);
    }
    progress.finish();
    const double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dist::active()) {
      auto total = dist::sum({sums[0], sums[1], sums[2], sums[3], static_cast<double>(seen)});
      std::copy(total.begin(), total.begin() + 4, sums);
      seen = static_cast<int64_t>(total[4]);
      dist::broadcast(buffers);
    }
    images_per_s_sum += static_cast<double>(seen) / train_s;
    // Every rank scores the whole eval set (the same weights give the same mAP); no rank waits
    // on another's evaluation.
    CocoMetrics ev = evaluate_detector(*student, data.eval, tc.eval_batch_size, device, po);
    const double ns = static_cast<double>(seen);
    nlohmann::json rec = {{"epoch", epoch},
                          {"lr", scheduled_lr(tc, epoch * iters - 1, iters)},
                          {"train_loss", sums[0] / ns},
                          {"train_class_loss", sums[1] / ns},
                          {"train_box_loss", sums[2] / ns},
                          {"train_kd_loss", sums[3] / ns},
                          {"eval_map", ev.map()},
                          {"eval_map50", ev.map50()},
                          {"train_seconds", train_s},
                          {"train_images_per_s", ns / train_s}};
    history.push_back(rec);
    spdlog::info("epoch {}/{}: loss {:.4f} (class {:.4f} box {:.4f}{}) | eval mAP {:.2f} mAP50 {:.2f} | {:.0f} img/s",
                 epoch, tc.epochs, sums[0] / ns, sums[1] / ns, sums[2] / ns,
                 teacher ? fmt::format(" kd {:.4f}", sums[3] / ns) : "", 100 * ev.map(), 100 * ev.map50(), ns / train_s);
    if (!write) continue;
    const bool best = ev.map() > best_map;
    if (best) {
      best_map = ev.map();
      best_epoch = epoch;
    }
    write_checkpoint(dir, {epoch, best_map, best_epoch, images_per_s_sum, history}, [&](const fs::path& folder) {
      save_training_state(folder, *student, *optimizer, adapter_params);
    });
    if (best) {
      write_atomically(dir / "checkpoints" / "best.pt", [&](const fs::path& tmp) { student->save(tmp.string()); });
      save_model(*student, run_dir);
    }
    append_line(dir / "metrics.jsonl", rec.dump());
  }
  const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  if (!write) return {{"rank", dist::rank()}};

  auto best = load_model(run_dir);
  best->to(device);
  CocoMetrics test = evaluate_detector(*best, data.test, tc.eval_batch_size, device, po);
  nlohmann::json summary = {{"name", cfg.name.empty() ? dir.filename().string() : cfg.name},
                            {"task", "detect"},
                            {"mode", cfg.mode},
                            {"seed", cfg.runtime.seed},
                            {"epochs", tc.epochs},
                            {"train_samples", data.train.size()},
                            {"arch", best->spec().arch},
                            {"options", best->spec().options},
                            {"input_size", size},
                            {"params", best->num_parameters()},
                            {"macs", count_macs(*best, device)},
                            {"best_epoch", best_epoch},
                            {"best_eval_map", best_map},
                            {"ranks", dist::world_size()},
                            {"train_seconds", train_seconds},
                            {"train_images_per_s", images_per_s_sum / static_cast<double>(tc.epochs)},
                            {"test_set", data.test_name},
                            {"test", test.to_json(best->spec().class_names)},
                            {"finished", utc_timestamp()},
                            {"device", device.str()}};
  if (teacher) {
    summary["teacher"] = cfg.distill.teacher;
    summary["teacher_name"] = teacher_name(cfg.distill.teacher);
    // The teacher as the student saw it: at the student's input size.
    summary["teacher_at_student_size"] = evaluate_detector(*teacher, data.test, tc.eval_batch_size, device, po).to_json();
    summary["strategy"] = {{"strategy", "offline"}, {"temperature", cfg.distill.temperature},
                           {"kd_class", k.kd_class}, {"kd_box", k.kd_box}, {"kd_feature", k.kd_feature}, {"kd_feature_loss", format_loss(feature_term)},
                           {"kd_levels", levels}};
  }
  if (cfg.measure_latency) summary["latency"] = measure_latency(*best, device).to_json();
  write_text_atomically(dir / "summary.json", summary.dump(2) + "\n");
  spdlog::info("{}: {} mAP@[.5:.95] {:.2f} mAP@.5 {:.2f} (best epoch {})", run_dir, data.test_name,
               100 * test.map(), 100 * test.map50(), best_epoch);
  return summary;
}

nlohmann::json predict_image(Model& model, const std::string& image, double score_threshold,
                             const std::string& drawn) {
  const int64_t size = model.spec().input_shape.at(1);
  double scale = 1;
  int64_t w = 0, h = 0;
  auto x = letterbox_image(image, size, &scale, &w, &h).unsqueeze(0).to(torch::kFloat).div_(255.0);
  torch::InferenceMode guard;
  model.train(false);
  auto y = model.forward(x.to(model.device())).to(torch::kCPU);
  PostprocessOptions po;
  po.score_threshold = score_threshold;
  auto det = postprocess(y[0], anchors_of(model, size), model.spec().num_classes(), static_cast<double>(w) * scale,
                         static_cast<double>(h) * scale, po);
  auto b = (det.boxes / scale).contiguous();
  nlohmann::json boxes = nlohmann::json::array();
  cv::Mat img = drawn.empty() ? cv::Mat() : read_image_file(image, cv::IMREAD_COLOR);
  const int thick = std::max(1, static_cast<int>(std::lround(std::max(w, h) / 200.0)));
  for (int64_t k = 0; k < b.size(0); ++k) {
    const auto& name = model.spec().class_names[static_cast<size_t>(det.classes[k].item<int64_t>())];
    const float x1 = b[k][0].item<float>(), y1 = b[k][1].item<float>(), x2 = b[k][2].item<float>(), y2 = b[k][3].item<float>();
    const double score = det.scores[k].item<double>();
    boxes.push_back({{"class", name}, {"score", score}, {"bbox", {x1, y1, x2 - x1, y2 - y1}}});
    if (!img.empty()) {
      const auto c = det.classes[k].item<int64_t>();
      const cv::Scalar colour(64 + (c * 97) % 192, 64 + (c * 57) % 192, 64 + (c * 151) % 192);
      cv::rectangle(img, cv::Point(static_cast<int>(x1), static_cast<int>(y1)),
                    cv::Point(static_cast<int>(x2), static_cast<int>(y2)), colour, thick);
      cv::putText(img, fmt::format("{} {:.2f}", name, score), cv::Point(static_cast<int>(x1), std::max(8, static_cast<int>(y1) - 2)),
                  cv::FONT_HERSHEY_SIMPLEX, 0.3 * thick, colour, 1);
    }
  }
  if (!img.empty()) {
    const std::string ext = fs::path(drawn).extension().string();
    write_atomically(drawn, [&](const fs::path& tmp) {
      const std::string t = tmp.string() + (ext.empty() ? ".png" : ext);
      KD_CHECK(cv::imwrite(t, img), "{}: cannot write the image", drawn);
      fs::rename(t, tmp);
    });
  }
  return {{"image", image}, {"width", w}, {"height", h}, {"detections", boxes}};
}

}  // namespace kd
