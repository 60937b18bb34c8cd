// Interop with PyTorch Python: modules saved by torch.jit.save (tests/golden/make_torchscript.py).
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/distill/strategy.h"
#include "kd/models/model.h"
#include "test_util.h"

namespace {

std::string fixture(const std::string& name) { return std::string(KD_FIXTURE_DIR) + "/" + name; }

TEST(TorchScript, SameOutputsAsPyTorch) {
  auto m = kd::load_model(fixture("student_ts.pt"));
  EXPECT_EQ(m->spec().kind, "torchscript");
  EXPECT_EQ(m->spec().class_names.at(8), "Bag");
  EXPECT_EQ(m->num_parameters(), 9098);
  m->train(false);
  auto x = torch::linspace(0, 1, 2 * 28 * 28).view({2, 1, 28, 28});
  std::ifstream in(fixture("student_ts_expected.json"));
  auto expected = nlohmann::json::parse(in)["output"];
  auto y = m->forward(x);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t c = 0; c < 10; ++c)
      EXPECT_NEAR(y[i][c].item<double>(), expected[i][c].get<double>(), 1e-5);
}

TEST(TorchScript, UsableAsFrozenTeacher) {
  auto teacher = std::shared_ptr<kd::Model>(kd::load_model(fixture("student_ts.pt")));
  auto student = kd::load_model(fixture("student_ts.pt"));
  kd::DistillStrategy strategy(kd::Mode::offline, {{"fixture", teacher}}, {});
  kd::Dataset d{torch::randint(0, 255, {8, 1, 28, 28}).to(torch::kUInt8),
                torch::arange(8, torch::kInt64).remainder(10), teacher->spec().class_names, "t"};
  strategy.prepare(*student, d, kd::Augment{2, true}, torch::kCPU);  // augmentation on: no cache
  kd::Loader loader(d, {8, false, false, {}, 0}, torch::kCPU);
  student->train(true);
  auto r = strategy.step(*student, loader.get(0));
  r.loss.backward();
  // The student (a TorchScript module too) trains through its parameters.
  bool any_grad = false;
  for (auto& p : student->parameters())
    any_grad |= p.grad().defined() && p.grad().abs().sum().item<double>() > 0;
  EXPECT_TRUE(any_grad);
  for (auto& p : teacher->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(TorchScript, HintLayersByModulePath) {
  auto m = kd::load_model(fixture("student_ts.pt"));
  m->train(false);
  auto x = torch::rand({2, 1, 28, 28});
  auto [logits, f] = m->forward_with_features(x, {"features.3", "features"});
  EXPECT_TRUE(torch::allclose(logits, m->forward(x)));
  EXPECT_EQ(f[0].sizes(), (std::vector<int64_t>{2, 16, 14, 14}));
  EXPECT_EQ(f[1].sizes(), (std::vector<int64_t>{2, 16, 7, 7}));
  // Taps come from the one forward (its graph's call of each module), so a layer that follows
  // other code in forward() (the classifier, after a flatten) is tapped too.
  auto [logits2, c] = m->forward_with_features(x, {"classifier", "features.3"});
  EXPECT_TRUE(torch::allclose(c[0], logits2));
  EXPECT_TRUE(torch::allclose(c[1], f[0]));
  EXPECT_KD_ERROR(m->forward_with_features(x, {"features.9"}), "has no layer 'features.9'");
}

TEST(TorchScript, NotTorchScriptIsAClearError) {
  EXPECT_KD_ERROR(kd::load_model(fixture("not_torchscript.pt")), "not a TorchScript module");
  EXPECT_KD_ERROR(kd::load_model("/nonexistent/model.pt"), "/nonexistent/model.pt");
}

}  // namespace
