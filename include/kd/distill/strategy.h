#pragma once
/// @file
/// A distillation mode is a Strategy on the one training loop (trainer.h): it decides what the
/// student's loss is for a batch. Plain supervised training is the trivial strategy; every
/// teacher-based mode (offline, semi, self, merge, with or without feature hints) is one
/// DistillStrategy configured differently.
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/modules/container/any.h>
#include <torch/types.h>

#include "kd/data/loader.h"
#include "kd/losses/classification.h"
#include "kd/losses/crd.h"
#include "kd/losses/registry.h"
#include "kd/models/model.h"

namespace kd {

struct StepResult {
  torch::Tensor loss;    ///< scalar, differentiable w.r.t. the student
  torch::Tensor logits;  ///< student outputs for accuracy bookkeeping
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;
  /// Called once before the first epoch with the training set the loader batches from.
  virtual void prepare(Model& /*student*/, const Dataset& /*train*/, const Augment& /*augment*/,
                       torch::Device) {}
  /// Called at the start of every epoch (1-based), before the student switches to training.
  virtual void begin_epoch(int64_t /*epoch*/, Model& /*student*/) {}
  virtual StepResult step(Model& student, const Batch& batch) = 0;
  /// Trainable parameters besides the student's (hint adapters); optimised with it.
  virtual std::vector<torch::Tensor> parameters() { return {}; }
  /// State a resumed run needs beyond the student, the optimizer and parameters() (a snapshot
  /// teacher): files written into a checkpoint folder, read back after prepare().
  virtual void save_state(const std::string& /*folder*/) const {}
  virtual void load_state(const std::string& /*folder*/, Model& /*student*/) {}
  virtual nlohmann::json describe() const { return {{"strategy", name()}}; }
};

class SupervisedStrategy final : public Strategy {
 public:
  explicit SupervisedStrategy(double label_smoothing) : label_smoothing_(label_smoothing) {}
  std::string name() const override { return "train"; }
  StepResult step(Model& student, const Batch& batch) override;

 private:
  double label_smoothing_;
};

/// --hint TEACHER_LAYER:STUDENT_LAYER[:WEIGHT]: the fitnet term of the registry, normalised
/// (hint_loss nmse) or plain MSE.
LossSpec parse_hint(const std::string& text, const std::string& hint_loss = "nmse");

struct DistillOptions {
  SoftTargetLossOptions loss;  ///< temperature, alpha (labeled samples), label smoothing
  Targets targets = Targets::soft;
  double threshold = 0.0;  ///< hard: minimum teacher probability of a pseudo-label
  int ensemble = 1;        ///< teacher averaged over this many views (ensemble_view)
  /// merge on a pooled dataset (--data A+B): each image is taught only by the teachers whose
  /// classes are all classes of the source it came from; no offsets are fitted.
  bool merge_by_source = false;
  /// Registry terms (--loss; --hint is a fitnet term). With a logit term among them, the
  /// objective is ce_weight x CE on labeled samples + the terms; otherwise the soft-target loss
  /// above + the feature terms.
  std::vector<LossSpec> losses;
  double ce_weight = 1.0;
  bool use_cache = true;  ///< teacher logits on disk, targets and hint features in memory
  /// The teacher labels the un-augmented images once, and its targets stand for every augmented
  /// view of them (teacher_view clean); otherwise it sees each augmented batch.
  bool teacher_on_clean_images = false;
  std::string cache_dir;
  int64_t teacher_batch_size = 1000;
  int64_t snapshot_epoch = 0;  ///< > 0: no teacher before this epoch; at its start a frozen copy
                               // of the student becomes the teacher (self-distillation)
};

/// The merge rule, on teacher logits concatenated column-wise (`columns` [N, J]; column j belongs
/// to class column_class[j] of the student). Offsets [J] make the merged class marginals over the
/// pool uniform, a class's mass split equally among the columns of the teachers that know it.
torch::Tensor fit_merge_offsets(const torch::Tensor& columns, const torch::Tensor& column_class,
                                int64_t num_classes);
/// Merged targets [N, num_classes]: class logit = logsumexp of its columns minus offsets, then
/// softmax(class logits / T). Undefined offsets: none (a single teacher).
torch::Tensor merge_teacher_logits(const torch::Tensor& columns, const torch::Tensor& column_class,
                                   int64_t num_classes, const torch::Tensor& offsets, double T);
/// The class logits of that rule, before the temperature: logsumexp of each class's columns.
torch::Tensor merged_class_logits(const torch::Tensor& columns, const torch::Tensor& column_class,
                                  int64_t num_classes, const torch::Tensor& offsets);

/// Frozen teachers turned into one logit vector over the student's classes per image (the
/// merged class logits with several teachers), then a loss on the student. Without a logit loss
/// from the registry, the soft-target objective:
/// - labeled samples (label >= 0): (1 - alpha) CE + alpha T^2 KL(targets || student) (soft) or
///   CE alone (hard);
/// - unlabeled samples: T^2 KL(targets || student) (soft) or CE on the teacher's top class when
///   its probability reaches the threshold (hard);
/// with one: ce_weight CE on labeled samples + each logit term (kd, dkd, dist, mlkd). Plus each
/// feature term's weight times its loss between the (adapted) student feature and the teacher's.
/// Teachers are matched to the student's classes by name; views of the ensemble are averaged in
/// logit space. With several teachers (merge), all teachers' logits are concatenated and one
/// softmax taken over them (as in Shen et al., "Amalgamating knowledge towards comprehensive
/// classification", AAAI 2019), a class several teachers know receiving the mass of all its
/// columns (at temperature 1; softer targets temper the merged class distribution). Separately
/// trained networks are overconfident outside their classes and their logits are not on one scale,
/// so a per-class offset is subtracted first, fitted on the training pool (EM prior adjustment,
/// Saerens et al. 2002) so that the merged class marginals over the pool are uniform: without it, a
/// teacher's catch-all class (Shirt for the footwear-and-bags teacher) claims images of the other
/// teacher's classes. docs/results/modes.md has the measurements behind this.
class DistillStrategy final : public Strategy {
 public:
  /// teachers: (label for messages and the summary, model).
  using NamedModel = std::pair<std::string, std::shared_ptr<Model>>;
  DistillStrategy(Mode mode, std::vector<NamedModel> teachers, DistillOptions opts);
  std::string name() const override { return std::string(to_string(mode_)); }
  void prepare(Model& student, const Dataset& train, const Augment& augment,
               torch::Device device) override;
  void begin_epoch(int64_t epoch, Model& student) override;
  StepResult step(Model& student, const Batch& batch) override;
  std::vector<torch::Tensor> parameters() override;
  void save_state(const std::string& folder) const override;
  void load_state(const std::string& folder, Model& student) override;
  nlohmann::json describe() const override;

