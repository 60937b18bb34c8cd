// The serving pieces on their own: base64, image headers, the batcher's gathering and splitting,
// its bounded queue, and the Prometheus rendering.
#include <atomic>
#include <cmath>
#include <thread>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kd/core/base64.h"
#include "kd/core/error.h"
#include "kd/data/image.h"
#include "kd/eval/runner.h"
#include "kd/models/model.h"
#include "kd/serve/batcher.h"
#include "kd/serve/metrics.h"
#include "kd/serve/service.h"
#include "serve/protocol.h"

namespace kd {
namespace {

TEST(Base64, RoundTripsEveryLengthAndRejectsJunk) {
  std::string bytes;
  for (int n = 0; n < 40; ++n) {
    EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes) << n;
    bytes += static_cast<char>(n * 37);
  }
  EXPECT_EQ(base64_encode("hello"), "aGVsbG8=");   // as Python's base64.b64encode
  EXPECT_EQ(base64_decode("aGVs\nbG8"), "hello");  // padding optional, whitespace ignored
  EXPECT_THROW(base64_decode("aGVs*G8="), Error);
  EXPECT_THROW(base64_decode("aGVsb"), Error);  // a lone final character
  EXPECT_THROW(base64_decode("aG=Vs"), Error);  // data after padding
}

TEST(EncodedImage, ReadsPngAndJpegHeadersWithoutDecoding) {
  std::string png = "\x89PNG\r\n\x1a\n";
  png += std::string("\0\0\0\x0dIHDR", 8);
  png += std::string("\0\0\x01\x2c\0\0\0\xc8", 8);  // 300 x 200
  EXPECT_EQ(encoded_image_size(png).width, 300);
  EXPECT_EQ(encoded_image_size(png).height, 200);
  // SOI, an APP0 segment of 4 bytes, then SOF0: length 17, precision 8, height 480, width 640.
  std::string jpeg("\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xc0\x00\x11\x08\x01\xe0\x02\x80", 17);
  EXPECT_EQ(encoded_image_size(jpeg).width, 640);
  EXPECT_EQ(encoded_image_size(jpeg).height, 480);
  EXPECT_THROW(encoded_image_size("GIF89a........................"), Error);
  EXPECT_THROW(encoded_image_size(std::string("\xff\xd8\xff\xd9", 4)), Error);
  // The header is checked against the limit before any decoding is tried.
  EXPECT_THROW(decode_image(png, ImageOptions{1, 28, 28}, 300 * 200 - 1), Error);
}

namespace {

// A request in the binary tensor data extension: the JSON, then the bytes.
std::pair<std::string, int64_t> binary_request(const std::string& datatype,
                                               const std::vector<int64_t>& shape,
                                               const std::string& bytes) {
  nlohmann::json j = {{"inputs",
                       {{{"name", "input"},
                         {"shape", shape},
                         {"datatype", datatype},
                         {"parameters", {{"binary_data_size", bytes.size()}}}}}},
                      {"outputs", {{{"name", "logits"}, {"parameters", {{"binary_data", true}}}}}}};
  const std::string text = j.dump();
  return {text + bytes, static_cast<int64_t>(text.size())};
}

template <typename T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

}  // namespace

TEST(InferRequest, ReadsTheBinaryTensorDataExtension) {
  const kd::InferLimits limits{1000, 8};
  auto [body, n] = binary_request("FP32", {1, 3}, raw(std::vector<float>{0.25f, -1.5f, 3e38f}));
  auto r = kd::parse_infer_request(body, limits, n);
  EXPECT_EQ(r.inputs[0].numbers, (std::vector<float>{0.25f, -1.5f, 3e38f}));
  EXPECT_TRUE(r.inputs[0].binary);
  ASSERT_EQ(r.outputs.size(), 1u);
  EXPECT_TRUE(r.outputs[0].binary);
  // FP16: one, minus two, the smallest subnormal, the largest finite; UINT8: divided by 255.
  std::tie(body, n) =
      binary_request("FP16", {4}, raw(std::vector<uint16_t>{0x3c00, 0xc000, 0x0001, 0x7bff}));
  EXPECT_EQ(kd::parse_infer_request(body, limits, n).inputs[0].numbers,
            (std::vector<float>{1.0f, -2.0f, 5.9604645e-08f, 65504.0f}));
  std::tie(body, n) = binary_request("UINT8", {3}, std::string("\x00\x33\xff", 3));
  auto u = kd::parse_infer_request(body, limits, n).inputs[0].numbers;
  EXPECT_FLOAT_EQ(u[0], 0.0f);
  EXPECT_FLOAT_EQ(u[1], 0.2f);
  EXPECT_FLOAT_EQ(u[2], 1.0f);
  std::tie(body, n) = binary_request("BYTES", {2}, std::string("\x02\0\0\0ab\x00\0\0\0", 10));
  EXPECT_EQ(kd::parse_infer_request(body, limits, n).inputs[0].strings,
            (std::vector<std::string>{"ab", ""}));
  // Framing errors name what is wrong.
  std::tie(body, n) = binary_request("FP32", {1, 2}, raw(std::vector<float>{1, 2}));
  EXPECT_THROW(kd::parse_infer_request(body.substr(0, body.size() - 1), limits, n), kd::BadRequest);
  EXPECT_THROW(kd::parse_infer_request(body + "x", limits, n), kd::BadRequest);
  EXPECT_THROW(kd::parse_infer_request(body, limits, -1), kd::BadRequest);
  EXPECT_THROW(kd::parse_infer_request(body, limits, static_cast<int64_t>(body.size()) + 1),
               kd::BadRequest);
  std::tie(body, n) = binary_request("FP32", {1}, raw(std::vector<float>{NAN}));
  EXPECT_THROW(kd::parse_infer_request(body, limits, n), kd::BadRequest);
  std::tie(body, n) = binary_request("FP16", {1}, raw(std::vector<uint16_t>{0x7c00}));  // inf
  EXPECT_THROW(kd::parse_infer_request(body, limits, n), kd::BadRequest);
  std::tie(body, n) = binary_request("BYTES", {1}, std::string("\x09\0\0\0ab", 6));
  EXPECT_THROW(kd::parse_infer_request(body, limits, n), kd::BadRequest);
  // JSON numbers past FP32's range are refused, not cast (undefined behaviour).
  EXPECT_THROW(
      kd::parse_infer_request(
          R"({"inputs":[{"name":"i","shape":[1],"datatype":"FP32","data":[1e39]}]})", limits),
      kd::BadRequest);
}

TEST(Batcher, GathersConcurrentRequestsAndSplitsTheirRows) {
  std::atomic<int> batches{0};
  std::atomic<int64_t> largest{0};
  BatchOptions opts;
  opts.max_batch = 8;
  opts.max_wait = std::chrono::milliseconds(500);  // never reached: 8 rows fill the batch
  Batcher batcher([](const torch::Tensor& x) { return x * 2; }, opts,
                  [&](int64_t size, double) {
                    ++batches;
                    largest = std::max<int64_t>(largest, size);
                  });
  // Eight requests announced (being parsed), then submitted one by one: the worker waits for them.
  std::vector<Batcher::Arrival> arrivals;
  for (int i = 0; i < 8; ++i) arrivals.push_back(batcher.expect());
  std::vector<std::future<torch::Tensor>> results;
  for (int i = 0; i < 8; ++i)
    results.push_back(batcher.submit(torch::full({1, 3}, static_cast<float>(i)),
                                     &arrivals[static_cast<size_t>(i)]));
  for (int i = 0; i < 8; ++i)
    EXPECT_TRUE(torch::equal(results[static_cast<size_t>(i)].get(), torch::full({1, 3}, 2.0f * i)));
  EXPECT_EQ(batches.load(), 1);  // the 8 rows filled one batch before the wait ran out
  EXPECT_EQ(largest.load(), 8);
  // A request larger than max_batch runs alone, in forward passes of at most max_batch rows:
  // memory for activations stays that of one batch, whatever the request's size.
  batches = 0;
  largest = 0;
  auto big = batcher.submit(torch::arange(60).view({20, 3}).to(torch::kFloat)).get();
  EXPECT_TRUE(torch::equal(big, torch::arange(60).view({20, 3}).to(torch::kFloat) * 2));
  EXPECT_EQ(batches.load(), 3);  // 8 + 8 + 4
  EXPECT_EQ(largest.load(), 8);
}

TEST(Batcher, RefusesInputsPastTheBytesInFlightButNeverALoneOne) {
  std::atomic<bool> release{false};
  BatchOptions opts;
  opts.max_wait = std::chrono::microseconds(0);
  opts.max_bytes_in_flight = 1000;  // bytes of input
  Batcher batcher(
      [&](const torch::Tensor& x) {
        while (!release) std::this_thread::yield();
        return x;
      },
      opts);
  // Alone, a request larger than the cap runs (it could never run otherwise).
  auto first = batcher.submit(torch::ones({100, 3}));  // 1,200 bytes
  EXPECT_THROW(batcher.submit(torch::ones({1, 3})), QueueFull);
  release = true;
  EXPECT_EQ(first.get().size(0), 100);
  // Answered: its bytes are no longer in flight.
  EXPECT_EQ(batcher.submit(torch::ones({50, 3})).get().size(0), 50);
  auto a = batcher.submit(torch::ones({50, 3}));  // 600 bytes
  a.get();
}

TEST(Batcher, ALoneClientIsNotKeptWaiting) {
  BatchOptions opts;
  opts.max_wait = std::chrono::milliseconds(500);
  Batcher batcher([](const torch::Tensor& x) { return x; }, opts);
  // Nothing announced: each runs at once instead of waiting max_wait for company.
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    batcher.submit(torch::ones({1, 3})).get();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(400));
  }
}

