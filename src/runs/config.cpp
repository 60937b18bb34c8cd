#include "kd/runs/config.h"

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "kd/core/error.h"
#include "kd/losses/registry.h"

namespace kd {
namespace {

// One table of fields drives reading, writing and validation of keys, so a new option is one
// line here and can never be written without being readable.
struct Field {
  std::function<void(const YAML::Node&)> read;
  std::function<void(YAML::Emitter&)> write;
};

template <typename T>
Field field(T& ref) {
  return {[&ref](const YAML::Node& n) { ref = n.as<T>(); }, [&ref](YAML::Emitter& e) { e << ref; }};
}

// task, mode, distill.targets: the words, each checked against its choices as it is read.
template <typename E>
Field kind_field(E& ref) {
  return {[&ref](const YAML::Node& n) {
            const std::string text = n.as<std::string>();
            if (!try_parse(text, ref)) usage_fail("'{}': expected {}", text, kind_choices<E>());
          },
          [&ref](YAML::Emitter& e) { e << std::string(to_string(ref)); }};
}

// distill.losses: a list of `NAME:key=value,...` strings or of maps {name: NAME, key: value};
// kept in the canonical string spelling (every option), written back as maps.
Field loss_list_field(std::vector<std::string>& ref) {
  return {
      [&ref](const YAML::Node& n) {
        if (!n.IsSequence()) throw YAML::Exception(n.Mark(), "a list of losses");
        std::vector<std::string> out;
        for (const auto& item : n) {
          if (item.IsScalar()) {
            out.push_back(format_loss(parse_loss(item.as<std::string>())));
            continue;
          }
          if (!item.IsMap() || !item["name"])
            throw YAML::Exception(item.Mark(), "a loss needs a name");
          std::map<std::string, std::string> options;
          for (const auto& kv : item) {
            const std::string key = kv.first.as<std::string>();
            if (key == "name") continue;
            if (!kv.second.IsScalar() || !options.emplace(key, kv.second.as<std::string>()).second)
              throw YAML::Exception(kv.second.Mark(), key);
          }
          const std::string name = item["name"].as<std::string>();
          out.push_back(format_loss(make_loss(name, options, "distill.losses: " + name)));
        }
        ref = out;
      },
      [&ref](YAML::Emitter& e) {
        e << YAML::BeginSeq;
        for (const auto& text : ref) {
          LossSpec spec = parse_loss(text);
          e << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value << spec.name;
          if (!spec.teacher_layer.empty())
            e << YAML::Key << "teacher" << YAML::Value << spec.teacher_layer << YAML::Key
              << "student" << YAML::Value << spec.student_layer;
          // Shortest round-trip digits, not the emitter's 15.
          for (const auto& [k, v] : spec.values)
            e << YAML::Key << k << YAML::Value << fmt::format("{}", v);
          e << YAML::EndMap;
        }
        e << YAML::EndSeq;
      }};
}

using Fields = std::vector<std::pair<std::string, Field>>;

Fields fields(RunConfig& c) {
  return {
      {"task", kind_field(c.task)},
      {"name", field(c.name)},
      {"mode", kind_field(c.mode)},
      {"out", field(c.out)},
      {"arch", field(c.arch)},
      {"arch_options", field(c.arch_options)},
      {"init_from", field(c.init_from)},
      {"measure_latency", field(c.measure_latency)},
      {"data.source", field(c.data.source)},
      {"data.split", field(c.data.split)},
      {"data.train_ratio", field(c.data.train_ratio)},
      {"data.split_seed", field(c.data.split_seed)},
      {"data.limit", field(c.data.limit)},
      {"data.channels", field(c.data.channels)},
      {"data.height", field(c.data.height)},
      {"data.width", field(c.data.width)},
      {"data.resize", field(c.data.resize)},
      {"data.workers", field(c.data.workers)},
      {"data.strict", field(c.data.strict)},
      {"data.max_missing", field(c.data.max_missing)},
      {"data.labeled_fraction", field(c.data.labeled_fraction)},
      {"data.unlabeled", field(c.data.unlabeled)},
      {"data.classes", field(c.data.classes)},
      {"data.others", field(c.data.others)},
      {"train.epochs", field(c.train.epochs)},
      {"train.batch_size", field(c.train.batch_size)},
      {"train.eval_batch_size", field(c.train.eval_batch_size)},
      {"train.crop_padding", field(c.train.crop_padding)},
      {"train.hflip", field(c.train.hflip)},
      {"train.random_resized_crop", field(c.train.random_resized_crop)},
      {"train.jitter", field(c.train.jitter)},
      {"train.mixup", field(c.train.mixup)},
      {"train.cutmix", field(c.train.cutmix)},
      {"train.label_smoothing", field(c.train.label_smoothing)},
      {"train.optim.name", field(c.train.optim.name)},
      {"train.optim.lr", field(c.train.optim.lr)},
      {"train.optim.momentum", field(c.train.optim.momentum)},
      {"train.optim.nesterov", field(c.train.optim.nesterov)},
      {"train.optim.weight_decay", field(c.train.optim.weight_decay)},
      {"train.schedule.name", field(c.train.schedule.name)},
      {"train.schedule.warmup_epochs", field(c.train.schedule.warmup_epochs)},
      {"train.schedule.step_size", field(c.train.schedule.step_size)},
      {"train.schedule.gamma", field(c.train.schedule.gamma)},
      {"train.schedule.min_lr", field(c.train.schedule.min_lr)},
      {"distill.teacher", field(c.distill.teacher)},
      {"distill.teachers", field(c.distill.teachers)},
      {"distill.temperature", field(c.distill.temperature)},
      {"distill.alpha", field(c.distill.alpha)},
      {"distill.targets", kind_field(c.distill.targets)},
      {"distill.threshold", field(c.distill.threshold)},
      {"distill.ensemble", field(c.distill.ensemble)},
      {"distill.merge_by_source", field(c.distill.merge_by_source)},
      {"distill.generations", field(c.distill.generations)},
      {"distill.teach_last", field(c.distill.teach_last)},
      {"distill.hints", field(c.distill.hints)},
      {"distill.hint_loss", field(c.distill.hint_loss)},
      {"distill.losses", loss_list_field(c.distill.losses)},
      {"distill.ce_weight", field(c.distill.ce_weight)},
      {"distill.teacher_cache", field(c.distill.teacher_cache)},
      {"distill.teacher_view", field(c.distill.teacher_view)},
      {"distill.cache_dir", field(c.distill.cache_dir)},
      {"detect.scale_jitter", field(c.detect.scale_jitter)},
      {"detect.focal_alpha", field(c.detect.focal_alpha)},
      {"detect.focal_gamma", field(c.detect.focal_gamma)},
      {"detect.huber_delta", field(c.detect.huber_delta)},
      {"detect.box_weight", field(c.detect.box_weight)},
      {"detect.kd_class", field(c.detect.kd_class)},
      {"detect.kd_box", field(c.detect.kd_box)},
      {"detect.kd_feature", field(c.detect.kd_feature)},
      {"detect.kd_levels", field(c.detect.kd_levels)},
      {"detect.kd_feature_loss", field(c.detect.kd_feature_loss)},
      {"detect.score_threshold", field(c.detect.score_threshold)},
      {"detect.nms_iou", field(c.detect.nms_iou)},
      {"qat.precision", field(c.qat.precision)},
      {"qat.epochs", field(c.qat.epochs)},
      {"qat.lr_scale", field(c.qat.lr_scale)},
      {"qat.freeze_epochs", field(c.qat.freeze_epochs)},
      {"qat.allow_fp32_layers", field(c.qat.allow_fp32_layers)},
      {"runtime.device", field(c.runtime.device)},
      {"runtime.threads", field(c.runtime.threads)},
      {"runtime.seed", field(c.runtime.seed)},
      {"runtime.deterministic", field(c.runtime.deterministic)},
      {"runtime.precision", field(c.runtime.precision)},
  };
}

void walk(const YAML::Node& node, const std::string& prefix,
          const std::map<std::string, Field*>& by_key, const std::string& where) {
  if (!node.IsMap())
    fail("{}: {} must be a mapping", where, prefix.empty() ? "the document" : prefix);
  std::set<std::string> seen;  // yaml-cpp keeps both of two equal keys; lookups see only one
  for (const auto& kv : node) {
    const std::string key = prefix + kv.first.as<std::string>();
    if (!seen.insert(key).second) fail("{}: key '{}' appears twice", where, key);
    auto it = by_key.find(key);
    if (it != by_key.end()) {
      try {
        it->second->read(kv.second);
      } catch (const YAML::Exception&) {
        fail("{}: {}: bad value '{}'", where, key, YAML::Dump(kv.second));
      } catch (const UsageError& e) {
        usage_fail("{}: {}: {}", where, key, e.what());
      }
      continue;
    }
    bool is_section = false;
    for (const auto& [k, f] : by_key)
      if (k.rfind(key + ".", 0) == 0) is_section = true;
    if (!is_section) fail("{}: unknown key '{}'", where, key);
    walk(kv.second, key + ".", by_key, where);
  }
}

}  // namespace

bool is_torchscript_path(const std::string& arch) {
  return arch.size() > 3 &&
         (arch.rfind(".pt") == arch.size() - 3 || arch.rfind(".pth") == arch.size() - 4) &&
         std::filesystem::is_regular_file(arch);
}

std::string to_yaml(const RunConfig& cfg) {
  RunConfig copy = cfg;
  Fields fs = fields(copy);
  YAML::Emitter e;
  e.SetDoublePrecision(15);  // 0.8, not 0.80000000000000004
  e << YAML::BeginMap;
  std::vector<std::string> open;  // the section path currently open in the emitter
  for (auto& [key, f] : fs) {
    std::vector<std::string> parts;
    for (size_t s = 0, d; s <= key.size(); s = d + 1) {
      d = key.find('.', s);
      if (d == std::string::npos) d = key.size();
      parts.push_back(key.substr(s, d - s));
    }
    size_t common = 0;
    while (common < open.size() && common + 1 < parts.size() && open[common] == parts[common])
      ++common;
    while (open.size() > common) {
      e << YAML::EndMap;
      open.pop_back();
    }
    for (size_t i = common; i + 1 < parts.size(); ++i) {
      e << YAML::Key << parts[i] << YAML::Value << YAML::BeginMap;
      open.push_back(parts[i]);
    }
    e << YAML::Key << parts.back() << YAML::Value;
    f.write(e);
  }
  while (!open.empty()) {
    e << YAML::EndMap;
    open.pop_back();
  }
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

namespace {

void flatten(const YAML::Node& n, const std::string& prefix,
             std::map<std::string, std::string>& out) {
  if (n.IsMap()) {
    for (const auto& kv : n) flatten(kv.second, prefix + kv.first.as<std::string>() + ".", out);
  } else {
    YAML::Emitter e;
    e << YAML::Flow << n;
    out[prefix.substr(0, prefix.size() - 1)] = e.c_str();
  }
}

}  // namespace

std::string config_changes(const std::string& before, const std::string& after) {
  std::map<std::string, std::string> a, b;
  // A run started by an older kd lacks the keys added since; read through today's defaults,
  // such a key is absent only if it differs from its default.
  try {
    RunConfig old;
    apply_yaml(old, YAML::Load(before), "the run's configuration");
    flatten(YAML::Load(to_yaml(old)), "", a);
  } catch (const std::exception&) {  // a key kd no longer has: compare the text as written
    a.clear();
    flatten(YAML::Load(before), "", a);
  }
  flatten(YAML::Load(after), "", b);
  // Where the run lies is not part of its recipe: a run moved or copied elsewhere resumes.
  a.erase("out");
  b.erase("out");
  std::string out;
  for (const auto& [k, v] : b) {
    auto it = a.find(k);
    const std::string old = it == a.end() ? "(absent)" : it->second;
    if (old != v) out += (out.empty() ? "" : ", ") + k + ": " + old + " -> " + v;
  }
  for (const auto& [k, v] : a)
    if (!b.count(k)) out += (out.empty() ? "" : ", ") + k + ": " + v + " -> (absent)";
  return out;
}

void apply_yaml(RunConfig& cfg, const YAML::Node& node, const std::string& where) {
  if (!node || node.IsNull()) return;
  Fields fs = fields(cfg);
  std::map<std::string, Field*> by_key;
  for (auto& [k, f] : fs) by_key[k] = &f;
  walk(node, "", by_key, where);
}

void validate(const RunConfig& c) {
  const auto& m = c.mode;
  const auto& d = c.distill;
  // Numbers first, each named, before anything reads them: a NaN or negative value would pass
  // the comparisons below or fail inside LibTorch once the run directory exists.
  auto finite_in = [](const char* what, double v, double lo, double hi, bool lo_open,
                      bool hi_open) {
    const bool ok =
        std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
    if (!ok)
      usage_fail("{} must be a number in {}{}, {}{}, got {}", what, lo_open ? "(" : "[", lo, hi,
                 hi_open ? ")" : "]", v);
  };
  const double inf = std::numeric_limits<double>::infinity();
  // LibTorch's CPU generator keeps 32 bits of a seed: 2^32 would train what 0 trains.
  if (c.runtime.seed > kMaxSeed)
    usage_fail("seed {} is too large: seeds must be below 2^32 = 4294967296", c.runtime.seed);
  if (c.train.epochs < 1) usage_fail("epochs must be >= 1, got {}", c.train.epochs);
  if (c.train.eval_batch_size < 1)
    usage_fail("eval batch size must be >= 1, got {}", c.train.eval_batch_size);
  finite_in("learning rate (--lr)", c.train.optim.lr, 0, 10, true, false);
  finite_in("momentum (--momentum)", c.train.optim.momentum, 0, 1, false, true);
  finite_in("weight decay (--weight-decay)", c.train.optim.weight_decay, 0, 1, false, false);
  finite_in("warm-up epochs (--warmup)", c.train.schedule.warmup_epochs, 0, inf, false, true);
  if (c.train.schedule.step_size < 1)
    usage_fail("step size (--step-size) must be >= 1, got {}", c.train.schedule.step_size);
  finite_in("step decay factor (--gamma)", c.train.schedule.gamma, 0, 1, true, false);
  finite_in("minimum learning rate (min_lr)", c.train.schedule.min_lr, 0, inf, false, true);
  finite_in("label smoothing (--label-smoothing)", c.train.label_smoothing, 0, 1, false, true);
  finite_in("temperature (-T)", d.temperature, 0, 1000, true, false);
  finite_in("alpha (--alpha)", d.alpha, 0, 1, false, false);
  finite_in("threshold (--threshold)", d.threshold, 0, 1, false, true);
  if (c.data.limit < 0)
    usage_fail("--limit must be a positive number of images, got {}", c.data.limit);
  if (c.data.channels != 0 && c.data.channels != 1 && c.data.channels != 3)
    usage_fail("--channels must be 1 (grayscale) or 3 (RGB), got {}", c.data.channels);
  if (c.data.height < 0 || c.data.width < 0 || c.data.height > 4096 || c.data.width > 4096)
    usage_fail("image size must be in [1, 4096] pixels, got {}x{}", c.data.height, c.data.width);
  if (c.train.crop_padding < 0 || c.train.crop_padding > 64)
    usage_fail("--crop-padding must be in [0, 64] pixels, got {}", c.train.crop_padding);
  if (c.data.resize < 0 || c.data.resize > 4096 ||
      (c.data.resize > 0 && c.data.resize < c.data.height))
    usage_fail("--resize must be in [--size, 4096] pixels (0: size * 256 / 224), got {}",
               c.data.resize);
  if (c.data.workers < -1 || c.data.workers > 256)
    usage_fail("--workers must be in [0, 256] (-1: one per core), got {}", c.data.workers);
  finite_in("data.max_missing (--max-missing)", c.data.max_missing, 0, 1, false, false);
  finite_in("jitter (--jitter)", c.train.jitter, 0, 1, false, false);
  if (c.runtime.threads < 0 || c.runtime.threads > 1024)
    usage_fail("--threads must be in [0, 1024], got {}", c.runtime.threads);
  if (c.qat.allow_fp32_layers && c.qat.precision.empty())
    usage_fail("--allow-fp32-layers goes with --qat int8");
  if (!c.qat.precision.empty()) {
    if (c.qat.precision != "int8") usage_fail("--qat {}: expected int8", c.qat.precision);
    if (c.qat.epochs < 1 || c.qat.epochs > 1000)
      usage_fail("--qat-epochs must be in [1, 1000], got {}", c.qat.epochs);
    if (c.qat.freeze_epochs < 0)
      usage_fail("qat.freeze_epochs must be >= 0, got {}", c.qat.freeze_epochs);
    if (c.qat.freeze_epochs >= c.qat.epochs)
      usage_fail(
          "--qat-epochs {}: the quantization-aware epochs include {} with the ranges frozen "
          "(qat.freeze_epochs), so give at least {}",
          c.qat.epochs, c.qat.freeze_epochs, c.qat.freeze_epochs + 1);
    finite_in("qat.lr_scale", c.qat.lr_scale, 0, 10, true, false);
    if (is_torchscript_path(c.arch))
      usage_fail(
          "--qat: the student {} is a TorchScript file; train it in fp32 and quantize the run "
          "(kd quantize)",
          c.arch);
    if (c.distill.generations > 1)
      usage_fail("--qat with --generations: quantize the last generation's run (kd quantize)");
    if (!d.hints.empty() || std::any_of(d.losses.begin(), d.losses.end(), [](const auto& l) {
          return find_loss(parse_loss(l).name).feature;
        }))
      usage_fail(
          "--qat trains the student's traced graph, which has no named layers: feature losses "
          "and --hint cannot reach it (use logit losses)");
  }
  if (c.task == Task::detect) {
    if (m != Mode::train && m != Mode::offline)
      usage_fail("detection runs support modes train and offline (a detector teacher), not {}", m);
    if (c.data.labeled_fraction != 1.0 || !c.data.unlabeled.empty() || !c.data.classes.empty() ||
        c.data.others || !d.hints.empty())
      usage_fail(
          "--labeled-fraction, --unlabeled, --classes, --others and --hint are classification "
          "options; "
          "detection distillation uses --kd-feature for pyramid features");
    const auto& k = c.detect;
    if (k.scale_jitter < 0 || k.scale_jitter >= 1)
      usage_fail("scale jitter must be in [0, 1), got {}", k.scale_jitter);
    if (k.kd_class < 0 || k.kd_box < 0 || k.kd_feature < 0)
      usage_fail("--kd-class, --kd-box and --kd-feature must be >= 0");
    if (k.kd_feature_loss != "fitnet" && k.kd_feature_loss != "pkd" && k.kd_feature_loss != "cwd")
      usage_fail("--kd-feature-loss '{}': expected fitnet, pkd or cwd", k.kd_feature_loss);
    for (const auto& l : k.kd_levels)
      if (l != "P3" && l != "P4" && l != "P5")
        usage_fail("kd level '{}': expected P3, P4 or P5", l);
    if (k.nms_iou <= 0 || k.nms_iou > 1) usage_fail("nms iou must be in (0, 1], got {}", k.nms_iou);
  }
  if (c.data.others && c.data.classes.empty())
    usage_fail("--others goes with --classes (the classes that are not the others)");
  if (c.out.empty()) usage_fail("no output run directory (--out)");
  if ((m == Mode::offline || m == Mode::semi) && d.teacher.empty() == d.teachers.empty())
    usage_fail("mode {} needs a teacher (--teacher RUN_OR_PT), or two or more for an ensemble", m);
  if ((m == Mode::offline || m == Mode::semi) && d.teachers.size() == 1)
    usage_fail("mode {}: an ensemble needs two or more teachers; one is distill.teacher", m);
  if (c.task == Task::detect && !d.teachers.empty())
    usage_fail("detection distillation takes one teacher (--teacher), not {}", d.teachers.size());
  if (m == Mode::merge && (d.teachers.size() < 2 || !d.teacher.empty()))
    usage_fail("mode merge needs two or more teachers (--teacher A --teacher B)");
  if (m == Mode::self && (!d.teacher.empty() || !d.teachers.empty()))
    usage_fail("mode self has no teacher: the student's earlier self teaches it");
  if (m == Mode::self && (d.generations >= 2) == (d.teach_last >= 1))
    usage_fail(
        "mode self needs exactly one of --generations N (N >= 2) or --teach-last M (M >= 1)");
  if (m != Mode::self && (d.generations != 1 || d.teach_last != 0))
    usage_fail("--generations and --teach-last belong to --mode self");
  if (d.teach_last >= c.train.epochs)
    usage_fail("--teach-last {} must be below --epochs {}: the student first trains alone",
               d.teach_last, c.train.epochs);
  if (d.generations < 1 || d.generations > 100)
    usage_fail("generations must be in [1, 100], got {}", d.generations);
  if (d.threshold < 0 || d.threshold >= 1)
    usage_fail("threshold must be in [0, 1), got {}", d.threshold);
  if (d.teacher_view != "augmented" && d.teacher_view != "clean")
    usage_fail("--teacher-view '{}': expected augmented or clean", d.teacher_view);
  if (d.teacher_view == "clean") {
    if (m == Mode::train) usage_fail("--teacher-view clean: mode train has no teacher");
    if (!d.hints.empty())
      usage_fail(
          "--teacher-view clean and --hint: a hint matches the teacher's and the student's "
          "maps of one view");
    if (c.task == Task::detect)
      usage_fail(
          "--teacher-view clean: a detection teacher sees the student's view (its boxes move "
          "with scale jitter and flips)");
    if (c.train.mixup > 0 || c.train.cutmix > 0)
      usage_fail("--teacher-view clean and --mixup/--cutmix: a mixed image has no clean view");
  }
  if (d.merge_by_source && m != Mode::merge)
    usage_fail("--merge-by-source is for --mode merge, not {}", m);
  if (d.ensemble < 1 || d.ensemble > 6)
    usage_fail("ensemble must be in [1, 6] transforms, got {}", d.ensemble);
  if (d.hint_loss != "mse" && d.hint_loss != "nmse")
    usage_fail("hint loss '{}': expected mse or nmse", d.hint_loss);
  if (!d.hints.empty() && (m == Mode::train || m == Mode::merge || !d.teachers.empty()))
    usage_fail("--hint needs a single teacher (modes offline, semi, self)");
  finite_in("cross-entropy weight (--ce-weight)", d.ce_weight, 0, 1e6, false, false);
  if (c.runtime.precision != "fp32" && c.runtime.precision != "bf16")
    usage_fail("--precision '{}': expected fp32 or bf16", c.runtime.precision);
  finite_in("mixup alpha (--mixup)", c.train.mixup, 0, 100, false, false);
  finite_in("cutmix alpha (--cutmix)", c.train.cutmix, 0, 100, false, false);
  if (c.task == Task::detect && (c.train.mixup > 0 || c.train.cutmix > 0))
    usage_fail(
        "--mixup and --cutmix mix classification images and their labels; detection has scale "
        "jitter");
  for (const auto& text : d.losses) {
    const LossSpec spec = parse_loss(text);
    const LossInfo& info = find_loss(spec.name);
    if (c.task == Task::detect)
      usage_fail(
          "--loss {}: detection distillation has its own terms (--kd-class, --kd-box, "
          "--kd-feature)",
          spec.name);
    if (m == Mode::train)
      usage_fail("--loss {} needs a teacher: use kd distill (or a mode other than train)",
                 spec.name);
    if (info.feature && d.teacher_view == "clean")
      usage_fail(
          "--loss {} is a feature loss: it matches the teacher's and the student's maps of "
          "one view, and --teacher-view clean gives them two",
          spec.name);
    if (info.feature && !d.teachers.empty())
      usage_fail("--loss {} is a feature loss and {} teachers are given: feature losses need one",
                 spec.name, d.teachers.size());
    if (info.needs_labels && (m == Mode::merge || m == Mode::semi))
      usage_fail("--loss {} needs a label for every image and mode {} trains on images without one",
                 spec.name, m);
    if (info.needs_labels && (c.train.mixup > 0 || c.train.cutmix > 0))
      usage_fail("--loss {} needs one true class per image and --mixup/--cutmix images have two",
                 spec.name);
    if (!info.feature && d.targets == Targets::hard)
      usage_fail(
          "--loss {} matches the teacher's logits; --targets hard (pseudo-labels) goes with the "
          "default "
          "soft-target term only",
          spec.name);
  }
  if (!(c.data.labeled_fraction > 0 && c.data.labeled_fraction <= 1))
    usage_fail("labeled fraction must be in (0, 1], got {}", c.data.labeled_fraction);
  if (m == Mode::semi && c.data.labeled_fraction == 1.0 && c.data.unlabeled.empty())
    usage_fail("mode semi needs unlabeled data: --labeled-fraction F below 1, or --unlabeled PATH");
  if (m != Mode::semi && !c.data.unlabeled.empty())
    usage_fail("--unlabeled data is used by --mode semi only");
  if (c.train.epochs < 1) usage_fail("epochs must be >= 1, got {}", c.train.epochs);
  if (c.train.batch_size < 1) usage_fail("batch size must be >= 1, got {}", c.train.batch_size);
  if (c.train.optim.lr <= 0) usage_fail("learning rate must be > 0, got {}", c.train.optim.lr);
  if (c.train.optim.name != "sgd" && c.train.optim.name != "adam" && c.train.optim.name != "adamw")
    usage_fail("optimizer '{}': expected sgd, adam or adamw", c.train.optim.name);
  const auto& s = c.train.schedule.name;
  if (s != "cosine" && s != "step" && s != "constant")
    usage_fail("schedule '{}': expected cosine, step or constant", s);
  if (c.train.crop_padding < 0) usage_fail("crop padding must be >= 0");
  if (c.distill.temperature <= 0)
    usage_fail("temperature must be > 0, got {}", c.distill.temperature);
  if (c.distill.alpha < 0 || c.distill.alpha > 1)
    usage_fail("alpha must be in [0, 1], got {}", c.distill.alpha);
  if (c.data.train_ratio <= 0 || c.data.train_ratio >= 1)
    usage_fail("train ratio must be in (0, 1), got {}", c.data.train_ratio);
}

}  // namespace kd
