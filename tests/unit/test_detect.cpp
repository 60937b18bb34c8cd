// Detection: box ops and losses against torchvision / PyTorch Python (tests/golden), anchors and
// their assignment, the COCO and VOC readers (and their errors), box-aware augmentation, and the
// EfficientDet-style model's outputs.
#include <algorithm>
#include <fstream>
#include <limits>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "distill/detect_run.h"
#include "golden.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/runtime.h"
#include "kd/data/detection.h"
#include "kd/data/image.h"
#include "kd/data/make_detection.h"
#include "kd/detect/boxes.h"
#include "kd/detect/loss.h"
#include "kd/distill/trainer.h"
#include "kd/models/model.h"
#include "kd/models/registry.h"
#include "test_util.h"

namespace {

using kd_test::matrix;

torch::Tensor vec(const nlohmann::json& j) {
  return torch::tensor(j.get<std::vector<double>>(), torch::kFloat64);
}
std::vector<int64_t> ints(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

TEST(Boxes, NmsAndIouMatchTorchvision) {
  const auto g = kd_test::golden_losses()["detect_case"];
  auto boxes = matrix(g["boxes"]), scores = vec(g["scores"]);
  auto classes = torch::tensor(g["classes"].get<std::vector<int64_t>>());
  EXPECT_EQ(ints(kd::nms(boxes, scores, 0.5)), g["nms_0.5"].get<std::vector<int64_t>>());
  EXPECT_EQ(ints(kd::nms(boxes, scores, 0.3)), g["nms_0.3"].get<std::vector<int64_t>>());
  EXPECT_EQ(ints(kd::batched_nms(boxes, scores, classes, 0.5)),
            g["batched_nms_0.5"].get<std::vector<int64_t>>());
  EXPECT_TRUE(torch::allclose(kd::box_iou(boxes.narrow(0, 0, 5), boxes.narrow(0, 0, 8)),
                              matrix(g["iou_first5_first8"]), 1e-12, 1e-12));
  EXPECT_EQ(kd::nms(torch::zeros({0, 4}), torch::zeros({0}), 0.5).numel(), 0);
}

TEST(Boxes, CoderRoundTripsAndAnchorsTileTheImage) {
  auto anchors = kd::make_anchors({{"anchor_scale", 2.0}}, 128, 128);
  EXPECT_EQ(anchors.size(0), 9 * (16 * 16 + 8 * 8 + 4 * 4));
  // First anchor: level 3 (stride 8), cell (0, 0), scale 1, ratio 1:1 -> side 16 centred at 4.
  EXPECT_TRUE(torch::allclose(anchors[0], torch::tensor({-4.f, -4.f, 12.f, 12.f})));
  // Odd sizes round feature maps up, as the stride-2 convolutions do: 100 -> 13, 7, 4.
  EXPECT_EQ(kd::make_anchors({{"anchor_scale", 2.0}}, 100, 100).size(0),
            9 * (13 * 13 + 7 * 7 + 4 * 4));
  auto boxes = torch::tensor({{10.f, 20.f, 50.f, 44.f}, {0.f, 0.f, 128.f, 128.f}});
  auto a = anchors.narrow(0, 100, 2);
  EXPECT_TRUE(torch::allclose(kd::decode_boxes(kd::encode_boxes(boxes, a), a), boxes, 1e-4, 1e-4));
}

TEST(DetectLosses, FocalAndDistillationTermsMatchPyTorch) {
  const auto g = kd_test::golden_losses()["detect_case"];
  auto logits = matrix(g["focal_logits"]).requires_grad_(true);
  auto focal = kd::focal_loss(logits, matrix(g["focal_targets"]), 0.25, 1.5).sum();
  focal.backward();
  EXPECT_NEAR(focal.item<double>(), g["focal_sum"].get<double>(), 1e-10);
  EXPECT_TRUE(torch::allclose(logits.grad(), matrix(g["focal_grad"]), 1e-9, 1e-10));

  const double T = g["temperature"], norm = g["normalizer"];
  auto s = vec(g["s_cls"]).view({2, 7, 3}).requires_grad_(true),
       t = vec(g["t_cls"]).view({2, 7, 3});
  auto cls = kd::class_distill_loss(s, t, T, norm);
  cls.backward();
  EXPECT_NEAR(cls.item<double>(), g["class_kd"].get<double>(), 1e-10);
  EXPECT_TRUE(torch::allclose(s.grad().flatten(), vec(g["class_kd_grad"]), 1e-9, 1e-10));
  EXPECT_NEAR(kd::class_distill_loss(t, t, T, norm).item<double>(), 0.0, 1e-12);

  auto sb = vec(g["s_box"]).view({2, 7, 4}).requires_grad_(true),
       tb = vec(g["t_box"]).view({2, 7, 4});
  auto box = kd::box_distill_loss(sb, tb, t, 0.1);
  box.backward();
  EXPECT_NEAR(box.item<double>(), g["box_kd"].get<double>(), 1e-10);
  EXPECT_TRUE(torch::allclose(sb.grad().flatten(), vec(g["box_kd_grad"]), 1e-9, 1e-10));
}

TEST(DetectLosses, AnchorAssignment) {
  auto anchors = kd::make_anchors({{"anchor_scale", 2.0}}, 64, 64);
  // Image 0: one box equal to anchor 40 and an ignore region; image 1: padding only.
  auto boxes = torch::zeros({2, 2, 4});
  boxes[0][0] = anchors[40];
  boxes[0][1] = torch::tensor({40.f, 40.f, 60.f, 60.f});
  auto labels = torch::tensor({{3, -2}, {-1, -1}}, torch::kLong);
  auto t = kd::assign_anchors(anchors, boxes, labels, 5);
  EXPECT_TRUE(t.positive[0][40].item<bool>());
  EXPECT_EQ(t.classes[0][40].argmax().item<int64_t>(), 3);
  EXPECT_NEAR(t.boxes[0][40].abs().max().item<double>(), 0.0, 1e-5);  // exact match encodes to 0
  EXPECT_EQ(t.positive[1].sum().item<int64_t>(), 0);                  // padding matches nothing
  EXPECT_EQ(t.weight[1].sum().item<double>(),
            static_cast<double>(anchors.size(0)));  // all negatives
  // Anchors on the ignore region are neither positive nor negative.
  auto on_region = kd::box_iou(anchors, boxes[0].narrow(0, 1, 1)).squeeze(1) >= 0.5;
  ASSERT_GT(on_region.sum().item<int64_t>(), 0);
  EXPECT_EQ((t.weight[0].masked_select(on_region)).sum().item<double>(), 0.0);
  // A tiny box still gets its best anchor as a positive.
  auto tiny = torch::tensor({{{1.f, 1.f, 3.f, 3.f}}});
  auto tt = kd::assign_anchors(anchors, tiny, torch::tensor({{0}}, torch::kLong), 5);
  EXPECT_EQ(tt.num_positive, 1.0);
  auto loss = kd::detection_loss(torch::zeros({2, anchors.size(0), 9}), t, 5, {});
  EXPECT_TRUE(std::isfinite(loss.total.item<double>()));
}

// A tiny generated dataset shared by the data tests (from Debian's Fashion-MNIST).
const std::string& tiny_dataset() {
  static TempDir dir;
  static std::string out = [] {
    kd::MakeDetectionOptions o;
    o.out = dir / "det";
    o.train_images = 12;
    o.test_images = 4;
    o.canvas = 64;
    o.min_size = 12;
    o.max_size = 32;
    o.voc = true;
    kd::make_detection_dataset(o);
    return o.out;
  }();
  return out;
}

TEST(DetectData, CocoAndVocReadTheSameBoxes) {
  const auto& root = tiny_dataset();
  auto coco = kd::load_detection(root, "train", 64);
  auto test = kd::load_detection(root, "test", 64);
  auto voc = kd::load_detection(root + "/voc", "train", 64);
  EXPECT_EQ(coco.size(), 12);
  EXPECT_EQ(test.size(), 4);
  EXPECT_EQ(voc.size(), 16);  // VOC holds both parts, train_* sorted before test_*... by name
  EXPECT_EQ(coco.class_names,
            (std::vector<std::string>{"T-shirt/top", "Pullover", "Coat", "Shirt", "Bag"}));
  // VOC files sort test_* before train_*: train image 1 is VOC image 5.
  for (int i = 0; i < 12; ++i) {
    auto a = coco.boxes[static_cast<size_t>(i)], b = voc.boxes[static_cast<size_t>(i + 4)];
    ASSERT_EQ(a.size(0), b.size(0));
    EXPECT_TRUE(torch::allclose(a, b));
    for (int64_t k = 0; k < a.size(0); ++k)
      EXPECT_EQ(coco.class_names[coco.labels[static_cast<size_t>(i)][k].item<int64_t>()],
                voc.class_names[voc.labels[static_cast<size_t>(i + 4)][k].item<int64_t>()]);
  }
  // Letterboxing to 128 doubles every box.
  auto big = kd::load_detection(root, "train", 128);
  EXPECT_TRUE(torch::allclose(big.boxes[0], coco.boxes[0] * 2));
  EXPECT_EQ(big.info[0].scale, 2.0);
}

// Detection images stream: each batch holds the files letterboxed by the workers (at the canvas's
// own size exactly the decoded file; enlarged, what kd predict's letterbox gives), the same for any
// number of workers, with each image's boxes.
TEST(DetectData, StreamedBatchesAreTheLetterboxedFiles) {
  for (int size : {64, 96}) {
    std::vector<torch::Tensor> epochs;
    for (int workers : {0, 2}) {
      kd::StreamOptions so;
      so.workers = workers;
      auto train = kd::load_detection(tiny_dataset(), "train", size, so);
      ASSERT_FALSE(train.images.images.defined());  // nothing decoded at load
      kd::DetectionLoader loader(train, 5, /*shuffle=*/true, {}, 7, torch::kCPU);
      loader.start_epoch(1);
      std::vector<torch::Tensor> xs;
      int64_t seen = 0;
      for (int64_t b = 0; b < loader.num_batches(); ++b) {
        auto batch = loader.get(b);
        xs.push_back(batch.x);
        for (int64_t k = 0; k < batch.x.size(0); ++k) {
          const auto i = static_cast<size_t>(batch.index[k].item<int64_t>());
          const std::string bytes = kd::read_text(train.info[i].file);
          torch::Tensor expect;
          if (size == 64) {
            expect = kd::decode_image(bytes, {3, 0, 0}, 1 << 20);  // scale 1: the file itself
          } else {
            double scale = 0;
            expect = kd::letterbox_encoded(bytes, size, 1 << 20, &scale);
            EXPECT_EQ(scale, train.info[i].scale);
          }
          EXPECT_TRUE(torch::equal(batch.x[k], expect.to(torch::kFloat).div(255.0)));
          const int64_t m = train.boxes[i].size(0);
          EXPECT_TRUE(torch::equal(batch.boxes[k].narrow(0, 0, m), train.boxes[i]));
        }
        seen += batch.x.size(0);
      }
      EXPECT_EQ(seen, train.size());
      epochs.push_back(torch::cat(xs));
    }
    EXPECT_TRUE(torch::equal(epochs[0], epochs[1])) << "workers 0 and 2 differ at " << size;
  }
}

// An image that cannot be read mid-run leaves its batch with its boxes, counted and named; with
// strict it is an error.
TEST(DetectData, AnImageLostMidRunIsSkippedWithItsBoxes) {
  TempDir d;
  kd::fs::copy(tiny_dataset(), d / "det", kd::fs::copy_options::recursive);
  for (bool strict : {false, true}) {
    kd::StreamOptions so;
    so.workers = 1;
    so.strict = strict;
    auto train = kd::load_detection(d / "det", "train", 64, so);
    const std::string lost = train.info[3].file;
    const std::string keep = kd::read_text(lost);
    kd::write_text_atomically(lost, "no longer an image");
    kd::DetectionLoader loader(train, 4, /*shuffle=*/false, {}, 0, torch::kCPU);
    if (strict) {
      EXPECT_KD_ERROR(loader.get(0), "failing instead of skipping");
    } else {
      auto batch = loader.get(0);
      EXPECT_EQ(ints(batch.index), (std::vector<int64_t>{0, 1, 2}));
      EXPECT_EQ(batch.boxes.size(0), 3);
      EXPECT_EQ(loader.skipped(), 1);
      EXPECT_EQ(loader.get(1).x.size(0), 4);
    }
    kd::write_text_atomically(lost, keep);
  }
}

TEST(DetectData, MakeDetectionIsSeeded) {
  TempDir d;
  auto make = [&](const std::string& out, uint64_t seed) {
    kd::MakeDetectionOptions o;
    o.out = d / out;
    o.train_images = 6;
    o.test_images = 0;
    o.canvas = 48;
    o.min_size = 10;
    o.max_size = 24;
    o.seed = seed;
    kd::make_detection_dataset(o);
    return kd::read_text(d / (out + "/train.json")) +
           kd::read_text(d / (out + "/images/train_000006.png"));
  };
  EXPECT_EQ(make("a", 5), make("b", 5));
  EXPECT_NE(make("a", 5), make("c", 6));
}

std::string write(const TempDir& d, const std::string& name, const std::string& text) {
  std::ofstream(d / name) << text;
  return d / name;
}

TEST(DetectData, BadAnnotationsNameTheFileAndAnnotation) {
  TempDir d;
  std::filesystem::copy_file(tiny_dataset() + "/images/train_000001.png", d / "a.png");
  const std::string img =
      R"("images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 64}])";
  const std::string cat = R"("categories": [{"id": 3, "name": "Coat"}])";
  auto coco = [&](const std::string& anns) {
    return write(d, "x.json", "{" + img + ", " + cat + ", \"annotations\": [" + anns + "]}");
  };
  EXPECT_KD_ERROR(kd::load_coco(coco(R"({"id": 5, "image_id": 7, "category_id": 3})"), 64),
                  "annotation id 5: missing 'bbox'");
  EXPECT_KD_ERROR(
      kd::load_coco(coco(R"({"id": 6, "image_id": 7, "category_id": 9, "bbox": [1, 1, 5, 5]})"),
                    64),
      "annotation id 6: unknown category_id 9");
  EXPECT_KD_ERROR(
      kd::load_coco(coco(R"({"id": 8, "image_id": 70, "category_id": 3, "bbox": [1, 1, 5, 5]})"),
                    64),
      "annotation id 8: unknown image_id 70");
  EXPECT_KD_ERROR(
      kd::load_coco(coco(R"({"id": 9, "image_id": 7, "category_id": 3, "bbox": [1, 1, 5]})"), 64),
      "annotation id 9: bbox must be");
  // Zero-area and outside boxes are skipped (a counted warning); a box past the border is clipped.
  auto ok = kd::load_coco(coco(R"({"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 1, 0, 5]},
                                  {"id": 2, "image_id": 7, "category_id": 3, "bbox": [100, 100, 5, 5]},
                                  {"id": 3, "image_id": 7, "category_id": 3, "bbox": [60, 60, 10, 10]})"),
                          64);
  ASSERT_EQ(ok.boxes[0].size(0), 1);
  EXPECT_TRUE(torch::allclose(ok.boxes[0][0], torch::tensor({60.f, 60.f, 64.f, 64.f})));
  // Annotations declaring a larger image than the file: boxes are clipped to the file's 64x64
  // (fuzz/regressions/voc_xml), and one wholly beyond it is dropped.
  const std::string wide =
      R"("images": [{"id": 7, "file_name": "a.png", "width": 200, "height": 100}])";
  auto clipped = kd::load_coco(write(d, "wide.json", "{" + wide + ", " + cat + R"(, "annotations": [
      {"id": 1, "image_id": 7, "category_id": 3, "bbox": [50, 10, 100, 20]},
      {"id": 2, "image_id": 7, "category_id": 3, "bbox": [120, 10, 30, 20]}]})"),
                               64);
  ASSERT_EQ(clipped.boxes[0].size(0), 1);
  EXPECT_TRUE(torch::allclose(clipped.boxes[0][0], torch::tensor({50.f, 10.f, 64.f, 30.f})));
  EXPECT_DOUBLE_EQ(clipped.ground_truth.at(0).area, 14.0 * 20.0);
  EXPECT_KD_ERROR(
      kd::load_coco(write(d, "y.json", "{\"images\": [], " + cat + ", \"annotations\": []}"), 64),
      "no images");
  EXPECT_KD_ERROR(kd::load_coco(write(d, "z.json", "{\"images\": [1, 2"), 64), "not valid JSON");
  write(d, "broken.png", "not a png");
  EXPECT_KD_ERROR(kd::load_coco(write(d, "w.json",
                                      R"({"images": [{"id": 1, "file_name": "broken.png"}], )" +
                                          cat + R"(, "annotations": []})"),
                                64),
                  "broken.png: not a PNG or JPEG image");
  EXPECT_KD_ERROR(kd::load_coco(write(d, "v.json",
                                      R"({"images": [{"id": 1, "file_name": "none.png"}], )" + cat +
                                          R"(, "annotations": []})"),
                                64),
                  "none.png not found");
  // VOC: a missing bndbox names the file and the object.
  std::filesystem::create_directories(d.path / "voc" / "Annotations");
  std::filesystem::create_directories(d.path / "voc" / "JPEGImages");
  std::filesystem::copy_file(d / "a.png", d / "voc/JPEGImages/a.png");
  write(d, "voc/Annotations/a.xml",
        "<annotation><filename>a.png</filename><object><name>Coat</name></object></annotation>");
  EXPECT_KD_ERROR(kd::load_voc(d / "voc", 64), "a.xml: object 0: missing <bndbox>");
  write(d, "voc/Annotations/a.xml", "<annotation><filename>a.png</filename><object>");
  EXPECT_KD_ERROR(kd::load_voc(d / "voc", 64), "a.xml: not valid XML");
}

