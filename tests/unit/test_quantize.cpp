// kd::quantize_int8 on kd's architectures and a PyTorch TorchScript model: INT8 kernels run (the
// recorded ops), outputs stay close to fp32, the saved run loads back the same, and what cannot
// be quantized is refused with the ops named.
#include <cstdlib>
#include <map>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/eval/profile.h"
#include "kd/models/export.h"
#include "kd/models/input.h"
#include "kd/models/model.h"
#include "kd/models/quantize.h"
#include "model_util.h"
#include "test_util.h"

namespace {

// n random calibration batches of 16 images.
std::function<bool(torch::Tensor&)> batches(const kd::Model& m, int n) {
  const auto& in = m.spec().input_shape;
  return [in, n, i = 0](torch::Tensor& x) mutable {
    if (i++ >= n) return false;
    x = torch::rand({16, in[0], in[1], in[2]});
    return true;
  };
}

int64_t calls(const std::vector<std::pair<std::string, int64_t>>& ops, const std::string& name) {
  for (const auto& [n, c] : ops)
    if (n == name) return c;
  return 0;
}

// Largest |int8 - fp32| relative to the fp32 output's range, on fresh random images.
double relative_error(kd::Model& fp32, kd::Model& int8) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(11);
  auto x = kd::random_input(fp32.spec(), 8);
  auto want = fp32.forward(x), got = int8.forward(x);
  EXPECT_EQ(got.sizes(), want.sizes());
  return ((got - want).abs().max() / (want.max() - want.min())).item<double>();
}

TEST(Quantize, TheReferenceTeacherRunsOnInt8KernelsCloseToFp32) {
  auto m = test_model("fmnist-teacher", {1, 28, 28}, 10);
  kd::QuantizedOps ops;
  auto q = kd::quantize_int8(*m, batches(*m, 8), {}, &ops);
  EXPECT_EQ(q->spec().precision, "int8");
  EXPECT_EQ(q->spec().quantization["engine"], "onednn");
  EXPECT_EQ(q->spec().quantization["batch_norms_folded"], 3);
  EXPECT_EQ(q->spec().quantization["calibration_images"], 128);
  // Every convolution and linear layer is a quantized kernel; nothing computes on floats.
  EXPECT_EQ(calls(ops.int8, "quantized::conv2d") + calls(ops.int8, "quantized::conv2d_relu"), 3);
  EXPECT_EQ(calls(ops.int8, "quantized::linear") + calls(ops.int8, "quantized::linear_relu"), 2);
  EXPECT_TRUE(ops.fp32.empty()) << ops.fp32.front().first;
  EXPECT_LT(relative_error(*m, *q), 0.05);
  // Weights packed into the kernels still count, as the fp32 model's.
  EXPECT_EQ(q->num_parameters(), m->num_parameters());
  EXPECT_EQ(kd::count_macs(*q, torch::kCPU), kd::count_macs(*m, torch::kCPU));
  // The model is untouched: folding the batch norms made new tensors.
  auto again = test_model("fmnist-teacher", {1, 28, 28}, 10);
  torch::NoGradGuard no_grad;
  auto x = torch::rand({2, 1, 28, 28});
  EXPECT_TRUE(torch::equal(m->forward(x), again->forward(x)));
}

TEST(Quantize, ASavedInt8RunLoadsBackTheSame) {
  auto m = test_model("fmnist-student", {1, 28, 28}, 10);
  auto q = kd::quantize_int8(*m, batches(*m, 4), {kd::Observer::percentile, false});
  EXPECT_EQ(q->spec().quantization["observer"], "percentile");
  TempDir dir;
  kd::save_model(*q, dir.path.string());
  auto loaded = kd::load_model(dir.path.string());
  EXPECT_EQ(loaded->spec().precision, "int8");
  torch::NoGradGuard no_grad;
  auto x = torch::rand({5, 1, 28, 28});
  EXPECT_TRUE(torch::equal(q->forward(x), loaded->forward(x)));
  EXPECT_KD_ERROR(kd::quantize_int8(*loaded, batches(*m, 1), {}), "already INT8");
  EXPECT_KD_ERROR(kd::optimize_for_inference(*loaded), "already optimized");
}

// What this CPU's oneDNN kernels dispatch: VNNI (32-bit accumulation) unless the CPU lacks it or
// ONEDNN_MAX_CPU_ISA caps the ISA below it (ctest's int8_without_vnni entry sets AVX2).
bool kernels_have_vnni() {
  if (const char* isa = std::getenv("ONEDNN_MAX_CPU_ISA"))
    if (std::string(isa) == "AVX2" || std::string(isa) == "AVX512_CORE") return false;
  const std::string cpuinfo = kd::read_text("/proc/cpuinfo");
  return cpuinfo.find(" avx512_vnni") != std::string::npos ||
         cpuinfo.find(" avx_vnni") != std::string::npos;
}

TEST(Int8Kernels, TheActivationRangeFollowsWhatTheKernelsComputeExactly) {
  EXPECT_EQ(kd::int8_activation_bits(), kernels_have_vnni() ? 8 : 7);
  auto m = test_model("fmnist-student", {1, 28, 28}, 10);
  auto q = kd::quantize_int8(*m, batches(*m, 2), {});
  EXPECT_EQ(q->spec().quantization["activation_bits"], kd::int8_activation_bits());
}

