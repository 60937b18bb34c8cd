#pragma once
/// @file
/// Batches by tensor indexing (one index_select per batch, no per-sample stacking), with seeded
/// shuffling and batch-level augmentation.
#include <cstdint>

#include <torch/types.h>

#include "kd/data/dataset.h"

namespace kd {

struct Augment {
  int crop_padding = 0;  ///< random crop of the original size from a zero-padded image
  bool hflip = false;    ///< random horizontal flip with probability 1/2
  /// Batch-level mixing with a shuffled copy of the batch, lam ~ Beta(a, a) per batch (0: off):
  /// mixup blends whole images (Zhang et al. 2018), cutmix pastes a box of area 1 - lam (Yun et
  /// al. 2019); with both, each batch takes one of them at random.
  double mixup = 0.0;
  double cutmix = 0.0;
  bool mixes() const { return mixup > 0 || cutmix > 0; }
  /// The images differ between epochs: a teacher must see each batch (no teacher cache).
  bool enabled() const { return crop_padding > 0 || hflip || mixes(); }
};

struct Batch {
  torch::Tensor x;      ///< float [B, C, H, W] in [0, 1] (normalization lives in the model)
  torch::Tensor y;      ///< int64 [B]
  torch::Tensor index;  ///< int64 [B], positions in the loader's dataset (teacher cache key)
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

class Loader {
 public:
  Loader(const Dataset& data, LoaderOptions opts, torch::Device device);
  /// Reshuffles deterministically from (seed, epoch) so a resumed or repeated run sees the same
  /// order.
  void start_epoch(int64_t epoch);
  int64_t num_batches() const;
  int64_t size() const { return images_.size(0); }  // the whole dataset, all ranks together
  Batch get(int64_t i) const;

 private:
  void shard();
  torch::Tensor images_;  ///< uint8, kept on the target device
  torch::Tensor labels_;
  LoaderOptions opts_;
  torch::Tensor order_;
  torch::Device device_;
  mutable torch::Generator gen_;  ///< augmentation draws advance it inside get()
};

/// The batch for inference over `images` (uint8 [N, C, H, W]): `requested`, or fewer so that a
/// batch holds at most 4 Mi input values. The default eval batch of 1,000 suits 28 x 28 images;
/// at 96 x 96 RGB its activations took 1 GiB (now 151 images), at 224 px 27.
int64_t inference_batch_size(int64_t requested, const torch::Tensor& images);

torch::Tensor augment_batch(const torch::Tensor& x, const Augment& aug, torch::Generator& gen);
/// Mixup or cutmix of a batch in place (x, y_mix, lam), drawn from gen.
void mix_batch(Batch& b, const Augment& aug, torch::Generator& gen);

}  // namespace kd