TEST(DetectData, AugmentationMovesBoxesWithPixels) {
  // A white square on black; after a flip and rescale the box must still frame white pixels.
  kd::DetectionBatch b;
  b.x = torch::zeros({8, 3, 64, 64});
  b.x.narrow(2, 10, 20).narrow(3, 5, 16).fill_(1.0);  // y 10..30, x 5..21
  b.boxes = torch::tensor({5.f, 10.f, 21.f, 30.f}).view({1, 1, 4}).repeat({8, 1, 1});
  b.labels = torch::zeros({8, 1}, torch::kLong);
  auto gen = at::detail::createCPUGenerator(3);
  kd::augment_detection_batch(b, {true, 0.3}, gen);
  int checked = 0;
  for (int64_t i = 0; i < 8; ++i) {
    if (b.labels[i][0].item<int64_t>() < 0) continue;
    auto bx = b.boxes[i][0];
    const auto x1 = static_cast<int64_t>(std::ceil(bx[0].item<float>())),
               y1 = static_cast<int64_t>(std::ceil(bx[1].item<float>()));
    const auto x2 = static_cast<int64_t>(bx[2].item<float>()),
               y2 = static_cast<int64_t>(bx[3].item<float>());
    auto inside = b.x[i][0].narrow(0, y1 + 1, y2 - y1 - 2).narrow(1, x1 + 1, x2 - x1 - 2);
    EXPECT_GT(inside.mean().item<double>(), 0.95) << "image " << i;
    // All the white mass sits inside the box (a 1-pixel margin for interpolation).
    auto total = b.x[i][0].sum().item<double>();
    const int64_t fy = std::max<int64_t>(0, y1 - 1), fx = std::max<int64_t>(0, x1 - 1);
    const int64_t fy2 = std::min<int64_t>(64, y2 + 1), fx2 = std::min<int64_t>(64, x2 + 1);
    auto framed = b.x[i][0].narrow(0, fy, fy2 - fy).narrow(1, fx, fx2 - fx).sum().item<double>();
    EXPECT_GT(framed / total, 0.97) << "image " << i;
    ++checked;
  }
  EXPECT_GE(checked, 6);
}

