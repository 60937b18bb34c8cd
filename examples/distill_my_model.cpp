// Distilling one's own torch::nn::Module with kd's library API, not its CLI: the student below is
// plain LibTorch; the teacher is a TorchScript file saved by PyTorch (torch.jit.save), or a kd run.
//
//   distill_my_model TEACHER OUT_DIR [EPOCHS] [LIMIT]
//
// Trains the student on Fashion-MNIST (Debian's dataset-fashion-mnist, split 8:2 as kd does) with
// DIST (Huang et al. 2022) plus cross-entropy, writes a kd run directory to OUT_DIR (model.json,
// model.pt, metrics.jsonl, checkpoints/), and prints the test top-1 of the teacher and the student.
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "kd/core/runtime.h"
#include "kd/distill/strategy.h"
#include "kd/distill/trainer.h"
#include "kd/eval/classify.h"
#include "kd/losses/registry.h"
#include "kd/models/model.h"
#include "kd/models/registry.h"
#include "kd/runs/run.h"

// The student: any module. This one is two convolutions and a linear layer (5k parameters).
struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl(int64_t channels, int64_t height, int64_t width, int64_t classes)
      : conv1(register_module(
            "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 8, 3).padding(1)))),
        conv2(register_module("conv2",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3).padding(1)))),
        fc(register_module("fc", torch::nn::Linear(8 * (height / 4) * (width / 4), classes))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::max_pool2d(torch::relu(conv1(x)), 2);
    h = torch::max_pool2d(torch::relu(conv2(h)), 2);
    return fc(h.flatten(1));
  }
  torch::nn::Conv2d conv1, conv2;
  torch::nn::Linear fc;
};
TORCH_MODULE(TinyNet);

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " TEACHER OUT_DIR [EPOCHS] [LIMIT]\n";
    return 2;
  }
  const std::string teacher_path = argv[1], out = argv[2];
  const int64_t epochs = argc > 3 ? std::atoll(argv[3]) : 5;
  const int64_t limit = argc > 4 ? std::atoll(argv[4]) : 0;  // 0: all 48,000 training images

  // Registered once, the module is an architecture like kd's own: kd builds, trains, saves and
  // reloads it by name (model.json says "tiny-net").
  kd::register_architecture(
      {kd::Task::classify, "tiny-net", "the example's own student", nlohmann::json::object(),
       [](const nlohmann::json&, const kd::ArchContext& ctx) {
         TinyNet net(ctx.channels, ctx.height, ctx.width, ctx.num_classes);
         kd::Network n;
         n.module = net.ptr();
         n.forward = [net](const torch::Tensor& x) mutable { return net->forward(x); };
         // No feature layers are exposed, so logit losses only (DIST, KD, DKD, MLKD, ...).
         n.forward_features = [net](const torch::Tensor& x,
                                    const std::vector<std::string>& names) mutable {
           return kd::Network::Features{net->forward(x), std::vector<torch::Tensor>(names.size())};
         };
         return n;
       }});

  const torch::Device device = kd::init_runtime({"cpu", 0, 0, false, "fp32"});
  kd::DataConfig data;
  data.source = "fashion-mnist";
  data.limit = limit;
  kd::RunData d = kd::load_run_data(data);

  std::shared_ptr<kd::Model> teacher = kd::load_model(teacher_path);
  kd::ModelSpec spec;
  spec.arch = "tiny-net";
  spec.input_shape = d.train.input_shape();
  spec.class_names = d.train.class_names;
  spec.norm = kd::compute_normalization(d.train);
  auto student = kd::create_model(spec);

  kd::DistillOptions options;
  options.losses.push_back(kd::parse_loss("dist:T=2"));  // the same spelling as --loss
  kd::DistillStrategy strategy(kd::Mode::offline, {{teacher_path, teacher}}, options);

  kd::TrainConfig train;
  train.epochs = epochs;
  train.crop_padding = 0;  // no augmentation: the teacher's logits are cached once
  train.hflip = false;
  kd::Trainer trainer(train, device, /*seed=*/0);
  kd::TrainResult result = trainer.fit(*student, strategy, d.train, d.eval, out);

  auto best = kd::load_model(out);  // the best epoch, as saved in OUT_DIR
  const double t = kd::evaluate_classifier(*teacher, d.test, 256, device).top1;
  const double s = kd::evaluate_classifier(*best, d.test, 256, device).top1;
  std::cout << "teacher test top-1 " << 100 * t << " %, distilled " << best->spec().arch << " ("
            << best->num_parameters() << " params, best epoch " << result.best_epoch << ") "
            << 100 * s << " %\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "distill_my_model: " << e.what() << "\n";
  return 1;
}
