// Config, loader, schedule, teacher cache and the training loop on small synthetic data.
#include <functional>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include "distill/teacher_cache.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/runtime.h"
#include "kd/data/loader.h"
#include "kd/distill/trainer.h"
#include "kd/eval/compare.h"
#include "kd/losses/classification.h"
#include "kd/models/model.h"
#include "kd/runs/config.h"
#include "test_util.h"

namespace {

kd::Dataset toy(int64_t n = 64) {
  // Class = which quadrant is bright: learnable in a few steps.
  auto labels = torch::arange(n, torch::kInt64).remainder(4);
  auto images = torch::zeros({n, 1, 8, 8}, torch::kUInt8);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t q = labels[i].item<int64_t>();
    images[i].narrow(1, (q / 2) * 4, 4).narrow(2, (q % 2) * 4, 4).fill_(200);
  }
  return {images, labels, {"a", "b", "c", "d"}, "toy"};
}

kd::ModelSpec toy_spec(const std::string& arch = "mlp") {
  kd::ModelSpec s;
  s.arch = arch;
  s.input_shape = {1, 8, 8};
  s.class_names = {"a", "b", "c", "d"};
  return s;
}

TEST(Config, YamlRoundTripAndStrictKeys) {
  kd::RunConfig c;
  c.out = "x";
  c.train.optim.lr = 0.123;
  c.arch_options = {"width=4"};
  c.distill.temperature = 7;
  kd::RunConfig r;
  kd::apply_yaml(r, YAML::Load(kd::to_yaml(c)), "t");
  EXPECT_EQ(r.train.optim.lr, 0.123);
  EXPECT_EQ(r.arch_options, c.arch_options);
  EXPECT_EQ(r.distill.temperature, 7);
  EXPECT_EQ(kd::to_yaml(r), kd::to_yaml(c));
  EXPECT_KD_ERROR(kd::apply_yaml(r, YAML::Load("train: {optim: {lrr: 1}}"), "exp.yaml"),
                  "exp.yaml: unknown key 'train.optim.lrr'");
  EXPECT_KD_ERROR(kd::apply_yaml(r, YAML::Load("train: {epochs: many}"), "exp.yaml"),
                  "exp.yaml: train.epochs: bad value");
}

// docs/guide/config.md names every key a run's config.yaml holds (no key added without its line).
TEST(Config, EveryKeyIsOnTheReferencePage) {
  const std::string page =
      kd::read_text(std::string(KD_GOLDEN_DIR) + "/../../docs/guide/config.md");
  std::function<void(const YAML::Node&, const std::string&)> check = [&](const YAML::Node& n,
                                                                         const std::string& at) {
    if (n.IsMap() && n.size() > 0) {
      for (const auto& kv : n) check(kv.second, at + kv.first.as<std::string>() + ".");
      return;
    }
    const std::string key = at.substr(0, at.size() - 1);
    EXPECT_NE(page.find("`" + key + "`"), std::string::npos)
        << key << " is not on docs/guide/config.md";
  };
  check(YAML::Load(kd::to_yaml(kd::RunConfig{})), "");
}

TEST(Config, ModeTaskAndTargetsAreWordsInTheFileAndEnumsInside) {
  kd::RunConfig c;
  c.out = "x";
  c.mode = kd::Mode::semi;
  c.task = kd::Task::detect;
  c.distill.targets = kd::Targets::hard;
  const std::string text = kd::to_yaml(c);
  EXPECT_NE(text.find("mode: semi"), std::string::npos) << text;
  EXPECT_NE(text.find("task: detect"), std::string::npos) << text;
  EXPECT_NE(text.find("targets: hard"), std::string::npos) << text;
  kd::RunConfig r;
  kd::apply_yaml(r, YAML::Load(text), "t");
  EXPECT_EQ(r.mode, kd::Mode::semi);
  EXPECT_EQ(r.task, kd::Task::detect);
  EXPECT_EQ(r.distill.targets, kd::Targets::hard);
  EXPECT_KD_ERROR(kd::apply_yaml(r, YAML::Load("mode: distill"), "exp.yaml"),
                  "exp.yaml: mode: 'distill': expected train, offline, semi, self or merge");
  EXPECT_KD_ERROR(kd::apply_yaml(r, YAML::Load("distill: {targets: soft-ish}"), "exp.yaml"),
                  "exp.yaml: distill.targets: 'soft-ish': expected soft or hard");
  EXPECT_KD_ERROR(kd::parse_kind<kd::Task>("segment", "model.json"),
                  "model.json: task 'segment': expected classify or detect");
  // JSON documents (summary.json, model.json) hold the same words.
  EXPECT_EQ(nlohmann::json(kd::Mode::merge).dump(), "\"merge\"");
  EXPECT_EQ(nlohmann::json("self").get<kd::Mode>(), kd::Mode::self);
  EXPECT_KD_ERROR(nlohmann::json(3).get<kd::Task>(), "task: expected a string");
}