TEST(EffDet, OutputsAndPyramidLevels) {
  kd::ModelSpec spec;
  spec.arch = "effdet-d0";
  spec.input_shape = {3, 96, 96};
  spec.class_names = {"a", "b", "c"};
  auto m = kd::create_model(spec);
  EXPECT_EQ(m->spec().task, kd::Task::detect);
  m->train(false);
  torch::NoGradGuard g;
  auto [out, feats] = m->forward_with_features(torch::rand({2, 3, 96, 96}), {"P3", "P5", "C4"});
  EXPECT_EQ(out.sizes(),
            (std::vector<int64_t>{2, kd::make_anchors(m->spec().options, 96, 96).size(0), 3 + 4}));
  EXPECT_EQ(feats[0].sizes(), (std::vector<int64_t>{2, 32, 12, 12}));
  EXPECT_EQ(feats[1].sizes(), (std::vector<int64_t>{2, 32, 3, 3}));
  EXPECT_EQ(feats[2].size(2), 6);
  // The class prior: every score starts near 0.01.
  EXPECT_NEAR(torch::sigmoid(out.narrow(2, 0, 3)).mean().item<double>(), 0.01, 0.01);
  EXPECT_KD_ERROR(m->forward_with_features(torch::rand({1, 3, 96, 96}), {"P7"}), "no layer 'P7'");
}

