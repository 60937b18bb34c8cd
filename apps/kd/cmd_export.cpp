#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/version.h"
#include "kd/models/export.h"
#include "kd/models/model.h"
#include "kd/models/weights.h"
#include "kd/runs/run_dir.h"

namespace kd::cli {
namespace {

struct ExportArgs {
  std::string run;
  std::string format = "torchscript";
  std::string out;
};

// The weights alone, as PyTorch's state_dict: the same network in torchvision (or the user's own
// PyTorch module of the same names) takes them with load_state_dict.
void export_state_dict(const ExportArgs& a) {
  const std::string out =
      a.out.empty() ? (fs::path(a.run) / "export" / "state_dict.pt").string() : a.out;
  if (!a.out.empty())
    check_output_file(out, "--out", {{"model", a.run}, {"model description", a.run + ".json"}});
  auto model = load_model(a.run);
  KD_CHECK(model->spec().precision == "fp32",
           "{} is {}: PyTorch's networks take the fp32 weights (export the run it was quantized "
           "from)",
           a.run, model->spec().precision);
  const auto state = model->state();
  fs::create_directories(fs::path(out).parent_path().empty() ? fs::path(".")
                                                             : fs::path(out).parent_path());
  write_state_dict(state, out);
  std::cout << nlohmann::json{{"state_dict", out},
                              {"tensors", state.size()},
                              {"arch", model->spec().arch},
                              {"load_with", "model.load_state_dict(torch.load(PATH))"}}
                   .dump()
            << std::endl;
}

void run(const ExportArgs& a) {
  if (a.format == "state-dict") return export_state_dict(a);
  const bool onnx = a.format == "onnx";
  if (!onnx && a.format != "torchscript")
    usage_fail("--format {}: expected torchscript, onnx or state-dict", a.format);
  if (onnx && !kWithOnnx)
    usage_fail("--format onnx: this kd was built without ONNX export (KD_WITH_ONNX=OFF)");
  const std::string ext = onnx ? ".onnx" : ".pt";
  const std::string out =
      a.out.empty() ? (fs::path(a.run) / "export" / ("model" + ext)).string() : a.out;
  if (fs::path(out).extension() != ext)
    usage_fail("--out {}: the {} file must end in {}", out, onnx ? "ONNX" : "TorchScript", ext);
  // The export and its description (OUT.json) must not replace what it is exported from, a
  // run's files, or a file kd did not write. RUN/export/ is kd's own place in the run.
  const fs::path sidecar = export_description_path(out);
  if (!a.out.empty()) {
    const std::vector<ProtectedPath> inputs = {
        {"model", a.run},
        {"model description", a.run + ".json"},
        {"model description", fs::path(a.run).replace_extension(".json").string()}};
    check_output_file(out, "--out", inputs);
    check_output_file(sidecar, "--out (its description)", inputs);
    if (auto why = not_an_export_description(sidecar))
      usage_fail("--out {}: {} exists and {}: not replacing it", out, sidecar.string(), *why);
  }
  auto model = load_model(a.run);
  auto r = onnx ? export_onnx(*model, out) : export_torchscript(*model, out);
  nlohmann::json said = {{"module", r.module_path},
                         {"description", r.description_path},
                         {"task", r.description["task"]},
                         {"input_shape", r.description["input"]["shape"]}};
  // The TorchScript file is reloaded and run against kd; the ONNX file passes ONNX's checker (the
  // test suite runs it in OpenCV's DNN module).
  if (onnx)
    said["checked"] = "onnx.checker";
  else
    said["check_max_abs_diff"] = r.max_abs_diff;
  std::cout << said.dump() << std::endl;
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  auto* c = app.add_subcommand(
      "export",
      "write a run's model as a TorchScript .pt (torch.jit.load) or an ONNX file, plus its "
      "description JSON");
  c->footer(
      "Example: kd export runs/fmnist/distilled-s0 --out student.pt   (writes student.pt and "
      "student.pt.json)\n"
      "         kd export runs/fmnist/distilled-s0 --format onnx --out student.onnx\n"
      "         kd export runs/r18 --format state-dict --out r18.pt   (torchvision's "
      "resnet18().load_state_dict(torch.load('r18.pt')))\n"
      "The module takes normalized input: (pixels in [0, 1] - mean) / std, as the JSON says.");
  c->add_option("run", a->run, "run directory (or a TorchScript file with its sidecar)")
      ->required();
  c->add_option("--format", a->format,
                "torchscript, onnx, or state-dict (the weights for PyTorch's load_state_dict)")
      ->check(CLI::IsMember({"torchscript", "onnx", "state-dict"}))
      ->capture_default_str();
  c->add_option("--out,-o", a->out, "the file to write (default RUN/export/model.pt or .onnx)");
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
