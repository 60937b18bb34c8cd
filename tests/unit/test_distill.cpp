// Distillation modes: the mode losses, hint losses and the merge rule against PyTorch-Python
// values (tests/golden/make_golden.py), and the strategy's behaviour on tiny models.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "golden.h"
#include "kd/core/error.h"
#include "kd/core/runtime.h"
#include "kd/data/dataset.h"
#include "kd/distill/strategy.h"
#include "kd/losses/classification.h"
#include "kd/losses/zoo.h"
#include "kd/models/model.h"
#include "test_util.h"
#include <ATen/autocast_mode.h>

namespace {

using kd_test::matrix;

const std::vector<std::string> kNames = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                         "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                         "Bag",         "Ankle boot"};

kd::Dataset tiny_dataset(int64_t n, uint64_t seed = 0) {
  torch::manual_seed(seed);
  return {torch::randint(0, 255, {n, 1, 28, 28}).to(torch::kUInt8),
          torch::arange(n, torch::kInt64).remainder(10), kNames, "tiny"};
}

std::shared_ptr<kd::Model> model(const std::string& arch, std::vector<std::string> classes,
                                 nlohmann::json options = nlohmann::json::object()) {
  kd::ModelSpec spec;
  spec.arch = arch;
  spec.options = std::move(options);
  spec.input_shape = {1, 28, 28};
  spec.class_names = std::move(classes);
  return kd::create_model(spec);
}

std::vector<std::string> names(int64_t lo, int64_t hi) {
  return {kNames.begin() + lo, kNames.begin() + hi + 1};
}

TEST(DistillLoss, EveryModeMatchesPyTorch) {
  auto cases = kd_test::golden_losses()["distill_cases"];
  ASSERT_EQ(cases.size(), 4u);
  for (const auto& c : cases) {
    auto s = matrix(c["student"]).requires_grad_(true);
    auto q = matrix(c["targets"]);
    auto y = torch::tensor(c["labels"].get<std::vector<int64_t>>(), torch::kInt64);
    kd::SoftTargetLossOptions o{c["temperature"], c["alpha"], c["label_smoothing"]};
    auto loss = kd::distill_loss(s, q, y, o, c["hard"].get<bool>(), c["threshold"].get<double>());
    EXPECT_NEAR(loss.item<double>(), c["loss"].get<double>(), 1e-10);
    loss.backward();
    EXPECT_LT((s.grad() - matrix(c["grad"])).abs().max().item<double>(), 1e-10);
  }
}

TEST(DistillLoss, SoftTargetsFromLogitsEqualTheLogitForm) {
  // All samples labeled and q = softmax(teacher / T): the offline loss of the foundation issue.
  torch::manual_seed(3);
  auto s = torch::randn({6, 10}, torch::kFloat64), t = torch::randn({6, 10}, torch::kFloat64);
  auto y = torch::randint(0, 10, {6});
  kd::SoftTargetLossOptions o{4.0, 0.7, 0.0};
  auto a = kd::distill_loss(s, torch::softmax(t / 4.0, 1), y, o, false, 0.0);
  EXPECT_NEAR(a.item<double>(), kd::soft_target_loss(s, t, y, o).item<double>(), 1e-12);
}

TEST(HintLoss, MatchesPyTorch) {
  // A named copy: ranging over a member of the temporary would read freed memory (found by ASan).
  const auto cases = kd_test::golden_losses()["hint_cases"];
  for (const auto& c : cases) {
    auto shape = c["shape"].get<std::vector<int64_t>>();
    auto t = torch::tensor(c["teacher"].get<std::vector<double>>(), torch::kFloat64).view(shape);
    for (const std::string kind : {"mse", "nmse"}) {
      auto s = torch::tensor(c["student"].get<std::vector<double>>(), torch::kFloat64)
                   .view(shape)
                   .requires_grad_(true);
      auto loss = kd::fitnet_loss(s, t, kind == "nmse");
      EXPECT_NEAR(loss.item<double>(), c[kind].get<double>(), 1e-10) << kind;
      loss.backward();
      auto g =
          torch::tensor(c[kind + "_grad"].get<std::vector<double>>(), torch::kFloat64).view(shape);
      EXPECT_LT((s.grad() - g).abs().max().item<double>(), 1e-10) << kind;
    }
  }
  EXPECT_KD_ERROR(kd::fitnet_loss(torch::zeros({2, 3}), torch::zeros({2, 4}), false),
                  "differ in shape");
}

TEST(Merge, OffsetsAndTargetsMatchPyTorch) {
  auto c = kd_test::golden_losses()["merge_case"];
  auto Z = matrix(c["columns"]).to(torch::kFloat32);
  auto cls = torch::tensor(c["column_class"].get<std::vector<int64_t>>(), torch::kInt64);
  const int64_t C = c["num_classes"];
  auto b = kd::fit_merge_offsets(Z, cls, C);
  auto expected_b = torch::tensor(c["offsets"].get<std::vector<double>>(), torch::kFloat64);
  EXPECT_LT((b.to(torch::kFloat64) - expected_b).abs().max().item<double>(), 1e-3);
  for (double T : {1.0, 4.0}) {
    auto q = kd::merge_teacher_logits(Z, cls, C, b, T);
    auto expected = matrix(c["merged"][T == 1.0 ? "1.0" : "4.0"]);
    EXPECT_LT((q.to(torch::kFloat64) - expected).abs().max().item<double>(), 1e-4) << "T " << T;
    EXPECT_LT((q.sum(1) - 1).abs().max().item<double>(), 1e-5);
  }
  // Fitted offsets make every class's mean merged probability 1/C.
  auto marg = kd::merge_teacher_logits(Z, cls, C, b, 1.0).mean(0);
  EXPECT_LT((marg - 1.0 / C).abs().max().item<double>(), 1e-4);
}

TEST(Hints, ParseHint) {
  auto h = kd::parse_hint("7:5:0.5");
  EXPECT_EQ(h.teacher_layer, "7");
  EXPECT_EQ(h.student_layer, "5");
  EXPECT_DOUBLE_EQ(h.weight(), 0.5);
  EXPECT_EQ(h.name, "fitnet");
  EXPECT_EQ(h.get("normalize"), 1.0);
  EXPECT_EQ(kd::parse_hint("7:5", "mse").get("normalize"), 0.0);
  EXPECT_DOUBLE_EQ(kd::parse_hint("features.2:3").weight(), 1.0);
  EXPECT_KD_ERROR(kd::parse_hint("7"), "expected TEACHER_LAYER:STUDENT_LAYER");
  EXPECT_KD_ERROR(kd::parse_hint("7:5:heavy"), "must be a positive number");
  EXPECT_KD_ERROR(kd::parse_hint("7:5:-1"), "must be a positive number");
}

TEST(Hints, NativeFeaturesAreTheLayerOutputs) {
  auto m = model("fmnist-student", kNames);
  m->train(false);
  auto x = torch::rand({2, 1, 28, 28});
  auto [logits, feats] = m->forward_with_features(x, {"5", "2"});
  EXPECT_TRUE(torch::allclose(logits, m->forward(x)));
  EXPECT_EQ(feats[0].sizes(), (std::vector<int64_t>{2, 16, 7, 7}));
  EXPECT_EQ(feats[1].sizes(), (std::vector<int64_t>{2, 8, 14, 14}));
  EXPECT_KD_ERROR(m->forward_with_features(x, {"conv9"}), "no layer 'conv9' (layers: 0, 1, 2");
}

TEST(Hints, AdapterBridgesWidthsAndUnbridgeableShapesAreErrors) {
  auto data = tiny_dataset(20);
  auto teacher = model("fmnist-teacher", kNames, {{"width", 8}});
  auto student = model("fmnist-student", kNames);
  kd::DistillOptions o;
  o.losses = {kd::parse_hint("7:5")};  // teacher 16x7x7, student 16x7x7 -> none; width 8 -> 16
  o.use_cache = false;
  kd::DistillStrategy ok(kd::Mode::offline, {{"t", teacher}}, o);
  ok.prepare(*student, data, {}, torch::kCPU);
  EXPECT_TRUE(ok.parameters().empty());                          // same shape: no adapter
  auto wide = model("fmnist-teacher", kNames, {{"width", 16}});  // 32x7x7: 1x1 conv 16 -> 32
  kd::DistillStrategy adapted(kd::Mode::offline, {{"t", wide}}, o);
  adapted.prepare(*student, data, {}, torch::kCPU);
  ASSERT_EQ(adapted.parameters().size(), 2u);
  EXPECT_EQ(adapted.parameters()[0].sizes(), (std::vector<int64_t>{32, 16, 1, 1}));
  kd::Loader loader(data, {10, false, false, {}, 0}, torch::kCPU);
  student->train(true);
  auto r = adapted.step(*student, loader.get(0));
  r.loss.backward();
  EXPECT_TRUE(adapted.parameters()[0].grad().defined());  // the adapter trains with the student

  o.losses = {kd::parse_hint("7:2")};  // 32x7x7 vs 8x14x14
  kd::DistillStrategy bad(kd::Mode::offline, {{"t", wide}}, o);
  EXPECT_KD_ERROR(bad.prepare(*student, data, {}, torch::kCPU),
                  "no adapter maps the student's 2 output");
  o.losses = {kd::parse_hint("99:5")};
  kd::DistillStrategy missing(kd::Mode::offline, {{"t", wide}}, o);
  EXPECT_KD_ERROR(missing.prepare(*student, data, {}, torch::kCPU),
                  "has no layer '99' (layers: 0, 1");
}

TEST(Merge, TeachersOfPartOfTheClassesCoverTheStudent) {
  auto data = tiny_dataset(40).without_labels();
  auto student = model("fmnist-student", kNames);
  kd::DistillOptions o;
  o.use_cache = false;
  kd::DistillStrategy merge(
      kd::Mode::merge,
      {{"a", model("fmnist-student", names(0, 6))}, {"b", model("fmnist-student", names(3, 9))}},
      o);
  merge.prepare(*student, data, {}, torch::kCPU);
  auto q = merge.targets_for(data);
  EXPECT_EQ(q.sizes(), (std::vector<int64_t>{40, 10}));
  EXPECT_LT((q.sum(1) - 1).abs().max().item<double>(), 1e-5);
  // On the pool the offsets were fitted on, every class gets 1/10 of the mass.
  EXPECT_LT((q.mean(0) - 0.1).abs().max().item<double>(), 1e-3);
  EXPECT_TRUE(merge.describe().contains("merge"));

  kd::DistillStrategy gap(
      kd::Mode::merge,
      {{"a", model("fmnist-student", names(0, 4))}, {"b", model("fmnist-student", names(6, 9))}},
      o);
  EXPECT_KD_ERROR(gap.prepare(*student, data, {}, torch::kCPU),
                  "class 'Sandal' of the data is known by no teacher");
  kd::DistillStrategy alien(kd::Mode::merge,
                            {{"a", model("fmnist-student", names(0, 4))},
                             {"cats", model("fmnist-student", {"Sandal", "Shirt", "Sneaker", "Bag",
                                                               "Ankle boot", "Cat"})}},
                            o);
  EXPECT_KD_ERROR(alien.prepare(*student, data, {}, torch::kCPU),
                  "teacher cats: class 'Cat' matches no class");
  kd::DistillStrategy partial(kd::Mode::offline, {{"a", model("fmnist-student", names(0, 4))}}, o);
  EXPECT_KD_ERROR(partial.prepare(*student, data, {}, torch::kCPU),
                  "knows 5 of the data's 10 classes");
}

TEST(Merge, TeachersWithAnOthersClassHandTheirMassToTheOthers) {
  // Teachers trained with --others: each has its five classes and "(others)". Their columns are
  // log-probabilities with "(others)" dropped: p(c) proportional to teacher(c) * exp(-offset).
  auto data = tiny_dataset(40).without_labels();
  auto student = model("fmnist-student", kNames);
  auto with_others = [](std::vector<std::string> n) {
    n.push_back(kd::kOthersClass);
    return n;
  };
  auto a = model("fmnist-student", with_others(names(0, 4)));
  auto b = model("fmnist-student", with_others(names(5, 9)));
  kd::DistillOptions o;
  o.use_cache = false;
  kd::DistillStrategy merge(kd::Mode::merge, {{"a", a}, {"b", b}}, o);
  merge.prepare(*student, data, {}, torch::kCPU);
  auto q = merge.targets_for(data);
  torch::NoGradGuard no_grad;
  a->train(false);
  b->train(false);
  auto x = data.images.to(torch::kFloat32).div(255.0);
  auto za = torch::log_softmax(a->forward(x), 1), zb = torch::log_softmax(b->forward(x), 1);
  auto Z = torch::cat({za.narrow(1, 0, 5), zb.narrow(1, 0, 5)}, 1);
  const auto offsets = merge.describe()["merge"]["offsets"].get<std::vector<double>>();
  EXPECT_NE(merge.describe()["merge"]["rule"].get<std::string>().find("log-probabilities without"),
            std::string::npos);
  auto expected = torch::softmax(Z - torch::tensor(offsets, torch::kFloat32), 1);
  EXPECT_LT((q - expected).abs().max().item<double>(), 1e-4);
  // The raw logits of the two would differ: the "(others)" outputs count.
  auto raw = torch::cat({a->forward(x).narrow(1, 0, 5), b->forward(x).narrow(1, 0, 5)}, 1);
  EXPECT_GT((torch::softmax(raw - torch::tensor(offsets, torch::kFloat32), 1) - q)
                .abs()
                .max()
                .item<double>(),
            1e-3);
  // Outside a merge a teacher's "(others)" has no meaning.
  auto labeled = tiny_dataset(40);
  kd::DistillStrategy offline(kd::Mode::offline,
                              {{"a", model("fmnist-student", with_others(kNames))}}, o);
  EXPECT_KD_ERROR(offline.prepare(*student, labeled, {}, torch::kCPU),
                  "teacher a has a class '(others)' (trained with --others): it teaches in --mode "
                  "merge");
}

TEST(Ensemble, TeachersOfAllTheClassesAreAveragedInProbability) {
  // Two teachers of every class, of different logit scales: the targets are the mean of their
  // distributions (not the softmax of their summed logits, where the louder one would win).
  auto data = tiny_dataset(40);
  auto student = model("fmnist-student", kNames);
  auto a = model("fmnist-student", kNames), b = model("cnn", kNames, {{"width", 8}});
  {
    torch::NoGradGuard no_grad;
    for (auto& p : b->parameters()) p.mul_(3.0);
  }
  kd::DistillOptions o;
  o.use_cache = false;
  for (auto mode : {kd::Mode::offline, kd::Mode::semi}) {
    kd::DistillStrategy ensemble(mode, {{"a", a}, {"b", b}}, o);
    ensemble.prepare(*student, mode == kd::Mode::semi ? data.without_labels() : data, {},
                     torch::kCPU);
    auto q = ensemble.targets_for(data);
    torch::NoGradGuard no_grad;
    auto x = data.images.to(torch::kFloat32).div(255.0);
    auto pa = torch::softmax(a->forward(x), 1), pb = torch::softmax(b->forward(x), 1);
    ASSERT_GT((pa - pb).abs().max().item<double>(), 0.1);  // the two really differ
    EXPECT_LT((q - (pa + pb) / 2).abs().max().item<double>(), 1e-5);
    const auto info = ensemble.describe();
    EXPECT_EQ(info["ensemble_of_teachers"]["teachers"], nlohmann::json({"a", "b"}));
    EXPECT_FALSE(info.contains("merge"));  // no class offsets: the teachers' own marginals stand
  }
  // A member of part of the classes belongs in a merge.
  kd::DistillStrategy partial(kd::Mode::offline,
                              {{"a", a}, {"c", model("fmnist-student", names(0, 4))}}, o);
  EXPECT_KD_ERROR(partial.prepare(*student, data, {}, torch::kCPU),
                  "teacher c knows 5 of the data's 10 classes");
}

TEST(TeacherView, CleanLabelsEachImageOnceAndAugmentedViewsLearnThoseTargets) {
  auto data = tiny_dataset(20);
  auto student = model("fmnist-student", kNames), teacher = model("fmnist-student", kNames);
  kd::Augment augment;
  augment.crop_padding = 2;
  augment.hflip = true;
  kd::DistillOptions o;
  o.use_cache = false;
  o.teacher_on_clean_images = true;
  kd::DistillStrategy clean(kd::Mode::offline, {{"t", teacher}}, o);
  clean.prepare(*student, data, augment, torch::kCPU);
  EXPECT_EQ(clean.describe()["teacher_view"], "clean images, each labeled once");
  kd::Loader loader(data, {10, true, false, augment, 3}, torch::kCPU);
  loader.start_epoch(0);
  auto batch = loader.get(0);
  student->train(false);  // no dropout or batch statistics between the two evaluations
  auto loss = clean.step(*student, batch).loss;
  torch::NoGradGuard no_grad;
  auto clean_x = data.images.index_select(0, batch.index).to(torch::kFloat32).div(255.0);
  ASSERT_GT((clean_x - batch.x).abs().max().item<double>(), 0.1);  // the batch is augmented
  auto targets = torch::softmax(teacher->forward(clean_x) / o.loss.temperature, 1);
  auto expected = kd::distill_loss(student->forward(batch.x), targets, batch.y, o.loss, false, 0);
  EXPECT_NEAR(loss.item<double>(), expected.item<double>(), 1e-5);
  // The default: the teacher sees the same augmented batch as the student.
  o.teacher_on_clean_images = false;
  kd::DistillStrategy same_view(kd::Mode::offline, {{"t", teacher}}, o);
  same_view.prepare(*student, data, augment, torch::kCPU);
  auto seen = torch::softmax(teacher->forward(batch.x) / o.loss.temperature, 1);
  auto expected_same = kd::distill_loss(student->forward(batch.x), seen, batch.y, o.loss, false, 0);
  EXPECT_NEAR(same_view.step(*student, batch).loss.item<double>(), expected_same.item<double>(),
              1e-5);
  EXPECT_GT(std::abs(expected_same.item<double>() - expected.item<double>()), 1e-4);
  // Mixed images have no clean view.
  augment.mixup = 0.2;
  o.teacher_on_clean_images = true;
  kd::DistillStrategy mixed(kd::Mode::offline, {{"t", teacher}}, o);
  EXPECT_KD_ERROR(mixed.prepare(*student, data, augment, torch::kCPU),
                  "a teacher on clean images cannot label mixed images");
}

TEST(Merge, BySourceEachImageIsTaughtByItsSourcesTeachers) {
  // A pool of two sources: the first 24 images from one with classes 0-4, the last 16 from one
  // with classes 5-9 (as fashion-mnist+data/mnist pools two datasets).
  auto all = tiny_dataset(40);
  auto low = kd::select_classes(all, {"0-4"}), high = kd::select_classes(all, {"5-9"});
  auto data = kd::pool_datasets({low, high}).without_labels();
  ASSERT_EQ(data.class_names, kNames);
  auto student = model("fmnist-student", kNames);
  kd::DistillOptions o;
  o.use_cache = false;
  o.merge_by_source = true;
  kd::DistillStrategy merge(
      kd::Mode::merge,
      {{"a", model("fmnist-student", names(0, 4))}, {"b", model("fmnist-student", names(5, 9))}},
      o);
  merge.prepare(*student, data, {}, torch::kCPU);
  auto q = merge.targets_for(data);
  const int64_t n_low = low.size();
  // All of each image's mass on its own source's classes.
  EXPECT_LT((q.narrow(0, 0, n_low).narrow(1, 0, 5).sum(1) - 1).abs().max().item<double>(), 1e-6);
  EXPECT_LT((q.narrow(0, n_low, data.size() - n_low).narrow(1, 5, 5).sum(1) - 1)
                .abs()
                .max()
                .item<double>(),
            1e-6);
  EXPECT_EQ(merge.describe()["merge"]["rule"].get<std::string>().rfind("by source", 0), 0u);
  // The same teachers on data of one source: nothing to route by.
  kd::DistillStrategy unpooled(
      kd::Mode::merge,
      {{"a", model("fmnist-student", names(0, 4))}, {"b", model("fmnist-student", names(5, 9))}},
      o);
  EXPECT_KD_ERROR(unpooled.prepare(*student, all, {}, torch::kCPU),
                  "--merge-by-source needs --mode merge on pooled data");
  // A source no teacher covers alone.
  kd::DistillStrategy straddling(
      kd::Mode::merge,
      {{"a", model("fmnist-student", names(0, 6))}, {"b", model("fmnist-student", names(3, 9))}},
      o);
  EXPECT_KD_ERROR(straddling.prepare(*student, data, {}, torch::kCPU),
                  "no teacher knows only classes of source 1");
}

TEST(Semi, HardTargetsIgnoreUnconfidentUnlabeledSamples) {
  auto data = tiny_dataset(16);
  data.labels.narrow(0, 8, 8).fill_(kd::kUnlabeled);
  auto teacher = model("fmnist-student", kNames);
  auto student = model("fmnist-student", kNames);
  kd::DistillOptions o;
  o.targets = kd::Targets::hard;
  o.threshold = 0.999;  // an untrained teacher is never this sure: only labeled samples count
  kd::DistillStrategy semi(kd::Mode::semi, {{"t", teacher}},
                           o);  // cached targets: coverage is reported
  semi.prepare(*student, data, {}, torch::kCPU);
  EXPECT_DOUBLE_EQ(semi.describe()["pseudo_label_coverage"].get<double>(), 0.0);
  kd::Loader loader(data, {16, false, false, {}, 0}, torch::kCPU);
  auto b = loader.get(0);
  student->train(false);
  auto r = semi.step(*student, b);
  auto ce_labeled = torch::nn::functional::cross_entropy(
                        r.logits.narrow(0, 0, 8), b.y.narrow(0, 0, 8),
                        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)) /
                    16.0;
  EXPECT_NEAR(r.loss.item<double>(), ce_labeled.item<double>(), 1e-5);
}

