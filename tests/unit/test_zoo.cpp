// The loss registry against PyTorch-Python values and gradients from
// tests/golden/make_zoo_golden.py (each loss written there from its paper).
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/losses/crd.h"
#include "kd/losses/registry.h"
#include "kd/losses/zoo.h"
#include "test_util.h"

namespace {

torch::Tensor tensor_of(const nlohmann::json& j) {
  auto v = j["values"].get<std::vector<double>>();
  return torch::tensor(v, torch::kFloat64).view(j["shape"].get<std::vector<int64_t>>());
}

nlohmann::json zoo_cases() {
  std::ifstream in(std::string(KD_GOLDEN_DIR) + "/zoo.json");
  return nlohmann::json::parse(in)["cases"];
}

TEST(LossZoo, EveryLossMatchesPyTorchValuesAndGradients) {
  std::set<std::string> covered;
  for (const auto& c : zoo_cases()) {
    const std::string name = c["name"];
    std::map<std::string, std::string> options;
    for (const auto& [k, v] : c["options"].items()) options[k] = fmt::format("{}", v.get<double>());
    const bool feature = kd::find_loss(name).feature;
    if (feature) options["teacher"] = options["student"] = "x";
    auto spec = kd::make_loss(name, options, "test");
    auto s = tensor_of(c["student"]).requires_grad_(true);
    auto t = tensor_of(c["teacher"]);
    auto y = c.contains("labels")
                 ? torch::tensor(c["labels"].get<std::vector<int64_t>>(), torch::kInt64)
                 : torch::Tensor();
    auto value =
        feature ? kd::loss_term(spec, {}, {}, {}, s, t) : kd::loss_term(spec, s, t, y, {}, {});
    const std::string what = kd::format_loss(spec);
    EXPECT_NEAR(value.item<double>(), c["value"].get<double>(),
                1e-9 * std::max(1.0, std::abs(c["value"].get<double>())))
        << what;
    value.backward();
    auto expected = tensor_of(c["grad"]);
    const double scale = std::max(1.0, expected.abs().max().item<double>());
    EXPECT_LT((s.grad() - expected).abs().max().item<double>(), 1e-8 * scale) << what;
    covered.insert(name);
  }
  covered.insert("crd");  // its own cases: CrdMatchesPyTorchValuesAndGradients
  for (const auto& info : kd::loss_catalog())
    EXPECT_TRUE(covered.count(info.name)) << info.name << " has no golden case";
}

TEST(LossZoo, CrdMatchesPyTorchValuesAndGradients) {
  std::ifstream in(std::string(KD_GOLDEN_DIR) + "/zoo.json");
  const auto cases = nlohmann::json::parse(in)["crd"];
  ASSERT_EQ(cases.size(), 2u);
  for (const auto& c : cases) {
    auto es = tensor_of(c["student"]).requires_grad_(true),
         et = tensor_of(c["teacher"]).requires_grad_(true);
    auto index = torch::tensor(c["index"].get<std::vector<int64_t>>(), torch::kInt64);
    auto negatives = torch::tensor(c["negatives"].get<std::vector<int64_t>>(), torch::kInt64);
    auto ms = tensor_of(c["memory_s"]), mt = tensor_of(c["memory_t"]);
    const double T = c["T"];
    EXPECT_NEAR(kd::crd_normalizer(es, mt, index, negatives, T), c["z_s"].get<double>(),
                1e-9 * c["z_s"].get<double>());
    auto value = kd::crd_loss(es, et, ms, mt, index, negatives, T, c["z_s"], c["z_t"]);
    EXPECT_NEAR(value.item<double>(), c["value"].get<double>(),
                1e-9 * std::abs(c["value"].get<double>()));
    value.backward();
    EXPECT_LT((es.grad() - tensor_of(c["grad_student"])).abs().max().item<double>(), 1e-9);
    EXPECT_LT((et.grad() - tensor_of(c["grad_teacher"])).abs().max().item<double>(), 1e-9);
  }
}

TEST(LossZoo, CrdMemoryMovesOnlyTheBatchRowsAndRoundTrips) {
  torch::manual_seed(3);
  auto spec = kd::parse_loss("crd:teacher=a,student=b,dim=4,negatives=5,momentum=0.5");
  kd::ContrastMemory memory(spec, 6, 3, 10);
  const auto before = memory->named_buffers()["memory_s"].clone();
  auto fs = torch::randn({3, 6}), ft = torch::randn({3, 3});
  auto index = torch::tensor({1, 4, 7}, torch::kInt64);
  auto loss = memory->forward(fs, ft, index);
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
  loss.backward();  // the gradient reaches both heads (the teacher's head learns too)
  for (auto& p : memory->parameters()) EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0);
  const auto after = memory->named_buffers()["memory_s"];
  for (int64_t r = 0; r < 10; ++r) {
    const bool moved = r == 1 || r == 4 || r == 7;
    EXPECT_EQ(!torch::equal(before[r], after[r]), moved) << "row " << r;
    if (moved) {
      EXPECT_NEAR(after[r].norm().item<double>(), 1.0, 1e-6);  // renormalised
    }
  }
  // m * old + (1 - m) * new, renormalised: new is the student head's unit embedding.
  torch::NoGradGuard no_grad;
  auto e = torch::nn::functional::normalize(
      memory->named_children()["embed_s"]->as<torch::nn::Linear>()->forward(fs),
      torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto expected =
      torch::nn::functional::normalize(0.5 * before.index_select(0, index) + 0.5 * e,
                                       torch::nn::functional::NormalizeFuncOptions().dim(1));
  EXPECT_LT((after.index_select(0, index) - expected).abs().max().item<double>(), 1e-6);
  EXPECT_GT(memory->named_buffers()["z"][0].item<double>(), 0.0);  // set by the first batch

  TempDir dir;
  const std::string path = dir / "bank.pt";
  memory->save(path);
  kd::ContrastMemory other(spec, 6, 3, 10);
  other->load(path);
  EXPECT_TRUE(
      torch::equal(other->named_buffers()["memory_t"], memory->named_buffers()["memory_t"]));
  EXPECT_TRUE(torch::equal(other->named_buffers()["z"], memory->named_buffers()["z"]));
  kd::ContrastMemory wrong(spec, 6, 3, 11);
  EXPECT_KD_ERROR(wrong->load(path), "not a CRD memory bank of 11 x 4 rows");
}

TEST(LossZoo, TeacherGetsNoGradientAndIdenticalInputsCostNothing) {
  auto s = torch::randn({8, 5}, torch::kFloat64).requires_grad_(true);
  auto t = s.detach().clone().requires_grad_(true);
  auto y = torch::randint(0, 5, {8}, torch::kInt64);
  for (const char* text : {"kd", "kd:std=1", "dkd", "dist", "mlkd"}) {
    auto v = kd::loss_term(kd::parse_loss(text), s, t, y, {}, {});
    EXPECT_NEAR(v.item<double>(), 0.0, 1e-6) << text;  // DIST: its 1e-8 in the denominator
    v.backward();
  }
  EXPECT_FALSE(t.grad().defined());
  auto f = torch::randn({6, 4, 3, 3}, torch::kFloat64);
  for (const char* text :
       {"fitnet:teacher=a,student=b", "at:teacher=a,student=b", "pkd:teacher=a,student=b",
        "cwd:teacher=a,student=b", "rkd:teacher=a,student=b", "sp:teacher=a,student=b",
        "pkt:teacher=a,student=b"})
    EXPECT_NEAR(kd::loss_term(kd::parse_loss(text), {}, {}, {}, f, f).item<double>(), 0.0, 1e-7)
        << text;
}

TEST(LossZoo, ParsingAndDefaults) {
  auto d = kd::parse_loss("dkd:beta=2,warmup=5");
  EXPECT_EQ(d.get("beta"), 2.0);
  EXPECT_EQ(d.get("alpha"), 1.0);  // the paper's default
  EXPECT_EQ(d.get("T"), 4.0);
  EXPECT_EQ(kd::warmup_factor(d, 1), 0.2);
  EXPECT_EQ(kd::warmup_factor(d, 7), 1.0);
  EXPECT_EQ(kd::warmup_factor(kd::parse_loss("kd"), 1), 1.0);
  auto at = kd::parse_loss("at:teacher=7,student=5,weight=500");
  EXPECT_EQ(at.teacher_layer, "7");
  EXPECT_EQ(at.label(), "at 7:5");
  EXPECT_EQ(kd::format_loss(kd::parse_loss(kd::format_loss(at))),
            kd::format_loss(at));  // round trip
  EXPECT_NE(kd::describe_losses().find("Zhao et al. 2022"), std::string::npos);
}

TEST(LossZoo, BadSpecsAreOneLineUsageErrors) {
  EXPECT_KD_ERROR(kd::parse_loss("dkdd"), "unknown loss 'dkdd' (losses: kd, dkd, dist");
  EXPECT_KD_ERROR(kd::parse_loss("dkd:gamma=1"),
                  "loss dkd has no option 'gamma' (options: alpha, beta, T, std, weight, warmup)");
  EXPECT_KD_ERROR(kd::parse_loss("dkd:beta=x"), "dkd option beta: 'x' is not a number");
  EXPECT_KD_ERROR(kd::parse_loss("dkd:beta=-1"), "dkd option beta must be a number in [0, 1e6]");
  EXPECT_KD_ERROR(kd::parse_loss("kd:T=0"), "kd option T must be in (0, 100]");
  EXPECT_KD_ERROR(kd::parse_loss("kd:std=2"), "kd option std must be 0 or 1");
  EXPECT_KD_ERROR(kd::parse_loss("kd:weight=nan"), "kd option weight must be a number");
  EXPECT_KD_ERROR(kd::parse_loss("kd:T"), "expected NAME[:key=value,...]");
  EXPECT_KD_ERROR(kd::parse_loss("kd:T=1,T=2"), "option 'T' given twice");
  EXPECT_KD_ERROR(kd::parse_loss("at:teacher=7"),
                  "feature loss at needs teacher=LAYER,student=LAYER");
  EXPECT_KD_ERROR(kd::parse_loss("kd:teacher=7"), "loss kd has no option 'teacher'");
  EXPECT_KD_ERROR(kd::parse_loss("crd:teacher=a,student=b,negatives=2.5"),
                  "crd option negatives must be a whole number");
  EXPECT_KD_ERROR(kd::parse_loss("crd:teacher=a,student=b,momentum=1"),
                  "crd option momentum must be in [0, 1)");
  EXPECT_THROW(kd::parse_loss("nope"), kd::UsageError);  // exit status 2
}

}  // namespace