TEST(Int8Kernels, AModelCalibratedForVnniIsRefusedWhereTheKernelsSaturate) {
  auto m = test_model("fmnist-student", {1, 28, 28}, 10);
  auto q = kd::quantize_int8(*m, batches(*m, 2), {});
  TempDir dir;
  kd::save_model(*q, dir.path.string());
  auto desc = nlohmann::json::parse(kd::read_text(dir.path / "model.json"));
  desc["quantization"]["activation_bits"] = 8;
  kd::write_text_atomically(dir.path / "model.json", desc.dump(2));
  if (kd::int8_activation_bits() == 8) {
    EXPECT_NO_THROW(kd::load_model(dir.path.string()));
  } else {
    EXPECT_KD_ERROR(kd::load_model(dir.path.string()), "8-bit activations");
  }
  // 7 bits are exact on every CPU.
  desc["quantization"]["activation_bits"] = 7;
  kd::write_text_atomically(dir.path / "model.json", desc.dump(2));
  EXPECT_NO_THROW(kd::load_model(dir.path.string()));
}

TEST(Quantize, ATorchScriptModelFromPyTorchToo) {
  auto m = kd::load_model(std::string(KD_FIXTURE_DIR) + "/student_ts.pt");
  kd::QuantizedOps ops;
  auto q = kd::quantize_int8(*m, batches(*m, 4), {}, &ops);
  EXPECT_GT(calls(ops.int8, "quantized::conv2d") + calls(ops.int8, "quantized::conv2d_relu"), 0);
  EXPECT_LT(relative_error(*m, *q), 0.05);
}

TEST(Quantize, OpsWithoutInt8KernelsAreNamedAndKeptOnlyWhenAllowed) {
  // SiLU (in a student written in PyTorch) has no INT8 kernel on the engine.
  auto m = kd::load_model(std::string(KD_FIXTURE_DIR) + "/student_silu_ts.pt");
  // The max pools after them read fp32 and run in fp32 too.
  EXPECT_KD_ERROR(kd::quantize_int8(*m, batches(*m, 2), {}),
                  "have no INT8 kernel on the onednn engine and would run in fp32 between a "
                  "dequantize and a quantize: aten::max_pool2d (x2), aten::silu (x2); pass "
                  "--allow-fp32-layers");
  kd::QuantizedOps ops;
  auto q = kd::quantize_int8(*m, batches(*m, 2), {kd::Observer::minmax, true}, &ops);
  EXPECT_EQ(calls(ops.fp32, "aten::silu"), 2);
  EXPECT_GT(calls(ops.int8, "quantized::conv2d"), 0);
  EXPECT_EQ(q->spec().quantization["fp32_ops"].value("aten::silu", 0), 2);
  EXPECT_LT(relative_error(*m, *q), 0.05);
}

TEST(Quantize, ADetectorRunsEntirelyOnInt8Kernels) {
  // EfficientDet's ReLU6 (as a quantized hardtanh) and the BiFPN's fusions, weighted by learned
  // numbers (as quantized scalar products and adds): no op left in fp32 between a dequantize and
  // a quantize, where each such island cost d0 more than INT8 saved (4x slower than fp32).
  auto m = test_model("effdet-d0", {3, 64, 64}, 3);
  {
    // Fusion weights away from their initial ones, so that folding the wrong one would show.
    torch::NoGradGuard no_grad;
    torch::manual_seed(3);
    for (auto& [name, t] : m->state())
      if (name.find("weights") != std::string::npos) t.uniform_(0.2, 2.0);
  }
  kd::QuantizedOps ops;
  auto q = kd::quantize_int8(*m, batches(*m, 4), {}, &ops);
  EXPECT_TRUE(ops.fp32.empty()) << ops.fp32.front().first;
  // 2 BiFPN layers of 4 fusions with 2, 2, 3 and 2 inputs.
  EXPECT_EQ(calls(ops.int8, "quantized::mul_scalar"), 18);
  EXPECT_GT(calls(ops.int8, "aten::hardtanh"), 0);
  EXPECT_LT(relative_error(*m, *q), 0.1);
}