TEST(Self, SnapshotTeachesFromItsEpoch) {
  auto data = tiny_dataset(20);
  auto student = model("fmnist-student", kNames);
  kd::DistillOptions o;
  o.snapshot_epoch = 3;
  o.use_cache = false;
  kd::DistillStrategy self(kd::Mode::self, {}, o);
  self.prepare(*student, data, {}, torch::kCPU);
  kd::Loader loader(data, {20, false, false, {}, 0}, torch::kCPU);
  auto b = loader.get(0);
  for (int64_t epoch = 1; epoch <= 3; ++epoch) self.begin_epoch(epoch, *student);
  EXPECT_EQ(self.describe()["teacher"], "snapshot of the student");
  // The snapshot equals the student now: the soft term is zero, only (1 - alpha) CE remains.
  student->train(false);
  auto r = self.step(*student, b);
  auto ce = kd::cross_entropy(r.logits, b.y);
  EXPECT_NEAR(r.loss.item<double>(), (1.0 - o.loss.alpha) * ce.item<double>(), 1e-4);
}

TEST(Ensemble, ViewsFlipAndShift) {
  auto x = torch::arange(9, torch::kFloat32).view({1, 1, 3, 3});
  EXPECT_TRUE(torch::equal(kd::ensemble_view(x, 0), x));
  EXPECT_TRUE(torch::equal(kd::ensemble_view(x, 1), x.flip({3})));
  // View 2 shifts right by one pixel: column 0 becomes zero, column 1 the old column 0.
  auto right = kd::ensemble_view(x, 2);
  EXPECT_EQ(right[0][0][1][0].item<float>(), 0.0f);
  EXPECT_EQ(right[0][0][1][1].item<float>(), 3.0f);
  auto up = kd::ensemble_view(x.to(torch::kUInt8), 5);  // uint8 works too
  EXPECT_EQ(up[0][0][0][0].item<uint8_t>(), 3);
  EXPECT_EQ(up[0][0][2][0].item<uint8_t>(), 0);
}

