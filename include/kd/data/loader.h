#pragma once
/// @file
/// Batches of a dataset, with seeded shuffling. In-memory data: by tensor indexing (one
/// index_select per batch) and batch-level augmentation. Streamed data: read, decoded and
/// augmented per image by worker threads ahead of the step (kd/data/transform.h).
#include <cstdint>
#include <memory>

#include <torch/types.h>

#include "kd/data/dataset.h"

namespace kd {

struct Augment {
  int crop_padding = 0;  ///< in-memory data: random crop of the original size after zero padding
  bool hflip = false;    ///< random horizontal flip with probability 1/2
  /// Streamed data, per image: RandomResizedCrop (else the eval transform), colour jitter.
  bool random_resized_crop = false;
  double jitter = 0.0;
  /// Batch-level mixing with a shuffled copy of the batch, lam ~ Beta(a, a) per batch (0: off):
  /// mixup blends whole images (Zhang et al. 2018), cutmix pastes a box of area 1 - lam (Yun et
  /// al. 2019); with both, each batch takes one of them at random.
  double mixup = 0.0;
  double cutmix = 0.0;
  bool mixes() const { return mixup > 0 || cutmix > 0; }
  /// The images differ between epochs: a teacher must see each batch (no teacher cache).
  bool enabled() const {
    return crop_padding > 0 || hflip || mixes() || random_resized_crop || jitter > 0;
  }
};

struct Batch {
  torch::Tensor x;  ///< float [B, C, H, W] in [0, 1] (normalization lives in the model)
  torch::Tensor y;  ///< int64 [B]
  /// int64 [B], positions in the loader's dataset (teacher cache key). Streamed images that
  /// failed to load are left out of a batch, so B can be less than the batch size.
  torch::Tensor index;
  /// Mixed batches: x is lam * image + (1 - lam) * the image of y_mix (undefined: not mixed).
  torch::Tensor y_mix;
  double lam = 1.0;
};

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = false;
  bool drop_last = false;
  Augment augment;
  uint64_t seed = 0;
  /// Data parallelism: this process reads every world_size-th sample of each epoch's order,
  /// starting at `rank` (torch's DistributedSampler), the order padded by wrapping around so all
  /// ranks get the same number of batches. Rank r's batch i together with the other ranks' batch
  /// i is exactly the one-process batch i of world_size * batch_size samples.
  int rank = 0;
  int world_size = 1;
};

/// Every sample once, in order, no augmentation: inference passes.
inline LoaderOptions in_order(int64_t batch_size) {
  LoaderOptions o;
  o.batch_size = batch_size;
  return o;
}

class BatchPipeline;

class Loader {
 public:
  Loader(const Dataset& data, LoaderOptions opts, torch::Device device);
  ~Loader();
  /// Reshuffles deterministically from (seed, epoch) so a resumed or repeated run sees the same
  /// order.
  void start_epoch(int64_t epoch);
  int64_t num_batches() const;
  int64_t size() const { return labels_.size(0); }  // the whole dataset, all ranks together
  Batch get(int64_t i) const;
  /// Streamed images skipped so far because they failed to load.
  int64_t skipped() const;

 private:
  void shard();
  torch::Tensor images_;  ///< in memory: uint8, kept on the target device
  torch::Tensor labels_;
  torch::Tensor ids_;  ///< streamed: the source's sample ids
  LoaderOptions opts_;
  torch::Tensor order_;
  torch::Device device_;
  std::unique_ptr<BatchPipeline> pipeline_;
  int64_t epoch_ = 0;
  int view_ = 0;
  mutable torch::Generator gen_;  ///< augmentation draws advance it inside get()
};

/// The batch for inference over `images` (uint8 [N, C, H, W]): `requested`, or fewer so that a
/// batch holds at most 4 Mi input values. The default eval batch of 1,000 suits 28 x 28 images;
/// at 96 x 96 RGB its activations took 1 GiB (now 151 images), at 224 px 27.
int64_t inference_batch_size(int64_t requested, const torch::Tensor& images);
int64_t inference_batch_size(int64_t requested, const Dataset& data);

/// Teacher ensembles' views of a batch: 0 the images, 1 flipped, 2-5 shifted by one pixel
/// (zero fill) right, left, down, up.
torch::Tensor ensemble_view(const torch::Tensor& images, int k);
/// The number of decode threads `workers` asks for: -1 one per core.
int resolve_workers(int workers);

torch::Tensor augment_batch(const torch::Tensor& x, const Augment& aug, torch::Generator& gen);
/// Mixup or cutmix of a batch in place (x, y_mix, lam), drawn from gen.
void mix_batch(Batch& b, const Augment& aug, torch::Generator& gen);

}  // namespace kd