  /// The teachers' combined target distribution (at temperature 1) for every image of `data`:
  /// what the student learns from, scored against labels in the run summary.
  torch::Tensor targets_for(const Dataset& data);

 private:
  struct Teacher {
    std::string label;
    std::shared_ptr<Model> model;
    torch::Tensor class_map;     ///< student class index of each teacher class but "(others)"
    int64_t others_column = -1;  ///< the teacher's "(others)" output (--others), or -1
  };
  void attach_teachers(Model& student);
  void build_feature_heads(Model& student, Model& teacher);
  /// logits[t][k]: teacher t on view k, [B, C_t]. Returns the class logits [B, C_student]:
  /// softmax(them / T) is the target distribution at temperature T.
  /// `origin` [B]: each image's pooled source, for merge_by_source (undefined otherwise).
  torch::Tensor combine(const std::vector<std::vector<torch::Tensor>>& logits,
                        const torch::Tensor& origin) const;
  /// Views averaged, teachers concatenated: [B, sum of C_t].
  torch::Tensor teacher_columns(const std::vector<std::vector<torch::Tensor>>& logits) const;
  torch::Tensor column_classes() const;
  /// Several teachers of all the classes (offline, semi): their probabilities are averaged.
  bool teacher_ensemble() const { return mode_ != Mode::merge && teachers_.size() > 1; }
  /// Some teacher was trained with --others: its columns are log-probabilities without it.
  bool any_others_teacher() const;
  void fit_class_offsets(const std::vector<std::vector<torch::Tensor>>& logits);
  /// Teacher class logits for a batch, and the teacher features of the feature terms into feats.
  torch::Tensor batch_logits(const Batch& batch, std::vector<torch::Tensor>* feats);
  std::vector<std::string> teacher_layers() const;
  std::vector<std::string> student_layers() const;
  /// all_ranks: every data-parallel rank calls it together and each computes a share.
  std::vector<std::vector<torch::Tensor>> pool_logits(const Dataset& data, bool all_ranks = false);
  double target_temperature() const {
    return opts_.targets == Targets::hard ? 1.0 : opts_.loss.temperature;
  }

  Mode mode_;
  DistillOptions opts_;
  std::vector<Teacher> teachers_;
  std::vector<LossSpec> feature_terms_, logit_terms_;
  std::vector<torch::nn::AnyModule> adapters_;  ///< per feature term; empty: compared as they are
  std::vector<ContrastMemory> memories_;        ///< per feature term; set for crd terms
  int64_t epoch_ = 1;
  const Dataset* train_ = nullptr;
  Augment augment_;
  torch::Device device_ = torch::kCPU;
  int64_t num_classes_ = 0;
  std::vector<std::string> class_names_;
  torch::Tensor class_offsets_;  ///< [sum of C_t] (merge)
  /// merge_by_source: [sources, sum of C_t], true where a column's teacher teaches that source.
  torch::Tensor source_columns_;
  /// The teachers' logits over the training pool (per teacher, per ensemble view), on the CPU
  /// (float16, memory-mapped from the teacher cache), combined into class logits a batch at a
  /// time (cached_targets); empty when the teacher runs on each batch.
  std::vector<std::vector<torch::Tensor>> cached_raw_;
  torch::Tensor cached_targets(const torch::Tensor& index) const;
  std::vector<torch::Tensor> cached_feats_;  ///< per feature term [N, ...], or empty
  std::string cache_status_;                 ///< of the last pass over a dataset
  nlohmann::json info_ = nlohmann::json::object();
};

}  // namespace kd
