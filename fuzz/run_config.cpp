// Run configurations and experiment defaults in YAML (kd/runs/config.h): strict keys, typed
// values, validation.
#include <cstddef>
#include <cstdint>
#include <string>

#include <yaml-cpp/yaml.h>

#include "kd/core/error.h"
#include "kd/runs/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    kd::RunConfig cfg;
    kd::apply_yaml(cfg, YAML::Load(text), "fuzz.yaml");
    kd::validate(cfg);
    // A valid configuration must survive its own round trip.
    kd::RunConfig again;
    kd::apply_yaml(again, YAML::Load(kd::to_yaml(cfg)), "roundtrip.yaml");
    if (kd::to_yaml(again) != kd::to_yaml(cfg)) __builtin_trap();
  } catch (const kd::Error&) {
  } catch (const YAML::Exception&) {
  }
  return 0;
}
