#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/data/split.h"
#include "test_util.h"

namespace {

torch::Tensor labels() { return torch::arange(1000, torch::kInt64).remainder(10); }

TEST(Split, SameSeedSameSplit) {
  auto a = kd::make_split(labels(), 0.8, 7, "x");
  auto b = kd::make_split(labels(), 0.8, 7, "x");
  EXPECT_TRUE(torch::equal(a.train, b.train));
  EXPECT_TRUE(torch::equal(a.eval, b.eval));
  auto c = kd::make_split(labels(), 0.8, 8, "x");
  EXPECT_FALSE(torch::equal(a.train, c.train));
}

TEST(Split, StratifiedDisjointAndComplete) {
  auto s = kd::make_split(labels(), 0.8, 0, "x");
  EXPECT_EQ(s.train.numel(), 800);
  EXPECT_EQ(s.eval.numel(), 200);
  auto all = std::get<0>(torch::cat({s.train, s.eval}).sort());
  EXPECT_TRUE(torch::equal(all, torch::arange(1000, torch::kInt64)));
  auto per_class = torch::bincount(labels().index_select(0, s.eval));
  EXPECT_TRUE(torch::all(per_class == 20).item<bool>());
}

TEST(Split, ManifestRoundTrip) {
  TempDir dir;
  auto s = kd::make_split(labels(), 0.75, 3, "somewhere");
  kd::save_split(s, dir / "split.json");
  auto r = kd::load_split(dir / "split.json");
  EXPECT_EQ(r.source, "somewhere");
  EXPECT_EQ(r.seed, 3u);
  EXPECT_TRUE(torch::equal(r.train, s.train));
  EXPECT_TRUE(torch::equal(r.eval, s.eval));
}

TEST(Split, BadInput) {
  EXPECT_KD_ERROR(kd::make_split(labels(), 1.0, 0, "x"), "ratio 1 must be in (0, 1)");
  TempDir dir;
  std::ofstream(dir / "bad.json") << "{\"source\": 1}";
  EXPECT_KD_ERROR(kd::load_split(dir / "bad.json"), "bad split manifest");
  EXPECT_KD_ERROR(kd::stratified_fraction(labels(), 0.0, 0), "fraction 0 must be in (0, 1]");
}

TEST(Split, FractionKeepsEveryClass) {
  auto [kept, rest] = kd::stratified_fraction(labels(), 0.1, 5);
  EXPECT_EQ(kept.numel(), 100);
  EXPECT_EQ(rest.numel(), 900);
  EXPECT_TRUE(torch::all(torch::bincount(labels().index_select(0, kept)) == 10).item<bool>());
}

}  // namespace
