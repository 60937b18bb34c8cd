#pragma once
/// @file
/// What `kd serve` answers, independent of the HTTP library: a request (method, path, headers,
/// body) in, a response (status, type, body) out. Routes:
/// @verbatim
///   GET  /                                  the prediction web page (no key needed)
///   GET  /v2/health/live, /v2/health/ready  Open Inference Protocol v2 health (no key needed)
///   GET  /v2                                server metadata
///   GET  /v2/models                         the served models (kd extension, used by the page)
///   GET  /v2/models/{m}[/versions/1]        model metadata: inputs, outputs, datatypes, shapes
///   GET  /v2/models/{m}[/versions/1]/ready
///   GET  /v2/models/{m}/config              Triton's model configuration
///   GET  /v2/models[/{m}]/stats             Triton's statistics extension (what is measured)
///   POST /v2/repository/index               Triton's repository index: every model, READY
///   POST /v2/models/{m}[/versions/1]/infer  tensors in JSON or binary (the binary tensor data
///                                           extension): FP32/FP64/FP16 pixels, UINT8, BYTES images
///   POST /v2/models/{m}/image               one PNG/JPEG (raw body or {"b64": ...}) -> classes/boxes
///   GET  /v1/models/{m}, POST /v1/models/{m}:predict   TF-Serving style {"instances": [...]}
///   GET  /metrics                           Prometheus text format
///   GET  /runs, /runs/index.json, /runs/curves?runs=A,B, /runs/report?runs=A,B
///                                           the runs dashboard, its data, reports (--runs DIR)
/// @endverbatim
/// Bad requests get a 4xx with {"error": "..."}; handle() never throws.
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kd/eval/runner.h"
#include "kd/serve/batcher.h"
#include "kd/serve/dashboard.h"
#include "kd/serve/metrics.h"

namespace kd {

struct ServiceOptions {
  std::string api_key;                    ///< empty: no key; else "Authorization: Bearer <key>"
  int64_t max_tensor_elements = 1 << 24;  ///< per request, checked before anything is allocated
  int64_t max_image_pixels = 1 << 24;     ///< per image, checked from the header before decoding
  int64_t max_images = 64;                ///< images per request
  BatchOptions batch;
  int64_t top_k = 5;             ///< classes listed per image
  double score_threshold = 0.3;  ///< boxes below are dropped
  int64_t max_detections = 100;  ///< boxes per image
  std::string runs_dir;          ///< non-empty: the runs dashboard under /runs (dashboard.h)
};

struct HttpRequest {
  std::string method, path, body;
  std::map<std::string, std::string> headers;  ///< names lower-cased
  std::map<std::string, std::string> query;
  /// The transport's only open connection sent it: nothing else can be on its way, so a lone
  /// inference may run on the thread that parsed it (Batcher::submit may_run_here).
  bool sole_connection = false;
  std::string header(const std::string& lower_name) const;
};

struct InferRequest;  // a parsed OIP inference request (src/serve/protocol.h)

/// What an inference answers, whatever the transport: the outputs asked for, in order.
struct InferReply {
  std::string model, id;
  bool has_id = false;
  std::vector<std::pair<std::string, torch::Tensor>> outputs;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

class Service {
 public:
  Service(std::vector<std::unique_ptr<ModelRunner>> runners, ServiceOptions options);
  ~Service();
  using Respond = std::function<void(HttpResponse)>;
  using Offload = std::function<void(std::function<void()>)>;
  /// Answers `request` through `respond`, exactly once. The caller's thread does what is quick
  /// (the metadata routes; parsing a small inference request and queueing it for its batch,
  /// whose worker thread then answers); what may block (images, TF Serving, large bodies, the
  /// runs pages) goes to `offload`, which runs it on some other thread. An event-driven transport
  /// thus never waits on a batch, and no thread sits waiting for one.
  void handle(HttpRequest request, Respond respond, const Offload& offload) noexcept;
  /// The same, waited for on the caller's thread.
  HttpResponse handle(const HttpRequest& request) noexcept;
  /// A response the transport itself produces (body too large, unreadable request), counted.
  HttpResponse transport_error(int status, const std::string& message);
  /// OIP inference for a transport other than HTTP (gRPC, kd/serve/grpc.h): the same key check
  /// (`authorization` is "Bearer KEY"), model lookup, limits, batching, metrics and statistics
  /// as POST /v2/models/{m}/infer. `done` gets an HTTP status (other than 200, `error` says why)
  /// exactly once: on the batch's worker thread, or on this one when the request fails before
  /// it is queued. No thread waits for the batch.
  using InferDone = std::function<void(int status, InferReply reply, std::string error)>;
  void infer_tensors(const std::string& model, const std::string& authorization,
                     std::shared_ptr<InferRequest> request, InferDone done) noexcept;
  Metrics& metrics() { return metrics_; }
  const ServiceOptions& options() const { return options_; }
  std::vector<std::string> model_names() const;

