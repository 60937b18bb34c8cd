// The loader benchmark's kd side: one shuffled pass over a streamed source with the training
// transform (decode, RandomResizedCrop 224, flip), batches of 128 converted to float and
// normalized as the model's first step does. Prints one JSON line like bench/loader_baseline.py.
//
// Usage: kd_loader_bench FOLDER_OR_LIST --workers N [--batches B]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <torch/torch.h>

#include "kd/core/runtime.h"
#include "kd/data/dataset.h"
#include "kd/data/loader.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: kd_loader_bench DATA [--workers N] [--batches B]\n");
    return 2;
  }
  int workers = 2;
  int64_t max_batches = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--workers") workers = std::atoi(argv[i + 1]);
    if (flag == "--batches") max_batches = std::atoll(argv[i + 1]);
  }
  kd::init_runtime({"cpu", 1});  // the allocator tuning and one intra-op thread, as in the baseline
  kd::StreamOptions stream;
  stream.workers = workers;
  const auto data = kd::load_dataset(argv[1], "train", {3, 224, 224, 0}, stream);
  kd::LoaderOptions o;
  o.batch_size = 128;
  o.shuffle = true;
  o.augment.random_resized_crop = true;
  o.augment.hflip = true;
  const auto mean = torch::tensor({0.485f, 0.456f, 0.406f}).view({1, 3, 1, 1});
  const auto std = torch::tensor({0.229f, 0.224f, 0.225f}).view({1, 3, 1, 1});
  const auto start = std::chrono::steady_clock::now();
  kd::Loader loader(data, o, torch::kCPU);
  loader.start_epoch(0);
  int64_t n = 0, batches = loader.num_batches();
  if (max_batches > 0) batches = std::min(batches, max_batches);
  for (int64_t b = 0; b < batches; ++b) {
    auto x = loader.get(b).x.sub_(mean).div_(std);
    n += x.size(0);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "{\"loader\": \"kd\", \"workers\": %d, \"images\": %lld, \"seconds\": %.3f, "
      "\"images_per_s\": %.1f}\n",
      workers, static_cast<long long>(n), s, static_cast<double>(n) / s);
}