// The detection task on the one training loop: the trainer's checks, for detection.
struct DetectionFit {
  kd::TrainResult result;
  torch::Tensor first_weight;
};

DetectionFit fit_detector(const kd::DetectionDataset& train, const kd::DetectionDataset& eval,
                          int epochs, const std::string& run_dir, bool poison = false) {
  kd::seed_everything(3);
  kd::RunConfig cfg;
  cfg.arch = "effdet-d0";
  cfg.train.epochs = epochs;
  cfg.train.batch_size = 4;
  cfg.train.optim.lr = 0.01;
  cfg.train.hflip = false;
  cfg.runtime.seed = 3;
  kd::ModelSpec spec;
  spec.arch = "effdet-d0";
  spec.options = {{"image_size", 64}};
  spec.input_shape = {3, 64, 64};
  spec.class_names = train.class_names;
  auto student = kd::create_model(spec);
  if (poison) {
    torch::NoGradGuard g;
    student->parameters()[0].fill_(std::numeric_limits<float>::quiet_NaN());
  }
  kd::DetectionTask task(cfg, torch::kCPU, *student, nullptr, train, eval);
  kd::Trainer trainer(cfg.train, torch::kCPU, cfg.runtime.seed);
  auto r = trainer.fit(task, run_dir);
  return {r, student->parameters()[0].clone()};
}