 private:
  struct Served;
  struct Routed;
  struct Route;
  /// The route table (service.cpp): path patterns, methods, the key each needs, handlers.
  static const std::vector<Route>& routes();
  /// The route for a request, after the key check; nullptr with `refused` set when it is
  /// answered without one (401). Throws HttpError for no route, a wrong method or model.
  const Route* route(const HttpRequest& request, Routed& routed, Served*& served,
                     HttpResponse& refused);
  // `what` names the request in the message ("POST /v2/models/m/infer").
  HttpResponse failure_response(const std::exception_ptr& failure, const std::string& what);
  /// Counts an answered request in the metrics and, for inference routes, the model's statistics.
  void record(const Routed& routed, int status, double seconds) noexcept;
  /// The transport-neutral core of OIP inference: the outputs asked for, computed.
  struct InferResult;
  InferResult run_infer(Served& m, InferRequest& request, Batcher::Arrival& arrival);
  /// run_infer in two halves around the batch: the input and the outputs asked for, checked;
  /// then the model's output rows turned into every output.
  struct InferPlan;
  InferPlan plan_infer(Served& m, InferRequest& request);
  InferResult finish_infer(Served& m, InferPlan& plan, const torch::Tensor& y);
  /// The API key, from "Authorization: Bearer KEY" (or ?key=KEY where links must carry it).
  bool authorized(const HttpRequest& request, bool query_key_too) const;
  Served& find(const std::string& name);
  /// One file per protocol: Open Inference Protocol v2 (oip.cpp), TF Serving v1 (tf_serving.cpp),
  /// one uploaded image (image_route.cpp).
  HttpResponse model_metadata(Served& m);
  HttpResponse model_config(Served& m);  ///< Triton's model configuration
  HttpResponse model_stats(Served* m);   ///< Triton's statistics; nullptr: every model
  HttpResponse repository_index();       ///< Triton's model repository index
  /// OIP inference over HTTP: parsed on the caller's thread, answered by the batch's worker. A
  /// request of images (BYTES) is decoded and planned through `offload` when the caller's thread
  /// is the transport's (offload not null).
  void infer(Served& m, HttpRequest& request, Respond respond, const Offload* offload);
  /// The parsed request planned and queued for its batch; `respond` is taken (moved from) only
  /// once planning succeeded, so a caller can still answer a planning error with it.
  void submit_infer(Served& m, const std::shared_ptr<InferRequest>& request,
                    Batcher::Arrival& arrival, Respond& respond, bool run_here);
  HttpResponse model_status_v1(Served& m);
  HttpResponse predict_v1(Served& m, const HttpRequest& request);
  HttpResponse image(Served& m, const HttpRequest& request);
  HttpResponse models_list();
  torch::Tensor run(Served& m, const torch::Tensor& input, Batcher::Arrival& arrival);
  /// JSON has no inf or NaN: an output with them is refused (400), never sent as null.
  static void check_finite(const torch::Tensor& output);
  /// Decoded, resized or letterboxed images and their pixels stacked into one input batch.
  struct ImageBatch {
    std::vector<PreparedImage> images;
    torch::Tensor pixels;  ///< float [N, C, H, W]
  };
  ImageBatch prepare_images(Served& m, const std::vector<std::string>& encoded);

  ServiceOptions options_;
  Metrics metrics_;
  /// Requests being handled (from handle() to their answer): a lone one from the transport's
  /// only connection runs its batch on the thread that parsed it (Batcher::submit may_run_here).
  /// The count alone cannot tell: under load, an answered request's successors may still be in
  /// their sockets, and running each inline would serialise them all on one thread.
  std::atomic<int64_t> in_flight_{0};
  std::map<std::string, std::unique_ptr<Served>> models_;
  std::unique_ptr<Dashboard> dashboard_;
};

}  // namespace kd
