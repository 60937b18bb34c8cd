#include <algorithm>
#include <cctype>
#include <chrono>
#include <limits>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/distill/strategy.h"

#include "kd/eval/classify.h"
#include "kd/losses/crd.h"
#include "kd/losses/zoo.h"
#include "teacher_cache.h"
#include <limits>

namespace kd {
namespace {

namespace F = torch::nn::functional;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Hint features of the whole pool are kept in memory only up to this size.
constexpr double kMaxCachedFeatureBytes = 4.0 * (1 << 30);

}  // namespace

StepResult SupervisedStrategy::step(Model& student, const Batch& batch) {
  auto logits = student.forward(batch.x);
  return {mixed_cross_entropy(logits, batch.y, batch.y_mix, batch.lam, label_smoothing_).mean(),
          logits};
}

LossSpec parse_hint(const std::string& text, const std::string& hint_loss) {
  std::vector<std::string> parts;
  for (size_t s = 0, d; s <= text.size(); s = d + 1) {
    d = text.find(':', s);
    if (d == std::string::npos) d = text.size();
    parts.push_back(text.substr(s, d - s));
  }
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty())
    usage_fail("--hint '{}': expected TEACHER_LAYER:STUDENT_LAYER[:WEIGHT]", text);
  LossSpec h = make_loss("fitnet", {{"teacher", parts[0]}, {"student", parts[1]}}, "--hint");
  h.values["normalize"] = hint_loss == "mse" ? 0.0 : 1.0;
  if (parts.size() == 3) {
    char* end = nullptr;
    const double w = std::strtod(parts[2].c_str(), &end);
    if (parts[2].empty() || *end != '\0' || !(w > 0) || !std::isfinite(w))
      usage_fail("--hint '{}': weight '{}' must be a positive number", text, parts[2]);
    h.values["weight"] = w;
  }
  return h;
}

DistillStrategy::DistillStrategy(Mode mode, std::vector<NamedModel> teachers, DistillOptions opts)
    : mode_(mode), opts_(std::move(opts)) {
  KD_CHECK(!teachers.empty() || opts_.snapshot_epoch > 0, "{}: no teacher", mode_);
  for (const auto& l : opts_.losses)
    (find_loss(l.name).feature ? feature_terms_ : logit_terms_).push_back(l);
  for (auto& [label, model] : teachers) teachers_.push_back({label, std::move(model), {}});
}

void DistillStrategy::prepare(Model& student, const Dataset& train, const Augment& augment,
                              torch::Device device) {
  train_ = &train;
  augment_ = augment;
  device_ = device;
  class_names_ = student.spec().class_names;
  num_classes_ = student.spec().num_classes();
  if (!teachers_.empty())
    attach_teachers(student);
  else
    build_feature_heads(student, student);
}

void DistillStrategy::begin_epoch(int64_t epoch, Model& student) {
  epoch_ = epoch;
  if (epoch != opts_.snapshot_epoch) return;
  std::shared_ptr<Model> snapshot = student.clone();
  teachers_ = {{fmt::format("snapshot at epoch {}", epoch), snapshot, {}}};
  spdlog::info("epoch {}: a frozen snapshot of the student becomes its teacher", epoch);
  attach_teachers(student);
}

// The snapshot teacher is the student of an earlier epoch: a run resumed after the snapshot
// epoch gets it back from the checkpoint.
// CRD's memory banks too: they are what its loss compares against.
static fs::path crd_bank_file(const std::string& folder, size_t i) {
  return fs::path(folder) / fmt::format("crd_memory{}.pt", i);
}

void DistillStrategy::save_state(const std::string& folder) const {
  if (opts_.snapshot_epoch > 0 && !teachers_.empty())
    teachers_[0].model->save((fs::path(folder) / "snapshot.pt").string());
  for (size_t i = 0; i < memories_.size(); ++i)
    if (memories_[i]) memories_[i]->save(crd_bank_file(folder, i).string());
}