TEST(DetectTrainer, TrainsRepeatablyAndRecordsMap) {
  auto train = kd::load_detection(tiny_dataset(), "train", 64);
  auto eval = kd::load_detection(tiny_dataset(), "test", 64);
  auto a = fit_detector(train, eval, 2, "");
  auto b = fit_detector(train, eval, 2, "");
  EXPECT_TRUE(torch::equal(a.first_weight, b.first_weight));  // seeded and repeatable on CPU
  ASSERT_EQ(a.result.history.size(), 2u);
  for (const auto& rec : a.result.history) {
    for (const char* key : {"train_loss", "train_class_loss", "train_box_loss", "train_kd_loss",
                            "eval_map", "eval_map50", "lr", "train_images_per_s"})
      EXPECT_TRUE(rec.contains(key)) << key << " missing from " << rec.dump();
    EXPECT_GE(rec["eval_map"].get<double>(), 0.0);
  }
  EXPECT_GE(a.result.best_epoch, 1);
  EXPECT_EQ(a.result.best_score,
            a.result.history[static_cast<size_t>(a.result.best_epoch - 1)]["eval_map"]);
}

TEST(DetectTrainer, WritesTheRunDirectory) {
  auto train = kd::load_detection(tiny_dataset(), "train", 64);
  auto eval = kd::load_detection(tiny_dataset(), "test", 64);
  TempDir dir;
  const std::string run = dir / "run";
  auto full = fit_detector(train, eval, 2, run);
  EXPECT_EQ(full.result.history.size(), 2u);
  EXPECT_TRUE(kd::fs::exists(kd::fs::path(run) / "model.pt"));
  EXPECT_TRUE(kd::fs::exists(kd::fs::path(run) / "checkpoints" / "best.pt"));
  const std::string metrics = kd::read_text(kd::fs::path(run) / "metrics.jsonl");
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 2);
  EXPECT_NE(metrics.find("\"eval_map\""), std::string::npos);
}

TEST(DetectTrainer, NanLossNamesEpochBatchAndBoxes) {
  auto train = kd::load_detection(tiny_dataset(), "train", 64);
  EXPECT_KD_ERROR(fit_detector(train, train, 1, "", /*poison=*/true),
                  "epoch 1 batch 0: loss is NaN");
  EXPECT_KD_ERROR(fit_detector(train, train, 1, "", /*poison=*/true), "check the boxes");
}

}  // namespace
