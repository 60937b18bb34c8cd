#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/models/export.h"
#include "kd/models/model.h"

namespace kd::cli {
namespace {

struct ExportArgs {
  std::string run;
  std::string format = "torchscript";
  std::string out;
};

void run(const ExportArgs& a) {
  const bool onnx = a.format == "onnx";
  if (!onnx && a.format != "torchscript")
    usage_fail("--format {}: expected torchscript or onnx", a.format);
  const std::string ext = onnx ? ".onnx" : ".pt";
  const std::string out =
      a.out.empty() ? (fs::path(a.run) / "export" / ("model" + ext)).string() : a.out;
  if (fs::path(out).extension() != ext)
    usage_fail("--out {}: the {} file must end in {}", out, onnx ? "ONNX" : "TorchScript", ext);
  auto model = load_model(a.run);
  // The export and its .json description must not replace what it is exported from.
  const fs::path parent = fs::absolute(out).parent_path();
  const fs::path sidecar = fs::path(out).replace_extension(".json");
  if (fs::is_directory(a.run) && fs::exists(parent) && fs::equivalent(parent, a.run))
    usage_fail(
        "--out {}: inside the run directory itself it would replace the run's own files; "
        "write it elsewhere (default RUN/export/model.pt or model.onnx)",
        out);
  for (const fs::path& target : {fs::path(out), sidecar})
    for (const fs::path& source :
         {fs::path(a.run), fs::path(a.run + ".json"), fs::path(a.run).replace_extension(".json")})
      if (fs::is_regular_file(source) && fs::exists(target) && fs::equivalent(source, target))
        usage_fail("--out {}: would overwrite the model it exports from ({})", out,
                   source.string());
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
      "student.json)\n"
      "         kd export runs/fmnist/distilled-s0 --format onnx --out student.onnx\n"
      "The module takes normalized input: (pixels in [0, 1] - mean) / std, as the JSON says.");
  c->add_option("run", a->run, "run directory (or a TorchScript file with its sidecar)")
      ->required();
  c->add_option("--format", a->format, "torchscript or onnx")
      ->check(CLI::IsMember({"torchscript", "onnx"}))
      ->capture_default_str();
  c->add_option("--out,-o", a->out, "the file to write (default RUN/export/model.pt or .onnx)");
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