TEST(Batcher, ALoneRequestMayRunOnItsOwnThreadButNeverBesideOthers) {
  std::atomic<bool> release{false};
  std::atomic<int> batches{0};
  BatchOptions opts;
  opts.max_wait = std::chrono::microseconds(0);
  Batcher batcher(
      [&](const torch::Tensor& x) {
        while (x.item<float>() < 0 && !release) std::this_thread::yield();
        return x + 1;
      },
      opts, [&](int64_t, double) { ++batches; });
  // Idle batcher: the batch runs here, `done` is called before submit returns, on this thread.
  auto arrival = batcher.expect();
  std::thread::id ran_on;
  torch::Tensor got;
  batcher.submit(
      torch::full({1}, 1.0f),
      [&](torch::Tensor rows, std::exception_ptr) {
        ran_on = std::this_thread::get_id();
        got = rows;
      },
      &arrival, /*may_run_here=*/true);
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_EQ(got.item<float>(), 2.0f);
  EXPECT_EQ(batches.load(), 1);
  // A worker busy with a batch (held by its input -1): the next request queues for a worker.
  auto busy = batcher.submit(torch::full({1}, -1.0f));
  while (batcher.depth() > 0) std::this_thread::yield();
  std::atomic<bool> answered{false};
  batcher.submit(
      torch::full({1}, 5.0f), [&](torch::Tensor, std::exception_ptr) { answered = true; }, nullptr,
      /*may_run_here=*/true);
  EXPECT_FALSE(answered.load());  // queued behind the running batch, not run here
  release = true;
  EXPECT_EQ(busy.get().item<float>(), 0.0f);
  while (!answered) std::this_thread::yield();
}