TEST(Config, LossesInYamlAsMapsOrStrings) {
  kd::RunConfig r;
  kd::apply_yaml(
      r,
      YAML::Load("distill: {losses: [{name: dkd, beta: 2}, 'at:teacher=7,student=5,weight=500']}"),
      "e");
  ASSERT_EQ(r.distill.losses.size(), 2u);
  EXPECT_EQ(r.distill.losses[0], "dkd:T=4,alpha=1,beta=2,std=0,warmup=20,weight=1");
  EXPECT_EQ(r.distill.losses[1], "at:teacher=7,student=5,p=2,warmup=0,weight=500");
  kd::RunConfig back;
  kd::apply_yaml(back, YAML::Load(kd::to_yaml(r)), "t");  // written as maps, read back the same
  EXPECT_EQ(back.distill.losses, r.distill.losses);
  EXPECT_NE(kd::to_yaml(r).find("{name: dkd, T: 4, alpha: 1, beta: 2"), std::string::npos)
      << kd::to_yaml(r);
  EXPECT_KD_ERROR(
      kd::apply_yaml(r, YAML::Load("distill: {losses: [{name: dkd, betta: 2}]}"), "e.yaml"),
      "distill.losses: dkd: loss dkd has no option 'betta'");
  EXPECT_KD_ERROR(kd::apply_yaml(r, YAML::Load("distill: {losses: [{beta: 2}]}"), "e.yaml"),
                  "e.yaml: distill.losses: bad value");
}

TEST(Loader, CoversEveryIndexOnceAndIsSeeded) {
  auto d = toy(50);
  kd::Loader a(d, {16, true, false, {}, 3}, torch::kCPU),
      b(d, {16, true, false, {}, 3}, torch::kCPU);
  a.start_epoch(1);
  b.start_epoch(1);
  EXPECT_EQ(a.num_batches(), 4);
  std::vector<torch::Tensor> idx;
  for (int64_t i = 0; i < a.num_batches(); ++i) {
    auto ba = a.get(i), bb = b.get(i);
    EXPECT_TRUE(torch::equal(ba.index, bb.index));
    EXPECT_TRUE(torch::equal(ba.y, d.labels.index_select(0, ba.index)));
    idx.push_back(ba.index);
  }
  EXPECT_TRUE(torch::equal(std::get<0>(torch::cat(idx).sort()), torch::arange(50, torch::kInt64)));
  a.start_epoch(2);
  EXPECT_FALSE(torch::equal(a.get(0).index, b.get(0).index));
}

TEST(Loader, AugmentationCropsAndFlipsPerSample) {
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto x = torch::rand({32, 1, 8, 8});
  auto flipped = kd::augment_batch(x, {0, true}, gen);
  int64_t n_flipped = 0;
  for (int64_t i = 0; i < 32; ++i) {
    const bool same = torch::equal(flipped[i], x[i]);
    EXPECT_TRUE(same || torch::equal(flipped[i], x[i].flip({2})));
    n_flipped += !same;
  }
  EXPECT_GT(n_flipped, 4);
  EXPECT_LT(n_flipped, 28);
  auto cropped = kd::augment_batch(x, {2, false}, gen);
  EXPECT_EQ(cropped.sizes(), x.sizes());
  // Every crop is x shifted by (dy, dx) in [-2, 2] with zero fill: check one sample exhaustively.
  bool found = false;
  auto padded = torch::constant_pad_nd(x[0], {2, 2, 2, 2}, 0.0);
  for (int dy = 0; dy <= 4 && !found; ++dy)
    for (int dx = 0; dx <= 4 && !found; ++dx)
      found = torch::equal(cropped[0], padded.narrow(1, dy, 8).narrow(2, dx, 8));
  EXPECT_TRUE(found);
}

