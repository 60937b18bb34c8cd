#include "kd/serve/service.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <future>
#include <optional>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/version.h"
#include "protocol.h"
#include "responses.h"
#include "service_state.h"
#include "web_page.h"

namespace kd {

using namespace serve_detail;
using Clock = std::chrono::steady_clock;

namespace {

// Constant time in the key's length, so response timing does not reveal how much matched.
bool same_key(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<size_t>(b.size(), 1)]);
  return diff == 0;
}

// "{model}" in a pattern stands for one path segment (a served model's name).
std::optional<std::string> match_path(const std::string& pattern, const std::string& path) {
  const auto hole = pattern.find("{model}");
  if (hole == std::string::npos)
    return pattern == path ? std::optional<std::string>("") : std::nullopt;
  const std::string before = pattern.substr(0, hole), after = pattern.substr(hole + 7);
  if (path.size() <= before.size() + after.size() || path.compare(0, before.size(), before) != 0 ||
      path.compare(path.size() - after.size(), after.size(), after) != 0)
    return std::nullopt;
  std::string model = path.substr(before.size(), path.size() - before.size() - after.size());
  if (model.find('/') != std::string::npos) return std::nullopt;
  return model;
}

// OIP's versioned paths (/v2/models/M/versions/V/...) name the one version a model has: the
// version is taken out of `path` and returned.
std::string take_version(std::string& path) {
  const std::string v2 = "/v2/models/";
  if (path.rfind(v2, 0) != 0) return "";
  const auto name_end = path.find('/', v2.size());
  if (name_end == std::string::npos || path.compare(name_end, 10, "/versions/") != 0) return "";
  const auto version_end = std::min(path.find('/', name_end + 10), path.size());
  std::string version = path.substr(name_end + 10, version_end - name_end - 10);
  path.erase(name_end, version_end - name_end);
  return version;
}

// What a request that threw is answered with, whatever the transport: the status and message.
// Unexpected exceptions are logged under `what` (the request) and answered 500.
std::pair<int, std::string> failure_status(const std::exception_ptr& failure,
                                           const std::string& what) {
  try {
    std::rethrow_exception(failure);
  } catch (const HttpError& e) {
    return {e.status, e.what()};
  } catch (const BadRequest& e) {
    return {400, e.what()};
  } catch (const QueueFull& e) {
    return {503, e.what()};
  } catch (const Error& e) {  // bad content found deeper down (an image, a tensor)
    return {400, e.what()};
  } catch (const std::exception& e) {
    spdlog::error("{}: {}", what, e.what());
    return {500, fmt::format("internal error: {}", std::string(e.what()).substr(0, 200))};
  } catch (...) {
    return {500, "internal error"};
  }
}

}  // namespace

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
    Served::Stats* stats = &served->stats;
    served->runner = std::move(r);
    served->batcher = std::make_unique<Batcher>(
        [runner](const torch::Tensor& x) { return runner->forward(x); }, options_.batch,
        [this, name, stats](int64_t size, double seconds) {
          metrics_.batch(name, size, seconds);
          const auto ns = static_cast<uint64_t>(seconds * 1e9);
          std::lock_guard lock(stats->mu);
          stats->inferences += static_cast<uint64_t>(size);
          ++stats->executions;
          stats->infer_ns += ns;
          auto& b = stats->batches[size];
          ++b.first;
          b.second += ns;
        });
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

struct Service::Route {
  // Where a route's work runs (Service::handle).
  enum class Work {
    quick,     // on the transport's thread: answered from memory
    batched,   // parsed on the transport's thread (small bodies), answered by the batch's worker
    blocking,  // on an offloaded thread: decodes images, waits for its batch, reads files
  };
  enum class Auth {
    kNone,        // health, the page: a browser or a load balancer asks without a key
    kKey,         // the API: Authorization: Bearer KEY
    kKeyOrQuery,  // the runs pages: links cannot carry headers, so ?key=KEY too
  };
  std::string name;     // the metrics' route label
  std::string pattern;  // the path; "{model}" stands for a served model's name
  std::string method;   // GET (HEAD too) or POST
  Auth auth = Auth::kKey;
  bool dashboard = false;  // only with --runs
  Work work = Work::quick;
  std::function<HttpResponse(Service&, const HttpRequest&, Served*)> handler;
  // Work::batched; `offload` is null when already off the transport's thread.
  std::function<void(Service&, HttpRequest&, Served*, Respond, const Offload*)> batched = nullptr;
};

// Bodies up to this size are parsed on the transport's thread (a 28x28 image in JSON is 15 KB,
// its parse ~30 us); larger ones, up to a 25 MiB batch, would hold every other connection.
constexpr size_t kQuickBodyBytes = 64 << 10;