TEST(Batcher, RefusesWorkWhenTheQueueIsFullAndPassesErrorsOn) {
  std::atomic<bool> release{false};
  BatchOptions opts;
  opts.max_batch = 1;
  opts.max_queue = 2;
  opts.max_wait = std::chrono::microseconds(0);
  Batcher batcher(
      [&](const torch::Tensor& x) {
        while (!release) std::this_thread::yield();
        if (x.item<float>() < 0) throw Error("negative input");
        return x;
      },
      opts);
  auto running = batcher.submit(torch::ones({1}));
  while (batcher.depth() != 0) std::this_thread::yield();  // the worker took it and is blocked
  auto a = batcher.submit(torch::full({1}, -1.0f));
  auto b = batcher.submit(torch::ones({1}));
  EXPECT_THROW(batcher.submit(torch::ones({1})), QueueFull);
  release = true;
  EXPECT_EQ(running.get().item<float>(), 1);
  EXPECT_THROW(a.get(), Error);  // one failing batch fails only its own requests
  EXPECT_EQ(b.get().item<float>(), 1);
}

TEST(Metrics, RendersCountersAndCumulativeHistograms) {
  Metrics m;
  m.request("cls", "infer", 200, 0.003);
  m.request("cls", "infer", 200, 0.02);
  m.request("cls", "infer", 400, 0.0001);
  m.batch("cls", 3, 0.001);
  m.set_queue_depth([] { return std::vector<std::pair<std::string, int64_t>>{{"cls", 2}}; });
  const std::string text = m.render();
  EXPECT_NE(text.find("kd_http_requests_total{model=\"cls\",route=\"infer\",code=\"200\"} 2"),
            std::string::npos);
  EXPECT_NE(text.find("kd_http_errors_total{model=\"cls\",code=\"400\"} 1"), std::string::npos);
  EXPECT_NE(
      text.find(
          "kd_http_request_duration_seconds_bucket{model=\"cls\",route=\"infer\",le=\"0.005\"} 2"),
      std::string::npos);
  EXPECT_NE(
      text.find(
          "kd_http_request_duration_seconds_bucket{model=\"cls\",route=\"infer\",le=\"+Inf\"} 3"),
      std::string::npos);
  EXPECT_NE(text.find("kd_batch_size_bucket{model=\"cls\",le=\"2\"} 0"), std::string::npos);
  EXPECT_NE(text.find("kd_batch_size_bucket{model=\"cls\",le=\"4\"} 1"), std::string::npos);
  EXPECT_NE(text.find("kd_queue_depth{model=\"cls\"} 2"), std::string::npos);
}

}  // namespace
// Service::handle is the whole API without sockets: a request in, a response out.
struct ServedClassifier {
  kd::Service service;
  explicit ServedClassifier(const std::string& key = "")
      : service(runners(), [&] {
          kd::ServiceOptions o;
          o.api_key = key;
          return o;
        }()) {}
  static std::vector<std::unique_ptr<kd::ModelRunner>> runners() {
    kd::ModelSpec spec;
    spec.arch = "fmnist-student";
    spec.input_shape = {1, 28, 28};
    for (int c = 0; c < 10; ++c) spec.class_names.push_back("c" + std::to_string(c));
    std::vector<std::unique_ptr<kd::ModelRunner>> out;
    out.push_back(std::make_unique<kd::ModelRunner>("cls", "memory", kd::create_model(spec)));
    return out;
  }
  kd::HttpResponse call(const std::string& method, const std::string& path,
                        const std::string& body = "", const std::string& key = "") {
    kd::HttpRequest r;
    r.method = method;
    r.path = path;
    r.body = body;
    if (!key.empty()) r.headers["authorization"] = "Bearer " + key;
    return service.handle(r);
  }
};

