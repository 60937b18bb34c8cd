#include "kd/eval/profile.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include <torch/torch.h>

namespace kd {
namespace {

// RecordFunction callbacks are plain function pointers, so the counter is thread-local.
thread_local int64_t t_macs = 0;
thread_local int t_depth = 0;  // >0 while inside a counted op: its internals are not re-counted

bool is_conv(const char* n) {
  return std::strcmp(n, "aten::conv2d") == 0 || std::strcmp(n, "aten::conv1d") == 0 ||
         std::strcmp(n, "aten::convolution") == 0 || std::strcmp(n, "aten::_convolution") == 0;
}
bool is_matmul(const char* n) {
  return std::strcmp(n, "aten::linear") == 0 || std::strcmp(n, "aten::addmm") == 0 ||
         std::strcmp(n, "aten::mm") == 0 || std::strcmp(n, "aten::matmul") == 0 ||
         std::strcmp(n, "aten::bmm") == 0;
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  if (is_conv(fn.name()) || is_matmul(fn.name())) ++t_depth;
  return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  const char* name = fn.name();
  const bool conv = is_conv(name), mm = is_matmul(name);
  if (!conv && !mm) return;
  --t_depth;
  if (t_depth != 0 || fn.outputs().empty() || !fn.outputs()[0].isTensor()) return;
  const auto& out = fn.outputs()[0].toTensor();
  // Output element count times the length of each dot product: conv weight [O, I/g, kh, kw]
  // gives I/g*kh*kw; a matmul's inner dimension is the last of its first input... except for
  // addmm(bias, a, b), whose first matrix input is the second argument.
  int64_t inner = 0;
  auto in = fn.inputs();
  if (conv && in.size() > 1 && in[1].isTensor()) {
    const auto& w = in[1].toTensor();
    inner = w.numel() / std::max<int64_t>(1, w.size(0));
  } else if (mm) {
    const size_t a = std::strcmp(name, "aten::addmm") == 0 ? 1 : 0;
    if (in.size() > a && in[a].isTensor()) inner = in[a].toTensor().size(-1);
  }
  t_macs += out.numel() * inner;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i =
      std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

torch::Tensor example_input(const Model& model, int64_t batch, torch::Device device) {
  std::vector<int64_t> shape = {batch};
  for (int64_t d : model.spec().input_shape) shape.push_back(d);
  return torch::rand(shape, torch::TensorOptions().device(device));
}

}  // namespace

int64_t count_macs(Model& model, torch::Device device) {
  torch::InferenceMode guard;
  model.train(false);
  auto x = example_input(model, 1, device);
  t_macs = 0;
  t_depth = 0;
  auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_start, on_end).needsInputs(true).needsOutputs(true));
  try {
    model.forward(x);
  } catch (...) {
    at::removeCallback(handle);
    throw;
  }
  at::removeCallback(handle);
  return t_macs;
}

nlohmann::json LatencyReport::to_json() const {
  return {{"batch1_median_ms", batch1_median_ms},
          {"batch1_p95_ms", batch1_p95_ms},
          {"throughput_per_s", throughput_per_s},
          {"throughput_batch", throughput_batch}};
}

LatencyReport measure_latency(Model& model, torch::Device device, const LatencyOptions& opts) {
  using clock = std::chrono::steady_clock;
  torch::InferenceMode guard;
  model.train(false);
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  auto x1 = example_input(model, 1, device);
  for (int i = 0; i < opts.warmup; ++i) model.forward(x1);
  std::vector<double> ms;
  for (int i = 0; i < opts.iterations; ++i) {
    auto t0 = clock::now();
    model.forward(x1);
    sync();
    ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  }
  LatencyReport r;
  r.batch1_median_ms = percentile(ms, 0.5);
  r.batch1_p95_ms = percentile(ms, 0.95);
  auto xb = example_input(model, opts.throughput_batch, device);
  model.forward(xb);
  sync();
  auto t0 = clock::now();
  for (int i = 0; i < opts.throughput_iterations; ++i) model.forward(xb);
  sync();
  const double s = std::chrono::duration<double>(clock::now() - t0).count();
  r.throughput_batch = opts.throughput_batch;
  r.throughput_per_s = static_cast<double>(opts.throughput_batch * opts.throughput_iterations) / s;
  return r;
}

}  // namespace kd