void Service::handle(HttpRequest request, Respond respond, const Offload& offload) noexcept {
  const auto start = Clock::now();
  auto req = std::make_shared<HttpRequest>(std::move(request));
  auto routed = std::make_shared<Routed>();
  // Every answer goes out through here, once: counted, then handed to the transport.
  ++in_flight_;
  auto answer = [this, start, routed, respond = std::move(respond)](HttpResponse response) {
    record(*routed, response.status, std::chrono::duration<double>(Clock::now() - start).count());
    --in_flight_;
    respond(std::move(response));
  };
  auto fail = [this, req, answer] {
    answer(failure_response(std::current_exception(), req->method + " " + req->path));
  };
  try {
    Served* served = nullptr;
    HttpResponse refused;
    const Route* r = route(*req, *routed, served, refused);
    if (!r) return answer(std::move(refused));
    if (r->work == Route::Work::quick) return answer(r->handler(*this, *req, served));
    if (r->work == Route::Work::batched && req->body.size() <= kQuickBodyBytes)
      return r->batched(*this, *req, served, answer, &offload);
    offload([this, r, req, served, answer, fail] {
      try {
        if (r->work == Route::Work::batched)
          r->batched(*this, *req, served, answer, nullptr);
        else
          answer(r->handler(*this, *req, served));
      } catch (...) {
        fail();
      }
    });
  } catch (...) {
    fail();
  }
}

HttpResponse Service::handle(const HttpRequest& request) noexcept {
  std::promise<HttpResponse> answered;
  handle(
      request, [&answered](HttpResponse r) { answered.set_value(std::move(r)); },
      [](const std::function<void()>& work) { work(); });
  return answered.get_future().get();
}

HttpResponse Service::failure_response(const std::exception_ptr& failure, const std::string& what) {
  const auto [status, message] = failure_status(failure, what);
  HttpResponse response = error_response(status, message);
  if (status == 503) response.headers.emplace_back("Retry-After", "1");
  return response;
}

void Service::record(const Routed& routed, int status, double seconds) noexcept {
  try {
    metrics_.request(routed.model, routed.route, status, seconds);
    auto it = models_.find(routed.model);
    if (it != models_.end() && (routed.route == "infer" || routed.route == "grpc_infer" ||
                                routed.route == "predict" || routed.route == "image")) {
      auto& st = it->second->stats;
      const auto ns = static_cast<uint64_t>(seconds * 1e9);
      std::lock_guard lock(st.mu);
      if (status == 200) {
        ++st.success;
        st.success_ns += ns;
        st.last_inference_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
      } else {
        ++st.fail;
        st.fail_ns += ns;
      }
    }
  } catch (...) {
  }
}

void Service::infer_tensors(const std::string& model, const std::string& authorization,
                            std::shared_ptr<InferRequest> request, InferDone done) noexcept {
  const auto start = Clock::now();
  auto routed = std::make_shared<Routed>();
  routed->route = "grpc_infer";
  auto answer = [this, start, routed, done](int status, InferReply reply, std::string error) {
    record(*routed, status, std::chrono::duration<double>(Clock::now() - start).count());
    try {
      done(status, std::move(reply), std::move(error));
    } catch (...) {  // the transport's callback must not take the batch worker down
    }
  };
  try {
    HttpRequest auth;
    auth.headers["authorization"] = authorization;
    if (!authorized(auth, false)) {
      routed->route = "auth";
      throw HttpError(401,
                      "missing or wrong API key: send the metadata 'authorization: Bearer <key>'");
    }
    Served& m = find(model);
    routed->model = model;
    auto arrival = m.batcher->expect();
    auto plan = std::make_shared<InferPlan>(plan_infer(m, *request));
    // Runs on the batch's worker thread.
    auto finish = [this, &m, model, request, plan, answer](torch::Tensor y,
                                                           std::exception_ptr failure) {
      InferReply reply;
      try {
        if (failure) std::rethrow_exception(failure);
        const InferResult result = finish_infer(m, *plan, y);
        reply.model = model;
        reply.id = request->id;
        reply.has_id = request->has_id;
        for (const auto& w : result.wanted)
          reply.outputs.emplace_back(w.name, result.outputs.at(w.name));
      } catch (...) {
        const auto [status, error] =
            failure_status(std::current_exception(), "gRPC ModelInfer " + model);
        return answer(status, {}, error);
      }
      answer(200, std::move(reply), {});
    };
    m.batcher->submit(plan->input, std::move(finish), &arrival);
  } catch (...) {
    const auto [status, error] =
        failure_status(std::current_exception(), "gRPC ModelInfer " + model);
    answer(status, {}, error);
  }
}

