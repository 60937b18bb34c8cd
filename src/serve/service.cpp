#include "kd/serve/service.h"

#include <algorithm>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/base64.h"
#include "kd/core/error.h"
#include "kd/core/version.h"
#include "kd/serve/protocol.h"
#include "web_page.h"

namespace kd {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// A request-level failure with the status it should be answered with.
struct HttpError : std::runtime_error {
  HttpError(int s, const std::string& m) : std::runtime_error(m), status(s) {}
  int status;
};

template <typename... Args>
[[noreturn]] void bad_request(fmt::format_string<Args...> f, Args&&... args) {
  throw HttpError(400, fmt::format(f, std::forward<Args>(args)...));
}

HttpResponse json_response(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

HttpResponse error_response(int status, const std::string& message) {
  return json_response(status, {{"error", message}});
}

json parse_body(const std::string& body) {
  if (body.empty()) bad_request("empty body: expected a JSON object");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    const std::string what = e.what();  // "[json.exception.parse_error.101] parse error at ..."
    bad_request("malformed JSON: {}", what.substr(what.find(']') + 2));
  }
  if (!j.is_object()) bad_request("the body must be a JSON object");
  return j;
}

// Constant time in the key's length, so response timing does not reveal how much matched.
bool same_key(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<size_t>(b.size(), 1)]);
  return diff == 0;
}

// Row-major flattening of a (possibly nested) JSON array of numbers, refusing more than `limit`
// values as soon as they are seen.
// Tensors have at most 4 dimensions here; deeper nesting is refused before it can exhaust the
// stack.
constexpr int kMaxNesting = 6;

void flatten_numbers(const json& j, std::vector<float>& out, int64_t limit,
                     const std::string& where, int depth = 0) {
  if (j.is_array()) {
    if (depth >= kMaxNesting) bad_request("{}: arrays nested deeper than {}", where, kMaxNesting);
    for (const auto& v : j) flatten_numbers(v, out, limit, where, depth + 1);
    return;
  }
  if (!j.is_number())
    bad_request("{}: element {} is {}, not a number", where, out.size(), j.type_name());
  if (static_cast<int64_t>(out.size()) >= limit)
    bad_request("{}: more than {} values", where, limit);
  out.push_back(j.get<float>());
}

std::string shape_str(const std::vector<int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

json tensor_json(const std::string& name, const torch::Tensor& t) {
  auto c = t.contiguous();
  json data;
  if (c.scalar_type() == torch::kInt32) {
    data = std::vector<int32_t>(c.data_ptr<int32_t>(), c.data_ptr<int32_t>() + c.numel());
  } else {
    c = c.to(torch::kFloat);
    data = std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }
  return {{"name", name},
          {"datatype", c.scalar_type() == torch::kInt32 ? "INT32" : "FP32"},
          {"shape", c.sizes().vec()},
          {"data", std::move(data)}};
}

}  // namespace

struct Service::Served {
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<Batcher> batcher;
};

// What a request was, for the metrics: which model and which route.
struct Service::Routed {
  std::string model, route = "unknown";
};

std::string HttpRequest::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

Service::Service(std::vector<std::unique_ptr<ModelRunner>> runners, ServiceOptions options)
    : options_(std::move(options)) {
  KD_CHECK(!runners.empty() || !options_.runs_dir.empty(),
           "no models to serve (and no --runs folder)");
  std::map<std::string, std::string> served_runs;
  for (const auto& r : runners) served_runs[r->source()] = r->name();
  if (!options_.runs_dir.empty())
    dashboard_ = std::make_unique<Dashboard>(options_.runs_dir, served_runs);
  for (auto& r : runners) {
    const std::string name = r->name();
    KD_CHECK(!models_.count(name), "two models are named '{}' ({} and {}): name them with NAME=RUN",
             name, models_.at(name)->runner->source(), r->source());
    auto served = std::make_unique<Served>();
    ModelRunner* runner = r.get();
    served->runner = std::move(r);
    served->batcher = std::make_unique<Batcher>(
        [runner](const torch::Tensor& x) { return runner->forward(x); }, options_.batch,
        [this, name](int64_t size, double seconds) { metrics_.batch(name, size, seconds); });
    models_.emplace(name, std::move(served));
  }
  metrics_.set_queue_depth([this] {
    std::vector<std::pair<std::string, int64_t>> out;
    for (const auto& [name, m] : models_) out.emplace_back(name, m->batcher->depth());
    return out;
  });
}

Service::~Service() { metrics_.set_queue_depth({}); }

std::vector<std::string> Service::model_names() const {
  std::vector<std::string> out;
  for (const auto& [name, m] : models_) out.push_back(name);
  return out;
}

