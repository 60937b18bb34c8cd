// Streamed data: each source (folder, file list, tar shards), the per-image transforms, the
// worker pool's determinism across worker counts, and bad input (missing, vanished, corrupt and
// truncated files).
#include <fstream>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/data/dataset.h"
#include "kd/data/loader.h"
#include "kd/data/source.h"
#include "kd/data/split.h"
#include "kd/data/transform.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

// A JPEG (or PNG) of w x h whose pixels encode the class and the image number.
void write_image(const fs::path& path, int w, int h, int cls, int n) {
  cv::Mat img(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      img.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uint8_t>(40 * cls + x % 7), static_cast<uint8_t>(3 * n + y % 5),
                    static_cast<uint8_t>((x * y + n) % 255));
  fs::create_directories(path.parent_path());
  ASSERT_TRUE(cv::imwrite(path.string(), img));
}

// root/<class>/<i>.jpg for 3 classes of `per_class` images of varied sizes.
void write_folder(const fs::path& root, int per_class) {
  const char* classes[] = {"ant", "bee", "cat"};
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < per_class; ++i)
      write_image(root / classes[c] / (std::to_string(i) + ".jpg"), 40 + 7 * i, 30 + 5 * c, c, i);
}

kd::Dataset streamed(const std::string& spec, int size = 24, int workers = 2, bool strict = false) {
  kd::StreamOptions s;
  s.workers = workers;
  s.strict = strict;
  return kd::load_dataset(spec, "train", {3, size, size, 0}, s);
}

std::vector<torch::Tensor> epoch_batches(const kd::Dataset& d, int64_t epoch, bool augment) {
  kd::LoaderOptions o;
  o.batch_size = 5;
  o.shuffle = true;
  o.seed = 7;
  o.augment.random_resized_crop = augment;
  o.augment.hflip = augment;
  o.augment.jitter = augment ? 0.3 : 0.0;
  kd::Loader loader(d, o, torch::kCPU);
  loader.start_epoch(epoch);
  std::vector<torch::Tensor> out;
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    auto batch = loader.get(b);
    out.push_back(
        torch::cat({batch.x.flatten(), batch.y.to(torch::kFloat), batch.index.to(torch::kFloat)}));
  }
  return out;
}

bool same(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

}  // namespace

TEST(Sources, ImageFolderStreamsItsListing) {
  TempDir t;
  write_folder(t.path / "photos", 4);
  kd::Dataset d = streamed((t.path / "photos").string());
  EXPECT_TRUE(d.streamed());
  EXPECT_FALSE(d.images.defined());
  EXPECT_EQ(d.size(), 12);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"ant", "bee", "cat"}));
  EXPECT_EQ(d.labels[5].item<int64_t>(), 1);
  EXPECT_EQ(d.input_shape(), (std::vector<int64_t>{3, 24, 24}));
  EXPECT_EQ(d.stream.geometry.resize, kd::default_resize(24));
  // The default size of photos is explicit: 224 crop, 256 resize.
  EXPECT_EQ(kd::stream_geometry({}).size, 224);
  EXPECT_EQ(kd::stream_geometry({}).resize, 256);
}

TEST(Sources, FileListWithHeaderRelativePathsAndQuotes) {
  TempDir t;
  write_folder(t.path / "imgs", 2);
  std::ofstream(t / "list.csv") << "path,label\n"
                                   "imgs/ant/0.jpg,insect\n"
                                   "\"imgs/bee/0.jpg\",\"insect\"\n"
                                   "imgs/cat/1.jpg,mammal\n" +
                                       (t.path / "imgs/cat/0.jpg").string() +
                                       ",mammal\n"
                                       "imgs/ant/1.jpg,\n";
  kd::Dataset d = streamed(t / "list.csv");
  EXPECT_EQ(d.size(), 5);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"insect", "mammal"}));
  EXPECT_EQ(d.labels[2].item<int64_t>(), 1);
  EXPECT_EQ(d.labels[4].item<int64_t>(), kd::kUnlabeled);  // an empty label: unlabeled
  EXPECT_EQ(d.files->name(0), (t.path / "imgs/ant/0.jpg").string());
  std::ofstream(t / "list.tsv") << "imgs/ant/0.jpg\tx\nimgs/bee/1.jpg\ty\n";
  EXPECT_EQ(streamed(t / "list.tsv").class_names, (std::vector<std::string>{"x", "y"}));
}

