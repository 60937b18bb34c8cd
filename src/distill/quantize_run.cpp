#include "kd/distill/quantize_run.h"

#include <set>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/eval/classify.h"
#include "kd/eval/detection.h"
#include "kd/eval/profile.h"
#include "kd/runs/run.h"
#include "kd/runs/run_dir.h"
#include "summary.h"

namespace kd {

namespace {

// n training images in a seeded order, as calibration batches of 64 (uint8 -> [0, 1]).
std::function<bool(torch::Tensor&)> calibration_batches(torch::Tensor images, int64_t n,
                                                        uint64_t seed) {
  n = std::min<int64_t>(n, images.size(0));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto order = torch::randperm(images.size(0), gen, torch::kLong).narrow(0, 0, n);
  auto picked = images.index_select(0, order);
  return [picked, at = int64_t{0}](torch::Tensor& x) mutable {
    if (at >= picked.size(0)) return false;
    const int64_t b = std::min<int64_t>(64, picked.size(0) - at);
    x = picked.narrow(0, at, b).to(torch::kFloat).div(255.0);
    at += b;
    return true;
  };
}

}  // namespace

nlohmann::json quantize_run(const QuantizeRunOptions& o) {
  KD_CHECK(o.calibration >= 1, "--calibration must be at least 1 image (got {})", o.calibration);
  const nlohmann::json source_summary = read_summary(o.source);  // complete runs only
  RunConfig cfg = read_run_config(o.source);
  const fs::path source_dir = fs::path(o.source).lexically_normal();
  const fs::path out = o.out.empty() ? fs::path(source_dir.string() + "-int8") : fs::path(o.out);
  KD_CHECK(!fs::exists(out), "{} already exists: give another --out (nothing is replaced)",
           out.string());
  check_output_location(out, {{"source run", o.source}, {"data", cfg.data.source}});
  const fs::path tmp = out.string() + ".partial";
  // Left by an earlier attempt that failed: replaced only if it holds nothing but what kd writes.
  if (fs::exists(tmp)) {
    KD_CHECK(fs::is_directory(tmp), "{} exists and is not a folder kd quantize left: move it away",
             tmp.string());
    static const std::set<std::string> kOurs = {"config.yaml", "model.json", "model.pt",
                                                "summary.json"};
    for (const auto& e : fs::directory_iterator(tmp))
      KD_CHECK(kOurs.count(e.path().filename().string()),
               "{} holds '{}', which kd quantize did not write: move it away first", tmp.string(),
               e.path().filename().string());
    fs::remove_all(tmp);
  }
  auto model = load_model(o.source);
  KD_CHECK(model->spec().precision == "fp32", "{} is already {}", o.source,
           model->spec().precision);
  const bool detector = model->spec().task == Task::detect;

  // The data as the source run split it: calibration from its training part, metrics on its test
  // part.
  RunData cls;
  DetectionRunData det;
  if (detector)
    det = load_detection_run_data(cfg.data, model->spec().input_shape.at(1));
  else
    cls = load_run_data(cfg.data);
  // Streamed images: only the calibration images are decoded, in the seeded order.
  const Dataset& train = detector ? det.train.images : cls.train;
  const int64_t n = std::min<int64_t>(o.calibration, train.size());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  auto order = torch::randperm(train.size(), gen, torch::kLong).narrow(0, 0, n);
  torch::Tensor train_images =
      train.streamed() ? materialize(train.subset(order)).images : train.images;
  QuantizedOps ops;
  auto q = quantize_int8(*model, calibration_batches(train_images, o.calibration, o.seed), o.quant,
                         &ops);

  // Written into a temporary sibling and renamed at the end: OUT is complete or absent.
  fs::create_directories(out.parent_path().empty() ? fs::path(".") : out.parent_path());
  fs::create_directories(tmp);
  cfg.out = out.string();
  // Seeds of one stage share a name ("distilled"), so that compare groups them: "distilled-int8".
  cfg.name = source_summary.value("name", source_dir.filename().string()) + "-int8";
  write_text_atomically(tmp / "config.yaml", to_yaml(cfg));
  save_model(*q, tmp.string());
  auto best = load_model(tmp.string());  // the files as a user will load them
  const torch::Device cpu(torch::kCPU);
  nlohmann::json s = {{"name", cfg.name},
                      {"task", model->spec().task},
                      {"mode", cfg.mode},
                      {"seed", cfg.runtime.seed},
                      {"epochs", source_summary.value("epochs", 0)},
                      {"arch", best->spec().arch},
                      {"options", best->spec().options},
                      {"params", best->num_parameters()},
                      {"macs", source_summary.value("macs", 0)},
                      {"precision", "int8"},
                      {"quantization", best->spec().quantization},
                      {"source", o.source},
                      {"source_test", source_summary.value("test", nlohmann::json())},
                      {"model_bytes", fs::file_size(tmp / "model.pt")},
                      {"source_model_bytes", fs::file_size(source_dir / "model.pt")},
                      {"finished", utc_timestamp()},
                      {"device", "cpu"}};
  for (const char* key : {"teacher", "teacher_name", "teachers", "strategy"})
    if (source_summary.contains(key)) s[key] = source_summary[key];
  s["ops"] = ops_summary(ops);
  if (detector) {
    PostprocessOptions po;
    po.score_threshold = cfg.detect.score_threshold;
    po.iou_threshold = cfg.detect.nms_iou;
    s["test_set"] = det.test_name;
    s["test"] = evaluate_detector(*best, det.test, cfg.train.eval_batch_size, cpu, po)
                    .to_json(best->spec().class_names);
    s["test"]["images"] = det.test.size();
  } else {
    s["test_set"] = cls.test_name;
    s["test"] = evaluate_classifier(*best, cls.test, cfg.train.eval_batch_size, cpu)
                    .to_json(best->spec().class_names);
  }
  if (o.measure_latency) {
    s["latency"] = measure_latency(*best, cpu).to_json();
    s["source_latency"] = measure_latency(*model, cpu).to_json();
  }
  write_text_atomically(tmp / "summary.json", s.dump(2) + "\n");
  fs::rename(tmp, out);
  return s;
}

}  // namespace kd