HttpResponse Service::handle(const HttpRequest& request) noexcept {
  const auto start = Clock::now();
  Routed routed;
  HttpResponse response;
  try {
    response = route(request, routed);
  } catch (const HttpError& e) {
    response = error_response(e.status, e.what());
  } catch (const BadRequest& e) {
    response = error_response(400, e.what());
  } catch (const QueueFull& e) {
    response = error_response(503, e.what());
    response.headers.emplace_back("Retry-After", "1");
  } catch (const Error& e) {  // bad content found deeper down (an image, a tensor)
    response = error_response(400, e.what());
  } catch (const std::exception& e) {
    spdlog::error("{} {}: {}", request.method, request.path, e.what());
    response = error_response(
        500, fmt::format("internal error: {}", std::string(e.what()).substr(0, 200)));
  } catch (...) {
    response = error_response(500, "internal error");
  }
  try {
    metrics_.request(routed.model, routed.route, response.status,
                     std::chrono::duration<double>(Clock::now() - start).count());
  } catch (...) {
  }
  return response;
}

HttpResponse Service::transport_error(int status, const std::string& message) {
  metrics_.request("", "transport", status, 0);
  return error_response(status, message);
}

Service::Served& Service::find(const std::string& name) {
  auto it = models_.find(name);
  if (it == models_.end())
    throw HttpError(
        404, fmt::format("no model named '{}' (served: {})", name, fmt::join(model_names(), ", ")));
  return *it->second;
}

HttpResponse Service::route(const HttpRequest& req, Routed& routed) {
  const std::string& p = req.path;
  const bool get = req.method == "GET" || req.method == "HEAD", post = req.method == "POST";
  auto method_check = [&](bool ok, const char* allowed) {
    if (!ok) {
      HttpError e(405, fmt::format("{} does not accept {} (use {})", p, req.method, allowed));
      throw e;
    }
  };

  if (p == "/v2/health/live" || p == "/v2/health/ready") {
    routed.route = "health";
    method_check(get, "GET");
    return json_response(200, {{p == "/v2/health/live" ? "live" : "ready", true}});
  }
  if (p == "/favicon.ico") {  // browsers ask; answering keeps their consoles free of 404s
    routed.route = "page";
    HttpResponse r;
    r.status = 204;
    r.content_type = "image/x-icon";
    return r;
  }
  if (p == "/" || p == "/index.html") {
    routed.route = "page";
    method_check(get, "GET");
    HttpResponse r;
    r.content_type = "text/html; charset=utf-8";
    r.body = kWebPage;
    return r;
  }
  if (dashboard_ && (p == "/runs" || p == "/runs/" || p == "/runs/report")) {
    routed.route = "runs";
    method_check(get, "GET");
    // Links cannot carry headers: the pages also take the key as ?key=.
    const std::string key = req.query.count("key") ? req.query.at("key") : "";
    const std::string auth = req.header("authorization");
    if (!options_.api_key.empty() && !same_key(key, options_.api_key) &&
        !(auth.rfind("Bearer ", 0) == 0 && same_key(auth.substr(7), options_.api_key)))
      return error_response(401, "missing or wrong API key: add ?key=<key> to the address");
    if (p == "/runs/report")
      return dashboard_->report(req.query.count("runs") ? req.query.at("runs") : "", key);
    return dashboard_->list(key);
  }
  if (!options_.api_key.empty()) {
    const std::string auth = req.header("authorization");
    if (auth.rfind("Bearer ", 0) != 0 || !same_key(auth.substr(7), options_.api_key)) {
      routed.route = "auth";
      HttpResponse r = error_response(
          401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'");
      r.headers.emplace_back("WWW-Authenticate", "Bearer");
      return r;
    }
  }
  if (p == "/metrics") {
    routed.route = "metrics";
    method_check(get, "GET");
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics_.render();
    return r;
  }
  if (p == "/v2") {
    routed.route = "server_metadata";
    method_check(get, "GET");
    return json_response(200,
                         {{"name", "kd"}, {"version", kVersion}, {"extensions", json::array()}});
  }
  if (p == "/v2/models" || p == "/v2/models/") {
    routed.route = "models";
    method_check(get, "GET");
    json list = json::array();
    for (const auto& [name, m] : models_) {
      const auto& r = *m->runner;
      list.push_back({{"name", name},
                      {"task", r.spec().task},
                      {"arch", r.spec().arch},
                      {"source", r.source()},
                      {"parameters", r.num_parameters()},
                      {"input_shape", r.input_shape()},
                      {"class_names", r.spec().class_names},
                      {"ready", true}});
    }
    return json_response(200, {{"models", list}});
  }

  const std::string v2 = "/v2/models/", v1 = "/v1/models/";
  if (p.rfind(v1, 0) == 0) {
    std::string rest = p.substr(v1.size());
    const auto colon = rest.rfind(":predict");
    if (colon != std::string::npos && colon + 8 == rest.size()) {
      routed.route = "predict";
      Served& m = find(rest.substr(0, colon));
      routed.model = m.runner->name();
      method_check(post, "POST");
      return predict_v1(m, req);
    }
    routed.route = "model_status";
    Served& m = find(rest);
    routed.model = m.runner->name();
    method_check(get, "GET");
    return json_response(200, {{"model_version_status",
                                {{{"version", "1"},
                                  {"state", "AVAILABLE"},
                                  {"status", {{"error_code", "OK"}, {"error_message", ""}}}}}}});
  }
  if (p.rfind(v2, 0) == 0) {
    std::string rest = p.substr(v2.size());
    std::string name = rest.substr(0, rest.find('/'));
    std::string tail = rest.size() > name.size() ? rest.substr(name.size()) : "";
    if (tail.rfind("/versions/", 0) == 0) {
      const std::string after = tail.substr(10);
      const std::string version = after.substr(0, after.find('/'));
      if (version != "1")
        throw HttpError(404, fmt::format("model '{}' has only version 1, not '{}'", name, version));
      tail = after.substr(version.size());
    }
    Served& m = find(name);
    routed.model = name;
    const ModelRunner& r = *m.runner;
    if (tail.empty() || tail == "/") {
      routed.route = "model_metadata";
      method_check(get, "GET");
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
            {{"name", "probabilities"},
             {"datatype", "FP32"},
             {"shape", {-1, r.spec().num_classes()}}}};
      }
      return json_response(
          200, {{"name", name},
                {"versions", {"1"}},
                {"platform", "kd_libtorch"},
                {"inputs", {{{"name", "input"}, {"datatype", "FP32"}, {"shape", r.input_shape()}}}},
                {"outputs", outputs},
                {"parameters",
                 {{"task", r.spec().task},
                  {"arch", r.spec().arch},
                  {"class_names", r.spec().class_names},
                  {"input", "FP32 pixels in [0, 1], or BYTES: base64 PNG/JPEG images (shape [N])"},
                  {"boxes",
                   "x1, y1, x2, y2 in input pixels, or in the image's pixels for BYTES inputs"}}}});
    }
    if (tail == "/ready") {
      routed.route = "model_ready";
      method_check(get, "GET");
      return json_response(200, {{"name", name}, {"ready", true}});
    }
    if (tail == "/infer") {
      routed.route = "infer";
      method_check(post, "POST");
      return infer(m, req);
    }
    if (tail == "/image") {
      routed.route = "image";
      method_check(post, "POST");
      return image(m, req);
    }
  }
  throw HttpError(404, fmt::format("no route {} {}", req.method, p));
}

