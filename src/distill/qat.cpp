#include "qat.h"

#include <filesystem>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/distributed.h"
#include "kd/core/error.h"
#include "kd/models/input.h"
#include "kd/models/quantize.h"
#include "summary.h"

namespace kd {

namespace fs = std::filesystem;

namespace {
QuantizeOptions convert_options(const RunConfig& cfg) {
  QuantizeOptions o;
  o.allow_fp32_layers = cfg.qat.allow_fp32_layers;
  return o;
}
}  // namespace

void check_quantizable(const RunConfig& cfg, Model& student) {
  if (cfg.qat.precision.empty()) return;
  // The untrained network through the same passes the trained one will take: one fake-quantized
  // forward pass gives the ranges, the conversion names what has no INT8 kernel.
  auto probe = prepare_qat(student);
  {
    torch::NoGradGuard no_grad;
    probe->train(true);
    probe->forward(random_input(student.spec(), 2));
  }
  probe->train(false);
  try {
    convert_qat(*probe, convert_options(cfg));
  } catch (const Error& e) {
    fail("--qat {} of {}: {}", cfg.qat.precision, cfg.arch, first_line(e.what()));
  }
}

std::unique_ptr<Model> train_quantization_aware(
    const RunConfig& cfg, bool resume, const std::function<nlohmann::json(Model&)>& fp32_test,
    const std::function<double(Model&)>& eval_score, const QatPhase& phase,
    nlohmann::json& summary) {
  KD_CHECK(!dist::active(), "--qat runs in one process (not under kd launch)");
  const fs::path dir(cfg.out);
  // A resumed run may already have replaced model.pt with the INT8 model.
  if (!(resume && fs::exists(dir / "fp32" / "model.json")))
    save_model(*load_model(cfg.out), (dir / "fp32").string());
  auto fp32 = load_model((dir / "fp32").string());
  summary["fp32_test"] = fp32_test(*fp32);
  auto qat = prepare_qat(*fp32);
  TrainConfig q = cfg.train;
  q.epochs = cfg.qat.epochs - cfg.qat.freeze_epochs;
  q.optim.lr *= cfg.qat.lr_scale;
  q.schedule.warmup_epochs = 0;
  double seconds = phase(*qat, q, cfg.runtime.seed, (dir / "qat").string());
  if (cfg.qat.freeze_epochs > 0) {
    // Ranges fixed, the weights settle into them at a tenth of the learning rate.
    freeze_observers(*qat);
    q.epochs = cfg.qat.freeze_epochs;
    q.optim.lr *= 0.1;
    q.schedule.name = "constant";
    seconds += phase(*qat, q, cfg.runtime.seed + 1, (dir / "qat-frozen").string());
  }
  qat->train(false);
  QuantizedOps ops;
  auto int8 = convert_qat(*qat, convert_options(cfg), &ops);
  const double simulated = eval_score(*qat), converted = eval_score(*int8);
  spdlog::info("--qat {}: eval score {:.4f} fake-quantized, {:.4f} converted", cfg.qat.precision,
               simulated, converted);
  if (converted < simulated - kMaxInt8Drop)
    fail(
        "--qat {}: the converted INT8 model scores {:.4f} on the eval split, {:.4f} below the "
        "last quantization-aware epoch's {:.4f} (more than {}): the conversion lost what training "
        "simulated; OUT/fp32 keeps the fp32 model",
        cfg.qat.precision, converted, simulated - converted, simulated, kMaxInt8Drop);
  save_model(*int8, cfg.out);
  summary["qat"] = {{"epochs", cfg.qat.epochs},
                    {"frozen_epochs", cfg.qat.freeze_epochs},
                    {"lr", cfg.train.optim.lr * cfg.qat.lr_scale},
                    {"allow_fp32_layers", cfg.qat.allow_fp32_layers},
                    {"eval_fake_quantized", simulated},
                    {"eval_int8", converted},
                    {"seconds", seconds}};
  summary["ops"] = ops_summary(ops);
  return load_model(cfg.out);
}

}  // namespace kd
