#include <iostream>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "kd/distill/run.h"
#include "options.h"

namespace kd::cli {
namespace {

struct TrainArgs {
  RunConfig cfg;
  bool force = false;
  bool no_augment = false;
};

void run(TrainArgs& a) {
  if (a.no_augment) {
    a.cfg.train.crop_padding = 0;
    a.cfg.train.hflip = false;
  }
  // The summary (and the logged result line) live in the run directory; stdout gets its path.
  execute_run(a.cfg, a.force);
  std::cout << a.cfg.out << std::endl;
}

}  // namespace

void add_train_commands(CLI::App& app) {
  auto train = std::make_shared<TrainArgs>();
  auto* t = app.add_subcommand("train", "train a model on labeled data (a teacher, or a student baseline)");
  t->footer("Example: kd train --arch fmnist-teacher --epochs 15 --out runs/teacher");
  t->add_option("--arch", train->cfg.arch, "architecture from `kd models`, or a TorchScript .pt")
      ->capture_default_str();
  t->add_flag("--force", train->force, "replace an existing run directory");
  add_training_options(*t, train->cfg, train->no_augment);
  t->callback([train] { run(*train); });

  auto distill = std::make_shared<TrainArgs>();
  distill->cfg.mode = "offline";
  auto& d = distill->cfg.distill;
  auto* k = app.add_subcommand("distill", "distill a student from a frozen teacher (Hinton soft targets)");
  k->footer(
      "Example: kd distill --teacher runs/teacher --student fmnist-student -T 4 --alpha 0.9 "
      "--out runs/distilled");
  k->add_option("--teacher", d.teacher, "teacher run directory or TorchScript .pt")->required();
  k->add_option("--student", distill->cfg.arch, "student architecture, or a TorchScript .pt")
      ->capture_default_str();
  k->add_option("--mode", distill->cfg.mode, "distillation mode")
      ->check(CLI::IsMember({"offline"}))->capture_default_str();
  k->add_option("--temperature,-T", d.temperature, "softmax temperature")->capture_default_str();
  k->add_option("--alpha", d.alpha, "weight of the soft-target term")->capture_default_str();
  k->add_flag("--no-teacher-cache", [&d](int64_t) { d.teacher_cache = false; },
              "run the teacher on every batch even without augmentation");
  k->add_option("--cache-dir", d.cache_dir, "teacher cache folder (default $KD_CACHE_DIR or ~/.cache/kd)");
  k->add_flag("--force", distill->force, "replace an existing run directory");
  add_training_options(*k, distill->cfg, distill->no_augment);
  k->callback([distill] { run(*distill); });
}

}  // namespace kd::cli