torch::Tensor Service::run(Served& m, const torch::Tensor& input, Batcher::Arrival& arrival) {
  return m.batcher->submit(input, &arrival).get();
}

Service::ImageBatch Service::prepare_images(Served& m, const std::vector<std::string>& encoded) {
  if (encoded.empty()) bad_request("no images in the request");
  if (static_cast<int64_t>(encoded.size()) > options_.max_images)
    bad_request("{} images in one request; the limit is {}", encoded.size(), options_.max_images);
  ImageBatch batch;
  std::vector<torch::Tensor> pixels;
  for (size_t i = 0; i < encoded.size(); ++i) {
    try {
      batch.images.push_back(m.runner->prepare_image(encoded[i], options_.max_image_pixels));
    } catch (const Error& e) {
      bad_request("image {}: {}", i, e.what());
    }
    pixels.push_back(batch.images.back().pixels);
  }
  batch.pixels = torch::stack(pixels);
  return batch;
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
    for (size_t i = 0; i < in.strings.size(); ++i) {
      try {
        decoded.push_back(base64_decode(in.strings[i]));
      } catch (const Error& e) {
        bad_request("inputs[0].data[{}]: {}", i, e.what());
      }
    }
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
      try {
        decoded.push_back(base64_decode(inst["b64"].get<std::string>()));
      } catch (const Error& e) {
        bad_request("instances[{}].b64: {}", i, e.what());
      }
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

HttpResponse Service::image(Served& m, const HttpRequest& req) {
  auto arrival = m.batcher->expect();
  std::string encoded;
  // JSON ({"b64": ...}) or the image itself; neither PNG nor JPEG can start with '{'.
  const auto first = req.body.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && req.body[first] == '{') {
    const json body = parse_body(req.body);
    if (!body.contains("b64") || !body["b64"].is_string())
      bad_request("expected {{\"b64\": \"<base64 PNG or JPEG>\"}}");
    try {
      encoded = base64_decode(body["b64"].get<std::string>());
    } catch (const Error& e) {
      bad_request("b64: {}", e.what());
    }
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