TEST(Sources, FileListMissingFilesAreCountedUpFront) {
  TempDir t;
  write_folder(t.path / "imgs", 1);
  {
    std::ofstream list(t / "list.csv");
    list << "imgs/ant/0.jpg,a\nimgs/gone.jpg,a\nimgs/bee/0.jpg,b\nimgs/also_gone.jpg,b\n";
  }
  EXPECT_KD_ERROR(streamed(t / "list.csv"), "2 of 4 files missing, first: " +
                                                (t.path / "imgs/gone.jpg").string() + " (line 2)");
  kd::StreamOptions lenient;
  lenient.max_missing = 0.5;
  auto d = kd::load_dataset(t / "list.csv", "train", {3, 24, 24, 0}, lenient);
  EXPECT_EQ(d.size(), 2);
  std::ofstream(t / "bad.csv") << "imgs/ant/0.jpg,a,extra\n";
  EXPECT_KD_ERROR(streamed(t / "bad.csv"), "bad.csv:1: expected `path,label`, got 3 field(s)");
  std::ofstream(t / "fifo.csv") << "imgs/fifo.jpg,a\n";
  ASSERT_EQ(::mkfifo((t.path / "imgs/fifo.jpg").c_str(), 0600), 0);
  EXPECT_KD_ERROR(streamed(t / "fifo.csv"), "imgs/fifo.jpg: not a regular file");
}

TEST(Sources, TarShardsHoldWhatTheFolderHeld) {
  TempDir t;
  write_folder(t.path / "photos", 5);
  const auto listing = kd::open_source((t.path / "photos").string(), "train");
  // Shards of at least 1 MB: these 15 small images make one; the layout is WebDataset's.
  const auto r = kd::pack_shards(listing, (t.path / "shards").string(), "train", 1 << 20);
  EXPECT_EQ(r.samples, 15);
  EXPECT_EQ(r.shards, 1);
  EXPECT_EQ(r.pattern, (t.path / "shards/train-{000000..000000}.tar").string());
  kd::Dataset d = streamed(r.pattern);
  ASSERT_EQ(d.size(), 15);
  EXPECT_EQ(d.class_names, listing.class_names);
  EXPECT_TRUE(torch::equal(d.labels, listing.labels));
  for (int64_t i : {0, 7, 14}) EXPECT_EQ(d.files->read(i), listing.files->read(i));
  EXPECT_EQ(d.files->name(3), (t.path / "shards/train-000000.tar").string() + ":000000003");
  // The same pixels through the loader.
  EXPECT_TRUE(same(epoch_batches(d, 0, true),
                   epoch_batches(streamed((t.path / "photos").string()), 0, true)));
  EXPECT_KD_ERROR(streamed((t.path / "shards/train-{000000..000001}.tar").string()),
                  "shard " + (t.path / "shards/train-000001.tar").string() + " does not exist");
  // A shard cut short is named.
  fs::resize_file(t.path / "shards/train-000000.tar", 3000);
  EXPECT_KD_ERROR(streamed(r.pattern), "train-000000.tar: truncated tar shard");
}

TEST(Sources, BracePatterns) {
  EXPECT_EQ(kd::expand_braces("a-{08..10}.tar"),
            (std::vector<std::string>{"a-08.tar", "a-09.tar", "a-10.tar"}));
  EXPECT_EQ(kd::expand_braces("{x,y}/s-{0..1}.tar"),
            (std::vector<std::string>{"x/s-0.tar", "x/s-1.tar", "y/s-0.tar", "y/s-1.tar"}));
  EXPECT_KD_ERROR(kd::expand_braces("a-{3..1}.tar"), "empty or too long");
  EXPECT_KD_ERROR(kd::expand_braces("a-{1..2.tar"), "without its");
}

// The eval transform: shorter side to `resize`, centre crop; at resize == side, a pure crop.
TEST(Transform, EvalTransformIsTheCentreCrop) {
  cv::Mat img(6, 10, CV_8UC1);
  for (int y = 0; y < 6; ++y)
    for (int x = 0; x < 10; ++x) img.at<uint8_t>(y, x) = static_cast<uint8_t>(10 * x + y);
  std::vector<uint8_t> png;
  cv::imencode(".png", img, png);
  const std::string bytes(png.begin(), png.end());
  std::vector<uint8_t> out(36);
  kd::transform_image(bytes, {1, 6, 6}, {}, 0, out.data());
  for (int y = 0; y < 6; ++y)
    for (int x = 0; x < 6; ++x) EXPECT_EQ(out[y * 6 + x], 10 * (x + 2) + y) << x << "," << y;
  // Random crops differ by seed and repeat for the same seed.
  kd::ImageAugment aug;
  aug.random_resized_crop = aug.hflip = true;
  std::vector<uint8_t> a(36), b(36), c(36);
  kd::transform_image(bytes, {1, 6, 6}, aug, kd::sample_seed(1, 0, 5), a.data());
  kd::transform_image(bytes, {1, 6, 6}, aug, kd::sample_seed(1, 0, 5), b.data());
  EXPECT_EQ(a, b);
  bool differs = false;
  for (int64_t i = 0; i < 20 && !differs; ++i) {
    kd::transform_image(bytes, {1, 6, 6}, aug, kd::sample_seed(1, 1, i), c.data());
    differs = c != a;
  }
  EXPECT_TRUE(differs);
}