TEST(Quantize, ADetectorsSharedHeadConvolutionsKeepEachLevelsBatchNorm) {
  // EfficientDet's heads call one convolution on every pyramid level, each level with its own
  // batch norm. Folding them all into the shared weight rescaled it once per level (d0 lost 28 of
  // its 30 mAP points in INT8). With trained-looking statistics, different per level, the INT8
  // detector must still compute what the fp32 one does.
  auto m = test_model("effdet-d0", {3, 64, 64}, 3);
  {
    torch::NoGradGuard no_grad;
    torch::manual_seed(5);
    std::map<std::string, torch::Tensor> state;
    for (auto& [name, t] : m->state()) state[name] = t;
    const std::string var = ".running_var";
    for (auto& [name, t] : state) {
      if (name.size() <= var.size() || name.compare(name.size() - var.size(), var.size(), var))
        continue;
      const std::string bn = name.substr(0, name.size() - var.size());
      t.uniform_(0.3, 3.0);
      state.at(bn + ".running_mean").uniform_(-0.5, 0.5);
      state.at(bn + ".weight").uniform_(0.5, 2.0);
      state.at(bn + ".bias").uniform_(-0.5, 0.5);
    }
  }
  auto q = kd::quantize_int8(*m, batches(*m, 4), {});
  // Box offsets (the last 4 values of each anchor) are small beside the class logits: compared
  // on their own, each as a mean error against its mean magnitude.
  torch::NoGradGuard no_grad;
  auto x = kd::random_input(m->spec(), 8);
  auto want = m->forward(x), got = q->forward(x);
  const auto err = [&](int64_t from, int64_t n) {
    auto w = want.narrow(-1, from, n), g = got.narrow(-1, from, n);
    return ((g - w).abs().mean() / w.abs().mean()).item<double>();
  };
  EXPECT_LT(err(0, 3), 0.1);  // class logits
  EXPECT_LT(err(3, 4), 0.1);  // box offsets
}

TEST(Quantize, CalibrationOfTheWrongShapeOrNoneIsRefused) {
  auto m = test_model("fmnist-student", {1, 28, 28}, 10);
  EXPECT_KD_ERROR(kd::quantize_int8(*m,
                                    [n = 0](torch::Tensor& x) mutable {
                                      x = torch::rand({4, 3, 28, 28});
                                      return n++ == 0;
                                    },
                                    {}),
                  "calibration batch of shape [4, 3, 28, 28] does not match");
  EXPECT_KD_ERROR(kd::quantize_int8(*m, [](torch::Tensor&) { return false; }, {}),
                  "no calibration images");
  EXPECT_KD_ERROR(kd::parse_observer("mean"), "expected minmax or percentile");
}

}  // namespace

namespace {

TEST(QuantizationAwareTraining, TrainsThroughFakeQuantizationAndConvertsToWhatItSimulated) {
  auto m = test_model("fmnist-teacher", {1, 28, 28}, 10);
  auto qat = kd::prepare_qat(*m);
  EXPECT_EQ(qat->spec().quantization["batch_norms_folded"], 3);
  // A few steps of plain SGD: gradients reach the weights through the fake quantization.
  qat->train(true);
  auto params = qat->parameters();
  ASSERT_FALSE(params.empty());
  torch::optim::SGD sgd(params, torch::optim::SGDOptions(0.01));
  const auto before = params[0].detach().clone();
  torch::manual_seed(5);
  for (int step = 0; step < 5; ++step) {
    auto x = torch::rand({16, 1, 28, 28});
    auto loss = torch::cross_entropy_loss(qat->forward(x), torch::randint(10, {16}));
    sgd.zero_grad();
    loss.backward();
    sgd.step();
  }
  EXPECT_FALSE(torch::equal(before, params[0].detach()));
  kd::freeze_observers(*qat);
  qat->train(false);
  kd::QuantizedOps ops;
  auto q = kd::convert_qat(*qat, {}, &ops);
  EXPECT_EQ(q->spec().precision, "int8");
  EXPECT_EQ(q->spec().quantization["method"], "quantization-aware training");
  EXPECT_EQ(calls(ops.int8, "quantized::conv2d_relu"), 3);
  EXPECT_TRUE(ops.fp32.empty());
  // The INT8 model computes what the fake-quantized one simulated (up to rounding at the edges).
  EXPECT_LT(relative_error(*qat, *q), 0.02);
  EXPECT_KD_ERROR(kd::convert_qat(*m, {}), "not a quantization-aware model");
}

}  // namespace

TEST(QuantizationAwareTraining, DetectorTrainsAndConvertsEntirelyToInt8) {
  // EfficientDet d0: its convolutions learn under fake quantization (the BiFPN's fusion weights
  // are fixed at their fp32 values) and every op converts to an INT8 kernel.
  auto m = test_model("effdet-d0", {3, 64, 64}, 3);
  auto qat = kd::prepare_qat(*m);
  qat->train(true);
  auto params = qat->parameters();
  ASSERT_FALSE(params.empty());
  torch::optim::SGD sgd(params, torch::optim::SGDOptions(0.001));
  torch::manual_seed(5);
  for (int step = 0; step < 3; ++step) {
    auto y = qat->forward(torch::rand({4, 3, 64, 64}));
    auto loss = y.pow(2).mean();
    sgd.zero_grad();
    loss.backward();
    sgd.step();
  }
  kd::freeze_observers(*qat);
  qat->train(false);
  kd::QuantizedOps ops;
  auto q = kd::convert_qat(*qat, {}, &ops);
  EXPECT_EQ(q->spec().precision, "int8");
  EXPECT_GT(calls(ops.int8, "quantized::conv2d") + calls(ops.int8, "quantized::conv2d_relu"), 0);
  EXPECT_TRUE(ops.fp32.empty()) << ops.fp32.front().first;
  EXPECT_LT(relative_error(*qat, *q), 0.1);
}
