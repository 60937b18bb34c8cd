#include <iostream>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "kd/core/distributed.h"
#include "kd/core/error.h"
#include "kd/distill/run.h"
#include "kd/losses/registry.h"
#include "kd/runs/run.h"
#include "options.h"

namespace kd::cli {
namespace {

struct TrainArgs {
  RunConfig cfg;
  std::string resume;
  bool force = false;
  bool no_augment = false;
  std::vector<std::string> teachers;
};

void run(TrainArgs& a) {
  if (!a.resume.empty()) {
    // Everything comes from the run's own config.yaml; the run continues where it stopped.
    RunConfig cfg = read_run_config(a.resume);
    cfg.out = a.resume;
    execute_run(cfg, false, true);
    if (dist::is_main()) std::cout << cfg.out << std::endl;
    return;
  }
  if (a.cfg.out.empty()) usage_fail("--out is required");
  // One teacher is distill.teacher; several are distill.teachers, merged (--mode merge) or
  // averaged as an ensemble (offline, semi). validate() says which modes take which.
  if (a.teachers.size() == 1 && a.cfg.mode != Mode::merge)
    a.cfg.distill.teacher = a.teachers[0];
  else
    a.cfg.distill.teachers = a.teachers;
  if (a.no_augment) {
    a.cfg.train.crop_padding = 0;
    a.cfg.train.hflip = false;
    a.cfg.train.random_resized_crop = false;
    a.cfg.train.jitter = 0;
    a.cfg.detect.scale_jitter = 0;
  }

  // The summary (and the logged result line) live in the run directory; stdout gets its path.
  execute_run(a.cfg, a.force);
  if (dist::is_main()) std::cout << a.cfg.out << std::endl;
}

}  // namespace

void add_train_commands(CLI::App& app) {
  auto train = std::make_shared<TrainArgs>();
  auto* t = app.add_subcommand("train",
                               "train a model on labeled data (a teacher, or a student baseline)");
  t->footer("Example: kd train --arch fmnist-teacher --epochs 15 --out runs/teacher");
  t->add_option("--arch", train->cfg.arch, "architecture from `kd models`, or a TorchScript .pt")
      ->capture_default_str();
  t->add_flag("--force", train->force, "replace an existing run directory");
  t->add_option(
      "--resume", train->resume,
      "continue an interrupted run from its last good checkpoint (other flags are ignored)");
  add_training_options(*t, train->cfg, train->no_augment);
  t->callback([train] { run(*train); });

  auto distill = std::make_shared<TrainArgs>();
  distill->cfg.mode = Mode::offline;
  auto& d = distill->cfg.distill;
  auto* k = app.add_subcommand(
      "distill",
      "distill a student: offline, semi-supervised, self, multi-teacher merge, feature hints");
  k->footer(
      "Examples:\n"
      "  kd distill --teacher runs/teacher --student fmnist-student -T 4 --alpha 0.9 --out "
      "runs/distilled\n"
      "  kd distill --mode semi --teacher runs/teacher10 --labeled-fraction 0.1 --out runs/semi\n"
      "  kd distill --mode self --generations 3 --student fmnist-student --out runs/ban\n"
      "  kd distill --mode merge --teacher runs/teacherA --teacher runs/teacherB --out "
      "runs/merged\n"
      "  kd distill --teacher runs/teacher --hint 7:5:1 --out runs/hinted\n"
      "  kd distill --teacher runs/teacher --loss dkd:beta=2,warmup=3 --loss "
      "at:teacher=7,student=5 --out runs/dkd-at\n"
      "  kd distill --teacher runs/det-d3 --student effdet-d0 --data data/det --out "
      "runs/det-d0-kd");
  k->add_option("--teacher", distill->teachers,
                "teacher run directory or TorchScript .pt; repeat it for --mode merge, or for an "
                "ensemble (offline, semi: the teachers' probabilities averaged)");
  k->add_option("--student", distill->cfg.arch, "student architecture, or a TorchScript .pt")
      ->capture_default_str();
  add_kind_option(
      *k, "--mode", distill->cfg.mode,
      "offline: frozen teacher; semi: the teacher labels unlabeled data; self: the student's "
      "earlier self teaches; merge: teachers of different classes",
      {Mode::offline, Mode::semi, Mode::self, Mode::merge});
  k->add_option("--temperature,-T", d.temperature, "softmax temperature")->capture_default_str();
  k->add_option("--alpha", d.alpha, "weight of the soft-target term on labeled samples")
      ->capture_default_str();
  add_kind_option(*k, "--targets", d.targets, "soft (distributions) or hard (pseudo-labels)",
                  {Targets::soft, Targets::hard});
  k->add_option("--threshold", d.threshold,
                "hard targets: minimum teacher probability of a pseudo-label")
      ->capture_default_str();
  k->add_option(
       "--ensemble", d.ensemble,
       "average the teacher over N views of each image (identity, flip, 4 one-pixel shifts)")
      ->capture_default_str();
  k->add_flag("--merge-by-source", d.merge_by_source,
              "merge on pooled data (--data A+B): each image is taught only by the teachers "
              "whose classes are all classes of its source");
  k->add_option("--generations", d.generations, "self: born-again generations (N >= 2)");
  k->add_option("--teach-last", d.teach_last,
                "self: a frozen snapshot of the student teaches the last M epochs");
  k->add_option(
      "--hint", d.hints,
      "feature hint TEACHER_LAYER:STUDENT_LAYER[:WEIGHT] (layers: kd models --layers ARCH)");
  k->add_option("--hint-loss", d.hint_loss, "mse or nmse (normalised)")
      ->check(CLI::IsMember({"mse", "nmse"}))
      ->capture_default_str();
  k->add_option(
       "--loss", d.losses,
       "loss term NAME[:key=value,...] from the registry, repeatable (kd losses lists them: " +
           loss_names() + "); a logit loss replaces the soft-target term of -T and --alpha")
      ->each([](const std::string& text) { parse_loss(text); });
  k->add_option("--ce-weight", d.ce_weight,
                "weight of the cross-entropy on labels when a logit --loss is given")
      ->capture_default_str();
  k->add_option("--unlabeled", distill->cfg.data.unlabeled,
                "semi: unlabeled images (an image folder or an IDX images file)");
  auto& det = distill->cfg.detect;
  k->add_option("--kd-class", det.kd_class, "detection: weight of the class-head KL (at -T)")
      ->capture_default_str();
  k->add_option("--kd-box", det.kd_box,
                "detection: weight of the box-head loss, weighted by teacher confidence")
      ->capture_default_str();
  k->add_option("--kd-feature", det.kd_feature,
                "detection: weight of the pyramid feature imitation")
      ->capture_default_str();
  k->add_option("--kd-feature-loss", det.kd_feature_loss,
                "detection: the pyramid levels' loss: fitnet (normalised MSE), pkd (Pearson) or "
                "cwd (channel-wise)")
      ->capture_default_str();
  k->add_option("--kd-levels", det.kd_levels, "detection: pyramid levels imitated (P3,P4,P5)")
      ->delimiter(',');
  k->add_flag(
      "--no-teacher-cache", [&d](int64_t) { d.teacher_cache = false; },
      "run the teacher on every batch even without augmentation");
  k->add_option("--teacher-view", d.teacher_view,
                "with augmentation: augmented (the teacher sees each augmented batch) or clean "
                "(it labels each image once, unaugmented, as in Noisy Student)")
      ->capture_default_str();
  k->add_option("--cache-dir", d.cache_dir,
                "teacher cache folder (default $KD_CACHE_DIR or ~/.cache/kd)");
  k->add_flag("--force", distill->force, "replace an existing run directory");
  k->add_option(
      "--resume", distill->resume,
      "continue an interrupted run from its last good checkpoint (other flags are ignored)");
  add_training_options(*k, distill->cfg, distill->no_augment);
  k->callback([distill] { run(*distill); });

  auto* l = app.add_subcommand(
      "losses", "list the distillation losses of --loss with their options and defaults");
  l->footer(
      "Example: kd distill --teacher runs/teacher --loss dist --loss at:teacher=7,student=5 --out "
      "runs/d");
  l->callback([] { std::cout << describe_losses(); });
}

}  // namespace kd::cli