TEST(Schedule, WarmupThenCosine) {
  kd::TrainConfig c;
  c.epochs = 10;
  c.optim.lr = 1.0;
  c.schedule.warmup_epochs = 1;
  EXPECT_NEAR(kd::scheduled_lr(c, 0, 10), 0.1, 1e-12);
  EXPECT_NEAR(kd::scheduled_lr(c, 9, 10), 1.0, 1e-12);
  EXPECT_NEAR(kd::scheduled_lr(c, 10, 10), 1.0, 1e-12);
  EXPECT_NEAR(kd::scheduled_lr(c, 55, 10), 0.5, 1e-12);
  c.schedule.name = "step";
  c.schedule.warmup_epochs = 0;
  c.schedule.step_size = 3;
  EXPECT_NEAR(kd::scheduled_lr(c, 65, 10), 0.01, 1e-12);
}

TEST(Trainer, LearnsToyTaskAndIsRepeatable) {
  auto run = [] {
    kd::seed_everything(5);
    auto m = kd::create_model(toy_spec());
    kd::TrainConfig c;
    c.epochs = 5;
    c.batch_size = 16;
    c.crop_padding = 0;
    c.hflip = false;
    c.optim.lr = 0.1;
    kd::SupervisedStrategy s(0.0);
    kd::Trainer t(c, torch::kCPU, 5);
    auto r = t.fit(*m, s, toy(), toy(16), "");
    return std::make_pair(r, m->parameters()[0].clone());
  };
  auto [r1, w1] = run();
  auto [r2, w2] = run();
  EXPECT_GT(r1.best_score, 0.95);
  EXPECT_TRUE(torch::equal(w1, w2));  // seeded and repeatable on CPU
}

TEST(Trainer, NanLossIsReportedWithEpochAndBatch) {
  auto m = kd::create_model(toy_spec());
  kd::TrainConfig c;
  c.epochs = 1;
  c.batch_size = 16;
  kd::SupervisedStrategy s(0.0);
  kd::Trainer t(c, torch::kCPU, 0);
  auto bad = toy();
  {
    torch::NoGradGuard g;
    m->parameters()[0].fill_(std::numeric_limits<float>::quiet_NaN());
  }
  EXPECT_KD_ERROR(t.fit(*m, s, bad, bad, ""), "epoch 1 batch 0: loss is NaN");
}

TEST(TeacherCache, HitsAndInvalidates) {
  TempDir dir;
  auto teacher = kd::create_model(toy_spec());
  auto d = toy();
  auto first = kd::cached_teacher_logits(*teacher, d, dir.path.string(), 32, torch::kCPU);
  EXPECT_FALSE(first.hit);
  auto second = kd::cached_teacher_logits(*teacher, d, dir.path.string(), 32, torch::kCPU);
  EXPECT_TRUE(second.hit);
  EXPECT_TRUE(torch::equal(first.logits, second.logits));
  // New weights -> new key.
  {
    torch::NoGradGuard g;
    teacher->parameters()[0].mul_(2.0);
  }
  EXPECT_FALSE(kd::cached_teacher_logits(*teacher, d, dir.path.string(), 32, torch::kCPU).hit);
  // New data -> new key.
  d.images[0].fill_(7);
  EXPECT_FALSE(kd::cached_teacher_logits(*teacher, d, dir.path.string(), 32, torch::kCPU).hit);
}

