#include "options.h"

#include <filesystem>

#include <spdlog/spdlog.h>

namespace kd::cli {

void add_data_options(CLI::App& cmd, DataConfig& d) {
  cmd.add_option(
         "--data", d.source,
         "fashion-mnist, a folder of IDX files, or an image folder (one sub-folder per class); "
         "detection: a COCO .json, a folder with train.json [test.json], or a VOC folder")
      ->capture_default_str();
  cmd.add_option("--split", d.split, "split manifest from `kd data split` (default: split here)");
  cmd.add_option("--train-ratio", d.train_ratio, "train share of the train/eval split")
      ->capture_default_str();
  cmd.add_option("--split-seed", d.split_seed, "seed of the train/eval split")
      ->capture_default_str();
  cmd.add_option("--limit", d.limit,
                 "use a stratified slice of N training images, and N/4 eval and N/4 test images "
                 "(smoke tests)")
      ->check(CLI::Validator(
          [](std::string& v) {
            try {
              return std::stoll(v) >= 1 ? std::string()
                                        : "must be a positive number of images, got " + v;
            } catch (const std::exception&) {
              return "must be a positive number of images, got " + v;
            }
          },
          "N >= 1"));
  cmd.add_option("--labeled-fraction", d.labeled_fraction,
                 "keep the labels of this stratified share of the training split (semi: the rest "
                 "is unlabeled)")
      ->capture_default_str();
  cmd.add_option("--classes", d.classes,
                 "keep only these classes: names, indices or ranges (0-4), comma-separated")
      ->delimiter(',');
  cmd.add_flag("--others", d.others,
               "with --classes: keep the other classes' images too, as one class \"(others)\" (a "
               "merge teacher's \"not mine\")");
  cmd.add_option("--channels", d.channels, "1 (grayscale) or 3 (RGB); default: the source's")
      ->check(CLI::IsMember({1, 3}));
  cmd.add_option_function<int>(
         "--size", [&d](int s) { d.height = d.width = s; },
         "input SIZE x SIZE: photos are cropped to it (training: random-resized crop; eval: "
         "shorter side resized to --resize, centre crop; default 224), IDX data resized "
         "(detection: letterbox to it; default the detector's image_size)")
      ->check(CLI::Range(1, 4096));
  cmd.add_option("--resize", d.resize,
                 "photos: the eval transform's shorter side before the centre crop (default "
                 "size * 256 / 224)")
      ->check(CLI::Range(1, 4096));
  cmd.add_option("--workers", d.workers,
                 "threads that read, decode and augment photos (default: one per core; 0: the "
                 "training thread); results do not depend on it")
      ->check(CLI::Range(0, 256));
  cmd.add_flag("--strict", d.strict,
               "stop at an image that fails to load (default: skip it with a counted warning)");
  cmd.add_option("--max-missing", d.max_missing,
                 "file lists: the share of listed files that may be missing (they are left out)")
      ->capture_default_str();
}

void add_runtime_options(CLI::App& cmd, RuntimeConfig& r) {
  cmd.add_option("--device", r.device, "cpu, cuda or auto (cuda when available)")
      ->capture_default_str();
  cmd.add_option("--threads", r.threads, "intra-op threads (0: one per core)")
      ->capture_default_str();
  cmd.add_option("--seed", r.seed, "seed for weights, shuffling and augmentation")
      ->capture_default_str();
  cmd.add_flag("--deterministic", r.deterministic, "use only deterministic kernels");
  cmd.add_option(
         "--precision", r.precision,
         "fp32, or bf16: forward passes (student, teacher, eval) under bfloat16 autocast with fp32 "
         "master weights; needs native bfloat16 (CPU: AVX512_BF16 or AMX)")
      ->capture_default_str();
}

void add_training_options(CLI::App& cmd, RunConfig& c, bool& no_augment) {
  auto& t = c.train;
  cmd.add_option("--out,-o", c.out,
                 "run directory to create");  // required unless --resume (checked by the command)
  cmd.add_option("--name", c.name, "label for `kd compare` (default: the run folder's name)");
  cmd.add_option("--arch-opt", c.arch_options, "architecture option KEY=VALUE (see `kd models`)");
  cmd.add_option("--init-from", c.init_from,
                 "start the student from these PyTorch weights (torch.save(model.state_dict()) "
                 "or TorchScript), by parameter name; a classifier head of another class count "
                 "starts fresh");
  cmd.add_option("--epochs", t.epochs)->capture_default_str();
  cmd.add_option("--batch-size", t.batch_size)->capture_default_str();
  cmd.add_option("--optimizer", t.optim.name, "sgd, adam or adamw")->capture_default_str();
  cmd.add_option("--lr", t.optim.lr, "peak learning rate")->capture_default_str();
  cmd.add_option("--momentum", t.optim.momentum)->capture_default_str();
  cmd.add_option("--nesterov", t.optim.nesterov, "true or false")->capture_default_str();
  cmd.add_option("--weight-decay", t.optim.weight_decay)->capture_default_str();
  cmd.add_option("--schedule", t.schedule.name, "cosine, step or constant")->capture_default_str();
  cmd.add_option("--warmup", t.schedule.warmup_epochs, "linear warm-up, in epochs")
      ->capture_default_str();
  cmd.add_option("--step-size", t.schedule.step_size, "step schedule: epochs per decay")
      ->capture_default_str();
  cmd.add_option("--gamma", t.schedule.gamma, "step schedule: decay factor")->capture_default_str();
  cmd.add_option("--crop-padding", t.crop_padding, "random-crop padding in pixels (0: off)")
      ->capture_default_str();
  cmd.add_option("--hflip", t.hflip, "random horizontal flips (true/false)")->capture_default_str();
  cmd.add_option("--random-resized-crop", t.random_resized_crop,
                 "photos: RandomResizedCrop per image, scale 0.08-1 (true/false; false: the eval "
                 "crop)")
      ->capture_default_str();
  cmd.add_option("--jitter", t.jitter,
                 "photos: colour jitter, brightness/contrast/saturation in [1 - J, 1 + J] (0: off)")
      ->capture_default_str();
  cmd.add_flag("--no-augment", no_augment, "switch off crop and flip augmentation");
  cmd.add_option("--mixup", t.mixup,
                 "batch-level mixup, lam ~ Beta(A, A) (0: off); a teacher sees the mixed images")
      ->capture_default_str();
  cmd.add_option("--cutmix", t.cutmix,
                 "batch-level cutmix, lam ~ Beta(A, A) (0: off); with --mixup, one per batch")
      ->capture_default_str();
  cmd.add_option("--label-smoothing", t.label_smoothing)->capture_default_str();
  cmd.add_option("--qat", c.qat.precision,
                 "int8: after the epochs, quantization-aware training of the best model (same "
                 "objective, teacher included), then an INT8 model")
      ->check(CLI::IsMember({"int8"}));
  cmd.add_option("--qat-epochs", c.qat.epochs,
                 "quantization-aware epochs (the last one with "
                 "activation ranges frozen)")
      ->capture_default_str();
  cmd.add_flag("--allow-fp32-layers", c.qat.allow_fp32_layers,
               "with --qat: ops without an INT8 kernel (EfficientDet's BiFPN sums) stay fp32");
  add_kind_option(cmd, "--task", c.task, "classify or detect (default: what --arch/--student is)",
                  {Task::classify, Task::detect});
  cmd.add_option("--scale-jitter", c.detect.scale_jitter,
                 "detection: rescale training images by [1-J, 1+J] at a random place (0: off)")
      ->capture_default_str();
  cmd.add_flag(
      "--no-latency", [&c](int64_t) { c.measure_latency = false; },
      "skip the latency measurement in the summary");
  add_data_options(cmd, c.data);
  add_runtime_options(cmd, c.runtime);
}

std::vector<std::string> runs_and_teachers(const std::vector<std::string>& paths) {
  std::vector<std::string> kept;
  for (const auto& p : paths) {
    if (std::filesystem::is_regular_file(p) && !is_torchscript_path(p))
      spdlog::warn("{}: a file, not a run directory or a TorchScript teacher; left out", p);
    else
      kept.push_back(p);
  }
  return kept;
}

}  // namespace kd::cli
