#include "kd/serve/service.h"

#include <algorithm>

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "responses.h"
#include "service_state.h"

namespace kd {

using namespace serve_detail;

// TF Serving's REST API (v1): model status and {"instances": [...]} predictions.

HttpResponse Service::model_status_v1(Served&) {
  return json_response(200, {{"model_version_status",
                              {{{"version", "1"},
                                {"state", "AVAILABLE"},
                                {"status", {{"error_code", "OK"}, {"error_message", ""}}}}}}});
}

HttpResponse Service::predict_v1(Served& m, const HttpRequest& req) {
  auto arrival = m.batcher->expect();
  const json body = parse_body(req.body);
  if (!body.contains("instances") || !body["instances"].is_array() || body["instances"].empty())
    bad_request("'instances' must be a non-empty array (tensors [C][H][W] or {{\"b64\": image}})");
  const ModelRunner& r = *m.runner;
  const auto want = r.input_shape();
  const int64_t per = want[1] * want[2] * want[3];
  const auto& instances = body["instances"];
  const bool as_images = instances[0].is_object();
  std::vector<PreparedImage> images;
  torch::Tensor x;
  if (as_images) {
    std::vector<std::string> decoded;
    for (size_t i = 0; i < instances.size(); ++i) {
      const auto& inst = instances[i];
      if (!inst.is_object() || !inst.contains("b64") || !inst["b64"].is_string())
        bad_request("instances[{}]: expected {{\"b64\": \"<base64 image>\"}} like instances[0]", i);
      if (static_cast<int64_t>(i) >= options_.max_images)
        bad_request("{} images in one request; the limit is {}", instances.size(),
                    options_.max_images);
      decoded.push_back(
          decode_base64_image(inst["b64"].get<std::string>(), fmt::format("instances[{}].b64", i)));
    }
    auto batch = prepare_images(m, decoded);
    images = std::move(batch.images);
    x = batch.pixels;
  } else {
    const auto n = static_cast<int64_t>(instances.size());
    if (n * per > options_.max_tensor_elements)
      bad_request("{} instances of {} values, more than the limit of {}", n, per,
                  options_.max_tensor_elements);
    std::vector<float> data;
    data.reserve(static_cast<size_t>(n * per));
    for (int64_t i = 0; i < n; ++i) {
      const size_t before = data.size();
      flatten_numbers(instances[static_cast<size_t>(i)], data, static_cast<int64_t>(before) + per,
                      fmt::format("instances[{}]", i));
      if (static_cast<int64_t>(data.size() - before) != per)
        bad_request("instances[{}]: {} values, but the model takes {} ({})", i,
                    data.size() - before, per, shape_str({want[1], want[2], want[3]}));
    }
    x = torch::from_blob(data.data(), {n, want[1], want[2], want[3]}, torch::kFloat).clone();
  }
  auto y = run(m, x, arrival);
  json predictions = json::array();
  for (int64_t i = 0; i < y.size(0); ++i) {
    if (r.is_detector()) {
      auto d = r.detect(y[i], as_images ? &images[static_cast<size_t>(i)] : nullptr,
                        options_.score_threshold, options_.max_detections);
      predictions.push_back({{"detections", r.detections_json(d)}});
    } else {
      auto probs = torch::softmax(y[i], 0).contiguous();
      const auto top = r.top_classes(y[i], 1)[0];
      predictions.push_back(
          {{"class", top["class"]},
           {"index", top["index"]},
           {"score", top["score"]},
           {"probabilities",
            std::vector<float>(probs.data_ptr<float>(), probs.data_ptr<float>() + probs.numel())}});
    }
  }
  return json_response(200, {{"predictions", predictions}});
}

}  // namespace kd
