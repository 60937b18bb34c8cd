#include "kd/distill/run.h"

#include <chrono>
#include <ctime>
#include <optional>
#include <set>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "detect_run.h"
#include "kd/core/distributed.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/json.h"
#include "kd/core/runtime.h"
#include "kd/data/split.h"
#include "kd/distill/trainer.h"
#include "kd/eval/classify.h"
#include "kd/eval/profile.h"
#include "kd/models/quantize.h"
#include "kd/models/registry.h"
#include "kd/models/weights.h"
#include "kd/runs/run.h"
#include "kd/runs/run_dir.h"
#include "qat.h"
#include "summary.h"

namespace kd {
namespace {

std::unique_ptr<Model> make_student(const RunConfig& cfg, const Dataset& train);

// One forward pass over two training images before the first epoch: an architecture that cannot
// take this data (a 1x1 image, width=0) fails now, in one line naming both.
void probe_student(Model& m, const RunConfig& cfg, const Dataset& train) {
  try {
    torch::NoGradGuard no_grad;
    m.train(false);
    auto x = first_pixels(train, 2).to(torch::kFloat32).div(255.0);
    auto y = m.forward(x);
    KD_CHECK(y.dim() == 2 && y.size(0) == x.size(0) && y.size(1) == train.num_classes(),
             "it returns {} for {} images of {} classes", c10::str(y.sizes()), x.size(0),
             train.num_classes());
  } catch (const std::exception& e) {
    std::string why = e.what();
    if (const auto* c = dynamic_cast<const c10::Error*>(&e)) why = c->what_without_backtrace();
    fail("model {} cannot take the data's {} images: {}", cfg.arch,
         c10::str(c10::IntArrayRef(train.input_shape())), first_line(why));
  }
}

std::unique_ptr<Model> build_student(const RunConfig& cfg, const Dataset& train) {
  std::unique_ptr<Model> m;
  try {
    m = make_student(cfg, train);
  } catch (const c10::Error& e) {
    const std::string why = e.what_without_backtrace();
    fail("model {}{} cannot be built for the data's {} images: {}", cfg.arch,
         cfg.arch_options.empty() ? "" : fmt::format(" ({})", fmt::join(cfg.arch_options, ", ")),
         c10::str(c10::IntArrayRef(train.input_shape())), first_line(why));
  }
  probe_student(*m, cfg, train);
  check_quantizable(cfg, *m);
  return m;
}

std::unique_ptr<Model> make_student(const RunConfig& cfg, const Dataset& train) {
  ModelSpec spec;
  spec.input_shape = train.input_shape();
  if (train.streamed()) spec.resize = train.stream.geometry.resize;
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
  auto m = create_model(spec);
  if (!cfg.init_from.empty()) {
    // Fine-tuning's usual start: the backbone from the file, the classifier head (the last
    // layer's weight and bias) fresh when the file has another number of classes.
    const auto params = m->parameters();
    std::set<std::string> head;
    for (const auto& [name, t] : m->state())
      for (size_t k = params.size() >= 2 ? params.size() - 2 : 0; k < params.size(); ++k)
        if (t.is_same(params[k])) head.insert(name);
    const auto fresh =
        load_state_dict(m->state(), read_state_dict(cfg.init_from), cfg.init_from, head);
    spdlog::info("student {} starts from {}{}", cfg.arch, cfg.init_from,
                 fresh.empty() ? ""
                               : fmt::format(" ({} fresh: the file has another class count)",
                                             fmt::join(fresh, ", ")));
  }
  return m;
}

DistillOptions distill_options(const RunConfig& cfg) {
  DistillOptions o;
  const auto& d = cfg.distill;
  o.loss = {d.temperature, d.alpha, cfg.train.label_smoothing};
  o.targets = d.targets;
  o.threshold = d.threshold;
  o.ensemble = d.ensemble;
  o.merge_by_source = d.merge_by_source;
  for (const auto& h : d.hints) o.losses.push_back(parse_hint(h, d.hint_loss));
  for (const auto& l : d.losses) o.losses.push_back(parse_loss(l));
  o.ce_weight = d.ce_weight;
  o.use_cache = d.teacher_cache;
  o.teacher_on_clean_images = d.teacher_view == "clean";
  o.cache_dir = d.cache_dir;
  o.teacher_batch_size = cfg.train.eval_batch_size;
  if (cfg.mode == Mode::self && d.teach_last > 0)
    o.snapshot_epoch = cfg.train.epochs - d.teach_last + 1;
  return o;
}

std::shared_ptr<Model> load_teacher(const std::string& path, const Dataset& train) {
  std::shared_ptr<Model> teacher = load_teacher_model(path);
  const auto& ts = teacher->spec();
  if (ts.input_shape.size() == 3)
    KD_CHECK(ts.input_shape == train.input_shape(),
             "teacher {} expects input {} but the data is {}", path, c10::str(ts.input_shape),
             c10::str(c10::IntArrayRef(train.input_shape())));
  return teacher;
}

double top1_of(const torch::Tensor& probs, const torch::Tensor& labels) {
  return probs.argmax(1).to(torch::kCPU).eq(labels).to(torch::kFloat64).mean().item<double>();
}

}  // namespace

nlohmann::json execute_run(const RunConfig& requested, bool overwrite, bool resume) {
  RunConfig cfg = requested;
  resolve_task(cfg);
  validate(cfg);
  check_precision(cfg.runtime.precision, cfg.runtime.device);
  const fs::path dir(cfg.out);
  // Data parallel when launched with torchrun-style variables; rank 0 alone owns the run
  // directory, the others train and return once the weights are final.
  dist::init_from_environment();
  const bool main_rank = dist::is_main();
  InterruptGuard interrupts;  // Ctrl-C or SIGTERM: error.txt says so, and --resume continues
  std::optional<RunDirLock> lock;
  if (main_rank) {
    std::vector<ProtectedPath> inputs = {{"teacher", cfg.distill.teacher},
                                         {"data", cfg.data.source},
                                         {"unlabeled data", cfg.data.unlabeled},
                                         {"split manifest", cfg.data.split}};
    for (const auto& t : cfg.distill.teachers) inputs.emplace_back("teacher", t);
    if (is_torchscript_path(cfg.arch)) inputs.emplace_back("TorchScript student", cfg.arch);
    check_output_location(dir, inputs);
    using Claim = RunDirLock::Claim;
    lock.emplace(RunDirLock::claim(dir, resume      ? Claim::kResume
                                        : overwrite ? Claim::kReplace
                                                    : Claim::kFresh));
    if (resume) {
      KD_CHECK(!fs::exists(dir / "summary.json"),
               "{}: the run has finished (summary.json); nothing to resume", cfg.out);
      if (fs::exists(dir / "checkpoints" / "config.yaml")) {
        const std::string changed =
            config_changes(read_text(dir / "checkpoints" / "config.yaml"), to_yaml(cfg));
        if (!changed.empty())
          usage_fail(
              "{}: config.yaml was edited since the run started ({}); a resumed run keeps its "
              "configuration: restore it, or start again with --force",
              cfg.out, changed);
      }
      fs::remove(dir / "error.txt");
    }
  }
  torch::Device device = init_runtime({cfg.runtime.device, cfg.runtime.threads, cfg.runtime.seed,
                                       cfg.runtime.deterministic, cfg.runtime.precision});
  if (main_rank && !resume) {
    // config.yaml is the user's to read; the copy under checkpoints/ is what a resume checks
    // it against, so an edited config.yaml is refused instead of silently changing the run.
    write_text_atomically(dir / "config.yaml", to_yaml(cfg));
    write_text_atomically(dir / "checkpoints" / "config.yaml", to_yaml(cfg));
  }

  dist::barrier();  // the directory is ready (and a resume's checkpoint is in place)
  spdlog::info(
      "run {} ({}), {}{}", cfg.out, cfg.mode, runtime_summary(),
      dist::active() ? fmt::format(", rank {} of {}", dist::rank(), dist::world_size()) : "");
  // Every rank leaves together, once rank 0 has written summary.json (`kd run` reads it next).
  auto done = [](nlohmann::json result) {
    dist::barrier();
    return result;
  };
  try {
    if (cfg.task == Task::detect) return done(execute_detect_run(cfg, cfg.out, device, resume));
    RunData data = load_run_data(cfg.data, cfg.mode);
    const int64_t unlabeled = (data.train.labels < 0).sum().item<int64_t>();
    spdlog::info("data {}: train {} ({} unlabeled) / eval {} / {} {}, {} classes", cfg.data.source,
                 data.train.size(), unlabeled, data.eval.size(), data.test_name, data.test.size(),
                 data.train.num_classes());
    if (data.train.streamed()) {
      const auto& g = data.train.stream.geometry;
      spdlog::info(
          "input {}x{}x{} (training: {}{}{}; eval: shorter side {}, centre crop), streamed by {} "
          "decode worker(s)",
          g.channels, g.size, g.size,
          cfg.train.random_resized_crop ? "random-resized crop" : "eval crop",
          cfg.train.hflip ? ", flip" : "",
          cfg.train.jitter > 0 ? fmt::format(", colour jitter {}", cfg.train.jitter) : "", g.resize,
          resolve_workers(data.train.stream.workers));
    }
    nlohmann::json summary = {{"train_samples", data.train.size()}, {"train_unlabeled", unlabeled}};
    Trainer trainer(cfg.train, device, cfg.runtime.seed);
    trainer.set_resume(resume);
    auto test_top1 = [&](Model& m) {
      m.to(device);
      return evaluate_classifier(m, data.test, cfg.train.eval_batch_size, device);
    };

    std::unique_ptr<Strategy> strategy;
    TrainResult tr;
    if (cfg.mode == Mode::self && cfg.distill.generations > 1) {
      // Born-again networks: generation g + 1, freshly initialised, learns from generation g.
      // A finished generation leaves generations/gen-N/generation.json; a resumed run reuses
      // those and continues the first unfinished one from its own epoch checkpoints.
      nlohmann::json gens = nlohmann::json::array();
      std::shared_ptr<Model> previous;
      double seconds = 0;
      std::string metric_lines;  // metrics.jsonl: every finished generation's epochs
      for (int g = 1; g <= cfg.distill.generations; ++g) {
        const fs::path gen_dir = dir / "generations" / fmt::format("gen-{}", g);
        const fs::path finished = gen_dir / "generation.json";
        auto add_generation = [&](const nlohmann::json& record) {
          gens.push_back(record["result"]);
          seconds += record["train_seconds"].get<double>();
          tr.best_epoch =
              json_int<int64_t>(record["result"]["best_epoch"], finished.string() + ": best_epoch");
          tr.best_score = record["result"]["best_eval_top1"].get<double>();
          tr.train_images_per_s = record["train_images_per_s"].get<double>();
          for (auto rec : record["history"]) {
            rec["generation"] = g;
            metric_lines += rec.dump() + "\n";
          }
          if (main_rank) write_text_atomically(dir / "metrics.jsonl", metric_lines);
        };
        if (resume && fs::exists(finished)) {
          nlohmann::json record;
          try {
            record = nlohmann::json::parse(read_text(finished));
            add_generation(record);
          } catch (const nlohmann::json::exception& e) {
            fail("{}: unreadable ({}); remove it to train generation {} again", finished.string(),
                 e.what(), g);
          }
          previous = load_model(gen_dir.string());
          spdlog::info("generation {}/{}: finished before the interruption", g,
                       cfg.distill.generations);
          continue;
        }
        torch::manual_seed(cfg.runtime.seed + 7919 * static_cast<uint64_t>(g - 1));
        auto student = build_student(cfg, data.train);
        if (g == 1)
          strategy = std::make_unique<SupervisedStrategy>(cfg.train.label_smoothing);
        else
          strategy = std::make_unique<DistillStrategy>(
              Mode::self,
              std::vector<DistillStrategy::NamedModel>{
                  {fmt::format("generation {}", g - 1), previous}},
              distill_options(cfg));
        spdlog::info("generation {}/{}{}", g, cfg.distill.generations,
                     g == 1 ? " (trained alone)" : " (taught by the previous generation)");
        tr = trainer.fit(*student, *strategy, data.train, data.eval, gen_dir.string());
        dist::barrier();  // rank 0 has written the generation's best weights
        previous = load_model(gen_dir.string());
        if (!main_rank) continue;
        auto rep = test_top1(*previous);
        nlohmann::json record = {{"result",
                                  {{"generation", g},
                                   {"best_epoch", tr.best_epoch},
                                   {"best_eval_top1", tr.best_score},
                                   {"test_top1", rep.top1}}},
                                 {"train_seconds", tr.train_seconds},
                                 {"train_images_per_s", tr.train_images_per_s},
                                 {"history", tr.history}};
        add_generation(record);
        write_text_atomically(finished, record.dump(1) + "\n");
      }
      if (!main_rank) return done({{"rank", dist::rank()}});
      save_model(*previous, cfg.out);
      tr.train_seconds = seconds;
      summary["generations"] = gens;
    } else {
      auto student = build_student(cfg, data.train);
      std::vector<DistillStrategy::NamedModel> teachers;
      if (!cfg.distill.teacher.empty())
        teachers.emplace_back(cfg.distill.teacher, load_teacher(cfg.distill.teacher, data.train));
      for (const auto& t : cfg.distill.teachers)
        teachers.emplace_back(t, load_teacher(t, data.train));
      if (cfg.mode == Mode::train)
        strategy = std::make_unique<SupervisedStrategy>(cfg.train.label_smoothing);
      else
        strategy = std::make_unique<DistillStrategy>(cfg.mode, teachers, distill_options(cfg));
      tr = trainer.fit(*student, *strategy, data.train, data.eval, cfg.out);
      if (!main_rank) return done({{"rank", dist::rank()}});
      if (auto* ds = dynamic_cast<DistillStrategy*>(strategy.get())) {
        // How good the targets the student learned from are, on labeled test images.
        summary["teacher_targets_top1"] = top1_of(ds->targets_for(data.test), data.test.labels);
      }
    }

    std::unique_ptr<Model> best;
    if (cfg.qat.precision.empty()) {
      best = load_model(cfg.out);
    } else {
      best = train_quantization_aware(
          cfg, resume,
          [&](Model& fp32) {
            return evaluate_classifier(fp32, data.test, cfg.train.eval_batch_size, device)
                .to_json(fp32.spec().class_names);
          },
          [&](Model& m) {
            return evaluate_classifier(m, data.eval, cfg.train.eval_batch_size, torch::kCPU).top1;
          },
          [&](Model& qat, const TrainConfig& q, uint64_t seed, const std::string& dir) {
            Trainer t(q, device, seed);
            t.set_resume(resume);
            return t.fit(qat, *strategy, data.train, data.eval, dir).train_seconds;
          },
          summary);
    }
    ClassificationReport test = test_top1(*best);
    nlohmann::json base = run_summary(cfg, "classify", *best, tr, "best_eval_top1", device);
    summary.update(base);
    summary.update({{"test_set", data.test_name},
                    {"test", test.to_json(best->spec().class_names)},
                    {"strategy", strategy->describe()}});
    write_summary(cfg, summary, *best, device);
    spdlog::info("{}: {} top-1 {:.2f}% top-5 {:.2f}% (best epoch {})", cfg.out, data.test_name,
                 100 * test.top1, 100 * test.top5, tr.best_epoch);
    return done(summary);
  } catch (const std::exception& e) {
    // Leave the run visibly failed: no summary.json, and the reason beside the config.
    try {
      if (main_rank) write_text_atomically(dir / "error.txt", std::string(e.what()) + "\n");
    } catch (const std::exception&) {
      // (a full disk may refuse this too; the error itself is what the user must see)
    }
    throw;
  }
}

}  // namespace kd