HttpResponse Service::transport_error(int status, const std::string& message) {
  metrics_.request("", "transport", status, 0);
  return error_response(status, message);
}

Service::Served& Service::find(const std::string& name) {
  auto it = models_.find(name);
  if (it == models_.end())
    throw HttpError(404,
                    fmt::format("no model named '{}{}' (served: {})", name.substr(0, 64),
                                name.size() > 64 ? "..." : "", fmt::join(model_names(), ", ")));
  return *it->second;
}

const std::vector<Service::Route>& Service::routes() {
  using Auth = Route::Auth;
  using Work = Route::Work;
  auto page = [](Service&, const HttpRequest&, Served*) {
    HttpResponse r;
    r.content_type = "text/html; charset=utf-8";
    r.body = kWebPage;
    return r;
  };
  auto runs_page = [](Service& s, const HttpRequest&, Served*) { return s.dashboard_->page(); };
  auto param = [](const HttpRequest& req, const char* name) {
    return req.query.count(name) ? req.query.at(name) : std::string();
  };
  static const std::vector<Route> table = {
      {"health", "/v2/health/live", "GET", Auth::kNone, false, Work::quick,
       [](Service&, const HttpRequest&, Served*) {
         return json_response(200, {{"live", true}});
       }},
      {"health", "/v2/health/ready", "GET", Auth::kNone, false, Work::quick,
       [](Service&, const HttpRequest&, Served*) {
         return json_response(200, {{"ready", true}});
       }},
      // Browsers ask for an icon; an empty answer keeps their consoles free of 404s.
      {"page", "/favicon.ico", "GET", Auth::kNone, false, Work::quick,
       [](Service&, const HttpRequest&, Served*) {
         HttpResponse r;
         r.status = 204;
         r.content_type = "image/x-icon";
         return r;
       }},
      {"page", "/", "GET", Auth::kNone, false, Work::quick, page},
      {"page", "/index.html", "GET", Auth::kNone, false, Work::quick, page},
      {"runs", "/runs", "GET", Auth::kKeyOrQuery, true, Work::quick, runs_page},
      {"runs", "/runs/", "GET", Auth::kKeyOrQuery, true, Work::quick, runs_page},
      {"runs", "/runs/index.json", "GET", Auth::kKeyOrQuery, true, Work::blocking,
       [](Service& s, const HttpRequest& req, Served*) { return s.dashboard_->index(req); }},
      {"runs", "/runs/curves", "GET", Auth::kKeyOrQuery, true, Work::blocking,
       [param](Service& s, const HttpRequest& req, Served*) {
         return s.dashboard_->curves(param(req, "runs"));
       }},
      {"runs", "/runs/report", "GET", Auth::kKeyOrQuery, true, Work::blocking,
       [param](Service& s, const HttpRequest& req, Served*) {
         return s.dashboard_->report(param(req, "runs"));
       }},
      {"metrics", "/metrics", "GET", Auth::kKey, false, Work::quick,
       [](Service& s, const HttpRequest&, Served*) {
         HttpResponse r;
         r.content_type = "text/plain; version=0.0.4; charset=utf-8";
         r.body = s.metrics_.render();
         return r;
       }},
      {"server_metadata", "/v2", "GET", Auth::kKey, false, Work::quick,
       [](Service&, const HttpRequest&, Served*) {
         return json_response(
             200, {{"name", "kd"}, {"version", kVersion}, {"extensions", json::array()}});
       }},
      {"repository_index", "/v2/repository/index", "POST", Auth::kKey, false, Work::quick,
       [](Service& s, const HttpRequest&, Served*) { return s.repository_index(); }},
      {"model_stats", "/v2/models/stats", "GET", Auth::kKey, false, Work::quick,
       [](Service& s, const HttpRequest&, Served*) { return s.model_stats(nullptr); }},
      {"models", "/v2/models", "GET", Auth::kKey, false, Work::quick,
       [](Service& s, const HttpRequest&, Served*) { return s.models_list(); }},
      {"models", "/v2/models/", "GET", Auth::kKey, false, Work::quick,
       [](Service& s, const HttpRequest&, Served*) { return s.models_list(); }},
      {"model_metadata", "/v2/models/{model}", "GET", Auth::kKey, false, Work::quick,
       [](Service& s, const HttpRequest&, Served* m) { return s.model_metadata(*m); }},
      {"model_metadata", "/v2/models/{model}/", "GET", Auth::kKey, false, Work::quick,
       [](Service& s, const HttpRequest&, Served* m) { return s.model_metadata(*m); }},
      {"model_config", "/v2/models/{model}/config", "GET", Auth::kKey, false, Work::quick,
       [](Service& s, const HttpRequest&, Served* m) { return s.model_config(*m); }},
      {"model_stats", "/v2/models/{model}/stats", "GET", Auth::kKey, false, Work::quick,
       [](Service& s, const HttpRequest&, Served* m) { return s.model_stats(m); }},
      {"model_ready", "/v2/models/{model}/ready", "GET", Auth::kKey, false, Work::quick,
       [](Service&, const HttpRequest&, Served* m) {
         return json_response(200, {{"name", m->runner->name()}, {"ready", true}});
       }},
      {"infer", "/v2/models/{model}/infer", "POST", Auth::kKey, false, Work::batched, nullptr,
       [](Service& s, HttpRequest& req, Served* m, Respond respond, const Offload* offload) {
         s.infer(*m, req, std::move(respond), offload);
       }},
      {"image", "/v2/models/{model}/image", "POST", Auth::kKey, false, Work::blocking,
       [](Service& s, const HttpRequest& req, Served* m) { return s.image(*m, req); }},
      // Before model_status: "{model}" would otherwise take "name:predict" as a name.
      {"predict", "/v1/models/{model}:predict", "POST", Auth::kKey, false, Work::blocking,
       [](Service& s, const HttpRequest& req, Served* m) { return s.predict_v1(*m, req); }},
      {"model_status", "/v1/models/{model}", "GET", Auth::kKey, false, Work::quick,
       [](Service& s, const HttpRequest&, Served* m) { return s.model_status_v1(*m); }},
  };
  return table;
}

