// Model descriptions (model.json, and the sidecar of an exported .pt): the one place that reads
// them, kept apart from the models so its fuzz target (fuzz/model_spec.cpp) links only this.
#include <algorithm>
#include <cmath>

#include "kd/core/error.h"
#include "kd/core/json.h"
#include "kd/models/model.h"

namespace kd {
namespace {

constexpr int64_t kMaxSide = 16384;  // channels or pixels per side a description may ask for

}  // namespace

nlohmann::json ModelSpec::to_json() const {
  nlohmann::json j = {{"kind", kind},
                      {"task", task},
                      {"arch", arch},
                      {"options", options},
                      {"input_shape", input_shape},
                      {"class_names", class_names},
                      {"normalization", {{"mean", norm.mean}, {"std", norm.std}}},
                      {"precision", precision}};
  if (!quantization.empty()) j["quantization"] = quantization;
  if (resize > 0) j["resize"] = resize;
  return j;
}

ModelSpec ModelSpec::from_json(const nlohmann::json& j, const std::string& where) {
  ModelSpec s;
  try {
    s.kind = j.at("kind").get<std::string>();
    s.arch = j.at("arch").get<std::string>();
    s.task = parse_kind<Task>(j.value("task", "classify"), where);
    s.options = j.value("options", nlohmann::json::object());
    s.input_shape = json_ints<int64_t>(j.at("input_shape"), where + ": input_shape");
    s.class_names = j.at("class_names").get<std::vector<std::string>>();
    s.norm.mean = j.at("normalization").at("mean").get<std::vector<double>>();
    s.norm.std = j.at("normalization").at("std").get<std::vector<double>>();
    s.precision = j.value("precision", "fp32");
    s.quantization = j.value("quantization", nlohmann::json::object());
    s.resize = j.value("resize", int64_t{0});
  } catch (const nlohmann::json::exception& e) {
    fail("{}: bad model description ({})", where, e.what());
  }
  KD_CHECK(s.kind == "native" || s.kind == "torchscript", "{}: unknown model kind '{}'", where,
           s.kind);
  KD_CHECK(s.precision == "fp32" || s.precision == "int8", "{}: unknown precision '{}'", where,
           s.precision);
  KD_CHECK(s.precision == "fp32" || s.kind == "torchscript",
           "{}: an int8 model is a TorchScript module (kind torchscript)", where);
  KD_CHECK(s.input_shape.size() == 3, "{}: input_shape must be [C, H, W]", where);
  for (int64_t d : s.input_shape)
    KD_CHECK(d >= 1 && d <= kMaxSide, "{}: input_shape entries must be in [1, {}], got {}", where,
             kMaxSide, d);
  KD_CHECK(s.resize == 0 || (s.resize >= std::max(s.input_shape[1], s.input_shape[2]) &&
                             s.input_shape[1] == s.input_shape[2] && s.resize <= kMaxSide),
           "{}: resize {} must be 0 or at least the square input's side, at most {}", where,
           s.resize, kMaxSide);
  KD_CHECK(s.options.is_object(), "{}: options must be an object", where);
  KD_CHECK(!s.class_names.empty(), "{}: class_names is empty", where);
  KD_CHECK(s.norm.mean.size() == s.norm.std.size() &&
               (s.norm.mean.size() == 1 || s.norm.mean.size() == size_t(s.input_shape[0])),
           "{}: normalization must have 1 or C entries for mean and std", where);
  for (size_t c = 0; c < s.norm.mean.size(); ++c)
    KD_CHECK(std::isfinite(s.norm.mean[c]) && std::isfinite(s.norm.std[c]) && s.norm.std[c] > 0,
             "{}: normalization needs finite means and positive standard deviations", where);
  return s;
}

}  // namespace kd
