#pragma once
/// @file
/// The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, KServe's
/// grpc_predict_v2.proto): ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and
/// ModelInfer (typed contents or raw_input_contents in; raw_output_contents out) on a port of its
/// own, answered by the same kd::Service as HTTP: same models, key, limits, batcher, metrics.
#include <cstdint>
#include <memory>
#include <string>

namespace kd {

class Service;

struct GrpcOptions {
  std::string host = "127.0.0.1";
  int port = 0;  ///< 0: any free port (the bound one is returned by start())
  int64_t max_message_bytes = 32ll << 20;  ///< larger requests are refused (RESOURCE_EXHAUSTED)
};

class GrpcServer {
 public:
  GrpcServer(Service& service, GrpcOptions options);
  ~GrpcServer();
  /// Binds and starts serving on gRPC's own threads; returns the port. kd::Error naming the
  /// address when it cannot be bound (in use included).
  int start();
  void stop();  ///< safe from any thread; waits for the calls in flight

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kd