bool Service::authorized(const HttpRequest& req, bool query_key_too) const {
  if (options_.api_key.empty()) return true;
  const std::string auth = req.header("authorization");
  if (auth.rfind("Bearer ", 0) == 0 && same_key(auth.substr(7), options_.api_key)) return true;
  return query_key_too && req.query.count("key") && same_key(req.query.at("key"), options_.api_key);
}

const Service::Route* Service::route(const HttpRequest& req, Routed& routed, Served*& served,
                                     HttpResponse& refused) {
  std::string path = req.path;
  const std::string version = take_version(path);
  const Route* match = nullptr;
  std::string model;
  for (const auto& r : routes()) {
    if (r.dashboard && !dashboard_) continue;
    if (auto m = match_path(r.pattern, path)) {
      match = &r;
      model = *m;
      break;
    }
  }
  const bool get = req.method == "GET" || req.method == "HEAD";
  auto check_method = [&] {
    if (match->method == "GET" ? !get : req.method != match->method)
      throw HttpError(
          405, fmt::format("{} does not accept {} (use {})", req.path, req.method, match->method));
  };
  // Authorization, once for every route: the API answers 401 before anything about the request
  // (its route, model or method) is revealed; the runs pages name their route in the metrics.
  if (match && match->auth == Route::Auth::kKeyOrQuery) {
    routed.route = match->name;
    check_method();
    if (!authorized(req, true)) {
      refused = error_response(401, "missing or wrong API key: add ?key=<key> to the address");
      return nullptr;
    }
  } else if (!match || match->auth == Route::Auth::kKey) {
    if (!authorized(req, false)) {
      routed.route = "auth";
      refused = error_response(
          401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'");
      refused.headers.emplace_back("WWW-Authenticate", "Bearer");
      return nullptr;
    }
  }
  if (!version.empty() && version != "1")
    throw HttpError(404, fmt::format("model '{}' has only version 1, not '{}'", model, version));
  if (!match) throw HttpError(404, fmt::format("no route {} {}", req.method, req.path));
  routed.route = match->name;
  if (match->pattern.find("{model}") != std::string::npos) {
    served = &find(model);
    routed.model = model;
  }
  check_method();
  return match;
}

HttpResponse Service::models_list() {
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

torch::Tensor Service::run(Served& m, const torch::Tensor& input, Batcher::Arrival& arrival) {
  auto out = m.batcher->submit(input, &arrival).get();
  check_finite(out);
  return out;
}

void Service::check_finite(const torch::Tensor& output) {
  // Typed clients cannot read the null that JSON would carry. A request's rows of logits are a
  // few floats: a loop over them, not torch::isfinite's four kernels and allocations, which cost
  // more than the model's share of the batch (perf, 32 clients).
  bool finite = true;
  if (output.scalar_type() == torch::kFloat && output.is_contiguous() && output.is_cpu()) {
    const float* p = output.data_ptr<float>();
    finite = std::all_of(p, p + output.numel(), [](float v) { return std::isfinite(v); });
  } else {
    finite = torch::isfinite(output).all().item<bool>();
  }
  if (!finite)
    bad_request(
        "the model's output for this input is not finite (inf or NaN): inputs are pixels "
        "in [0, 1]");
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

}  // namespace kd