// Every draw comes from (seed, epoch, index): the same batches whatever the number of workers,
// and whichever batch is asked for first.
TEST(StreamLoader, SameBatchesForAnyNumberOfWorkers) {
  TempDir t;
  write_folder(t.path / "photos", 7);
  const std::string root = (t.path / "photos").string();
  const auto one = epoch_batches(streamed(root, 24, 1), 3, true);
  EXPECT_TRUE(same(one, epoch_batches(streamed(root, 24, 0), 3, true)));
  EXPECT_TRUE(same(one, epoch_batches(streamed(root, 24, 4), 3, true)));
  EXPECT_FALSE(same(one, epoch_batches(streamed(root, 24, 2), 4, true)));
  // Eval batches (no augmentation) are the same every epoch.
  EXPECT_TRUE(
      same(epoch_batches(streamed(root), 0, false), epoch_batches(streamed(root), 0, false)));
  // A resumed epoch starts mid-way: batch 3 first, then 1, equals the sequential ones.
  kd::LoaderOptions o;
  o.batch_size = 5;
  o.shuffle = true;
  o.seed = 7;
  o.augment.random_resized_crop = o.augment.hflip = true;
  o.augment.jitter = 0.3;
  kd::Loader loader(streamed(root, 24, 2), o, torch::kCPU);
  loader.start_epoch(3);
  EXPECT_TRUE(torch::equal(loader.get(3).x.flatten(), one[3].narrow(0, 0, 5 * 3 * 24 * 24)));
  EXPECT_TRUE(torch::equal(loader.get(1).x.flatten(), one[1].narrow(0, 0, 5 * 3 * 24 * 24)));
}

TEST(StreamLoader, SplitLimitAndSubsetsKeepTheFiles) {
  TempDir t;
  write_folder(t.path / "photos", 10);
  kd::Dataset d = streamed((t.path / "photos").string());
  kd::Split s = kd::make_split(d.labels, 0.8, 0, "photos");
  EXPECT_EQ(s.train.numel(), 24);
  kd::Dataset train = d.subset(s.train);
  EXPECT_TRUE(train.streamed());
  EXPECT_TRUE(torch::equal(train.ids, s.train));
  auto [labeled, rest] = kd::stratified_fraction(train.labels, 0.5, 0);
  kd::Dataset semi = kd::concat(train.subset(labeled), train.subset(rest).without_labels());
  EXPECT_EQ(semi.size(), train.size());
  EXPECT_EQ(semi.files, d.files);  // one source, ids concatenated
  kd::Dataset pool = kd::concat(train, streamed((t.path / "photos").string()));
  EXPECT_EQ(pool.size(), 54);
  EXPECT_EQ(pool.files->size(), 60);  // two sources as one
  auto first = kd::first_pixels(train, 2);
  EXPECT_EQ(first.sizes(), (std::vector<int64_t>{2, 3, 24, 24}));
  auto n = kd::compute_normalization(train);
  EXPECT_EQ(n.mean.size(), 3u);
}

TEST(StreamLoader, BadImagesAreSkippedAndNamedOrStopTheRunWhenStrict) {
  TempDir t;
  write_folder(t.path / "photos", 4);
  const std::string root = (t.path / "photos").string();
  kd::Dataset d = streamed(root);
  // After the listing: one file damaged, one removed.
  std::ofstream(t.path / "photos/bee/1.jpg", std::ios::trunc) << "not a jpeg";
  fs::remove(t.path / "photos/cat/2.jpg");
  kd::Loader loader(d, kd::in_order(12), torch::kCPU);
  auto b = loader.get(0);
  EXPECT_EQ(b.x.size(0), 10);
  EXPECT_EQ(b.y.size(0), 10);
  EXPECT_EQ(loader.skipped(), 2);
  EXPECT_FALSE((b.index == 5).any().item<bool>());   // bee/1.jpg
  EXPECT_FALSE((b.index == 10).any().item<bool>());  // cat/2.jpg
  kd::Dataset strict = d;
  strict.stream.strict = true;
  kd::Loader stops(strict, kd::in_order(12), torch::kCPU);
  EXPECT_KD_ERROR(stops.get(0), (t.path / "photos/bee/1.jpg").string() + ": not a PNG or JPEG");
}
