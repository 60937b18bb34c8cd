#include "kd/data/loader.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "pipeline.h"

namespace kd {

int resolve_workers(int workers) {
  if (workers >= 0) return workers;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

Loader::Loader(const Dataset& data, LoaderOptions opts, torch::Device device)
    : images_(data.streamed() ? torch::Tensor() : data.images.to(device)),
      labels_(data.labels.to(device)),
      ids_(data.ids),
      opts_(opts),
      order_(torch::arange(data.size(), torch::kInt64)),
      device_(device),
      view_(data.view),
      gen_(at::make_generator<at::CPUGeneratorImpl>(opts.seed)) {
  KD_CHECK(opts.batch_size > 0, "batch size must be positive, got {}", opts.batch_size);
  KD_CHECK(data.size() > 0, "{}: dataset is empty", data.source);
  KD_CHECK(opts.world_size >= 1 && opts.rank >= 0 && opts.rank < opts.world_size,
           "loader: rank {} of {} is out of range", opts.rank, opts.world_size);
  if (data.streamed()) {
    BatchPipeline::Options p = pipeline_options(data, opts.batch_size);
    // Per image in the workers: the crop and the flip (the batch-level pad-crop is for in-memory
    // data); mixup and cutmix stay batch-level, after.
    p.augment.random_resized_crop = opts.augment.random_resized_crop;
    p.augment.hflip = opts.augment.hflip;
    p.augment.jitter = opts.augment.jitter;
    p.seed = opts.seed;
    p.device = device;
    pipeline_ = std::make_unique<BatchPipeline>(std::move(p));
  }
  shard();
  if (pipeline_) pipeline_->start(ids_.index_select(0, order_), order_, epoch_);
}

Loader::~Loader() = default;

int64_t Loader::skipped() const { return pipeline_ ? pipeline_->skipped() : 0; }

void Loader::shard() {
  if (opts_.world_size == 1) return;
  const int64_t n = order_.size(0), w = opts_.world_size;
  const int64_t padded = (n + w - 1) / w * w;
  auto full = padded == n ? order_ : torch::cat({order_, order_.narrow(0, 0, padded - n)});
  order_ = full.slice(0, opts_.rank, padded, w).contiguous();
}

void Loader::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_current_seed(opts_.seed * 1000003ULL + static_cast<uint64_t>(epoch));
  }
  if (opts_.shuffle)
    order_ = torch::randperm(size(), gen_, torch::kInt64);
  else
    order_ = torch::arange(size(), torch::kInt64);
  if (opts_.world_size > 1) {
    shard();
    // Same order on every rank (drawn above), different augmentation draws per rank.
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_current_seed((opts_.seed * 1000003ULL + static_cast<uint64_t>(epoch)) * 65537ULL +
                          static_cast<uint64_t>(opts_.rank));
  }
  if (pipeline_) pipeline_->start(ids_.index_select(0, order_), order_, epoch);
}

int64_t Loader::num_batches() const {
  const int64_t n = order_.size(0);
  return opts_.drop_last ? n / opts_.batch_size : (n + opts_.batch_size - 1) / opts_.batch_size;
}

Batch Loader::get(int64_t i) const {
  const int64_t start = i * opts_.batch_size;
  const int64_t n = std::min(opts_.batch_size, order_.size(0) - start);
  auto idx = order_.narrow(0, start, n).to(device_);
  Batch b;
  if (pipeline_) {
    auto [x, kept] = pipeline_->take(i, [&](const torch::Tensor& pixels) {
      return pixels.to(device_, /*non_blocking=*/true).to(torch::kFloat32).div_(255.0f);
    });
    b.x = x;
    if (kept.size(0) < n) idx = idx.index_select(0, kept.to(device_));
  } else {
    b.x = images_.index_select(0, idx).to(torch::kFloat32).div_(255.0f);
    if (opts_.augment.crop_padding > 0 || opts_.augment.hflip)
      b.x = augment_batch(b.x, opts_.augment, gen_);
  }
  b.index = idx;
  b.y = labels_.index_select(0, idx);
  if (view_ != 0) b.x = ensemble_view(b.x, view_);
  if (opts_.augment.mixes()) mix_batch(b, opts_.augment, gen_);
  return b;
}

torch::Tensor ensemble_view(const torch::Tensor& images, int k) {
  namespace F = torch::nn::functional;
  KD_CHECK(k >= 0 && k < 6, "ensemble view {} out of range [0, 6)", k);
  if (k == 0) return images;
  if (k == 1) return images.flip({3});
  // Shift by one pixel with zero fill: pad one side, cut the other.
  static const int64_t shifts[4][2] = {{0, 1}, {0, -1}, {1, 0}, {-1, 0}};  // dy, dx
  const int64_t dy = shifts[k - 2][0], dx = shifts[k - 2][1];
  const int64_t h = images.size(2), w = images.size(3);
  auto padded = F::pad(images, F::PadFuncOptions({1, 1, 1, 1}));
  return padded.narrow(2, 1 - dy, h).narrow(3, 1 - dx, w).contiguous();
}

