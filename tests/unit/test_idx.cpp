#include <zlib.h>

#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "data/idx.h"
#include "kd/core/error.h"
#include "kd/data/dataset.h"
#include "test_util.h"

namespace {

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

TEST(Idx, RoundTripRawAndGzip) {
  TempDir dir;
  auto t = torch::randint(0, 256, {5, 3, 4}, torch::kInt64).to(torch::kUInt8);
  kd::write_idx(dir / "a.idx", t);
  EXPECT_TRUE(torch::equal(kd::read_idx(dir / "a.idx"), t));
  // gzip the same bytes: the reader must give the same tensor.
  std::ifstream in(dir / "a.idx", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  gzFile gz = gzopen((dir / "a.idx.gz").c_str(), "wb");
  gzwrite(gz, raw.data(), raw.size());
  gzclose(gz);
  EXPECT_TRUE(torch::equal(kd::read_idx(dir / "a.idx.gz"), t));
}

TEST(Idx, RejectsBadMagic) {
  TempDir dir;
  write_bytes(dir / "bad", {0x12, 0x34, 0x08, 0x01, 0, 0, 0, 1, 7});
  EXPECT_KD_ERROR(kd::read_idx(dir / "bad"), "bad IDX magic");
}

TEST(Idx, RejectsUnsupportedType) {
  TempDir dir;
  write_bytes(dir / "f32", {0, 0, 0x0D, 0x01, 0, 0, 0, 1, 0, 0, 0, 0});
  EXPECT_KD_ERROR(kd::read_idx(dir / "f32"), "element type 0x0d");
}

TEST(Idx, RejectsTruncatedAndTrailingData) {
  TempDir dir;
  write_bytes(dir / "short", {0, 0, 0x08, 0x02, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3});
  EXPECT_KD_ERROR(kd::read_idx(dir / "short"), "truncated IDX data (3 bytes, header says 6)");
  write_bytes(dir / "long", {0, 0, 0x08, 0x01, 0, 0, 0, 1, 9, 9});
  EXPECT_KD_ERROR(kd::read_idx(dir / "long"), "trailing bytes after the IDX data");
  write_bytes(dir / "header", {0, 0, 0x08, 0x03, 0, 0});
  EXPECT_KD_ERROR(kd::read_idx(dir / "header"), "truncated IDX header");
}

TEST(Idx, MissingFileNamesThePath) {
  EXPECT_KD_ERROR(kd::read_idx("/nonexistent/x-idx3-ubyte"), "/nonexistent/x-idx3-ubyte");
}

TEST(Idx, LabelImageCountMismatch) {
  TempDir dir;
  kd::write_idx(dir / "train-images-idx3-ubyte", torch::zeros({4, 2, 2}, torch::kUInt8));
  kd::write_idx(dir / "train-labels-idx1-ubyte", torch::zeros({3}, torch::kUInt8));
  EXPECT_KD_ERROR(kd::load_dataset(dir.path.string(), "train", {}), "has 4 images but");
}

TEST(Idx, FashionMnistFromDebian) {
  auto d = kd::load_dataset("fashion-mnist", "test", {});
  EXPECT_EQ(d.size(), 10000);
  EXPECT_EQ(d.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(d.class_names.at(9), "Ankle boot");
  EXPECT_EQ(torch::bincount(d.labels).min().item<int64_t>(), 1000);
}

}  // namespace
