// Micro-benchmarks of the hot pieces of a training step outside the model itself.
#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "kd/data/loader.h"
#include "kd/losses/classification.h"

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

BENCHMARK_MAIN();
