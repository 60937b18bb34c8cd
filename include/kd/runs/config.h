#pragma once
/// @file
/// The fully resolved configuration of one training run. CLI flags and experiment YAML files
/// both fill this struct; the run directory stores it back as config.yaml. No torch here.
#include <cstdint>
#include <string>
#include <vector>

#include "kd/core/kinds.h"

namespace YAML {
class Node;
}

namespace kd {

/// The largest seed a run takes: LibTorch's CPU generator keeps 32 bits of it.
constexpr uint64_t kMaxSeed = 0xffffffffULL;

struct DataConfig {
  std::string source = "fashion-mnist";  ///< see load_dataset()
  std::string split;                     ///< split manifest; empty: make one from ratio + seed
  double train_ratio = 0.8;
  uint64_t split_seed = 0;
  int64_t limit = 0;  ///< use only the first N training (and N/4 test) samples; 0: all
  int channels = 0;   ///< 0: the source's (streamed photos: 3)
  int height = 0;     ///< 0: the source's (streamed photos: kDefaultPhotoSize, set by resolve_task)
  int width = 0;
  int resize = 0;  ///< streamed photos: eval resize of the shorter side (0: height * 256 / 224)
  /// Streamed sources: decode threads (-1: one per core; 0: in the training thread), whether an
  /// image that fails to load stops the run, and the share of a list's files that may be missing.
  int workers = -1;
  bool strict = false;
  double max_missing = 0.01;
  /// Semi-supervised data: keep the labels of a stratified fraction of the training split
  /// (seeded by split_seed, so teacher and student runs see the same labeled part). `train`
  /// and `offline` runs use only the labeled part; `semi` runs also use the rest, unlabeled.
  double labeled_fraction = 1.0;
  std::string unlabeled;  ///< extra unlabeled images: an image folder (flat) or IDX images file
  /// Keep only these classes (names, indices or ranges like 0-4), relabelled 0..k-1 in the
  /// source's order: teachers for one domain of a multi-teacher merge.
  std::vector<std::string> classes;
  /// With `classes`: the other classes' images are kept as one class, "(others)": a teacher
  /// that learns to say "not mine" for a merge.
  bool others = false;
};

struct OptimConfig {
  std::string name = "sgd";  ///< sgd | adam | adamw
  double lr = 0.05;
  double momentum = 0.9;
  bool nesterov = true;
  double weight_decay = 5e-4;
};

struct ScheduleConfig {
  std::string name = "cosine";  ///< cosine | step | constant
  double warmup_epochs = 1.0;   ///< linear warm-up from 0, per iteration
  int64_t step_size = 10;       ///< step: multiply by gamma every step_size epochs
  double gamma = 0.1;
  double min_lr = 0.0;  ///< cosine floor
};

struct TrainConfig {
  int64_t epochs = 10;
  int64_t batch_size = 128;
  int64_t eval_batch_size = 1000;
  OptimConfig optim;
  ScheduleConfig schedule;
  int crop_padding = 2;  ///< in-memory data: batch-level pad-crop; 0 and hflip=false: none
  bool hflip = true;
  /// Streamed photos, per image: RandomResizedCrop (else the eval transform) and colour jitter.
  bool random_resized_crop = true;
  double jitter = 0.0;
  double mixup = 0.0;   ///< Beta(a, a) of batch-level mixup; 0: off
  double cutmix = 0.0;  ///< Beta(a, a) of batch-level cutmix; 0: off
  double label_smoothing = 0.0;
};

struct DistillConfig {
  std::string teacher;  ///< run directory or TorchScript .pt
  /// Two or more: merged (mode merge, each knowing some of the classes) or an ensemble (offline,
  /// semi: each knowing every class, their probabilities averaged).
  std::vector<std::string> teachers;
  double temperature = 4.0;
  double alpha = 0.9;  ///< labeled samples: alpha * soft term + (1 - alpha) * cross-entropy
  Targets targets = Targets::soft;  ///< hard: pseudo-labels, the teacher's top class
  double threshold = 0.0;           ///< hard: keep pseudo-labels whose probability is >= this
  int ensemble = 1;                 ///< average the teacher over this many transforms of each image
  bool merge_by_source = false;     ///< merge on pooled data: teachers of each image's source only
  int generations = 1;              ///< self: born-again generations (>= 2)
  int teach_last = 0;  ///< self: a frozen snapshot of the student teaches the last M epochs
  std::vector<std::string> hints;  ///< TEACHER_LAYER:STUDENT_LAYER[:WEIGHT]
  std::string hint_loss = "nmse";  ///< mse | nmse
  /// Loss terms from the registry (kd/losses/registry.h), each `NAME:key=value,...`. A listed
  /// logit loss replaces the soft-target term (-T, --alpha): the objective is then ce_weight x
  /// cross-entropy on the labeled samples plus each term's weight x its loss. Feature losses add
  /// to either objective.
  std::vector<std::string> losses;
  double ce_weight = 1.0;
  bool teacher_cache = true;  ///< reuse teacher logits across epochs when augmentation is off
  /// What the teacher sees when the student's images are augmented: "augmented", the student's
  /// own view, per batch (consistent teaching); "clean", each image once without augmentation,
  /// its targets reused for every augmented view (Noisy Student's noised student).
  std::string teacher_view = "augmented";
  std::string cache_dir;  ///< empty: $KD_CACHE_DIR, else ~/.cache/kd
};

/// Quantization-aware training (`--qat int8`): after the run's epochs, its best model is fine-tuned
/// with fake INT8 quantization under the same objective (its teacher too), then converted to INT8.
struct QatConfig {
  std::string precision;           ///< empty: off; int8
  int64_t epochs = 3;              ///< quantization-aware epochs after the fp32 ones
  double lr_scale = 0.1;           ///< their peak learning rate: the run's times this
  int64_t freeze_epochs = 1;       ///< the last ones with activation ranges frozen
  bool allow_fp32_layers = false;  ///< ops without an INT8 kernel stay fp32 (EfficientDet's BiFPN)
};

/// Detection runs (task detect): augmentation, loss and distillation weights.
struct DetectConfig {
  double scale_jitter = 0.2;  ///< training images rescaled by [1 - j, 1 + j] at a random place
  double focal_alpha = 0.25;
  double focal_gamma = 1.5;
  double huber_delta = 0.1;
  double box_weight = 50.0;  ///< box loss weight against the focal loss (EfficientDet's)
  /// Distillation from a detector teacher (run at the student's input size, same anchors).
  double kd_class = 1.0;    ///< class-head KL at distill.temperature
  double kd_box = 1.0;      ///< box-head Huber, weighted by the teacher's confidence
  double kd_feature = 1.0;  ///< feature imitation on pyramid levels, through learned adapters
  std::string kd_feature_loss =
      "fitnet";  ///< fitnet (normalised MSE) | pkd | cwd, from the loss registry
  std::vector<std::string> kd_levels = {"P3", "P4", "P5"};
  double score_threshold = 0.001;  ///< evaluation: keep detections at or above this score
  double nms_iou = 0.5;
};

struct RuntimeConfig {
  std::string device = "auto";
  int threads = 0;
  uint64_t seed = 0;
  bool deterministic = false;
  std::string precision = "fp32";  ///< fp32 | bf16 (autocast; kd/core/runtime.h)
};

struct RunConfig {
  Task task = Task::classify;
  std::string name;  ///< label used by `kd compare` to group seeds
  Mode mode = Mode::train;
  std::string out;                        ///< run directory
  std::string arch = "fmnist-student";    ///< registry name or a TorchScript .pt
  std::vector<std::string> arch_options;  ///< key=value
  /// PyTorch weights the native student starts from (kd/models/weights.h): a state_dict file or
  /// a TorchScript module, by parameter name.
  std::string init_from;
  DataConfig data;
  TrainConfig train;
  DistillConfig distill;
  DetectConfig detect;
  QatConfig qat;
  RuntimeConfig runtime;
  bool measure_latency = true;
};

/// An architecture given as the path of an existing .pt/.pth file is a TorchScript model.
bool is_torchscript_path(const std::string& arch);

std::string to_yaml(const RunConfig& cfg);
/// The keys whose values differ between two to_yaml texts, as "train.epochs: 20 -> 5, ..."; empty
/// when they agree.
std::string config_changes(const std::string& before, const std::string& after);
/// Overlays the keys present in `node` onto `cfg`; an unknown key or a value of the wrong type
/// throws kd::Error naming `where` and the key path (e.g. "exp.yaml: train.optim.lr").
void apply_yaml(RunConfig& cfg, const YAML::Node& node, const std::string& where);
void validate(const RunConfig& cfg);

}  // namespace kd
