#include <iostream>
#include <set>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/runtime.h"
#include "kd/detect/predict.h"
#include "kd/eval/runner.h"
#include "kd/models/model.h"
#include "kd/runs/run_dir.h"
#include "options.h"

namespace kd::cli {
namespace {

struct PredictArgs {
  std::string run;
  std::vector<std::string> images;
  double score = 0.3;
  std::string out_dir = "predictions";
  bool no_draw = false;
  int64_t top_k = 5;
  RuntimeConfig runtime;
};

// Where each image's drawn copy goes: OUT_DIR/<stem>.boxes.png, and <stem>-2.boxes.png, -3, ...
// for images of one name from different folders, so that no copy replaces another.
std::vector<std::string> drawn_paths(const PredictArgs& a) {
  std::vector<std::string> out;
  std::set<std::string> taken;
  for (const auto& image : a.images) {
    const std::string stem = fs::path(image).stem().string();
    std::string name = stem + ".boxes.png";
    for (int k = 2; taken.count(name); ++k) name = fmt::format("{}-{}.boxes.png", stem, k);
    taken.insert(name);
    out.push_back((fs::path(a.out_dir) / name).string());
    check_output_file(out.back(), "--out-dir", {{"model", a.run}, {"image", image}});
  }
  return out;
}

// A classifier: each image decoded and resized as `kd serve` does it, its top classes as one
// JSON line ({"image", "classes": [{"class", "index", "score"}]}); nothing is written.
void classify(const PredictArgs& a, std::unique_ptr<Model> model) {
  ModelRunner runner(a.run, a.run, std::move(model));
  for (const auto& image : a.images) {
    KD_CHECK(fs::is_regular_file(image), "{}: no such image file", image);
    PreparedImage p;
    try {
      p = runner.prepare_image(read_text(image), int64_t{1} << 26);
    } catch (const Error& e) {
      fail("{}: {}", image, first_line(e.what()));
    }
    const torch::Tensor logits = runner.forward(p.pixels.unsqueeze(0));
    std::cout << nlohmann::json{{"image", image},
                                {"classes", runner.top_classes(logits[0], a.top_k)}}
                     .dump()
              << std::endl;
  }
}

void run(const PredictArgs& a) {
  if (!(a.score >= 0 && a.score <= 1))
    usage_fail("--score {}: expected a number in [0, 1]", a.score);
  if (a.top_k < 1) usage_fail("--top-k {}: expected at least 1", a.top_k);
  torch::Device device = init_runtime(
      {a.runtime.device, a.runtime.threads, a.runtime.seed, false, a.runtime.precision});
  auto model = load_model(a.run);
  if (model->spec().task != Task::detect) return classify(a, std::move(model));
  const std::vector<std::string> drawn_to = a.no_draw ? std::vector<std::string>() : drawn_paths(a);
  model->to(device);
  if (!a.no_draw) fs::create_directories(a.out_dir);
  // One JSON document per image, one per line, as soon as it is ready.
  for (size_t i = 0; i < a.images.size(); ++i) {
    const std::string& image = a.images[i];
    const std::string drawn = a.no_draw ? "" : drawn_to[i];
    auto result = predict_image(*model, image, a.score, drawn);
    if (!drawn.empty()) result["drawn"] = drawn;
    std::cout << result.dump() << std::endl;
  }
}

}  // namespace

void add_predict_command(CLI::App& app) {
  auto a = std::make_shared<PredictArgs>();
  auto* c = app.add_subcommand(
      "predict",
      "a model on image files: a classifier's top classes, or a detector's boxes as JSON and "
      "copies with the boxes drawn");
  c->footer(
      "Example: kd predict runs/det-d0-kd photo1.png photo2.jpg --score 0.3 --out-dir predictions\n"
      "         kd predict runs/distilled photo.png --top-k 3");
  c->add_option("run", a->run, "run directory (or TorchScript file): a classifier or a detector")
      ->required();
  c->add_option("images", a->images, "image files (PNG, JPEG, ...)")->required();
  c->add_option("--score", a->score, "minimum score of a box")->capture_default_str();
  c->add_option("--out-dir", a->out_dir, "where the drawn copies go (<name>.boxes.png)")
      ->capture_default_str();
  c->add_flag("--no-draw", a->no_draw, "print boxes only");
  c->add_option("--top-k", a->top_k, "classifiers: classes listed per image")
      ->capture_default_str();
  add_runtime_options(*c, a->runtime);
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
