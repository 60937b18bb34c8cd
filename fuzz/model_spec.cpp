// Model descriptions (model.json; the sidecar JSON of a TorchScript file): what from_json accepts
// must be usable (sane shape and normalization) and survive its own round trip.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "kd/core/error.h"
#include "kd/models/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  try {
    const kd::ModelSpec s = kd::ModelSpec::from_json(j, "fuzz.json");
    for (int64_t d : s.input_shape)
      if (d < 1 || d > 16384) __builtin_trap();
    for (double v : s.norm.std)
      if (!(v > 0) || !std::isfinite(v)) __builtin_trap();
    if (kd::ModelSpec::from_json(s.to_json(), "roundtrip.json").to_json() != s.to_json())
      __builtin_trap();
  } catch (const kd::Error&) {
  }
  return 0;
}
