#include "kd/distill/config.h"

#include <functional>
#include <map>

#include <yaml-cpp/yaml.h>

#include "kd/core/error.h"

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
  return {[&ref](const YAML::Node& n) { ref = n.as<T>(); },
          [&ref](YAML::Emitter& e) { e << ref; }};
}

using Fields = std::vector<std::pair<std::string, Field>>;

Fields fields(RunConfig& c) {
  return {
      {"name", field(c.name)},
      {"mode", field(c.mode)},
      {"out", field(c.out)},
      {"arch", field(c.arch)},
      {"arch_options", field(c.arch_options)},
      {"measure_latency", field(c.measure_latency)},
      {"data.source", field(c.data.source)},
      {"data.split", field(c.data.split)},
      {"data.train_ratio", field(c.data.train_ratio)},
      {"data.split_seed", field(c.data.split_seed)},
      {"data.limit", field(c.data.limit)},
      {"data.channels", field(c.data.channels)},
      {"data.height", field(c.data.height)},
      {"data.width", field(c.data.width)},
      {"train.epochs", field(c.train.epochs)},
      {"train.batch_size", field(c.train.batch_size)},
      {"train.eval_batch_size", field(c.train.eval_batch_size)},
      {"train.crop_padding", field(c.train.crop_padding)},
      {"train.hflip", field(c.train.hflip)},
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
      {"distill.temperature", field(c.distill.temperature)},
      {"distill.alpha", field(c.distill.alpha)},
      {"distill.teacher_cache", field(c.distill.teacher_cache)},
      {"distill.cache_dir", field(c.distill.cache_dir)},
      {"runtime.device", field(c.runtime.device)},
      {"runtime.threads", field(c.runtime.threads)},
      {"runtime.seed", field(c.runtime.seed)},
      {"runtime.deterministic", field(c.runtime.deterministic)},
  };
}

void walk(const YAML::Node& node, const std::string& prefix, const std::map<std::string, Field*>& by_key,
          const std::string& where) {
  if (!node.IsMap()) fail("{}: {} must be a mapping", where, prefix.empty() ? "the document" : prefix);
  for (const auto& kv : node) {
    const std::string key = prefix + kv.first.as<std::string>();
    auto it = by_key.find(key);
    if (it != by_key.end()) {
      try {
        it->second->read(kv.second);
      } catch (const YAML::Exception&) {
        fail("{}: {}: bad value '{}'", where, key, YAML::Dump(kv.second));
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
    while (common < open.size() && common + 1 < parts.size() && open[common] == parts[common]) ++common;
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

void apply_yaml(RunConfig& cfg, const YAML::Node& node, const std::string& where) {
  if (!node || node.IsNull()) return;
  Fields fs = fields(cfg);
  std::map<std::string, Field*> by_key;
  for (auto& [k, f] : fs) by_key[k] = &f;
  walk(node, "", by_key, where);
}

void validate(const RunConfig& c) {
  if (c.mode != "train" && c.mode != "offline")
    usage_fail("mode '{}': expected train or offline", c.mode);
  if (c.out.empty()) usage_fail("no output run directory (--out)");
  if (c.mode == "offline" && c.distill.teacher.empty())
    usage_fail("distillation needs a teacher (--teacher RUN_OR_PT)");
  if (c.train.epochs < 1) usage_fail("epochs must be >= 1, got {}", c.train.epochs);
  if (c.train.batch_size < 1) usage_fail("batch size must be >= 1, got {}", c.train.batch_size);
  if (c.train.optim.lr <= 0) usage_fail("learning rate must be > 0, got {}", c.train.optim.lr);
  if (c.train.optim.name != "sgd" && c.train.optim.name != "adam" && c.train.optim.name != "adamw")
    usage_fail("optimizer '{}': expected sgd, adam or adamw", c.train.optim.name);
  const auto& s = c.train.schedule.name;
  if (s != "cosine" && s != "step" && s != "constant")
    usage_fail("schedule '{}': expected cosine, step or constant", s);
  if (c.train.crop_padding < 0) usage_fail("crop padding must be >= 0");
  if (c.distill.temperature <= 0) usage_fail("temperature must be > 0, got {}", c.distill.temperature);
  if (c.distill.alpha < 0 || c.distill.alpha > 1) usage_fail("alpha must be in [0, 1], got {}", c.distill.alpha);
  if (c.data.train_ratio <= 0 || c.data.train_ratio >= 1)
    usage_fail("train ratio must be in (0, 1), got {}", c.data.train_ratio);
}

}  // namespace kd
