#include "kd/serve/service.h"

#include <algorithm>
#include <map>

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "kd/serve/protocol.h"
#include "responses.h"
#include "service_state.h"

namespace kd {

using namespace serve_detail;

// Open Inference Protocol v2 (KServe): model metadata and inference with JSON tensors.

HttpResponse Service::model_metadata(Served& m) {
  const ModelRunner& r = *m.runner;
  json outputs = json::array();
  if (r.is_detector()) {
    const int64_t k = options_.max_detections;
    outputs = {{{"name", "num_detections"}, {"datatype", "INT32"}, {"shape", {-1, 1}}},
               {{"name", "detection_boxes"}, {"datatype", "FP32"}, {"shape", {-1, k, 4}}},
               {{"name", "detection_scores"}, {"datatype", "FP32"}, {"shape", {-1, k}}},
               {{"name", "detection_classes"}, {"datatype", "INT32"}, {"shape", {-1, k}}},
               // Only when asked for by name: the head's outputs before decoding and NMS.
               {{"name", "raw"},
                {"datatype", "FP32"},
                {"shape", {-1, r.num_anchors(), r.spec().num_classes() + 4}}}};
  } else {
    outputs = {
        {{"name", "logits"}, {"datatype", "FP32"}, {"shape", {-1, r.spec().num_classes()}}},
        {{"name", "probabilities"}, {"datatype", "FP32"}, {"shape", {-1, r.spec().num_classes()}}}};
  }
  return json_response(
      200,
      {{"name", r.name()},
       {"versions", {"1"}},
       {"platform", "kd_libtorch"},
       {"inputs", {{{"name", "input"}, {"datatype", "FP32"}, {"shape", r.input_shape()}}}},
       {"outputs", outputs},
       {"parameters",
        {{"task", r.spec().task},
         {"arch", r.spec().arch},
         {"class_names", r.spec().class_names},
         {"input", "FP32 pixels in [0, 1], or BYTES: base64 PNG/JPEG images (shape [N])"},
         {"boxes", "x1, y1, x2, y2 in input pixels, or in the image's pixels for BYTES inputs"}}}});
}

HttpResponse Service::infer(Served& m, const HttpRequest& req) {
  auto arrival = m.batcher->expect();
  if (!req.header("inference-header-content-length").empty())
    bad_request("the binary tensor data extension is not supported: send tensors as JSON");
  InferRequest request =
      parse_infer_request(req.body, {options_.max_tensor_elements, options_.max_images});
  const ModelRunner& r = *m.runner;
  if (request.inputs.size() != 1)
    bad_request("model '{}' takes one input, got {}", r.name(), request.inputs.size());
  InferInput& in = request.inputs[0];
  const auto want = r.input_shape();

  torch::Tensor x;
  std::vector<PreparedImage> images;
  if (in.datatype == "BYTES") {
    std::vector<std::string> decoded;
    for (size_t i = 0; i < in.strings.size(); ++i)
      decoded.push_back(decode_base64_image(in.strings[i], fmt::format("inputs[0].data[{}]", i)));
    auto batch = prepare_images(m, decoded);
    images = std::move(batch.images);
    x = batch.pixels;
  } else {
    const auto& shape = in.shape;
    if (shape.size() != 4 || shape[0] < 1 || shape[1] != want[1] || shape[2] != want[2] ||
        shape[3] != want[3])
      bad_request("inputs[0]: shape {} does not match the model's input {} (N >= 1)",
                  shape_str(shape), shape_str(want));
    x = torch::from_blob(in.numbers.data(), shape, torch::kFloat).clone();
  }
  std::vector<std::string> wanted = request.outputs;
  std::vector<std::string> names =
      r.is_detector() ? std::vector<std::string>{"num_detections", "detection_boxes",
                                                 "detection_scores", "detection_classes"}
                      : std::vector<std::string>{"logits", "probabilities"};
  if (wanted.empty()) wanted = names;
  if (r.is_detector()) names.push_back("raw");
  for (const auto& w : wanted)
    if (std::find(names.begin(), names.end(), w) == names.end())
      bad_request("model '{}' has no output '{}' (outputs: {})", r.name(), w,
                  fmt::join(names, ", "));

  auto y = run(m, x, arrival);
  std::map<std::string, torch::Tensor> outputs;
  if (r.is_detector()) {
    std::vector<torch::Tensor> n, b, s, c;
    for (int64_t i = 0; i < y.size(0); ++i) {
      auto d = r.detect(y[i], images.empty() ? nullptr : &images[static_cast<size_t>(i)],
                        options_.score_threshold, options_.max_detections);
      n.push_back(d.count);
      b.push_back(d.boxes);
      s.push_back(d.scores);
      c.push_back(d.classes);
    }
    outputs = {{"num_detections", torch::stack(n)},
               {"detection_boxes", torch::stack(b)},
               {"detection_scores", torch::stack(s)},
               {"detection_classes", torch::stack(c)},
               {"raw", y}};
  } else {
    outputs = {{"logits", y}, {"probabilities", torch::softmax(y, 1)}};
  }
  json out = {{"model_name", r.name()}, {"model_version", "1"}, {"outputs", json::array()}};
  if (request.has_id) out["id"] = request.id;
  for (const auto& w : wanted) out["outputs"].push_back(tensor_json(w, outputs.at(w)));
  return json_response(200, out);
}

}  // namespace kd
