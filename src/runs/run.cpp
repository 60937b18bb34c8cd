#include "kd/runs/run.h"

#include <algorithm>
#include <optional>

#include <torch/script.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/data/split.h"
#include "kd/models/registry.h"
#include "kd/runs/run_dir.h"

namespace kd {

std::shared_ptr<Model> load_teacher_model(const std::string& run_or_pt) {
  warn_if_unfinished_run(run_or_pt, "teacher");
  return load_model(run_or_pt);
}

void resolve_task(RunConfig& cfg) {
  // A detector architecture makes a detection run without saying so.
  if (!is_torchscript_path(cfg.arch) && find_architecture(cfg.arch).task == Task::detect)
    cfg.task = Task::detect;
  // Photos are trained at an explicit size, recorded in config.yaml: torchvision's 224 crop and
  // 256 -> 224 eval unless the config says otherwise.
  if (cfg.task == Task::classify && is_streamed_source(pooled_sources(cfg.data.source)[0])) {
    if (cfg.data.height == 0) cfg.data.height = cfg.data.width = kDefaultPhotoSize;
    if (cfg.data.resize == 0) cfg.data.resize = default_resize(cfg.data.height);
  }
}

namespace {

// Train and eval from the split of the source's train part; test from its test part when it has
// one (classification and detection alike), else the eval split stands in.
template <typename Parts, typename Data, typename LoadTest>
void fill_parts(Parts& d, const Data& full, const Split& split, bool has_test,
                const LoadTest& load_test) {
  d.train = full.subset(split.train);
  d.eval = full.subset(split.eval);
  if (has_test) {
    d.test = load_test();
    d.test_name = "test";
  } else {
    d.test = d.eval;
    d.test_name = "eval";
  }
}

}  // namespace

RunData load_run_data(const DataConfig& cfg, Mode mode) {
  const ImageOptions img{cfg.channels, cfg.height, cfg.width, cfg.resize};
  // IDX data is resized after the split and the limit: only the images kept are resized.
  const bool resize_later = is_idx_source(cfg.source);
  const ImageOptions load_as = resize_later ? ImageOptions{} : img;
  const StreamOptions stream{{}, cfg.workers, cfg.strict, cfg.max_missing};
  Dataset full = load_dataset(cfg.source, "train", load_as, stream);
  Split split = resolve_split(cfg.split, full.labels, cfg.train_ratio, cfg.split_seed, cfg.source);
  RunData d;
  fill_parts(d, full, split, has_part(cfg.source, "test"),
             [&] { return load_dataset(cfg.source, "test", load_as, stream); });
  if (d.test_name == "test") {
    // The test part must fit what is trained on: found now, not after the last epoch.
    KD_CHECK(d.test.input_shape() == d.train.input_shape(),
             "{}: its test images are {} but its training images {}", cfg.source,
             c10::str(c10::IntArrayRef(d.test.input_shape())),
             c10::str(c10::IntArrayRef(d.train.input_shape())));
    const int64_t test_max = d.test.size() ? d.test.labels.max().item<int64_t>() : -1;
    KD_CHECK(test_max < d.train.num_classes(),
             "{}: its test labels go up to {} but training has {} classes", d.test.source, test_max,
             d.train.num_classes());
    d.test.class_names = d.train.class_names;
  }
  if (cfg.limit > 0) {
    // A stratified slice keeps every class; for smoke tests and quick looks, not for results.
    const double keep =
        std::min(1.0, static_cast<double>(cfg.limit) / static_cast<double>(d.train.size()));
    d.train = d.train.subset(stratified_fraction(d.train.labels, keep, cfg.split_seed).first);
    d.eval = d.eval.head(std::max<int64_t>(1, cfg.limit / 4));
    d.test = d.test.head(std::max<int64_t>(1, cfg.limit / 4));
  }
  if (!cfg.classes.empty()) {
    d.train = select_classes(d.train, cfg.classes, cfg.others);
    d.eval = select_classes(d.eval, cfg.classes, cfg.others);
    d.test = select_classes(d.test, cfg.classes, cfg.others);
  }
  if (resize_later)
    for (Dataset* part : {&d.train, &d.eval, &d.test})
      part->images = resize_images(part->images, img);
  KD_CHECK(d.train.size() > 0, "{}: no training samples", cfg.source);
  KD_CHECK(d.eval.size() > 0,
           "{}: the {:.0f}/{:.0f} split leaves no eval images ({} images over {} classes)",
           cfg.source, 100 * cfg.train_ratio, 100 - 100 * cfg.train_ratio, full.size(),
           full.num_classes());
  if (cfg.labeled_fraction < 1.0) {
    auto [labeled, rest] =
        stratified_fraction(d.train.labels, cfg.labeled_fraction, cfg.split_seed);
    KD_CHECK(labeled.numel() > 0, "labeled fraction {} of {} training images keeps no labels",
             cfg.labeled_fraction, d.train.size());
    d.train = mode == Mode::semi
                  ? concat(d.train.subset(labeled), d.train.subset(rest).without_labels())
                  : d.train.subset(labeled);
  }
  if (!cfg.unlabeled.empty()) d.train = concat(d.train, load_unlabeled(cfg.unlabeled, d.train));
  // Merged teachers teach from images alone.
  if (mode == Mode::merge) d.train = d.train.without_labels();
  return d;
}

int64_t detection_input_size(const RunConfig& cfg) {
  if (cfg.data.height > 0) {
    KD_CHECK(cfg.data.width == 0 || cfg.data.width == cfg.data.height,
             "detection inputs are square: data.height {} != data.width {}", cfg.data.height,
             cfg.data.width);
    return cfg.data.height;
  }
  KD_CHECK(find_architecture(cfg.arch).task == Task::detect,
           "architecture {} is not a detector (see kd models)", cfg.arch);
  return resolve_arch_options(cfg.arch, parse_arch_options(cfg.arch_options))["image_size"]
      .get<int64_t>();
}

DetectionRunData load_detection_run_data(const DataConfig& cfg, int64_t size) {
  const StreamOptions stream{{}, cfg.workers, cfg.strict, cfg.max_missing};
  DetectionDataset full = load_detection(cfg.source, "train", size, stream);
  // Images, not boxes, are split: one label per image makes the stratified split a plain
  // seeded shuffle, the same manifest format `kd data split` writes.
  Split split = resolve_split(cfg.split, torch::zeros({full.size()}, torch::kLong), cfg.train_ratio,
                              cfg.split_seed, cfg.source);
  DetectionRunData d;
  fill_parts(d, full, split, has_detection_part(cfg.source, "test"),
             [&] { return load_detection(cfg.source, "test", size, stream); });
  KD_CHECK(d.test.class_names == d.train.class_names,
           "{}: the test part's categories differ from train's", cfg.source);
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
  KD_CHECK(scored(d.eval) > 0,
           "{}: the eval split's {} images have no boxes to score (none, or only crowd or "
           "difficult ones): mAP cannot pick the best epoch",
           cfg.source, d.eval.size());
  KD_CHECK(
      scored(d.test) > 0,
      "{}: the {} part's {} images have no boxes to score (none, or only crowd or difficult ones)",
      cfg.source, d.test_name, d.test.size());
  return d;
}

nlohmann::json read_summary(const std::string& run_dir) {
  const fs::path p = fs::path(run_dir) / "summary.json";
  if (!fs::exists(p)) {
    if (fs::exists(fs::path(run_dir) / "error.txt")) {
      std::string why = read_text(fs::path(run_dir) / "error.txt");
      fail("{}: run failed: {}", run_dir, first_line(why));
    }
    fail("{}: incomplete run (no summary.json)", run_dir);
  }
  try {
    return nlohmann::json::parse(read_text(p));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", p.string(), e.what());
  }
}

RunConfig read_run_config(const std::string& run_dir) {
  const fs::path p = fs::path(run_dir) / "config.yaml";
  KD_CHECK(fs::exists(p), "{}: no config.yaml (not a kd run directory)", run_dir);
  RunConfig cfg;
  try {
    apply_yaml(cfg, YAML::LoadFile(p.string()), p.string());
  } catch (const YAML::Exception& e) {
    fail("{}: {}", p.string(), e.what());
  }
  return cfg;
}

bool learned_from(const nlohmann::json& run, const std::string& teacher) {
  const std::string t = run.value("teacher", "");
  if (t.empty()) return false;
  // The path as the run was given it; from another folder, or after a move, only its name is left
  // to go by.
  if (!fs::exists(t)) return fs::path(t).filename() == fs::path(teacher).filename();
  std::error_code ec1, ec2;
  const auto a = fs::weakly_canonical(t, ec1), b = fs::weakly_canonical(teacher, ec2);
  return !ec1 && !ec2 && a == b;
}

std::optional<nlohmann::json> torchscript_teacher_summary(const std::string& pt,
                                                          const std::vector<nlohmann::json>& runs) {
  KD_CHECK(fs::is_regular_file(pt), "{}: neither a run directory nor a TorchScript file", pt);
  // Its score is what the runs distilled from it alone measured of its answers on their test
  // images (teacher_targets_top1); ensembles and merges measured their combined targets.
  std::vector<const nlohmann::json*> taught;
  for (const auto& r : runs)
    if (learned_from(r, pt) && !r.contains("teachers") && r.contains("teacher_targets_top1") &&
        r.value("task", Task::classify) == Task::classify)
      taught.push_back(&r);
  if (taught.empty()) return std::nullopt;
  double top1 = 0;
  for (const auto* r : taught) top1 += (*r)["teacher_targets_top1"].get<double>();
  top1 /= static_cast<double>(taught.size());
  int64_t params = 0;
  try {
    for (const auto& p : torch::jit::load(pt, torch::kCPU).parameters()) params += p.numel();
  } catch (const c10::Error& e) {
    fail("{}: not a TorchScript file ({})", pt, first_line(e.what()));
  }
  const nlohmann::json& like = *taught.front();
  nlohmann::json test = {{"top1", top1}};
  for (const char* k : {"samples", "images"})
    if (like["test"].contains(k)) test[k] = like["test"][k];
  // The class names it was tested on (kd compare checks that rows share a test set); its
  // per-class scores are not known.
  if (like["test"].contains("per_class") && like["test"]["per_class"].is_object()) {
    test["per_class"] = nlohmann::json::object();
    for (const auto& [name, v] : like["test"]["per_class"].items())
      test["per_class"][name] = nullptr;
  }
  return nlohmann::json{{"name", teacher_name(pt)},
                        {"task", Task::classify},
                        {"mode", Mode::train},
                        {"arch", "torchscript"},
                        {"seed", 0},
                        {"params", params},
                        {"macs", 0},
                        {"precision", "fp32"},
                        {"test_set", like.value("test_set", "")},
                        {"test", test},
                        {"source", pt},
                        {"measured_by", taught.size()}};
}

nlohmann::json require_torchscript_teacher_summary(const std::string& pt,
                                                   const std::vector<nlohmann::json>& runs) {
  auto s = torchscript_teacher_summary(pt, runs);
  KD_CHECK(s.has_value(),
           "{}: a TorchScript teacher has no results of its own; give it together with a "
           "classifier run distilled from it alone (its test score is recorded there), or "
           "measure it with `kd eval {}`",
           pt, pt);
  return *s;
}

std::string teacher_name(const std::string& teacher) {
  return fs::exists(fs::path(teacher) / "summary.json") ? read_summary(teacher).value("name", "")
                                                        : fs::path(teacher).stem().string();
}

}  // namespace kd