void DistillStrategy::load_state(const std::string& folder, Model& student) {
  for (size_t i = 0; i < memories_.size(); ++i) {
    const fs::path bank = crd_bank_file(folder, i);
    if (!memories_[i]) continue;
    if (!fs::exists(bank))
      fail("{}: the checkpoint has no CRD memory bank ({})", folder, bank.filename().string());
    memories_[i]->load(bank.string());
  }
  const fs::path snapshot = fs::path(folder) / "snapshot.pt";
  if (opts_.snapshot_epoch <= 0) return;
  if (!fs::exists(snapshot)) {  // a checkpoint from before the snapshot epoch
    teachers_.clear();
    return;
  }
  std::shared_ptr<Model> teacher = student.clone();
  teacher->load(snapshot.string());
  teachers_ = {{fmt::format("snapshot at epoch {}", opts_.snapshot_epoch), teacher, {}}};
  attach_teachers(student);
}

void DistillStrategy::attach_teachers(Model& student) {
  // Class matching by name, case-insensitively.
  std::vector<int> owners(static_cast<size_t>(num_classes_), 0);
  for (auto& t : teachers_) {
    const auto& names = t.model->spec().class_names;
    std::vector<int64_t> map;
    if (names.empty()) {
      // A TorchScript teacher without a names file is taken to use the student's classes.
      for (int64_t c = 0; c < num_classes_; ++c) map.push_back(c);
    }
    t.others_column = -1;
    for (size_t i = 0; i < names.size(); ++i) {
      const auto& n = names[i];
      int64_t found = -1;
      for (int64_t c = 0; c < num_classes_; ++c)
        if (lower(class_names_[static_cast<size_t>(c)]) == lower(n)) found = c;
      if (found < 0 && n == kOthersClass) {
        // Trained with --others: its "not mine" output, not a class of the data.
        KD_CHECK(mode_ == Mode::merge,
                 "teacher {} has a class '{}' (trained with --others): it teaches in --mode merge",
                 t.label, n);
        t.others_column = static_cast<int64_t>(i);
        continue;
      }
      if (found < 0)
        fail("teacher {}: class '{}' matches no class of the data (classes: {})", t.label, n,
             fmt::join(class_names_, ", "));
      KD_CHECK(std::find(map.begin(), map.end(), found) == map.end(),
               "teacher {}: class '{}' is listed twice", t.label, n);
      map.push_back(found);
    }
    for (int64_t c : map) owners[static_cast<size_t>(c)]++;
    if (mode_ != Mode::merge)
      KD_CHECK(static_cast<int64_t>(map.size()) == num_classes_,
               "teacher {} knows {} of the data's {} classes; teachers of part of the classes are "
               "combined with --mode merge",
               t.label, map.size(), num_classes_);
    t.class_map = torch::tensor(map, torch::kInt64);
  }
  for (int64_t c = 0; c < num_classes_; ++c)
    KD_CHECK(owners[static_cast<size_t>(c)] > 0, "class '{}' of the data is known by no teacher",
             class_names_[static_cast<size_t>(c)]);
  if (opts_.merge_by_source) {
    KD_CHECK(mode_ == Mode::merge && train_->origin.defined(),
             "--merge-by-source needs --mode merge on pooled data (--data A+B)");
    // A teacher teaches a source when every class it knows is a class of that source.
    const auto& sources = train_->origin_classes;
    std::vector<torch::Tensor> rows;
    for (size_t s = 0; s < sources.size(); ++s) {
      std::vector<torch::Tensor> cols;
      bool any = false;
      for (const auto& t : teachers_) {
        bool mine = true;
        for (const auto& n : t.model->spec().class_names)
          mine = mine && std::any_of(sources[s].begin(), sources[s].end(),
                                     [&](const std::string& c) { return lower(c) == lower(n); });
        any = any || mine;
        cols.push_back(torch::full({t.class_map.numel()}, mine, torch::kBool));
      }
      KD_CHECK(any, "--merge-by-source: no teacher knows only classes of source {} ({})", s + 1,
               fmt::join(sources[s], ", "));
      rows.push_back(torch::cat(cols));
    }
    source_columns_ = torch::stack(rows);
    info_["merge"] = {{"rule",
                       "by source: each image taught only by the teachers of the pooled source "
                       "it came from, their logits under one softmax"},
                      {"sources", sources}};
  }
  for (auto& t : teachers_) {
    t.model->to(device_);
    t.model->train(false);
    for (auto& p : t.model->parameters()) p.requires_grad_(false);
  }
  build_feature_heads(student, *teachers_[0].model);

  // Teacher outputs over the whole pool: needed for the merge offsets, and reused every epoch
  // when the images do not change between epochs, or when the teacher labels the clean images
  // and the student learns them on augmented views.
  const bool clean = opts_.teacher_on_clean_images && augment_.enabled();
  KD_CHECK(!(clean && augment_.mixes()), "a teacher on clean images cannot label mixed images");
  KD_CHECK(!(clean && !feature_terms_.empty()),
           "a teacher on clean images has no features of the student's augmented view");
  const bool cacheable = clean || (opts_.use_cache && !augment_.enabled());
  std::vector<std::vector<torch::Tensor>> logits;
  if (cacheable || teachers_.size() > 1) logits = pool_logits(*train_, true);
  if (mode_ == Mode::merge && !opts_.merge_by_source) fit_class_offsets(logits);
  if (teacher_ensemble())
    info_["ensemble_of_teachers"] = {{"rule", "the mean of the teachers' probabilities"},
                                     {"teachers", [&] {
                                        std::vector<std::string> labels;
                                        for (const auto& t : teachers_) labels.push_back(t.label);
                                        return labels;
                                      }()}};
  cached_raw_.clear();
  cached_feats_.clear();
  if (clean) info_["teacher_view"] = "clean images, each labeled once";
  info_["teacher_cache"] =
      !opts_.use_cache   ? "off"
      : cacheable        ? cache_status_
      : augment_.mixes() ? "off (mixup/cutmix: the teacher sees each mixed batch)"
                         : "off (augmentation on)";  // cache on but not cacheable: augmented images
  if (!cacheable) return;
  cached_raw_ = logits;
  if (!feature_terms_.empty()) {
    const auto t_layers = teacher_layers();
    double bytes = 0;
    {
      torch::NoGradGuard no_grad;
      auto x = first_pixels(*train_, 1).to(device_).to(torch::kFloat32).div_(255.0);
      for (auto& f : teachers_[0].model->forward_with_features(x, t_layers).second)
        bytes += static_cast<double>(f.numel()) * 4.0 * static_cast<double>(train_->size());
    }
    if (bytes <= kMaxCachedFeatureBytes) {
      // A teacher pass over the whole pool (tens of seconds on a CPU): said, so it is not a stall.
      spdlog::info(
          "teacher features at {}: one teacher pass over {} images ({:.0f} MiB, kept in "
          "memory)",
          fmt::join(t_layers, ", "), train_->size(), bytes / (1 << 20));
      const auto started = std::chrono::steady_clock::now();
      torch::NoGradGuard no_grad;
      std::vector<std::vector<torch::Tensor>> parts(t_layers.size());
      Loader loader(*train_, in_order(inference_batch_size(opts_.teacher_batch_size, *train_)),
                    device_);
      std::vector<torch::Tensor> index;
      for (int64_t b = 0; b < loader.num_batches(); ++b) {
        Batch batch = loader.get(b);
        auto f = teachers_[0].model->forward_with_features(batch.x, t_layers).second;
        for (size_t i = 0; i < f.size(); ++i) parts[i].push_back(f[i].contiguous());
        index.push_back(batch.index);
      }
      // Rows by dataset index (a streamed image that failed to load has none: zeros, never read).
      const auto rows = torch::cat(index);
      for (auto& p : parts) {
        auto all = torch::cat(p);
        auto shape = all.sizes().vec();
        shape[0] = train_->size();
        cached_feats_.push_back(torch::zeros(shape, all.options()).index_copy_(0, rows, all));
      }
      info_["teacher_features"] = fmt::format("cached in memory ({:.0f} MiB)", bytes / (1 << 20));
      spdlog::info(
          "teacher features ready in {:.1f} s",
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    } else {
      info_["teacher_features"] =
          fmt::format("teacher run per batch ({:.0f} MiB would not be cached)", bytes / (1 << 20));
    }
  }
  auto unlabeled = train_->labels < 0;
  const int64_t n_unlabeled = unlabeled.sum().item<int64_t>();
  info_["unlabeled_samples"] = n_unlabeled;
  if (opts_.targets == Targets::hard && n_unlabeled > 0) {
    double covered = 0;
    constexpr int64_t kSlice = 1 << 14;
    for (int64_t s = 0; s < train_->size(); s += kSlice) {
      auto index = torch::arange(s, std::min(s + kSlice, train_->size()), torch::kInt64);
      auto conf = std::get<0>(torch::softmax(cached_targets(index), 1).max(1)).to(torch::kCPU);
      covered += (conf >= opts_.threshold)
                     .logical_and(unlabeled.index_select(0, index))
                     .sum()
                     .item<double>();
    }
    info_["pseudo_label_coverage"] = covered / static_cast<double>(n_unlabeled);
    spdlog::info("pseudo-labels: {:.1f}% of {} unlabeled images reach probability {}",
                 100 * covered / static_cast<double>(n_unlabeled), n_unlabeled, opts_.threshold);
  }
}

// Feature terms: layers checked, adapters (and CRD's heads and memory) sized by a dry run on two
// training images. `teacher` is the student itself before a snapshot teacher exists: it will be
// a copy, and the heads must exist when the optimizer is built.
void DistillStrategy::build_feature_heads(Model& student, Model& teacher) {
  const auto t_layers = teacher_layers(), s_layers = student_layers();
  for (size_t i = 0; i < feature_terms_.size(); ++i) {
    teacher.check_layer(t_layers[i]);
    student.check_layer(s_layers[i]);
  }
  if (!feature_terms_.empty() && adapters_.empty()) {
    torch::NoGradGuard no_grad;
    auto x = first_pixels(*train_, 2).to(device_).to(torch::kFloat32).div_(255.0);
    student.train(false);
    auto sf = student.forward_with_features(x, s_layers).second;
    auto tf = teacher.forward_with_features(x, t_layers).second;
    for (size_t i = 0; i < feature_terms_.size(); ++i) {
      const LossSpec& term = feature_terms_[i];
      const std::string what =
          term.name == "fitnet" ? fmt::format("hint {}:{}", term.teacher_layer, term.student_layer)
                                : term.label();
      auto ss = sf[i].sizes().slice(1).vec(), ts = tf[i].sizes().slice(1).vec();
      auto shape = [](const std::vector<int64_t>& v) { return c10::str(c10::IntArrayRef(v)); };
      torch::nn::AnyModule adapter;
      ContrastMemory memory{nullptr};
      std::string kind = "none";
      auto width = [](const std::vector<int64_t>& v) {
        int64_t n = 1;
        for (int64_t d : v) n *= d;
        return n;
      };
      if (term.name == "crd") {
        memory = ContrastMemory(term, width(ss), width(ts), train_->size());
        memory->to(device_);
        kind = fmt::format("linear {} -> {} and {} -> {}, memory bank of {} x 2 rows", width(ss),
                           term.get("dim"), width(ts), term.get("dim"), train_->size());
      } else if (!find_loss(term.name).adapter || ss == ts) {
        // Compared as they are: relation losses (rkd, sp, pkt) compare batch structure, at
        // compares spatial maps.
        if (term.name == "at" && (ss.size() != 3 || ts.size() != 3))
          fail(
              "{}: attention transfer needs [C, H, W] feature maps; the student's {} output is {}, "
              "the "
              "teacher's {} output {}",
              what, term.student_layer, shape(ss), term.teacher_layer, shape(ts));
      } else if (ss.size() == 3 && ts.size() == 3 && ss[1] == ts[1] && ss[2] == ts[2]) {
        adapter =
            torch::nn::AnyModule(torch::nn::Conv2d(torch::nn::Conv2dOptions(ss[0], ts[0], 1)));
        kind = "conv1x1";
      } else if (ss.size() == 1 && ts.size() == 1) {
        adapter = torch::nn::AnyModule(torch::nn::Linear(ss[0], ts[0]));
        kind = "linear";
      } else {
        fail(
            "{}: no adapter maps the student's {} output {} to the teacher's {} output {} "
            "(a 1x1 conv needs equal height and width, a linear layer needs flat features)",
            what, term.student_layer, shape(ss), term.teacher_layer, shape(ts));
      }
      if (!adapter.is_empty()) adapter.ptr()->to(device_);
      adapters_.push_back(std::move(adapter));
      memories_.push_back(memory);
      info_["feature_losses"].push_back({{"loss", format_loss(term)},
                                         {"teacher_shape", ts},
                                         {"student_shape", ss},
                                         {"adapter", kind}});
    }
  }
}

std::vector<std::vector<torch::Tensor>> DistillStrategy::pool_logits(const Dataset& data,
                                                                     bool all_ranks) {
  std::vector<std::vector<torch::Tensor>> out(teachers_.size());
  const std::string dir = opts_.cache_dir.empty() ? default_cache_dir() : opts_.cache_dir;
  int hits = 0, total = 0;
  for (size_t t = 0; t < teachers_.size(); ++t) {
    for (int k = 0; k < opts_.ensemble; ++k) {
      Dataset view = data;
      view.view = k;
      if (opts_.use_cache) {
        auto c = cached_teacher_logits(*teachers_[t].model, view, dir, opts_.teacher_batch_size,
                                       device_, all_ranks);
        hits += c.hit ? 1 : 0;
        out[t].push_back(c.logits);
      } else {
        out[t].push_back(all_ranks ? predict_logits_all_ranks(*teachers_[t].model, view,
                                                              opts_.teacher_batch_size, device_)
                                   : predict_logits(*teachers_[t].model, view,
                                                    opts_.teacher_batch_size, device_));
      }
      ++total;
    }
  }
  if (opts_.use_cache) {
    cache_status_ = hits == total ? "hit"
                    : hits == 0   ? "miss (computed)"
                                  : fmt::format("{} of {} hit", hits, total);
    spdlog::info("teacher cache {} ({} teacher pass(es) over {} images, in {})", cache_status_,
                 total, data.size(), dir);
  }
  return out;
}

torch::Tensor DistillStrategy::teacher_columns(
    const std::vector<std::vector<torch::Tensor>>& logits) const {
  // A teacher with a "not mine" output (--others) says how much of the image is its own: every
  // teacher's columns are then its log-probabilities, the "not mine" one dropped, so that under
  // the one softmax over all columns a teacher that says "not mine" hands its mass to the others.
  // An ensemble (several teachers of all the classes, offline or semi) takes log-probabilities
  // too: merged_class_logits then sums each class's probabilities, and the softmax of the sum is
  // the teachers' mean distribution, whatever each one's logit scale.
  const bool log_probs = teacher_ensemble() || any_others_teacher();
  std::vector<torch::Tensor> cols;
  for (size_t t = 0; t < teachers_.size(); ++t) {
    const auto& teacher = teachers_[t];
    const int64_t outputs = teacher.class_map.numel() + (teacher.others_column >= 0 ? 1 : 0);
    auto z = torch::zeros_like(logits[t][0], torch::kFloat32);
    for (const auto& v : logits[t]) {
      KD_CHECK(v.size(1) == outputs, "teacher {} returns {} outputs for {} classes", teacher.label,
               v.size(1), outputs);
      z += v.to(torch::kFloat32);
    }
    z /= static_cast<double>(logits[t].size());
    if (log_probs) z = torch::log_softmax(z, 1);
    if (teacher.others_column >= 0) {
      std::vector<int64_t> own;
      for (int64_t i = 0; i < outputs; ++i)
        if (i != teacher.others_column) own.push_back(i);
      z = z.index_select(1, torch::tensor(own, torch::kInt64).to(z.device()));
    }
    cols.push_back(z);
  }
  return torch::cat(cols, 1);
}

bool DistillStrategy::any_others_teacher() const {
  return std::any_of(teachers_.begin(), teachers_.end(),
                     [](const Teacher& t) { return t.others_column >= 0; });
}

torch::Tensor DistillStrategy::column_classes() const {
  std::vector<torch::Tensor> maps;
  for (const auto& t : teachers_) maps.push_back(t.class_map);
  return torch::cat(maps);
}

void DistillStrategy::fit_class_offsets(const std::vector<std::vector<torch::Tensor>>& logits) {
  auto Z = teacher_columns(logits);
  auto col_class = column_classes();
  class_offsets_ = fit_merge_offsets(Z, col_class, num_classes_);
  auto marginal =
      torch::softmax(merged_class_logits(Z, col_class, num_classes_, class_offsets_), 1).mean(0);
  auto b = class_offsets_.to(torch::kFloat64);
  std::vector<double> offs(b.data_ptr<double>(), b.data_ptr<double>() + b.numel());
  auto m = marginal.to(torch::kFloat64);
  std::vector<double> marg(m.data_ptr<double>(), m.data_ptr<double>() + m.numel());
  info_["merge"] = {
      {"rule", any_others_teacher() ? "softmax over all teachers' log-probabilities without "
                                      "their (others) output, minus per-class offsets fitted "
                                      "so the pool's class marginals are uniform"
                                    : "softmax over all teachers' logits minus per-class "
                                      "offsets fitted so the pool's class marginals are "
                                      "uniform"},
      {"offsets", offs},
      {"pool_class_marginals", marg}};
  spdlog::info("merge: per-class offsets fitted on {} images; pool class marginals {:.3f}",
               Z.size(0), fmt::join(marg, ", "));
}

torch::Tensor DistillStrategy::combine(const std::vector<std::vector<torch::Tensor>>& logits,
                                       const torch::Tensor& origin) const {
  auto Z = teacher_columns(logits);
  if (source_columns_.defined()) {
    KD_CHECK(origin.defined(), "--merge-by-source: images without a pooled source");
    // The other sources' teachers' columns get no mass.
    auto keep = source_columns_.index_select(0, origin.to(torch::kCPU)).to(Z.device());
    Z = Z.masked_fill(keep.logical_not(), -std::numeric_limits<float>::infinity());
  }
  return merged_class_logits(Z, column_classes(), num_classes_, class_offsets_);
}

torch::Tensor DistillStrategy::cached_targets(const torch::Tensor& index) const {
  auto idx = index.to(torch::kCPU);
  std::vector<std::vector<torch::Tensor>> rows(cached_raw_.size());
  for (size_t t = 0; t < cached_raw_.size(); ++t)
    for (const auto& v : cached_raw_[t])
      rows[t].push_back(v.index_select(0, idx).to(torch::kFloat32));
  const auto& origin = train_->origin;
  return combine(rows, origin.defined() ? origin.index_select(0, idx) : origin).to(device_);
}

torch::Tensor fit_merge_offsets(const torch::Tensor& columns, const torch::Tensor& column_class,
                                int64_t num_classes) {
  auto Z = columns.to(torch::kFloat64);
  auto owners =
      torch::zeros({num_classes}, torch::kFloat64)
          .index_add_(0, column_class, torch::ones({column_class.numel()}, torch::kFloat64));
  // A class's prior 1/C is split equally between the teachers that know it.
  auto prior = 1.0 / (owners.index_select(0, column_class) * static_cast<double>(num_classes));
  auto b = torch::zeros({Z.size(1)}, torch::kFloat64);
  for (int it = 0; it < 500; ++it) b += (torch::softmax(Z - b, 1).mean(0) / prior).log();
  return (b - b.mean()).to(torch::kFloat32);
}

torch::Tensor merge_teacher_logits(const torch::Tensor& columns, const torch::Tensor& column_class,
                                   int64_t num_classes, const torch::Tensor& offsets, double T) {
  return torch::softmax(merged_class_logits(columns, column_class, num_classes, offsets) / T, 1);
}

torch::Tensor merged_class_logits(const torch::Tensor& columns, const torch::Tensor& column_class,
                                  int64_t num_classes, const torch::Tensor& offsets) {
  auto Z = offsets.defined() ? columns - offsets.to(columns.device()) : columns;
  // One logit per class first (the log of its columns' summed mass), then the temperature: a
  // class two teachers know must not get twice the mass once the distribution is softened.
  auto cls = column_class.to(torch::kCPU);
  std::vector<torch::Tensor> class_logits;
  for (int64_t c = 0; c < num_classes; ++c) {
    auto cols = (cls == c).nonzero().flatten().to(Z.device());
    class_logits.push_back(torch::logsumexp(Z.index_select(1, cols), 1));
  }
  return torch::stack(class_logits, 1);
}

std::vector<std::string> DistillStrategy::teacher_layers() const {
  std::vector<std::string> out;
  for (const auto& t : feature_terms_) out.push_back(t.teacher_layer);
  return out;
}

std::vector<std::string> DistillStrategy::student_layers() const {
  std::vector<std::string> out;
  for (const auto& t : feature_terms_) out.push_back(t.student_layer);
  return out;
}

torch::Tensor DistillStrategy::batch_logits(const Batch& batch, std::vector<torch::Tensor>* feats) {
  torch::NoGradGuard no_grad;
  const torch::Tensor& x = batch.x;
  std::vector<std::vector<torch::Tensor>> logits(teachers_.size());
  for (size_t t = 0; t < teachers_.size(); ++t) {
    for (int k = 0; k < opts_.ensemble; ++k) {
      auto xv = ensemble_view(x, k);
      if (t == 0 && k == 0 && feats) {
        auto [z, f] = teachers_[t].model->forward_with_features(xv, teacher_layers());
        *feats = std::move(f);
        logits[t].push_back(z);
      } else {
        logits[t].push_back(teachers_[t].model->forward(xv));
      }
    }
  }
  return combine(logits, train_->origin.defined()
                             ? train_->origin.index_select(0, batch.index.to(torch::kCPU))
                             : torch::Tensor());
}

StepResult DistillStrategy::step(Model& student, const Batch& batch) {
  const auto& o = opts_;
  if (teachers_.empty()) {  // before the snapshot epoch
    auto logits = student.forward(batch.x);
    return {
        mixed_cross_entropy(logits, batch.y, batch.y_mix, batch.lam, o.loss.label_smoothing).mean(),
        logits};
  }
  auto [logits, s_feats] = student.forward_with_features(batch.x, student_layers());

  torch::Tensor z_t;
  std::vector<torch::Tensor> t_feats;
  const bool need_feats = !feature_terms_.empty() && cached_feats_.empty();
  if (!cached_raw_.empty()) {
    z_t = cached_targets(batch.index);
    if (need_feats) {
      torch::NoGradGuard no_grad;
      t_feats = teachers_[0].model->forward_with_features(batch.x, teacher_layers()).second;
    }
  } else {
    z_t = batch_logits(batch, need_feats ? &t_feats : nullptr);
  }
  for (const auto& f : cached_feats_) t_feats.push_back(f.index_select(0, batch.index));

  torch::Tensor loss;
  if (logit_terms_.empty()) {
    auto targets = torch::softmax(z_t / target_temperature(), 1);
    loss = distill_loss(logits, targets, batch.y, o.loss, o.targets == Targets::hard, o.threshold,
                        batch.y_mix, batch.lam);
  } else {
    loss =
        o.ce_weight *
        mixed_cross_entropy(logits, batch.y, batch.y_mix, batch.lam, o.loss.label_smoothing).mean();
    for (const auto& term : logit_terms_)
      loss = loss + term.weight() * warmup_factor(term, epoch_) *
                        loss_term(term, logits, z_t, batch.y, {}, {});
  }
  for (size_t i = 0; i < feature_terms_.size(); ++i) {
    const auto& term = feature_terms_[i];
    auto s = adapters_[i].is_empty() ? s_feats[i] : adapters_[i].forward(s_feats[i]);
    auto value = memories_[i] ? memories_[i]->forward(s, t_feats[i], batch.index)
                              : loss_term(term, {}, {}, {}, s, t_feats[i]);
    loss = loss + term.weight() * warmup_factor(term, epoch_) * value;
  }
  return {loss, logits};
}

std::vector<torch::Tensor> DistillStrategy::parameters() {
  std::vector<torch::Tensor> out;
  for (auto& a : adapters_)
    if (!a.is_empty())
      for (auto& p : a.ptr()->parameters()) out.push_back(p);
  for (auto& m : memories_)
    if (m)
      for (auto& p : m->parameters()) out.push_back(p);
  return out;
}

torch::Tensor DistillStrategy::targets_for(const Dataset& data) {
  KD_CHECK(!teachers_.empty(), "{}: no teacher yet", mode_);
  return torch::softmax(combine(pool_logits(data), data.origin), 1);
}

nlohmann::json DistillStrategy::describe() const {
  nlohmann::json j = info_;
  j["strategy"] = mode_;
  std::vector<std::string> names;
  for (const auto& t : teachers_) names.push_back(t.label);
  if (opts_.snapshot_epoch > 0) {
    j["teacher"] = "snapshot of the student";
    j["snapshot_epoch"] = opts_.snapshot_epoch;
  } else if (names.size() == 1) {
    j["teacher"] = names[0];
  } else {
    j["teachers"] = names;
  }
  if (logit_terms_.empty()) {  // the soft-target objective
    j["temperature"] = opts_.loss.temperature;
    j["alpha"] = opts_.loss.alpha;
    j["targets"] = opts_.targets;
    if (opts_.targets == Targets::hard) j["threshold"] = opts_.threshold;
  }
  j["ensemble"] = opts_.ensemble;
  if (!opts_.losses.empty()) {
    for (const auto& l : opts_.losses) j["losses"].push_back(format_loss(l));
    if (!logit_terms_.empty()) j["ce_weight"] = opts_.ce_weight;
  }
  return j;
}

}  // namespace kd