torch::Tensor augment_batch(const torch::Tensor& x, const Augment& aug, torch::Generator& gen) {
  using torch::indexing::Slice;
  torch::Tensor out = x;
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  if (aug.crop_padding > 0) {
    const int64_t p = aug.crop_padding;
    auto padded = torch::constant_pad_nd(x, {p, p, p, p}, 0.0);
    // One gather for the whole batch: per-sample offsets turn into row/column index grids.
    auto dy = torch::randint(0, 2 * p + 1, {B}, gen, torch::kInt64).to(x.device());
    auto dx = torch::randint(0, 2 * p + 1, {B}, gen, torch::kInt64).to(x.device());
    auto ar_h = torch::arange(H, torch::TensorOptions().dtype(torch::kInt64).device(x.device()));
    auto ar_w = torch::arange(W, torch::TensorOptions().dtype(torch::kInt64).device(x.device()));
    auto rows = (dy.unsqueeze(1) + ar_h).view({B, H, 1});
    auto cols = (dx.unsqueeze(1) + ar_w).view({B, 1, W});
    auto bidx = torch::arange(B, rows.options()).view({B, 1, 1});
    // Advanced indices separated by a slice move to the front: result is [B, H, W, C].
    out = padded.permute({0, 2, 3, 1}).index({bidx, rows, cols}).permute({0, 3, 1, 2});
  }
  if (aug.hflip) {
    auto flip = torch::rand({B}, gen).lt(0.5).to(x.device()).view({B, 1, 1, 1});
    out = torch::where(flip, out.flip({3}), out);
  }
  return out.contiguous();
}

namespace {

double sample_beta(double a, torch::Generator& gen) {
  // Beta(a, a) as X / (X + Y) with X, Y ~ Gamma(a).
  auto g = at::_standard_gamma(torch::full({2}, a, torch::kFloat64), gen);
  const double x = g[0].item<double>(), y = g[1].item<double>();
  return x + y > 0 ? x / (x + y) : 0.5;
}

}  // namespace

void mix_batch(Batch& b, const Augment& aug, torch::Generator& gen) {
  KD_CHECK(aug.mixes(), "mix_batch without mixup or cutmix");
  const int64_t B = b.x.size(0), H = b.x.size(2), W = b.x.size(3);
  bool cut = aug.cutmix > 0;
  if (aug.mixup > 0 && aug.cutmix > 0) cut = torch::rand({1}, gen).item<double>() < 0.5;
  double lam = sample_beta(cut ? aug.cutmix : aug.mixup, gen);
  auto perm = torch::randperm(B, gen, torch::kInt64).to(b.x.device());
  auto other = b.x.index_select(0, perm);
  if (!cut) {
    b.x = lam * b.x + (1.0 - lam) * other;
  } else {
    // A box of area (1 - lam) at a uniform centre, clipped to the image; lam is then its
    // actual share (Yun et al. 2019, sec. 3.1).
    const double r = std::sqrt(1.0 - lam);
    const int64_t ch = static_cast<int64_t>(H * r), cw = static_cast<int64_t>(W * r);
    const int64_t cy = torch::randint(0, H, {1}, gen).item<int64_t>();
    const int64_t cx = torch::randint(0, W, {1}, gen).item<int64_t>();
    const int64_t y0 = std::clamp<int64_t>(cy - ch / 2, 0, H),
                  y1 = std::clamp<int64_t>(cy + ch / 2, 0, H);
    const int64_t x0 = std::clamp<int64_t>(cx - cw / 2, 0, W),
                  x1 = std::clamp<int64_t>(cx + cw / 2, 0, W);
    using torch::indexing::Slice;
    b.x = b.x.clone();
    b.x.index_put_({Slice(), Slice(), Slice(y0, y1), Slice(x0, x1)},
                   other.index({Slice(), Slice(), Slice(y0, y1), Slice(x0, x1)}));
    lam = 1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / static_cast<double>(H * W);
  }
  b.y_mix = b.y.index_select(0, perm);
  b.lam = lam;
}

namespace {

int64_t batch_for(int64_t requested, int64_t per_image) {
  constexpr int64_t kMaxValues = int64_t{1} << 22;
  return std::max<int64_t>(1, std::min(requested, kMaxValues / std::max<int64_t>(1, per_image)));
}

}  // namespace

int64_t inference_batch_size(int64_t requested, const torch::Tensor& images) {
  return batch_for(requested, images.size(0) > 0 ? images.numel() / images.size(0) : 1);
}

int64_t inference_batch_size(int64_t requested, const Dataset& data) {
  const auto s = data.input_shape();
  return batch_for(requested, s[0] * s[1] * s[2]);
}

}  // namespace kd
