// COCO mAP against hand-computed cases: each case's expected numbers follow from the reference
// evaluator's rules (pycocotools COCOeval), worked out in the comments.
#include <gtest/gtest.h>

#include "kd/eval/coco.h"

namespace {

using kd::DetectionBox;
using kd::GroundTruthBox;

GroundTruthBox gt(int64_t img, int64_t cat, double x, double y, double w, double h,
                  bool crowd = false) {
  GroundTruthBox g;
  g.image_id = img;
  g.category_id = cat;
  g.bbox = {x, y, w, h};
  g.area = w * h;
  g.iscrowd = crowd;
  return g;
}

DetectionBox dt(int64_t img, int64_t cat, double x, double y, double w, double h, double score) {
  return {img, cat, {x, y, w, h}, score};
}

TEST(CocoEval, PerfectDetectionsScoreOne) {
  std::vector<GroundTruthBox> g = {gt(1, 1, 10, 10, 20, 20), gt(1, 2, 50, 50, 40, 40),
                                   gt(2, 1, 0, 0, 100, 100)};
  std::vector<DetectionBox> d;
  for (const auto& x : g) d.push_back({x.image_id, x.category_id, x.bbox, 0.9});
  auto m = kd::evaluate_coco(g, d, {1, 2}, {1, 2});
  EXPECT_DOUBLE_EQ(m.map(), 1.0);
  EXPECT_DOUBLE_EQ(m.map50(), 1.0);
  EXPECT_DOUBLE_EQ(m.stats[8], 1.0);  // AR@100
  // Areas 400 (small), 1600 (medium), 10000 (large): one category each has no box in a range.
  EXPECT_DOUBLE_EQ(m.stats[3], 1.0);
  EXPECT_DOUBLE_EQ(m.stats[5], 1.0);
}

TEST(CocoEval, HigherScoredFalsePositiveHalvesPrecision) {
  // Detections by score: FP (0.9) then TP (0.8): recall [0, 1], precision [0, 0.5] -> made
  // monotone [0.5, 0.5]: every recall threshold reads 0.5.
  auto m =
      kd::evaluate_coco({gt(1, 1, 0, 0, 10, 10)},
                        {dt(1, 1, 50, 50, 10, 10, 0.9), dt(1, 1, 0, 0, 10, 10, 0.8)}, {1}, {1});
  EXPECT_NEAR(m.map(), 0.5, 1e-12);
  EXPECT_NEAR(m.stats[6], 0.0, 1e-12);  // AR@1: only the FP fits in maxDets 1
}

TEST(CocoEval, TiedScoresKeepImageOrder) {
  // Equal scores across images are ordered by image id then position (a stable sort): the FP
  // in image 1 comes before the TP in image 2 -> AP 0.5; swapped -> the TP leads, AP 1.
  std::vector<GroundTruthBox> g = {gt(2, 1, 0, 0, 10, 10)};
  auto a =
      kd::evaluate_coco(g, {dt(1, 1, 0, 0, 10, 10, 0.5), dt(2, 1, 0, 0, 10, 10, 0.5)}, {1, 2}, {1});
  EXPECT_NEAR(a.map(), 0.5, 1e-12);
  std::vector<GroundTruthBox> g2 = {gt(1, 1, 0, 0, 10, 10)};
  auto b = kd::evaluate_coco(g2, {dt(1, 1, 0, 0, 10, 10, 0.5), dt(2, 1, 0, 0, 10, 10, 0.5)}, {1, 2},
                             {1});
  EXPECT_NEAR(b.map(), 1.0, 1e-12);
}

TEST(CocoEval, CrowdRegionsSwallowDetections) {
  // Two detections inside a crowd region match it (IoU = intersection / detection area = 1)
  // and are ignored; the real object is found first: AP 1. Without the crowd flag the region
  // is one more object: found by one of the two (the other a FP) -> recall 1 after 3 dets.
  std::vector<GroundTruthBox> g = {gt(1, 1, 0, 0, 100, 100, true), gt(1, 1, 200, 200, 10, 10)};
  std::vector<DetectionBox> d = {dt(1, 1, 200, 200, 10, 10, 0.9), dt(1, 1, 10, 10, 20, 20, 0.8),
                                 dt(1, 1, 50, 50, 20, 20, 0.7)};
  auto m = kd::evaluate_coco(g, d, {1}, {1});
  EXPECT_NEAR(m.map(), 1.0, 1e-12);
  g[0].iscrowd = false;
  auto n = kd::evaluate_coco(g, d, {1}, {1});
  // The small detections have IoU 0.04 with the 100x100 box: unmatched. Recall stops at 0.5:
  // precision 1 for recall <= 0.5 (51 of 101 points), 0 beyond.
  EXPECT_NEAR(n.map(), 51.0 / 101.0, 1e-12);
}

TEST(CocoEval, DetectionsOnImagesWithoutObjectsAreFalsePositives) {
  // Image 2 has no ground truth; its detection (0.9) outranks the TP (0.5): AP 0.5.
  auto m =
      kd::evaluate_coco({gt(1, 1, 0, 0, 10, 10)},
                        {dt(2, 1, 0, 0, 10, 10, 0.9), dt(1, 1, 0, 0, 10, 10, 0.5)}, {1, 2}, {1});
  EXPECT_NEAR(m.map(), 0.5, 1e-12);
}

TEST(CocoEval, NoPredictionsAndCategoriesWithoutGroundTruth) {
  // No detections: AP 0 where there is ground truth; category 2 has none and is left out (-1).
  auto m = kd::evaluate_coco({gt(1, 1, 0, 0, 10, 10)}, {}, {1}, {1, 2});
  EXPECT_DOUBLE_EQ(m.map(), 0.0);
  ASSERT_EQ(m.per_class_ap.size(), 2u);
  EXPECT_DOUBLE_EQ(m.per_class_ap[1], -1.0);
  // Nothing at all: every mean is over no values -> -1, as summarize() prints.
  auto e = kd::evaluate_coco({}, {}, {1}, {1});
  EXPECT_DOUBLE_EQ(e.map(), -1.0);
}

TEST(CocoEval, IouThresholdsCountSeparately) {
  // IoU 0.62 matches at thresholds 0.50, 0.55, 0.60 only: AP = 3/10, AP50 = 1, AP75 = 0.
  auto m = kd::evaluate_coco({gt(1, 1, 0, 0, 10, 10)}, {dt(1, 1, 0, 0, 10, 6.2, 0.9)}, {1}, {1});
  EXPECT_NEAR(m.map(), 0.3, 1e-12);
  EXPECT_NEAR(m.map50(), 1.0, 1e-12);
  EXPECT_NEAR(m.stats[2], 0.0, 1e-12);
}

TEST(CocoEval, GreedyMatchingTakesTheBestFreeObject) {
  // Two overlapping objects; the top detection covers A exactly, the second ([1.73, 0, 10, 10])
  // overlaps A (IoU 82.7/117.3 = 0.705) and B (77.3/122.7 = 0.630): A is taken, so it matches B
  // at thresholds 0.50, 0.55, 0.60 only.
  std::vector<GroundTruthBox> g = {gt(1, 1, 0, 0, 10, 10), gt(1, 1, 4, 0, 10, 10)};
  auto m =
      kd::evaluate_coco(g, {dt(1, 1, 0, 0, 10, 10, 0.9), dt(1, 1, 1.73, 0, 10, 10, 0.8)}, {1}, {1});
  // There both are found (AP 1); at 0.65..0.95 recall stops at 0.5 with precision 1 for the
  // first 51 recall points -> 51/101. AP = (3 * 1 + 7 * 51/101) / 10.
  EXPECT_NEAR(m.map(), (3.0 + 7.0 * 51.0 / 101.0) / 10.0, 1e-12);
}

TEST(CocoEval, AreaRangesSplitObjects) {
  // A small object found, a large one missed: AP small 1, AP large 0, AP all in between.
  std::vector<GroundTruthBox> g = {gt(1, 1, 0, 0, 10, 10), gt(1, 1, 100, 100, 200, 200)};
  auto m = kd::evaluate_coco(g, {dt(1, 1, 0, 0, 10, 10, 0.9)}, {1}, {1});
  EXPECT_NEAR(m.stats[3], 1.0, 1e-12);
  EXPECT_NEAR(m.stats[5], 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(m.stats[4], -1.0);  // no medium object
  EXPECT_NEAR(m.map(), 51.0 / 101.0, 1e-12);
}

TEST(CocoEval, MaxDetsCutsEachImage) {
  // 12 detections on one image, the true one last: AR@10 = 0, AR@100 = 1.
  std::vector<DetectionBox> d;
  for (int i = 0; i < 11; ++i) d.push_back(dt(1, 1, 100 + 20 * i, 100, 10, 10, 0.9 - 0.01 * i));
  d.push_back(dt(1, 1, 0, 0, 10, 10, 0.1));
  auto m = kd::evaluate_coco({gt(1, 1, 0, 0, 10, 10)}, d, {1}, {1});
  EXPECT_DOUBLE_EQ(m.stats[7], 0.0);
  EXPECT_DOUBLE_EQ(m.stats[8], 1.0);
}

}  // namespace
