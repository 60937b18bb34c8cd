#include "kd/models/registry.h"

#include <torch/torch.h>

#include "kd/core/error.h"

namespace kd {

const ArchInfo& find_architecture(const std::string& name) {
  std::string known;
  for (const auto& a : architectures()) {
    if (a.name == name) return a;
    known += (known.empty() ? "" : ", ") + a.name;
  }
  usage_fail("unknown architecture '{}' (known: {})", name, known);
}

nlohmann::json resolve_arch_options(const std::string& name, const nlohmann::json& overrides) {
  const ArchInfo& arch = find_architecture(name);
  nlohmann::json out = arch.defaults;
  for (const auto& [key, value] : overrides.items()) {
    if (!arch.defaults.contains(key)) {
      std::string known;
      for (const auto& [k, v] : arch.defaults.items()) known += (known.empty() ? "" : ", ") + k;
      usage_fail("architecture {} has no option '{}' (options: {})", name, key, known);
    }
    const auto& def = arch.defaults[key];
    // Integers stay integers (of sane size): the builders read them with get<int64_t>().
    auto like = [](const nlohmann::json& d, const nlohmann::json& v) {
      constexpr int64_t kMax = int64_t{1} << 30;
      if (d.is_number_integer())
        return v.is_number_unsigned()
                   ? v.get<uint64_t>() <= static_cast<uint64_t>(kMax)
                   : v.is_number_integer() && v.get<int64_t>() >= -kMax && v.get<int64_t>() <= kMax;
      if (d.is_number()) return v.is_number();
      return d.type() == v.type();
    };
    bool same_kind = like(def, value);
    if (same_kind && def.is_array() && !def.empty())
      for (const auto& x : value) same_kind = same_kind && like(def[0], x);
    if (!same_kind)
      usage_fail("architecture {} option '{}': expected a value like {}, got {}", name, key,
                 def.dump(), value.dump().substr(0, 60));
    out[key] = value;
  }
  return out;
}

nlohmann::json parse_arch_options(const std::vector<std::string>& kv) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& item : kv) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) usage_fail("--arch-opt '{}': expected key=value", item);
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    auto parsed = nlohmann::json::parse(value, nullptr, false);
    out[key] = parsed.is_discarded() ? nlohmann::json(value) : parsed;
  }
  return out;
}

}  // namespace kd
