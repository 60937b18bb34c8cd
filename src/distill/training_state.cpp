// save_training_state / load_training_state (kd/distill/checkpoint.h): the torch side of a
// checkpoint, apart from checkpoint.cpp's folder and state.json handling (which its fuzz target
// links alone).
#include <algorithm>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/distill/checkpoint.h"
#include "kd/models/model.h"

namespace kd {
namespace {

void load_archive(const fs::path& p, torch::Device device,
                  const std::function<void(torch::serialize::InputArchive&)>& read) {
  try {
    torch::serialize::InputArchive a;
    a.load_from(p.string(), device);
    read(a);
  } catch (const c10::Error& e) {
    const std::string why = e.what_without_backtrace();
    fail("{}: cannot load ({})", p.string(), first_line(why));
  }
}

void load_training_state_unchecked(const fs::path& folder, Model& model,
                                   torch::optim::Optimizer& optimizer,
                                   const std::vector<torch::Tensor>& extra, torch::Device device) {
  model.load((folder / "model.pt").string());
  load_archive(folder / "optimizer.pt", device,
               [&](torch::serialize::InputArchive& a) { optimizer.load(a); });
  if (!extra.empty())
    load_archive(folder / "strategy.pt", device, [&](torch::serialize::InputArchive& a) {
      torch::NoGradGuard no_grad;
      for (size_t k = 0; k < extra.size(); ++k) {
        torch::Tensor t;
        a.read(fmt::format("p{}", k), t);
        extra[k].copy_(t);
      }
    });
  torch::Tensor rng;
  torch::load(rng, (folder / "rng.pt").string());
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(rng);
}

}  // namespace

void save_training_state(const fs::path& folder, Model& model, torch::optim::Optimizer& optimizer,
                         const std::vector<torch::Tensor>& extra) {
  model.save((folder / "model.pt").string());
  torch::serialize::OutputArchive opt;
  optimizer.save(opt);
  write_serialized(folder / "optimizer.pt", [&](std::ostream& out) { opt.save_to(out); });
  if (!extra.empty()) {
    torch::serialize::OutputArchive a;
    for (size_t k = 0; k < extra.size(); ++k) a.write(fmt::format("p{}", k), extra[k]);
    write_serialized(folder / "strategy.pt", [&](std::ostream& out) { a.save_to(out); });
  }
  const auto rng = at::detail::getDefaultCPUGenerator().get_state();
  write_serialized(folder / "rng.pt", [&](std::ostream& out) { torch::save(rng, out); });
}

void load_training_state(const fs::path& folder, Model& model, torch::optim::Optimizer& optimizer,
                         const std::vector<torch::Tensor>& extra, torch::Device device) {
  // The CRCs in state.json prove the bytes are the ones written, not that they were written by
  // kd: a damaged archive with a forged CRC fails here as a kd::Error, so the caller falls back.
  try {
    load_training_state_unchecked(folder, model, optimizer, extra, device);
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    const std::string why = e.what_without_backtrace();
    fail("{}: cannot load ({})", folder.string(), first_line(why));
  } catch (const std::exception& e) {  // the TorchScript parser's ErrorReport is no c10::Error
    std::string why = e.what();
    std::replace(why.begin(), why.end(), '\n', ' ');
    fail("{}: cannot load ({})", folder.string(), why.substr(0, 200));
  }
}

}  // namespace kd
