#include "kd/losses/registry.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include <fmt/format.h>

#include "kd/core/error.h"

namespace kd {
namespace {

const LossOption kWeight{"weight", 1.0, "weight of the term in the objective"};
const LossOption kWarmup{"warmup", 0.0,
                         "epochs over which the weight rises linearly from 0 (0: none)"};
const LossOption kStd{
    "std", 0.0,
    "1: logit standardization first (Sun et al. 2024, Z-score of each sample's logits)"};

std::vector<LossInfo> make_catalog() {
  auto with = [](std::vector<LossOption> own, double weight, double warmup) {
    LossOption w = kWeight, u = kWarmup;
    w.value = weight;
    u.value = warmup;
    own.push_back(w);
    own.push_back(u);
    return own;
  };
  return {
      {"kd", false, false, false, "Hinton soft targets: T^2 KL(p_t^T || p_s^T)",
       "Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network, sec. 2",
       with({{"T", 4.0, "temperature"}, kStd}, 1.0, 0.0)},
      {"dkd", false, true, false,
       "decoupled KD: alpha TCKD (target vs rest) + beta NCKD (among non-targets)",
       "Zhao et al. 2022, Decoupled Knowledge Distillation, eq. 7",
       with({{"alpha", 1.0, "weight of target-class KD"},
             {"beta", 8.0, "weight of non-target-class KD"},
             {"T", 4.0, "temperature"},
             kStd},
            1.0, 20.0)},
      {"dist", false, false, false,
       "inter-class + intra-class Pearson correlation of the probabilities",
       "Huang et al. 2022, Knowledge Distillation from A Stronger Teacher, eq. 9",
       with({{"beta", 1.0, "weight of the inter-class (per sample) relation"},
             {"gamma", 1.0, "weight of the intra-class (per class, over the batch) relation"},
             {"T", 1.0, "temperature"},
             kStd},
            1.0, 0.0)},
      {"mlkd", false, false, false,
       "multi-level alignment: instance KD + batch (sample x sample) + class (class x class) "
       "correlations, averaged over T in {2, 3, 4, 5, 6}",
       "Jin et al. 2023, Multi-level Logit Distillation, eqs. 3-8 (without its strong-augmentation "
       "views)",
       with({{"instance", 1.0, "weight of the instance (KD) level"},
             {"batch", 1.0, "weight of the batch level"},
             {"class", 1.0, "weight of the class level"},
             kStd},
            1.0, 0.0)},
      {"fitnet", true, false, true,
       "hint: (normalised) MSE between adapted student and teacher features",
       "Romero et al. 2015, FitNets: Hints for Thin Deep Nets, eq. 3",
       with({{"normalize", 1.0,
              "1: squared distance of per-sample L2-normalised features; 0: plain MSE"}},
            1.0, 0.0)},
      {"at", true, false, false,
       "attention transfer: squared distance of normalised spatial maps mean_c |f|^p",
       "Zagoruyko & Komodakis 2017, Paying More Attention to Attention, eq. 2 (as in the authors' "
       "code)",
       with({{"p", 2.0, "power of the activation map"}}, 1000.0, 0.0)},
      {"pkd", true, false, true,
       "MSE / 2 between per-channel standardised features (Pearson correlation)",
       "Cao et al. 2022, PKD: General Distillation Framework for Object Detectors via Pearson "
       "Correlation Coefficient, eq. 4",
       with({}, 1.0, 0.0)},
      {"cwd", true, false, true,
       "channel-wise: KL between each channel's softmax over positions at temperature T",
       "Shu et al. 2021, Channel-wise Knowledge Distillation for Dense Prediction, eq. 4",
       with({{"T", 4.0, "temperature"}}, 1.0, 0.0)},
      {"rkd", true, false, false,
       "relational KD: pairwise distances and triplet angles of the batch's embeddings",
       "Park et al. 2019, Relational Knowledge Distillation, eqs. 4-7",
       with({{"distance", 25.0, "weight of the distance term"},
             {"angle", 50.0, "weight of the angle term"}},
            1.0, 0.0)},
      {"sp", true, false, false, "similarity preserving: row-normalised batch Gram matrices",
       "Tung & Mori 2019, Similarity-Preserving Knowledge Distillation, eq. 4",
       with({}, 3000.0, 0.0)},
      {"pkt", true, false, false,
       "probabilistic knowledge transfer: KL of cosine-kernel conditional densities",
       "Passalis & Tefas 2018, Learning Deep Representations with Probabilistic Knowledge "
       "Transfer, eqs. 8-10",
       with({}, 30000.0, 0.0)},
      {"crd", true, false, false,
       "contrastive representation distillation: NCE against a memory bank of both networks' "
       "embeddings",
       "Tian et al. 2020, Contrastive Representation Distillation, eqs. 18-19 (negatives shared by "
       "the batch)",
       with({{"dim", 128.0, "embedding width of the two learned linear heads"},
             {"negatives", 4096.0,
              "negatives drawn from the memory bank per batch (the paper: 16384 per sample)"},
             {"T", 0.07, "temperature of the critic"},
             {"momentum", 0.5, "memory bank update: m * old + (1 - m) * new, renormalised"}},
            0.8, 0.0)},
  };
}

std::string keys_of(const LossInfo& info) {
  std::string out = info.feature ? "teacher, student" : "";
  for (const auto& o : info.options) out += (out.empty() ? "" : ", ") + o.key;
  return out;
}

// The range every option is checked against.
void check_value(const std::string& where, const std::string& loss, const std::string& key,
                 double v) {
  const bool nonneg = key != "T" && key != "p";
  const bool ok = std::isfinite(v) && (nonneg ? v >= 0 : v > 0) && v <= 1e6 &&
                  (key != "std" && key != "normalize" ? true : (v == 0 || v == 1)) &&
                  (key != "T" || v <= 100);
  const bool count = key == "dim" || key == "negatives";
  if (ok && (!count || (v >= 1 && v == std::floor(v))) && (key != "momentum" || v < 1)) return;
  if (count)
    usage_fail("{}: {} option {} must be a whole number in [1, 1e6], got {}", where, loss, key, v);
  if (key == "momentum")
    usage_fail("{}: {} option momentum must be in [0, 1), got {}", where, loss, v);
  if (key == "std" || key == "normalize")
    usage_fail("{}: {} option {} must be 0 or 1, got {}", where, loss, key, v);
  if (key == "T") usage_fail("{}: {} option T must be in (0, 100], got {}", where, loss, v);
  usage_fail("{}: {} option {} must be a number in {}0, 1e6], got {}", where, loss, key,
             nonneg ? "[" : "(", v);
}

}  // namespace

const std::vector<LossInfo>& loss_catalog() {
  static const std::vector<LossInfo> catalog = make_catalog();
  return catalog;
}

std::string loss_names() {
  std::string out;
  for (const auto& l : loss_catalog()) out += (out.empty() ? "" : ", ") + l.name;
  return out;
}

const LossInfo& find_loss(const std::string& name) {
  for (const auto& l : loss_catalog())
    if (l.name == name) return l;
  usage_fail("unknown loss '{}' (losses: {}; see kd losses)", name, loss_names());
}

std::string LossSpec::label() const {
  return teacher_layer.empty() ? name : fmt::format("{} {}:{}", name, teacher_layer, student_layer);
}

LossSpec make_loss(const std::string& name, const std::map<std::string, std::string>& options,
                   const std::string& where) {
  const LossInfo& info = find_loss(name);
  LossSpec spec;
  spec.name = name;
  for (const auto& o : info.options) spec.values[o.key] = o.value;
  for (const auto& [key, text] : options) {
    if (info.feature && (key == "teacher" || key == "student")) {
      if (text.empty() || text.find_first_of(",=: \t\n") != std::string::npos)
        usage_fail(
            "{}: {} option {} needs a layer name (a module path such as 7 or features.3), got '{}'",
            where, name, key, text);
      (key == "teacher" ? spec.teacher_layer : spec.student_layer) = text;
      continue;
    }
    if (!spec.values.count(key))
      usage_fail("{}: loss {} has no option '{}' (options: {})", where, name, key, keys_of(info));
    double v = 0;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec != std::errc() || ptr != end)
      usage_fail("{}: {} option {}: '{}' is not a number", where, name, key, text);
    check_value(where, name, key, v);
    spec.values[key] = v;
  }
  if (info.feature && (spec.teacher_layer.empty() || spec.student_layer.empty()))
    usage_fail(
        "{}: feature loss {} needs teacher=LAYER,student=LAYER (layer names: kd models --layers "
        "ARCH)",
        where, name);
  return spec;
}

