// A model's network as another graph must compute what kd computes: `kd export --format onnx`
// run by another runtime (OpenCV's DNN module), and the traced, frozen, oneDNN-optimized graph
// that `kd serve` runs; for the reference classifiers and an EfficientDet detector.
#include <iostream>

#include <opencv2/dnn.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/version.h"
#include "kd/models/export.h"
#include "kd/models/model.h"
#include "kd/models/quantize.h"
#include "kd/models/registry.h"
#include "model_util.h"
#include "test_util.h"

namespace {

// A build without ONNX export (KD_WITH_ONNX=OFF) refuses it with the reason; the ONNX tests stop.
#define SKIP_WITHOUT_ONNX()                                                             \
  if (!kd::kWithOnnx) {                                                                 \
    auto tiny = test_model("mlp", {1, 8, 8}, 2);                                        \
    EXPECT_KD_ERROR(kd::export_onnx(*tiny, "/nonexistent/m.onnx"), "KD_WITH_ONNX=OFF"); \
    GTEST_SKIP() << "built without ONNX export";                                        \
  }

// The largest difference between kd and OpenCV's run of the exported file, relative to the
// output's scale, over a batch of 3 random images.
double onnx_difference(kd::Model& m) {
  TempDir dir;
  const std::string path = (dir.path / "model.onnx").string();
  auto r = kd::export_onnx(m, path);
  EXPECT_EQ(r.description["format"], "onnx");
  const auto& in = m.spec().input_shape;
  torch::manual_seed(4);
  auto x = torch::rand({3, in[0], in[1], in[2]});
  torch::Tensor want;
  {
    torch::NoGradGuard no_grad;
    want = m.forward(x);
  }
  // The file takes normalized input, as its description says.
  auto mean = torch::tensor(m.spec().norm.mean, torch::kFloat).view({1, -1, 1, 1});
  auto std = torch::tensor(m.spec().norm.std, torch::kFloat).view({1, -1, 1, 1});
  auto xn = ((x - mean) / std).contiguous();
  cv::dnn::Net net = cv::dnn::readNetFromONNX(path);
  const int dims[4] = {3, static_cast<int>(in[0]), static_cast<int>(in[1]),
                       static_cast<int>(in[2])};
  cv::Mat blob(4, dims, CV_32F, xn.data_ptr<float>());
  net.setInput(blob);
  cv::Mat out = net.forward();
  std::vector<int64_t> shape(out.size.p, out.size.p + out.dims);
  EXPECT_EQ(shape, want.sizes().vec());
  if (shape != want.sizes().vec()) return 1e9;
  auto got = torch::from_blob(out.ptr<float>(), shape, torch::kFloat).clone();
  return ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item<double>();
}

TEST(Onnx, EveryClassifierKdListsRunsInOpenCvAsInKd) {
  SKIP_WITHOUT_ONNX();
  int tried = 0;
  for (const auto& a : kd::architectures()) {
    if (a.task != kd::Task::classify) continue;
    ++tried;
    const auto& arch = a.name;
    auto m = test_model(arch, {1, 28, 28}, 10);
    // Their squeeze-excite multiplies a [B, C, H, W] map by a [B, C, 1, 1] gate: standard ONNX,
    // which OpenCV 4.6's importer does not broadcast (wrong values or a shape assertion).
    if (arch.rfind("mobilenet_v3", 0) == 0 || arch == "efficientnet_b0") {
      TempDir dir;
      EXPECT_NO_THROW(kd::export_onnx(*m, (dir.path / "m.onnx").string())) << arch;  // checker
      continue;
    }
    const double d = onnx_difference(*m);
    std::cout << arch << ": OpenCV vs kd, max relative difference " << d << "\n";
    EXPECT_LT(d, 1e-4) << arch;
  }
  EXPECT_GE(tried, 5);  // fmnist-student, fmnist-teacher, mlp, cnn, resnet
}

TEST(Onnx, AnInt8ModelIsRefusedForBeingInt8) {
  SKIP_WITHOUT_ONNX();
  auto m = test_model("cnn", {1, 28, 28}, 10);
  auto q = kd::quantize_int8(*m,
                             [i = 0](torch::Tensor& x) mutable {
                               x = torch::rand({8, 1, 28, 28});
                               return i++ < 2;
                             },
                             {});
  TempDir dir;
  EXPECT_KD_ERROR(kd::export_onnx(*q, (dir.path / "m.onnx").string()), "INT8");
}

TEST(Export, TheDescriptionIsNamedAfterTheWholeFileAndNeverReplacesAUsersFile) {
  SKIP_WITHOUT_ONNX();
  auto m = test_model("fmnist-student", {1, 28, 28}, 10);
  TempDir dir;
  const auto pt = (dir.path / "x.pt").string(), onnx = (dir.path / "x.onnx").string();
  EXPECT_EQ(kd::export_torchscript(*m, pt).description_path, pt + ".json");
  EXPECT_EQ(kd::export_onnx(*m, onnx).description_path, onnx + ".json");
  EXPECT_EQ(nlohmann::json::parse(kd::read_text(pt + ".json"))["format"], "torchscript");
  EXPECT_EQ(nlohmann::json::parse(kd::read_text(onnx + ".json"))["format"], "onnx");
  // Exported again: its own description is replaced; a user's file of that name is not.
  EXPECT_NO_THROW(kd::export_torchscript(*m, pt));
  kd::write_text_atomically(pt + ".json", "{\"mine\": true}\n");
  EXPECT_KD_ERROR(kd::export_torchscript(*m, pt), "not a model description kd export wrote");
  EXPECT_EQ(kd::read_text(pt + ".json"), "{\"mine\": true}\n");
}

TEST(Onnx, AnEfficientDetRunsInOpenCvAsInKd) {
  SKIP_WITHOUT_ONNX();
  // BiFPN's fused weights, upsampling, max pooling and the heads' reshapes, all as ONNX.
  auto m = test_model("effdet-d0", {3, 64, 64}, 3);
  const double d = onnx_difference(*m);
  std::cout << "effdet-d0: OpenCV vs kd, max relative difference " << d << "\n";
  EXPECT_LT(d, 1e-4);
}

TEST(Onnx, ATorchScriptModelIsRefused) {
  SKIP_WITHOUT_ONNX();
  TempDir dir;
  auto m = kd::load_model(std::string(KD_FIXTURE_DIR) + "/student_ts.pt");
  EXPECT_KD_ERROR(kd::export_onnx(*m, (dir.path / "m.onnx").string()),
                  "ONNX export is for kd's own architectures");
}

// kd::optimize_for_inference against the model it came from, relative to the output's scale,
// at batch sizes other than the ones it was checked with.
double optimized_difference(kd::Model& m) {
  auto fast = kd::optimize_for_inference(m);
  const auto& in = m.spec().input_shape;
  torch::NoGradGuard no_grad;
  double worst = 0;
  for (int64_t batch : {1, 7, 32}) {
    torch::manual_seed(batch);
    auto x = torch::rand({batch, in[0], in[1], in[2]});
    auto want = m.forward(x), got = fast->forward(x);
    EXPECT_EQ(got.sizes(), want.sizes());
    if (got.sizes() != want.sizes()) return 1e9;
    worst = std::max(worst,
                     ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item<double>());
  }
  return worst;
}

TEST(InferenceGraph, TheReferenceClassifiersComputeWhatKdComputes) {
  for (const char* arch : {"fmnist-student", "fmnist-teacher"}) {
    auto m = test_model(arch, {1, 28, 28}, 10);
    const double d = optimized_difference(*m);
    std::cout << arch << ": optimized vs kd, max relative difference " << d << "\n";
    EXPECT_LT(d, 1e-5) << arch;
  }
}

TEST(InferenceGraph, AnEfficientDetComputesWhatKdComputes) {
  auto m = test_model("effdet-d0", {3, 64, 64}, 3);
  const double d = optimized_difference(*m);
  std::cout << "effdet-d0: optimized vs kd, max relative difference " << d << "\n";
  EXPECT_LT(d, 1e-5);
}

TEST(InferenceGraph, ATorchScriptModelFromPyTorchToo) {
  auto m = kd::load_model(std::string(KD_FIXTURE_DIR) + "/student_ts.pt");
  EXPECT_LT(optimized_difference(*m), 1e-5);
}

}  // namespace
