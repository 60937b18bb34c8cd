#include <csignal>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/runtime.h"
#include "kd/core/version.h"
#if KD_WITH_GRPC
#include "kd/serve/grpc.h"
#endif
#include "kd/eval/runner.h"
#include "kd/serve/http.h"
#include "kd/serve/service.h"
#include "options.h"

namespace kd::cli {
namespace {

struct ServeArgs {
  std::vector<std::string> runs;
  HttpOptions http;
  int grpc_port = -1;  // -1: no gRPC
  ServiceOptions service;
  double max_wait_ms = 2;
  int64_t max_inflight_mib = 512;
  double max_body_mb = 32;
  bool eager = false;  // serve the model as trained, without optimize_for_inference
  // One intra-op thread per batch worker by default: on a small machine the HTTP threads need the
  // other cores, and OpenMP's spinning workers would take them (bench/README.md).
  RuntimeConfig runtime{"auto", 1};
};

volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// "NAME=PATH" names a model; a bare PATH is named after its directory (or file stem).
std::unique_ptr<ModelRunner> load_runner(const std::string& arg, torch::Device device,
                                         bool optimize) {
  std::string name, path = arg;
  if (const auto eq = arg.find('='); eq != std::string::npos && !fs::exists(arg)) {
    name = arg.substr(0, eq);
    path = arg.substr(eq + 1);
  }
  fs::path p = fs::path(path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (name.empty()) name = fs::is_regular_file(p) ? p.stem().string() : p.filename().string();
  KD_CHECK(!name.empty() && name.find_first_of("/:?#% ") == std::string::npos,
           "{}: '{}' cannot be a model name in a URL; name it with NAME=RUN", arg, name);
  auto model = load_model(path);
  model->to(device);
  return std::make_unique<ModelRunner>(name, path, std::move(model), optimize);
}

void run(ServeArgs& a) {
  std::signal(SIGPIPE, SIG_IGN);
  if (a.grpc_port >= 0 && !kWithGrpc)
    usage_fail("--grpc-port: this kd was built without gRPC (KD_WITH_GRPC=OFF)");

  const torch::Device device = init_runtime(
      {a.runtime.device, a.runtime.threads, a.runtime.seed, false, a.runtime.precision});
  if (a.service.api_key.empty())
    if (const char* k = std::getenv("KD_API_KEY")) a.service.api_key = k;
  a.service.batch.max_wait = std::chrono::microseconds(static_cast<int64_t>(a.max_wait_ms * 1000));
  a.service.batch.max_bytes_in_flight = a.max_inflight_mib << 20;
  a.http.max_body_bytes = static_cast<int64_t>(a.max_body_mb * (1 << 20));
  KD_CHECK(a.max_wait_ms >= 0, "--max-wait-ms must not be negative");
  KD_CHECK(a.http.max_body_bytes > 0, "--max-body-mb must be positive");

  if (a.runs.empty() && a.service.runs_dir.empty())
    usage_fail("nothing to serve: give run directories, or --runs DIR");
  std::vector<std::unique_ptr<ModelRunner>> runners;
  // The optimized graph is oneDNN's (CPU) and fp32; bf16 autocast runs the model as it is.
  const bool optimize = !a.eager && device.is_cpu() && !bf16_autocast();
  for (const auto& r : a.runs) runners.push_back(load_runner(r, device, optimize));
  nlohmann::json models = nlohmann::json::array();
  for (const auto& r : runners)
    models.push_back({{"name", r->name()},
                      {"task", r->spec().task},
                      {"source", r->source()},
                      {"optimized", r->optimized()}});
  Service service(std::move(runners), a.service);
  HttpServer server(service, a.http);
  const int port = server.bind();
#if KD_WITH_GRPC
  std::unique_ptr<GrpcServer> grpc;
  int grpc_port = -1;
  if (a.grpc_port >= 0) {
    grpc = std::make_unique<GrpcServer>(
        service, GrpcOptions{a.http.host, a.grpc_port, a.http.max_body_bytes});
    grpc_port = grpc->start();
  }
#else
  struct NoGrpc {
    void stop() {}
  };
  std::unique_ptr<NoGrpc> grpc;
  const int grpc_port = -1;
#endif
  if (a.http.host != "127.0.0.1" && a.http.host != "localhost" && a.http.host != "::1" &&
      a.service.api_key.empty())
    spdlog::warn(
        "listening on {} without --api-key: anyone who can reach this address can use the models",
        a.http.host);
  // Ctrl-C or SIGTERM stops the server cleanly. Libraries start threads of their own, so the
  // signal may land on any of them: the handler only sets a flag that a watcher thread polls.
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  std::thread watcher([&server, &grpc] {
    while (g_stop_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    spdlog::info("signal {}: stopping", static_cast<int>(g_stop_signal));
    if (grpc) grpc->stop();
    server.stop();
  });
  watcher.detach();
  // One line on stdout for scripts: where the server is and what it serves.
  nlohmann::json where = {{"listening", fmt::format("http://{}:{}", a.http.host, port)},
                          {"models", models}};
  if (grpc) where["grpc"] = fmt::format("{}:{}", a.http.host, grpc_port);
  std::cout << where.dump() << std::endl;
  spdlog::info("serving {} model(s) on http://{}:{} (max batch {}, max wait {} ms, queue {})",
               models.size(), a.http.host, port, a.service.batch.max_batch, a.max_wait_ms,
               a.service.batch.max_queue);
  server.run();
  if (grpc) grpc->stop();
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* c = app.add_subcommand(
      "serve",
      "serve runs' models over HTTP (Open Inference Protocol v2), with a web page and metrics");
  c->footer(
      "Example: kd serve runs/fmnist/distilled-s0 runs/detect/d0-distilled-s0 --port 8080\n"
      "         kd serve runs/fmnist/distilled-s0 --runs runs   (adds the runs dashboard at "
      "/runs)\n"
      "Then open http://127.0.0.1:8080/ or POST /v2/models/distilled-s0/infer "
      "(docs/guide/serving.md).");
  c->add_option("runs", a->runs, "run directories or TorchScript files, each as RUN or NAME=RUN");
  c->add_option("--runs", a->service.runs_dir,
                "a folder of runs: a dashboard at /runs lists them, with reports")
      ->check(CLI::ExistingDirectory);
  c->add_option("--host", a->http.host, "address to listen on (0.0.0.0: every interface)")
      ->capture_default_str();
  c->add_option("--port", a->http.port, "port (0: any free port, printed on stdout)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  c->add_option("--grpc-port", a->grpc_port,
                "also serve the Open Inference Protocol over gRPC on this port (0: any free port, "
                "printed on stdout)")
      ->check(CLI::Range(0, 65535));
  c->add_option("--api-key", a->service.api_key,
                "require 'Authorization: Bearer KEY' (also from $KD_API_KEY)");
  c->add_option("--max-batch", a->service.batch.max_batch, "inputs per batched forward pass")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--max-wait-ms", a->max_wait_ms,
                "how long a request waits for others to batch with")
      ->capture_default_str();
  c->add_option("--max-queue", a->service.batch.max_queue, "requests waiting per model before 503")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--max-inflight-mib", a->max_inflight_mib,
                "input MiB queued or running per model before 503 (a larger request alone runs)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  c->add_option("--workers", a->service.batch.workers, "batch threads per model")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_flag("--eager", a->eager,
              "run the model as trained, not traced and optimized for inference (CPU, fp32)");
  c->add_option("--http-threads", a->http.threads,
                "threads for requests that block: images, TF Serving, large bodies, the runs "
                "pages (0: 8 per core)")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
  c->add_option("--timeout", a->http.timeout_seconds,
                "seconds to receive a request's body or send a response")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  c->add_option("--header-timeout", a->http.header_timeout_seconds,
                "seconds to receive a request's line and headers")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  c->add_option("--idle-timeout", a->http.idle_timeout_seconds,
                "seconds a keep-alive connection may wait for its next request")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  c->add_option("--max-connections", a->http.max_connections, "connections open at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  c->add_option("--max-body-mb", a->max_body_mb, "largest request body")->capture_default_str();
  c->add_option("--max-tensor-elements", a->service.max_tensor_elements,
                "largest input tensor per request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--max-image-pixels", a->service.max_image_pixels, "largest image (width x height)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--top-k", a->service.top_k, "classes listed per image")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--score", a->service.score_threshold, "lowest box score returned")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  add_runtime_options(*c, a->runtime);
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
