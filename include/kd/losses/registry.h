#pragma once
/// @file
/// The distillation loss registry: every loss kd can add to a run, by name, with its options and
/// defaults. A run's terms are LossSpecs, parsed from `--loss NAME[:key=value,...]` or from YAML
/// `distill.losses`. No torch here: the configuration layer validates runs against it.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kd {

struct LossOption {
  std::string key;
  double value;  ///< the default; layer options (teacher, student) have none
  std::string help;
};

struct LossInfo {
  std::string name;
  bool feature = false;       ///< matches intermediate features (teacher= and student= layers)
  bool needs_labels = false;  ///< reads the ground-truth class of every sample
  bool adapter =
      false;  ///< a learned 1x1 conv / linear map brings the student to the teacher's shape
  std::string summary;
  std::string citation;  ///< paper and equation
  std::vector<LossOption>
      options;  ///< numeric options with their defaults (weight, warmup included)
};

const std::vector<LossInfo>& loss_catalog();
/// "kd, dkd, ...": the names, in catalog order.
std::string loss_names();
/// Throws UsageError listing the valid names.
const LossInfo& find_loss(const std::string& name);

/// One weighted term of a run's objective.
struct LossSpec {
  std::string name;
  std::map<std::string, double> values;  ///< every numeric option of the loss, defaults filled in
  std::string teacher_layer, student_layer;  ///< feature losses
  double weight() const { return values.at("weight"); }
  double get(const std::string& key) const { return values.at(key); }
  /// "at 7:5", "dkd": for messages and the run summary.
  std::string label() const;
};

/// `NAME[:key=value,...]`; every key checked against the catalog (an unknown one lists the
/// valid ones), every value a finite number in the option's range, layers required for feature
/// losses. Errors are UsageError naming `text`.
LossSpec parse_loss(const std::string& text);
/// The same from a name and key -> value strings (YAML's map form).
LossSpec make_loss(const std::string& name, const std::map<std::string, std::string>& options,
                   const std::string& where);
/// The canonical `NAME:key=value,...` spelling (all options), which parse_loss reads back.
std::string format_loss(const LossSpec& spec);

/// Fraction of a term's weight at 1-based `epoch` under its linear warm-up (DKD's schedule:
/// min(epoch / warmup, 1)); 1 without one.
double warmup_factor(const LossSpec& spec, int64_t epoch);

/// `kd losses`: the catalog as a table (name, kind, options and defaults, citation).
std::string describe_losses();

}  // namespace kd