TEST(Compare, GapClosedPairsSeeds) {
  auto summary = [](std::string name, std::string mode, std::string arch, double top1, int seed,
                    std::string teacher = "") {
    return nlohmann::json{{"name", name},
                          {"mode", mode},
                          {"arch", arch},
                          {"seed", seed},
                          {"test", {{"top1", top1}}},
                          {"params", 1},
                          {"macs", 1},
                          {"teacher_name", teacher}};
  };
  auto c = kd::compare_runs(
      {summary("t", "train", "big", 0.92, 0), summary("t", "train", "big", 0.94, 1),
       summary("s", "train", "small", 0.88, 0), summary("s", "train", "small", 0.88, 1),
       summary("d", "offline", "small", 0.90, 0, "t"),
       summary("d", "offline", "small", 0.91, 1, "t")});
  ASSERT_EQ(c.rows.size(), 3u);
  EXPECT_NEAR(c.rows[0].score.mean, 0.93, 1e-12);
  ASSERT_EQ(c.gap_closed.size(), 1u);
  EXPECT_EQ(c.gap_closed[0].first, "d");
  EXPECT_NEAR(c.gap_closed[0].second.mean, (0.5 + 0.5) / 2, 1e-9);  // 0.02/0.04, 0.03/0.06
  // One teacher run for two student seeds: each seed is paired with it.
  auto one = kd::compare_runs(
      {summary("t", "train", "big", 0.92, 0), summary("s", "train", "small", 0.88, 0),
       summary("s", "train", "small", 0.90, 1), summary("d", "offline", "small", 0.90, 0, "t"),
       summary("d", "offline", "small", 0.91, 1, "t")});
  ASSERT_EQ(one.gap_closed.size(), 1u);
  EXPECT_EQ(one.gap_closed[0].second.n, 2);
  EXPECT_NEAR(one.gap_closed[0].second.mean, (0.5 + 0.5) / 2, 1e-9);  // 0.02/0.04, 0.01/0.02
  // A teacher of the student's registry architecture (another width) listed after the student:
  // the plain student is still the other trained group, never the teacher's own.
  auto same = kd::compare_runs({summary("d", "offline", "small", 0.90, 0, "t"),
                                summary("s", "train", "small", 0.88, 0),
                                summary("t", "train", "small", 0.92, 0)});
  ASSERT_EQ(same.gap_closed.size(), 1u);
  EXPECT_NEAR(same.gap_closed[0].second.mean, 0.5, 1e-9);
}