nlohmann::json body_of(const kd::HttpResponse& r) { return nlohmann::json::parse(r.body); }

TEST(Service, RoutesAnswerWithTheirStatus) {
  ServedClassifier s;
  EXPECT_EQ(s.call("GET", "/v2/health/live").status, 200);
  EXPECT_EQ(body_of(s.call("GET", "/v2/health/ready"))["ready"], true);
  EXPECT_EQ(s.call("GET", "/").content_type, "text/html; charset=utf-8");
  EXPECT_EQ(body_of(s.call("GET", "/v2"))["name"], "kd");
  EXPECT_EQ(body_of(s.call("GET", "/v2/models"))["models"][0]["name"], "cls");
  EXPECT_EQ(body_of(s.call("GET", "/v2/models/cls"))["outputs"][0]["name"], "logits");
  EXPECT_EQ(s.call("GET", "/v2/models/cls/versions/1/ready").status, 200);
  EXPECT_EQ(s.call("GET", "/v1/models/cls").status, 200);
  auto v2 = s.call("GET", "/v2/models/cls/versions/2/ready");
  EXPECT_EQ(v2.status, 404);
  EXPECT_NE(body_of(v2)["error"].get<std::string>().find("only version 1"), std::string::npos);
  auto nope = s.call("POST", "/v2/models/nope/infer", "{}");
  EXPECT_EQ(nope.status, 404);
  EXPECT_NE(body_of(nope)["error"].get<std::string>().find("no model named 'nope'"),
            std::string::npos);
  EXPECT_EQ(s.call("GET", "/v2/models/cls/infer").status, 405);
  EXPECT_EQ(s.call("POST", "/v2/health/live").status, 405);
  EXPECT_EQ(s.call("GET", "/no/such/route").status, 404);
  EXPECT_EQ(s.call("GET", "/runs").status, 404);  // no dashboard without --runs
}

