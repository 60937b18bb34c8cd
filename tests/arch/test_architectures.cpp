// kd's torchvision and RepDistiller architectures against PyTorch Python: random weights saved
// by tests/golden/make_arch_golden.py with torch.save(model.state_dict()) load by name into the
// kd network and give PyTorch's logits and feature taps in eval mode; parameter counts are
// PyTorch's; kd writes the weights back for the script's --check-round-trip (the ctest entry
// arch_round_trip loads them into the PyTorch model). Weight-loading errors name every key.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/models/model.h"
#include "kd/models/weights.h"
#include "unit/test_util.h"

namespace {

const std::string kDir = KD_ARCH_FIXTURE_DIR;

nlohmann::json fixture() {
  static const nlohmann::json j = nlohmann::json::parse(kd::read_text(kDir + "/counts.json"));
  return j;
}

std::unique_ptr<kd::Model> build(const std::string& arch, int64_t classes, int64_t size) {
  kd::ModelSpec spec;
  spec.arch = arch;
  spec.input_shape = {3, size, size};
  for (int64_t k = 0; k < classes; ++k) spec.class_names.push_back("c" + std::to_string(k));
  spec.norm = {{0, 0, 0}, {1, 1, 1}};
  return kd::create_model(spec);
}

torch::Tensor io(const std::string& arch, const std::string& key) {
  for (const auto& [name, t] : kd::read_state_dict(kDir + "/" + arch + "-io.pt"))
    if (name == key) return t;
  ADD_FAILURE() << arch << "-io.pt has no " << key;
  return {};
}

// RepDistiller's networks are CIFAR's: 32 px, counted at 100 classes.
bool cifar(const std::string& arch) {
  return arch == "resnet8x4" || arch == "resnet32x4" || arch.rfind("wrn_", 0) == 0;
}

class Architecture : public ::testing::TestWithParam<std::string> {};

TEST_P(Architecture, CountsLoadsAndComputesAsPyTorch) {
  const std::string arch = GetParam();
  const bool small = cifar(arch);
  const int64_t size = small ? 32 : 64;
  int64_t params = 0;
  for (const auto& p : build(arch, small ? 100 : 1000, size)->parameters()) params += p.numel();
  EXPECT_EQ(params, fixture()["counts"][arch].get<int64_t>());

  auto model = build(arch, 10, size);
  const std::string weights = kDir + "/" + arch + ".pt";
  kd::load_state_dict(model->state(), kd::read_state_dict(weights), weights);
  model->train(false);
  torch::NoGradGuard no_grad;
  const std::string tap = fixture()["taps"][arch];
  auto [logits, taps] = model->forward_with_features(io(arch, "input"), {tap});
  const auto want = io(arch, "logits"), want_tap = io(arch, "tap");
  const double err = (logits - want).abs().max().item<double>();
  const double scale = std::max(1.0, want.abs().max().item<double>());
  EXPECT_LT(err / scale, 1e-5) << arch << " logits differ by " << err << " (largest " << scale
                               << ")";
  ASSERT_TRUE(taps[0].defined()) << arch << " has no tap " << tap;
  ASSERT_EQ(taps[0].sizes(), want_tap.sizes()) << tap;
  EXPECT_LT((taps[0] - want_tap).abs().max().item<double>() /
                std::max(1.0, want_tap.abs().max().item<double>()),
            1e-5)
      << tap;
  kd::write_state_dict(model->state(), kDir + "/" + arch + "-kd.pt");
}

INSTANTIATE_TEST_SUITE_P(TorchvisionAndRepDistiller, Architecture,
                         ::testing::Values("resnet18", "resnet34", "resnet50", "mobilenet_v2",
                                           "mobilenet_v3_small", "mobilenet_v3_large",
                                           "efficientnet_b0", "resnet8x4", "resnet32x4", "wrn_16_2",
                                           "wrn_40_2"));

TEST(Weights, EveryKeyThatDoesNotFitIsNamed) {
  const std::string r18 = kDir + "/resnet18.pt";
  const auto weights = kd::read_state_dict(r18);
  auto r34 = build("resnet34", 10, 64);
  const auto before = r34->state()[0].second.clone();
  EXPECT_KD_ERROR(kd::load_state_dict(r34->state(), weights, r18), "missing layer1.2.bn1.bias");
  EXPECT_TRUE(torch::equal(before, r34->state()[0].second));  // nothing changed
  auto wide = build("resnet18", 100, 64);
  EXPECT_KD_ERROR(kd::load_state_dict(wide->state(), weights, r18),
                  "fc.weight is [10, 512] in the file, [100, 512] here");
  auto v2 = build("mobilenet_v2", 10, 64);
  EXPECT_KD_ERROR(kd::load_state_dict(v2->state(), weights, r18), "unexpected bn1.bias");
}

TEST(Weights, FilesThatAreNotStateDictsAreRefusedAndNotRun) {
  EXPECT_KD_ERROR(kd::read_state_dict(kDir + "/evil.pt"),
                  "builds a posix.system object, which a state_dict does not hold");
  EXPECT_FALSE(kd::fs::exists(kDir + "/pwned"));
  EXPECT_KD_ERROR(kd::read_state_dict(kDir + "/legacy.pt"), "not a PyTorch zip archive");
  EXPECT_KD_ERROR(kd::read_state_dict(kDir + "/counts.json"), "not a PyTorch zip archive");
  // A checkpoint dict with the weights under "state_dict", saved from DataParallel.
  const auto wrapped = kd::read_state_dict(kDir + "/checkpoint.pt");
  ASSERT_FALSE(wrapped.empty());
  EXPECT_EQ(wrapped[0].first, "conv1.weight");
}

}  // namespace