TEST(Data, SelectClassesRelabels) {
  auto d = tiny_dataset(30);
  auto a = kd::select_classes(d, {"0-2", "Bag"});
  EXPECT_EQ(a.class_names, (std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Bag"}));
  EXPECT_EQ(a.size(), 12);
  EXPECT_EQ(a.labels.max().item<int64_t>(), 3);
  EXPECT_EQ(kd::select_classes(d, {"T-shirt/top"}).size(), 3);  // a name with a dash is not a range
  EXPECT_KD_ERROR(kd::select_classes(d, {"Cat"}), "'Cat' is neither a class of tiny");
  EXPECT_KD_ERROR(kd::select_classes(d, {"5-2"}), "empty range");
  // --others: the rest kept, as one more class.
  auto o = kd::select_classes(d, {"0-2", "Bag"}, true);
  EXPECT_EQ(o.class_names, (std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Bag",
                                                     kd::kOthersClass}));
  EXPECT_EQ(o.size(), 30);
  EXPECT_EQ((o.labels == 4).sum().item<int64_t>(), 18);
  EXPECT_EQ(o.labels[8].item<int64_t>(), 3);  // sample 8 is a Bag
  EXPECT_EQ(o.labels[9].item<int64_t>(), 4);  // sample 9 an ankle boot: others
  EXPECT_KD_ERROR(kd::select_classes(d, {"0-9"}, true), "keeps every class of tiny");
  auto u = d.without_labels();
  EXPECT_EQ((u.labels == kd::kUnlabeled).sum().item<int64_t>(), 30);
  EXPECT_EQ(kd::concat(d, u).size(), 60);
}

TEST(Data, PooledDatasetsMatchClassesByName) {
  auto fashion = kd::select_classes(tiny_dataset(30), {"0-2"});  // T-shirt/top, Trouser, Pullover
  kd::Dataset digits;
  digits.images = torch::zeros({4, 1, 28, 28}, torch::kUInt8);
  digits.labels = torch::tensor(std::vector<int64_t>{0, 1, 1, kd::kUnlabeled});
  digits.class_names = {"digit 0", "Trouser"};
  digits.source = "digits";
  auto pooled = kd::pool_datasets({fashion, digits});
  EXPECT_EQ(pooled.class_names,
            (std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "digit 0"}));
  EXPECT_EQ(pooled.size(), fashion.size() + 4);
  // digit 0 -> 3, Trouser -> 1 (the class both have), an unlabeled image stays unlabeled.
  auto tail = pooled.labels.narrow(0, fashion.size(), 4);
  EXPECT_TRUE(torch::equal(tail, torch::tensor(std::vector<int64_t>{3, 1, 1, kd::kUnlabeled})));
  digits.images = torch::zeros({4, 1, 32, 32}, torch::kUInt8);
  EXPECT_KD_ERROR(kd::pool_datasets({fashion, digits}), "give --size and --channels to pool them");
  EXPECT_EQ(kd::pooled_sources("fashion-mnist+data/mnist"),
            (std::vector<std::string>{"fashion-mnist", "data/mnist"}));
  EXPECT_EQ(kd::pooled_sources("fashion-mnist"), (std::vector<std::string>{"fashion-mnist"}));
  EXPECT_KD_ERROR(kd::pooled_sources("fashion-mnist++data/mnist"), "an empty source");
}

}  // namespace

