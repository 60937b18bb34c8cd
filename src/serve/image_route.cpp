#include "kd/serve/service.h"

#include <string>

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "responses.h"
#include "service_state.h"

namespace kd {

using namespace serve_detail;

// One image per request (raw PNG/JPEG body or {"b64": ...}): the top classes or the boxes.

HttpResponse Service::image(Served& m, const HttpRequest& req) {
  auto arrival = m.batcher->expect();
  std::string encoded;
  // JSON ({"b64": ...}) or the image itself; neither PNG nor JPEG can start with '{'.
  const auto first = req.body.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && req.body[first] == '{') {
    const json body = parse_body(req.body);
    if (!body.contains("b64") || !body["b64"].is_string())
      bad_request("expected {{\"b64\": \"<base64 PNG or JPEG>\"}}");
    encoded = decode_base64_image(body["b64"].get<std::string>(), "b64");
  } else {
    encoded = req.body;  // the image itself (image/png, image/jpeg, application/octet-stream)
  }
  if (encoded.empty()) bad_request("empty body: send a PNG or JPEG image");
  auto get_number = [&](const char* key, double fallback, double lo, double hi) {
    const std::string v = req.query.count(key) ? req.query.at(key) : "";
    if (v.empty()) return fallback;
    try {
      size_t used = 0;
      const double d = std::stod(v, &used);
      if (used == v.size() && d >= lo && d <= hi) return d;
    } catch (const std::exception&) {
    }
    bad_request("query parameter {}={} must be a number in [{}, {}]", key, v, lo, hi);
  };
  const ModelRunner& r = *m.runner;
  auto batch = prepare_images(m, {encoded});
  const auto& images = batch.images;
  auto y = run(m, batch.pixels, arrival);
  json out = {{"model_name", r.name()},
              {"task", r.spec().task},
              {"width", images[0].width},
              {"height", images[0].height}};
  if (r.is_detector()) {
    const double score = get_number("score", options_.score_threshold, 0, 1);
    out["detections"] =
        r.detections_json(r.detect(y[0], &images[0], score, options_.max_detections));
  } else {
    const auto k =
        static_cast<int64_t>(get_number("top_k", static_cast<double>(options_.top_k), 1, 1000));
    out["classes"] = r.top_classes(y[0], k);
  }
  return json_response(200, out);
}

}  // namespace kd
