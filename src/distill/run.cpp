#include "kd/distill/run.h"

#include <chrono>
#include <ctime>

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/runtime.h"
#include "kd/data/split.h"
#include "kd/distill/trainer.h"
#include "kd/eval/classify.h"
#include "kd/eval/profile.h"
#include "kd/models/registry.h"

namespace kd {
namespace {

std::string now_iso8601() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

bool is_torchscript_path(const std::string& arch) {
  return arch.size() > 3 && (arch.rfind(".pt") == arch.size() - 3 ||
                             arch.rfind(".pth") == arch.size() - 4) && fs::is_regular_file(arch);
}

std::unique_ptr<Model> build_student(const RunConfig& cfg, const Dataset& train) {
  ModelSpec spec;
  spec.input_shape = {train.images.size(1), train.images.size(2), train.images.size(3)};
  spec.class_names = train.class_names;
  spec.norm = compute_normalization(train);
  if (is_torchscript_path(cfg.arch)) {
    // A TorchScript student is trained here, on this data: the data defines its classes and
    // normalization, whatever a sidecar says.
    spec.kind = "torchscript";
    spec.arch = cfg.arch;
    return create_model(spec);
  }
  spec.kind = "native";
  spec.arch = cfg.arch;
  spec.options = parse_arch_options(cfg.arch_options);
  return create_model(spec);
}

void check_teacher(Model& teacher, const Dataset& train, const std::string& where) {
  const auto& ts = teacher.spec();
  if (!ts.class_names.empty())
    KD_CHECK(ts.num_classes() == train.num_classes(),
             "teacher {} knows {} classes but the data {} has {}", where, ts.num_classes(),
             train.source, train.num_classes());
  if (ts.input_shape.size() == 3)
    KD_CHECK(ts.input_shape[0] == train.images.size(1) && ts.input_shape[1] == train.images.size(2) &&
                 ts.input_shape[2] == train.images.size(3),
             "teacher {} expects input {} but the data is {}", where, c10::str(ts.input_shape),
             c10::str(train.images.sizes().slice(1)));
}

}  // namespace

RunData load_run_data(const DataConfig& cfg) {
  ImageOptions img{cfg.channels, cfg.height, cfg.width};
  Dataset full = load_dataset(cfg.source, "train", img);
  Split split = cfg.split.empty() ? make_split(full.labels, cfg.train_ratio, cfg.split_seed, cfg.source)
                                  : load_split(cfg.split);
  KD_CHECK(split.num_samples == full.size(), "{}: made for {} samples but {} has {}", cfg.split,
           split.num_samples, cfg.source, full.size());
  RunData d;
  d.train = full.subset(split.train);
  d.eval = full.subset(split.eval);
  if (has_part(cfg.source, "test")) {
    d.test = load_dataset(cfg.source, "test", img);
    d.test_name = "test";
  } else {
    d.test = d.eval;
    d.test_name = "eval";
  }
  if (cfg.limit > 0) {
    // A stratified slice keeps every class; for smoke tests and quick looks, not for results.
    const double keep = std::min(1.0, static_cast<double>(cfg.limit) / static_cast<double>(d.train.size()));
    d.train = d.train.subset(stratified_fraction(d.train.labels, keep, cfg.split_seed).first);
    d.eval = d.eval.head(std::max<int64_t>(1, cfg.limit / 4));
    d.test = d.test.head(std::max<int64_t>(1, cfg.limit / 4));
  }
  KD_CHECK(d.train.size() > 0, "{}: no training samples", cfg.source);
  return d;
}

nlohmann::json execute_run(const RunConfig& cfg, bool overwrite) {
  validate(cfg);
  const fs::path dir(cfg.out);
  if (fs::exists(dir) && !fs::is_empty(dir)) {
    if (!overwrite) usage_fail("{}: run directory exists (pass --force to replace it)", cfg.out);
    fs::remove_all(dir);
  }
  torch::Device device = init_runtime(
      {cfg.runtime.device, cfg.runtime.threads, cfg.runtime.seed, cfg.runtime.deterministic});
  fs::create_directories(dir);
  write_text_atomically(dir / "config.yaml", to_yaml(cfg));
  spdlog::info("run {} ({}), {}", cfg.out, cfg.mode, runtime_summary());
  try {
    RunData data = load_run_data(cfg.data);
    spdlog::info("data {}: train {} / eval {} / {} {}, {} classes", cfg.data.source, data.train.size(),
                 data.eval.size(), data.test_name, data.test.size(), data.train.num_classes());
    auto student = build_student(cfg, data.train);
    std::unique_ptr<Strategy> strategy;
    std::shared_ptr<Model> teacher;
    if (cfg.mode == "offline") {
      teacher = load_model(cfg.distill.teacher);
      check_teacher(*teacher, data.train, cfg.distill.teacher);
      OfflineDistillOptions o;
      o.loss = {cfg.distill.temperature, cfg.distill.alpha, cfg.train.label_smoothing};
      o.use_cache = cfg.distill.teacher_cache;
      o.cache_dir = cfg.distill.cache_dir;
      o.teacher_batch_size = cfg.train.eval_batch_size;
      strategy = std::make_unique<OfflineDistillStrategy>(teacher, o);
    } else {
      strategy = std::make_unique<SupervisedStrategy>(cfg.train.label_smoothing);
    }
    Trainer trainer(cfg.train, device, cfg.runtime.seed);
    TrainResult tr = trainer.fit(*student, *strategy, data.train, data.eval, cfg.out);

    auto best = load_model(cfg.out);
    best->to(device);
    ClassificationReport test = evaluate_classifier(*best, data.test, cfg.train.eval_batch_size, device);
    nlohmann::json summary = {
        {"name", cfg.name.empty() ? dir.filename().string() : cfg.name},
        {"task", "classify"},
        {"mode", cfg.mode},
        {"arch", best->spec().arch},
        {"options", best->spec().options},
        {"seed", cfg.runtime.seed},
        {"params", best->num_parameters()},
        {"macs", count_macs(*best, device)},
        {"best_epoch", tr.best_epoch},
        {"best_eval_top1", tr.best_eval_top1},
        {"epochs", cfg.train.epochs},
        {"train_seconds", tr.train_seconds},
        {"train_images_per_s", tr.train_images_per_s},
        {"test_set", data.test_name},
        {"test", test.to_json(best->spec().class_names)},
        {"strategy", strategy->describe()},
        {"finished", now_iso8601()},
        {"device", device.str()},
    };
    if (teacher) {
      summary["teacher"] = cfg.distill.teacher;
      summary["teacher_name"] = fs::exists(fs::path(cfg.distill.teacher) / "summary.json")
                                    ? read_summary(cfg.distill.teacher).value("name", "")
                                    : fs::path(cfg.distill.teacher).stem().string();
    }
    if (cfg.measure_latency) summary["latency"] = measure_latency(*best, device).to_json();
    write_text_atomically(dir / "summary.json", summary.dump(2) + "\n");
    spdlog::info("{}: {} top-1 {:.2f}% top-5 {:.2f}% (best epoch {})", cfg.out, data.test_name,
                 100 * test.top1, 100 * test.top5, tr.best_epoch);
    return summary;
  } catch (const std::exception& e) {
    // Leave the run visibly failed: no summary.json, and the reason beside the config.
    write_text_atomically(dir / "error.txt", std::string(e.what()) + "\n");
    throw;
  }
}

nlohmann::json read_summary(const std::string& run_dir) {
  const fs::path p = fs::path(run_dir) / "summary.json";
  if (!fs::exists(p)) {
    if (fs::exists(fs::path(run_dir) / "error.txt"))
    {
      std::string why = read_text(fs::path(run_dir) / "error.txt");
      fail("{}: run failed: {}", run_dir, why.substr(0, why.find('\n')));
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

}  // namespace kd
