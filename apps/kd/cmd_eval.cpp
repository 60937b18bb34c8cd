#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/runtime.h"
#include "kd/eval/classify.h"
#include "kd/eval/detection.h"
#include "kd/eval/profile.h"
#include "kd/models/model.h"
#include "kd/runs/run.h"
#include "kd/runs/run_dir.h"
#include "options.h"

namespace kd::cli {
namespace {

struct EvalArgs {
  std::string run;
  std::string gt, results, save_results;
  std::optional<Task> task;  // empty: what the run is
  std::string data;
  std::string part = "test";
  bool latency = false;
  bool json = false;
  RuntimeConfig runtime;
};

void print_report(const ClassificationReport& r, const std::vector<std::string>& names) {
  fmt::print("samples {}  loss {:.4f}  top-1 {:.2f}%  top-5 {:.2f}%\n", r.samples, r.loss,
             100 * r.top1, 100 * r.top5);
  fmt::print("\nper-class accuracy:\n");
  for (size_t c = 0; c < r.per_class.size(); ++c)
    fmt::print("  {:>3} {:<14} {:6.2f}%\n", c, c < names.size() ? names[c] : "",
               100 * r.per_class[c]);
  fmt::print("\nconfusion matrix (rows: true, columns: predicted):\n");
  for (const auto& row : r.confusion) {
    for (int64_t v : row) fmt::print("{:6}", v);
    fmt::print("\n");
  }
}

void print_detection(const CocoMetrics& m, const std::vector<std::string>& names) {
  static const char* rows[12] = {"AP @[IoU=0.50:0.95 | area=   all | maxDets=100]",
                                 "AP @[IoU=0.50      | area=   all | maxDets=100]",
                                 "AP @[IoU=0.75      | area=   all | maxDets=100]",
                                 "AP @[IoU=0.50:0.95 | area= small | maxDets=100]",
                                 "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
                                 "AP @[IoU=0.50:0.95 | area= large | maxDets=100]",
                                 "AR @[IoU=0.50:0.95 | area=   all | maxDets=  1]",
                                 "AR @[IoU=0.50:0.95 | area=   all | maxDets= 10]",
                                 "AR @[IoU=0.50:0.95 | area=   all | maxDets=100]",
                                 "AR @[IoU=0.50:0.95 | area= small | maxDets=100]",
                                 "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
                                 "AR @[IoU=0.50:0.95 | area= large | maxDets=100]"};
  for (int i = 0; i < 12; ++i)
    fmt::print(" {} = {:.3f}\n", rows[i], m.stats[static_cast<size_t>(i)]);
  fmt::print("\nper-class AP@[.5:.95] / AP@.5:\n");
  for (size_t k = 0; k < m.category_ids.size(); ++k)
    fmt::print("  {:>4} {:<16} {:6.2f} {:6.2f}\n", m.category_ids[k],
               k < names.size() ? names[k] : "", 100 * m.per_class_ap[k],
               100 * m.per_class_ap50[k]);
}

// A COCO results file against a COCO ground-truth file: any tool's detections, scored the same way.
void eval_results_file(const EvalArgs& a) {
  DetectionDataset gt = load_coco(a.gt, 0);  // the annotations; the images are not needed
  auto dt = read_coco_results(a.results);
  CocoMetrics m = evaluate_coco(gt.ground_truth, dt, gt.image_ids(), gt.category_ids);
  if (a.json) {
    std::cout << nlohmann::json{{"ground_truth", a.gt},
                                {"results", a.results},
                                {"detections", dt.size()},
                                {"metrics", m.to_json(gt.class_names)}}
                     .dump(2)
              << std::endl;
    return;
  }
  fmt::print("{} against {}: {} images, {} detections\n", a.results, a.gt, gt.size(), dt.size());
  print_detection(m, gt.class_names);
}

void eval_detector(const EvalArgs& a, Model& model, torch::Device device) {
  RunConfig cfg = fs::is_directory(a.run) ? read_run_config(a.run) : RunConfig{};
  if (!a.data.empty()) cfg.data.source = a.data;
  cfg.data.limit = 0;
  const int64_t size = model.spec().input_shape.at(1);
  DetectionRunData d = load_detection_run_data(cfg.data, size);
  const DetectionDataset& set = a.part == "eval" ? d.eval : d.test;
  PostprocessOptions po;
  po.score_threshold = cfg.detect.score_threshold;
  po.iou_threshold = cfg.detect.nms_iou;
  auto dt = detect_boxes(model, set, 64, device, po);
  CocoMetrics m = evaluate_coco(set.ground_truth, dt, set.image_ids(), set.category_ids);
  if (!a.save_results.empty())
    write_text_atomically(a.save_results, to_coco_results(dt).dump() + "\n");
  nlohmann::json out = {{"run", a.run},
                        {"data", cfg.data.source},
                        {"part", a.part == "eval" ? "eval" : d.test_name},
                        {"params", model.num_parameters()},
                        {"macs", count_macs(model, device)},
                        {"metrics", m.to_json(model.spec().class_names)}};
  if (a.latency) out["latency"] = measure_latency(model, device).to_json();
  if (a.json) {
    std::cout << out.dump(2) << std::endl;
    return;
  }
  fmt::print("{} on {} ({}, {} images): params {}  MACs {}\n", a.run, cfg.data.source,
             out["part"].get<std::string>(), set.size(), out["params"].get<int64_t>(),
             out["macs"].get<int64_t>());
  print_detection(m, model.spec().class_names);
  if (a.latency)
    fmt::print(
        "\nlatency batch 1: median {:.3f} ms  p95 {:.3f} ms; throughput batch 256: {:.0f} img/s\n",
        out["latency"]["batch1_median_ms"].get<double>(),
        out["latency"]["batch1_p95_ms"].get<double>(),
        out["latency"]["throughput_per_s"].get<double>());
}

void run(const EvalArgs& a) {
  if (!a.gt.empty() || !a.results.empty()) {
    if (a.gt.empty() || a.results.empty()) usage_fail("--gt and --results go together");
    if (a.task == Task::classify) usage_fail("--gt and --results score detections (--task detect)");
    return eval_results_file(a);
  }
  if (a.run.empty()) usage_fail("give a run directory (or --gt FILE --results FILE)");
  if (!a.save_results.empty())
    check_output_file(a.save_results, "--save-results", {{"model", a.run}, {"data", a.data}});
  torch::Device device = init_runtime(
      {a.runtime.device, a.runtime.threads, a.runtime.seed, false, a.runtime.precision});
  auto model = load_model(a.run);
  model->to(device);
  if (a.task && *a.task != model->spec().task)
    usage_fail("--task {}: {} is a {} model", *a.task, a.run,
               model->spec().task == Task::detect ? "detection" : "classification");
  // A run directory knows its data; a TorchScript file does not.
  if (!fs::is_directory(a.run) && a.data.empty())
    usage_fail(
        "{} is a model file with no run configuration to take its data from: give --data "
        "SOURCE ({})",
        a.run,
        model->spec().task == Task::detect
            ? "a COCO JSON, a folder with train.json/test.json, or a VOC folder"
            : "fashion-mnist, an IDX folder or an image folder");
  if (model->spec().task == Task::detect) return eval_detector(a, *model, device);
  if (!a.save_results.empty()) usage_fail("--save-results is for detectors");
  model->to(device);
  DataConfig data;
  if (!a.data.empty()) {
    data.source = a.data;
  } else {
    data = read_run_config(a.run).data;
    data.limit = 0;
    data.labeled_fraction = 1.0;  // labels and unlabeled extras only matter for training
    data.unlabeled.clear();
  }
  if (model->spec().input_shape.size() == 3) {
    data.channels = static_cast<int>(model->spec().input_shape[0]);
    data.height = static_cast<int>(model->spec().input_shape[1]);
    data.width = static_cast<int>(model->spec().input_shape[2]);
  }
  RunData d = load_run_data(data);
  Dataset set = a.part == "eval" ? d.eval : d.test;
  // Another dataset's classes are matched to the model's by name (a 20-class student of clothes
  // and digits scored on the digits alone).
  const auto& classes = model->spec().class_names;
  if (!a.data.empty() && !classes.empty() && set.class_names != classes) {
    try {
      set = relabel_as(set, classes);
    } catch (const Error& e) {
      fail("--data {}: {} (the model's classes)", a.data, first_line(e.what()));
    }
  }
  ClassificationReport r = evaluate_classifier(*model, set, 1000, device);
  nlohmann::json out = {{"run", a.run},
                        {"data", data.source},
                        {"part", a.part == "eval" ? "eval" : d.test_name},
                        {"params", model->num_parameters()},
                        {"macs", count_macs(*model, device)},
                        {"metrics", r.to_json(model->spec().class_names)}};
  if (a.latency) out["latency"] = measure_latency(*model, device).to_json();
  if (a.json) {
    std::cout << out.dump(2) << std::endl;
    return;
  }
  fmt::print("{} on {} ({}): params {}  MACs {}\n", a.run, data.source,
             out["part"].get<std::string>(), out["params"].get<int64_t>(),
             out["macs"].get<int64_t>());
  print_report(r, model->spec().class_names);
  if (a.latency)
    fmt::print(
        "\nlatency batch 1: median {:.3f} ms  p95 {:.3f} ms; throughput batch 256: {:.0f} img/s\n",
        out["latency"]["batch1_median_ms"].get<double>(),
        out["latency"]["batch1_p95_ms"].get<double>(),
        out["latency"]["throughput_per_s"].get<double>());
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* c = app.add_subcommand("eval", "evaluate a run (or a TorchScript .pt) on its test data");
  c->footer(
      "Examples: kd eval runs/distilled --latency\n"
      "          kd eval runs/det-d0 --save-results d0.json\n"
      "          kd eval --gt data/det/test.json --results d0.json");
  c->add_option("run", a->run, "run directory or TorchScript .pt");
  c->add_option_function<std::string>(
       "--task", [a](const std::string& s) { a->task = parse_kind<Task>(s, ""); },
       "classify or detect (default: what the run is)")
      ->check(CLI::IsMember({"classify", "detect"}));
  c->add_option("--gt", a->gt, "detection: a COCO ground-truth JSON to score --results against");
  c->add_option("--results", a->results,
                "detection: a COCO results JSON (image_id, category_id, bbox, score)");
  c->add_option("--save-results", a->save_results,
                "detection: write the run's detections as a COCO results JSON");
  c->add_option("--data", a->data, "data to evaluate on (default: the run's own data source)");
  c->add_option("--part", a->part, "test (the source's test set) or eval (the held-out split)")
      ->check(CLI::IsMember({"test", "eval"}))
      ->capture_default_str();
  c->add_flag("--latency", a->latency, "also measure batch-1 latency and batch-256 throughput");
  c->add_flag("--json", a->json, "print the report as JSON");
  add_runtime_options(*c, a->runtime);
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
