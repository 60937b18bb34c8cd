#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/runtime.h"
#include "kd/detect/predict.h"
#include "kd/models/model.h"
#include "options.h"

namespace kd::cli {
namespace {

struct PredictArgs {
  std::string run;
  std::vector<std::string> images;
  double score = 0.3;
  std::string out_dir = "predictions";
  bool no_draw = false;
  RuntimeConfig runtime;
};

void run(const PredictArgs& a) {
  torch::Device device = init_runtime(
      {a.runtime.device, a.runtime.threads, a.runtime.seed, false, a.runtime.precision});
  auto model = load_model(a.run);
  model->to(device);
  if (model->spec().task != Task::detect)
    usage_fail("kd predict draws boxes: {} is a classifier (use kd eval)", a.run);
  if (!a.no_draw) fs::create_directories(a.out_dir);
  // One JSON document per image, one per line, as soon as it is ready.
  for (const auto& image : a.images) {
    const std::string drawn =
        a.no_draw
            ? ""
            : (fs::path(a.out_dir) / (fs::path(image).stem().string() + ".boxes.png")).string();
    auto result = predict_image(*model, image, a.score, drawn);
    if (!drawn.empty()) result["drawn"] = drawn;
    std::cout << result.dump() << std::endl;
  }
}

}  // namespace

void add_predict_command(CLI::App& app) {
  auto a = std::make_shared<PredictArgs>();
  auto* c = app.add_subcommand(
      "predict", "detect objects in image files: boxes as JSON, and copies with boxes drawn");
  c->footer(
      "Example: kd predict runs/det-d0-kd photo1.png photo2.jpg --score 0.3 --out-dir predictions");
  c->add_option("run", a->run, "detector run directory")->required();
  c->add_option("images", a->images, "image files (PNG, JPEG, ...)")->required();
  c->add_option("--score", a->score, "minimum score of a box")->capture_default_str();
  c->add_option("--out-dir", a->out_dir, "where the drawn copies go (<name>.boxes.png)")
      ->capture_default_str();
  c->add_flag("--no-draw", a->no_draw, "print boxes only");
  add_runtime_options(*c, a->runtime);
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