LossSpec parse_loss(const std::string& text) {
  const std::string where = fmt::format("--loss '{}'", text);
  const size_t colon = text.find(':');
  const std::string name = text.substr(0, colon);
  std::map<std::string, std::string> options;
  if (colon != std::string::npos) {
    const std::string rest = text.substr(colon + 1);
    for (size_t s = 0, d; s <= rest.size(); s = d + 1) {
      d = rest.find(',', s);
      if (d == std::string::npos) d = rest.size();
      const std::string kv = rest.substr(s, d - s);
      const size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0)
        usage_fail("{}: expected NAME[:key=value,...], got '{}'", where, kv);
      if (!options.emplace(kv.substr(0, eq), kv.substr(eq + 1)).second)
        usage_fail("{}: option '{}' given twice", where, kv.substr(0, eq));
    }
  }
  return make_loss(name, options, where);
}

std::string format_loss(const LossSpec& spec) {
  std::string out = spec.name;
  char sep = ':';
  auto add = [&](const std::string& k, const std::string& v) {
    out += sep + k + "=" + v;
    sep = ',';
  };
  if (!spec.teacher_layer.empty()) add("teacher", spec.teacher_layer);
  if (!spec.student_layer.empty()) add("student", spec.student_layer);
  for (const auto& [k, v] : spec.values) add(k, fmt::format("{}", v));
  return out;
}

double warmup_factor(const LossSpec& spec, int64_t epoch) {
  const double w = spec.get("warmup");
  return w > 0 ? std::min(1.0, static_cast<double>(epoch) / w) : 1.0;
}

std::string describe_losses() {
  std::string out;
  for (const auto& l : loss_catalog()) {
    out += fmt::format("{:<7} {:<8} {}{}\n", l.name, l.feature ? "feature" : "logit", l.summary,
                       l.needs_labels ? " (needs labels)" : "");
    out += fmt::format("{:<16} {}\n", "", l.citation);
    if (l.feature)
      out += fmt::format(
          "{:<16} teacher=LAYER, student=LAYER (required; kd models --layers ARCH){}\n", "",
          l.adapter ? "; a learned 1x1 conv or linear map adapts the student's shape" : "");
    for (const auto& o : l.options)
      out += fmt::format("{:<16} {}={}  {}\n", "", o.key, o.value, o.help);
  }
  return out;
}

}  // namespace kd
