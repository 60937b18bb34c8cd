// A gRPC load generator for the serving benchmark (bench/serve.sh): CLIENTS threads, each with a
// channel of its own (as wrk keeps a connection per client), call ModelInfer with one 28x28 image
// as raw FP32 for SECONDS; prints requests/s, p50 and p99 in milliseconds, and the failures.
// Usage: kd_grpc_load HOST:PORT MODEL CLIENTS SECONDS
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "grpc_predict_v2.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: kd_grpc_load HOST:PORT MODEL CLIENTS SECONDS\n");
    return 2;
  }
  const std::string target = argv[1], model = argv[2];
  const int clients = std::atoi(argv[3]);
  const double seconds = std::atof(argv[4]);
  inference::ModelInferRequest request;
  request.set_model_name(model);
  auto* in = request.add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  for (int64_t d : {1, 1, 28, 28}) in->add_shape(d);
  std::vector<float> pixels(784);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>(i % 255) / 255.0f;
  request.add_raw_input_contents(reinterpret_cast<const char*>(pixels.data()),
                                 pixels.size() * sizeof(float));

  using Clock = std::chrono::steady_clock;
  std::vector<std::vector<double>> latencies(static_cast<size_t>(clients));
  std::atomic<int64_t> failures{0};
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      grpc::ChannelArguments args;
      args.SetInt("kd.client", c);  // a channel (connection) of its own
      auto stub = inference::GRPCInferenceService::NewStub(
          grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
      while (Clock::now() < end) {
        grpc::ClientContext ctx;
        inference::ModelInferResponse response;
        const auto t0 = Clock::now();
        const grpc::Status s = stub->ModelInfer(&ctx, request, &response);
        latencies[static_cast<size_t>(c)].push_back(
            std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (!s.ok()) ++failures;
      }
    });
  for (auto& t : threads) t.join();
  std::vector<double> all;
  for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0.0 : all[static_cast<size_t>(p * (all.size() - 1))];
  };
  std::printf("%.1f %.3f %.3f %lld\n", static_cast<double>(all.size()) / seconds, pct(0.5),
              pct(0.99), static_cast<long long>(failures.load()));
  return failures.load() > 0 ? 1 : 0;
}
