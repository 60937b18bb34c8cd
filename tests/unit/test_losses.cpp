// Losses against PyTorch-Python values from tests/golden/make_golden.py.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "golden.h"
#include "kd/core/error.h"
#include "kd/losses/classification.h"
#include "test_util.h"

namespace {

using kd_test::matrix;

TEST(Losses, MatchPyTorch) {
  auto cases = kd_test::golden_losses()["cases"];
  ASSERT_EQ(cases.size(), 4u);
  for (const auto& c : cases) {
    auto s = matrix(c["student"]).requires_grad_(true);
    auto t = matrix(c["teacher"]);
    auto y = torch::tensor(c["target"].get<std::vector<int64_t>>(), torch::kInt64);
    const double T = c["temperature"], alpha = c["alpha"], ls = c["label_smoothing"];
    EXPECT_NEAR(kd::cross_entropy(s, y, ls).item<double>(), c["cross_entropy"].get<double>(),
                1e-10);
    EXPECT_NEAR(kd::soft_target_kl(s, t, T).item<double>(), c["kl"].get<double>(), 1e-10);
    auto loss = kd::soft_target_loss(s, t, y, {T, alpha, ls});
    EXPECT_NEAR(loss.item<double>(), c["kd_loss"].get<double>(), 1e-10);
    loss.backward();
    auto expected = matrix(c["kd_grad"]);
    EXPECT_LT((s.grad() - expected).abs().max().item<double>(), 1e-10);
  }
}

TEST(Losses, KlIsZeroForIdenticalLogitsAndTeacherGetsNoGradient) {
  auto s = torch::randn({6, 10}, torch::kFloat64).requires_grad_(true);
  auto t = s.detach().clone().requires_grad_(true);
  auto kl = kd::soft_target_kl(s, t, 3.0);
  EXPECT_NEAR(kl.item<double>(), 0.0, 1e-12);
  kd::soft_target_loss(s, t, torch::zeros({6}, torch::kInt64), {3.0, 0.7, 0.0}).backward();
  EXPECT_FALSE(t.grad().defined());
}

TEST(Losses, FiniteDifferenceGradient) {
  auto s = torch::randn({3, 4}, torch::kFloat64);
  auto t = torch::randn({3, 4}, torch::kFloat64);
  auto y = torch::tensor({0, 3, 1}, torch::kInt64);
  kd::SoftTargetLossOptions o{2.0, 0.6, 0.1};
  auto sv = s.clone().requires_grad_(true);
  kd::soft_target_loss(sv, t, y, o).backward();
  const double eps = 1e-6;
  for (int64_t i = 0; i < s.numel(); ++i) {
    auto plus = s.clone(), minus = s.clone();
    plus.view(-1)[i] += eps;
    minus.view(-1)[i] -= eps;
    const double fd = (kd::soft_target_loss(plus, t, y, o).item<double>() -
                       kd::soft_target_loss(minus, t, y, o).item<double>()) /
                      (2 * eps);
    EXPECT_NEAR(sv.grad().view(-1)[i].item<double>(), fd, 1e-7);
  }
}

TEST(Losses, BadArguments) {
  auto s = torch::randn({2, 3});
  EXPECT_KD_ERROR(kd::soft_target_kl(s, torch::randn({2, 4}), 1.0), "differ in shape");
  EXPECT_KD_ERROR(kd::soft_target_kl(s, s, 0.0), "temperature 0 must be > 0");
  EXPECT_KD_ERROR(kd::soft_target_loss(s, s, torch::zeros({2}, torch::kInt64), {1.0, 1.5, 0.0}),
                  "alpha 1.5");
}

}  // namespace
