#include "kd/models/macs.h"

#include <ATen/record_function.h>

#include <cstring>

#include <torch/torch.h>

#include "kd/models/input.h"

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

}  // namespace

int64_t count_macs(Model& model, torch::Device device) {
  // Quantized kernels hold their weights packed, out of sight of the recorded inputs: the count
  // is the fp32 model's, taken when it was converted (kd/models/quantize.h).
  if (model.spec().precision == "int8") return model.spec().quantization.value("macs", int64_t{0});
  torch::InferenceMode guard;
  model.train(false);
  auto x = random_input(model.spec(), 1, device);
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

}  // namespace kd
