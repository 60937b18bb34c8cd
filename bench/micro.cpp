// Micro-benchmarks of the hot pieces of a training step outside the model itself.
#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cstdlib>

#include "kd/data/loader.h"
#include "kd/losses/classification.h"
#include "kd/models/model.h"

static void BM_SoftTargetLoss(benchmark::State& state) {
  auto s = torch::randn({128, 10}, torch::requires_grad());
  auto t = torch::randn({128, 10});
  auto y = torch::randint(0, 10, {128}, torch::kInt64);
  for (auto _ : state) {
    auto loss = kd::soft_target_loss(s, t, y, {4.0, 0.9, 0.0});
    loss.backward();
    benchmark::DoNotOptimize(loss);
  }
}
BENCHMARK(BM_SoftTargetLoss);

static void BM_BatchWithAugmentation(benchmark::State& state) {
  kd::Dataset d{torch::randint(0, 255, {48000, 1, 28, 28}).to(torch::kUInt8),
                torch::randint(0, 10, {48000}, torch::kInt64), std::vector<std::string>(10, "c"),
                "synthetic"};
  kd::Augment aug{static_cast<int>(state.range(0)), state.range(0) > 0};
  kd::Loader loader(d, {128, true, false, aug, 0}, torch::kCPU);
  loader.start_epoch(1);
  int64_t i = 0;
  for (auto _ : state) {
    auto b = loader.get(i++ % loader.num_batches());
    benchmark::DoNotOptimize(b.x);
  }
  state.SetItemsProcessed(state.iterations() * 128);
}
BENCHMARK(BM_BatchWithAugmentation)->Arg(0)->Arg(2);

// Feature taps of a TorchScript model (KD_BENCH_TORCHSCRIPT: a scripted torchvision resnet18 with
// its sidecar, written by bench/arch.sh) at layer2, layer3 and layer4, batch 8 at 224 px:
// 0 forward alone; 1 kd's forward_with_features (one forward returning the taps); 2 the way kd
// took them before (for each tap, the top-level children run in order up to it, then forward).
static torch::Tensor run_children_to(torch::jit::Module& m, const std::string& name,
                                     torch::Tensor x) {
  for (auto child : m.named_children()) {
    if (child.name == "fc") x = x.flatten(1);
    x = child.value.forward({x}).toTensor();
    if (child.name == name) return x;
  }
  return x;
}
static void BM_TorchScriptTaps(benchmark::State& state) {
  const char* path = std::getenv("KD_BENCH_TORCHSCRIPT");
  if (!path) return state.SkipWithError("KD_BENCH_TORCHSCRIPT is not set");
  if (std::getenv("KD_BENCH_NO_JIT_OPT")) torch::jit::setGraphExecutorOptimize(false);
  torch::InferenceMode guard;
  auto model = kd::load_model(path);
  model->train(false);
  auto x = torch::rand({8, 3, 224, 224});
  const std::vector<std::string> taps = {"layer2", "layer3", "layer4"};
  auto script = torch::jit::load(path);
  script.eval();
  auto run = [&] {
    if (state.range(0) == 0) {
      benchmark::DoNotOptimize(model->forward(x));
    } else if (state.range(0) == 1) {
      benchmark::DoNotOptimize(model->forward_with_features(x, taps));
    } else {
      for (const auto& t : taps) benchmark::DoNotOptimize(run_children_to(script, t, x));
      benchmark::DoNotOptimize(model->forward(x));
    }
  };
  for (int i = 0; i < 3; ++i) run();  // TorchScript's executor profiles, then optimizes
  for (auto _ : state) run();
}
BENCHMARK(BM_TorchScriptTaps)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