TEST(Compare, ScoresOnTheEvalSplitWhenAsked) {
  auto summary = [](std::string name, std::string mode, double test, double eval) {
    return nlohmann::json{{"name", name},
                          {"mode", mode},
                          {"arch", "a"},
                          {"seed", 0},
                          {"test", {{"top1", test}}},
                          {"best_eval_top1", eval},
                          {"params", 1},
                          {"macs", 1},
                          {"teacher_name", ""}};
  };
  std::vector<nlohmann::json> runs = {summary("x", "train", 0.80, 0.85),
                                      summary("y", "train", 0.82, 0.84)};
  auto test = kd::compare_runs(runs), eval = kd::compare_runs(runs, kd::ScoreOn::eval);
  EXPECT_NEAR(test.rows[0].score.mean, 0.80, 1e-12);
  EXPECT_NEAR(eval.rows[0].score.mean, 0.85, 1e-12);
  EXPECT_NEAR(eval.rows[1].score.mean, 0.84, 1e-12);
  EXPECT_NE(eval.markdown().find("best eval top-1 %"), std::string::npos);
  EXPECT_EQ(eval.to_json()["scored_on"], "eval");
  runs[1].erase("best_eval_top1");
  try {
    kd::compare_runs(runs, kd::ScoreOn::eval);
    FAIL() << "a run without an eval score was compared on eval";
  } catch (const kd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("run 'y' (seed 0) has no eval-split score"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace

namespace {

kd::Batch plain_batch(int64_t B) {
  kd::Batch b;
  b.x = torch::rand({B, 1, 8, 8});
  b.y = torch::arange(B, torch::kInt64) % 3;
  b.index = torch::arange(B, torch::kInt64);
  return b;
}

}  // namespace

TEST(Mixing, MixupBlendsWithAPermutationAndIsSeeded) {
  kd::Augment aug;
  aug.mixup = 0.4;
  auto b = plain_batch(16);
  auto original = b.x.clone();
  torch::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(7),
                   g2 = at::make_generator<at::CPUGeneratorImpl>(7);
  kd::Batch a = b, c = b;
  kd::mix_batch(a, aug, g1);
  kd::mix_batch(c, aug, g2);
  EXPECT_TRUE(torch::equal(a.x, c.x));  // same seed, same batch
  ASSERT_TRUE(a.y_mix.defined());
  EXPECT_GE(a.lam, 0.0);
  EXPECT_LE(a.lam, 1.0);
  // Each image is lam * itself + (1 - lam) * the image whose label is its partner label.
  for (int64_t i = 0; i < 16; ++i) {
    bool found = false;
    for (int64_t j = 0; j < 16 && !found; ++j)
      found = b.y[j].item<int64_t>() == a.y_mix[i].item<int64_t>() &&
              torch::allclose(a.x[i], a.lam * original[i] + (1 - a.lam) * original[j], 1e-5, 1e-6);
    EXPECT_TRUE(found) << i;
  }
  EXPECT_TRUE(torch::equal(b.x, original));  // the caller's batch is untouched
}

TEST(Mixing, CutmixLamIsThePastedArea) {
  kd::Augment aug;
  aug.cutmix = 1.0;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    auto b = plain_batch(8);
    b.x = torch::zeros({8, 1, 8, 8});
    b.x.index_put_({torch::indexing::Slice(0, 4)}, 1.0);  // half the images white
    auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
    kd::mix_batch(b, aug, g);
    // Partners are uniform images: each image changed in no pixel (same colour) or in exactly
    // the pasted share, 1 - lam.
    auto white = (torch::arange(8) < 4).to(torch::kFloat32).view({8, 1});
    auto changed = b.x.flatten(1).ne(white).to(torch::kFloat64).mean(1);
    for (int64_t i = 0; i < 8; ++i) {
      const double c = changed[i].item<double>();
      EXPECT_TRUE(c == 0.0 || std::abs(c - (1.0 - b.lam)) < 1e-9)
          << "seed " << seed << " image " << i << ": " << c;
    }
    EXPECT_GE(b.lam, 0.0);
    EXPECT_LE(b.lam, 1.0);
  }
}

TEST(Mixing, CrossEntropyOfAMixedBatch) {
  auto b = plain_batch(6);
  b.y_mix = torch::tensor({2, 2, 1, 0, -1, 1}, torch::kInt64);
  b.lam = 0.3;
  auto logits = torch::randn({6, 3}, torch::kFloat64);
  auto per = kd::mixed_cross_entropy(logits, b.y, b.y_mix, b.lam, 0.0);
  namespace F = torch::nn::functional;
  auto ce = [&](const torch::Tensor& y) {
    return F::cross_entropy(logits, y.clamp_min(0),
                            F::CrossEntropyFuncOptions().reduction(torch::kNone));
  };
  auto expected = 0.3 * ce(b.y) + 0.7 * ce(b.y_mix);
  expected[4] = 0.0;  // partner unlabeled
  EXPECT_TRUE(torch::allclose(per, expected));
  EXPECT_TRUE(torch::allclose(kd::mixed_cross_entropy(logits, b.y, {}, 1.0, 0.0), ce(b.y)));
}

TEST(Mixing, OutOfRangeValuesAreUsageErrors) {
  kd::RunConfig c;
  c.out = "x";
  c.train.mixup = -0.1;
  EXPECT_KD_ERROR(kd::validate(c), "mixup alpha (--mixup) must be a number in [0, 100]");
  c.train.mixup = 0;
  c.train.cutmix = std::nan("");
  EXPECT_KD_ERROR(kd::validate(c), "cutmix alpha (--cutmix) must be a number in [0, 100]");
  c.train.cutmix = 1;
  c.mode = kd::Mode::offline;
  c.distill.teacher = "t";
  c.distill.losses = {"dkd"};
  EXPECT_KD_ERROR(kd::validate(c),
                  "--loss dkd needs one true class per image and --mixup/--cutmix images have two");
}