TEST(Service, InferAndPredictGiveTheSameLogits) {
  ServedClassifier s;
  std::vector<float> x(784);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) / 7.0f;
  const nlohmann::json infer = {
      {"inputs",
       {{{"name", "input"}, {"datatype", "FP32"}, {"shape", {1, 1, 28, 28}}, {"data", x}}}}};
  auto a = s.call("POST", "/v2/models/cls/infer", infer.dump());
  ASSERT_EQ(a.status, 200) << a.body;
  const auto logits = body_of(a)["outputs"][0]["data"].get<std::vector<float>>();
  ASSERT_EQ(logits.size(), 10u);
  std::vector<std::vector<std::vector<float>>> image(1, std::vector<std::vector<float>>(28));
  for (int r = 0; r < 28; ++r) image[0][r].assign(x.begin() + r * 28, x.begin() + (r + 1) * 28);
  auto b = s.call("POST", "/v1/models/cls:predict", nlohmann::json{{"instances", {image}}}.dump());
  ASSERT_EQ(b.status, 200) << b.body;
  const auto probs = body_of(b)["predictions"][0]["probabilities"].get<std::vector<float>>();
  auto p = torch::softmax(torch::tensor(logits), 0);
  for (int c = 0; c < 10; ++c) EXPECT_NEAR(probs[static_cast<size_t>(c)], p[c].item<float>(), 1e-6);
  // Bad requests are 400s naming what is wrong, never exceptions.
  EXPECT_EQ(s.call("POST", "/v2/models/cls/infer", "{not json").status, 400);
  auto bytes =
      s.call("POST", "/v2/models/cls/infer",
             R"({"inputs":[{"name":"input","datatype":"BYTES","shape":[1],"data":["%%%"]}]})");
  EXPECT_EQ(bytes.status, 400);
  EXPECT_NE(body_of(bytes)["error"].get<std::string>().find("inputs[0].data[0]"),
            std::string::npos);
}

TEST(Service, TheKeyIsCheckedOnceForEveryApiRoute) {
  ServedClassifier s("sesame");
  for (const char* path : {"/v2", "/v2/models", "/v2/models/cls", "/v1/models/cls", "/metrics",
                           "/no/such/route", "/v2/models/nope/ready"}) {
    auto r = s.call("GET", path);
    EXPECT_EQ(r.status, 401) << path;
    EXPECT_EQ(r.headers.at(0).first, "WWW-Authenticate") << path;
    EXPECT_EQ(s.call("GET", path, "", "wrong").status, 401) << path;
  }
  EXPECT_EQ(s.call("GET", "/v2/models/cls", "", "sesame").status, 200);
  EXPECT_EQ(s.call("GET", "/metrics", "", "sesame").status, 200);
  EXPECT_EQ(s.call("GET", "/v2/health/live").status, 200);  // health and the page need no key
  EXPECT_EQ(s.call("GET", "/").status, 200);
  const std::string metrics = s.call("GET", "/metrics", "", "sesame").body;
  EXPECT_NE(metrics.find("route=\"auth\""), std::string::npos);
}

}  // namespace kd