TEST(Precision, Bf16AutocastKeepsFp32MasterWeightsAndSeesUpdates) {
  auto m = model("mlp", kNames);
  m->train(false);
  auto x = torch::rand({4, 1, 28, 28});
  auto ref = m->forward(x);
  kd::set_precision("bf16");
  auto y = m->forward(x);
  EXPECT_EQ(y.scalar_type(), torch::kFloat32);  // outputs back in fp32
  EXPECT_LT((y - ref).abs().max().item<double>(),
            0.05 * std::max(1.0, ref.abs().max().item<double>()));
  EXPECT_FALSE(torch::equal(y, ref));  // really computed in bf16
  y.sum().backward();
  for (const auto& p : m->parameters()) {
    EXPECT_EQ(p.scalar_type(), torch::kFloat32);
    if (p.grad().defined()) {
      EXPECT_EQ(p.grad().scalar_type(), torch::kFloat32);
    }
  }
  // A weight update is seen by the next pass: the autocast cache does not outlive a forward.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m->parameters()) p.zero_();
  }
  EXPECT_LT(m->forward(x).abs().max().item<double>(), 1e-6);
  kd::set_precision("fp32");
  EXPECT_FALSE(at::autocast::is_cpu_enabled());
  if (kd::cpu_bf16_flags().empty())
    EXPECT_KD_ERROR(kd::check_precision("bf16", "cpu"),
                    "this CPU has no native bfloat16 arithmetic");
  else
    kd::check_precision("bf16", "cpu");
  EXPECT_KD_ERROR(kd::check_precision("fp16", "cpu"), "expected fp32 or bf16");
}
