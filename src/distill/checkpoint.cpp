#include "kd/distill/checkpoint.h"

#include <algorithm>
#include <fstream>

#include <spdlog/spdlog.h>
#include <zlib.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/models/model.h"

namespace kd {
namespace {

constexpr int kKept = 2;

uint32_t file_crc(const fs::path& p, uint64_t* size) {
  std::ifstream in(p, std::ios::binary);
  KD_CHECK(in.good(), "{}: cannot read", p.string());
  uLong crc = crc32(0L, Z_NULL, 0);
  std::vector<char> buf(1 << 16);
  *size = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = in.gcount();
    if (n <= 0) break;
    crc = crc32(crc, reinterpret_cast<const Bytef*>(buf.data()), static_cast<uInt>(n));
    *size += static_cast<uint64_t>(n);
  }
  return static_cast<uint32_t>(crc);
}

std::vector<fs::path> checkpoint_folders(const fs::path& run_dir) {
  std::vector<fs::path> out;
  const fs::path root = run_dir / "checkpoints";
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.rfind("epoch-", 0) == 0 && name.find('.') == std::string::npos)
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());  // epoch-NNNN: zero-padded, so names sort by epoch
  return out;
}

ResumeState read_state(const fs::path& folder) {
  const fs::path state_file = folder / "state.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(state_file));
  } catch (const std::exception& e) {
    fail("{}: unreadable ({})", state_file.string(), std::string(e.what()).substr(0, 120));
  }
  try {
    for (const auto& [name, f] : j.at("files").items()) {
      uint64_t size = 0;
      const fs::path p = folder / name;
      KD_CHECK(fs::exists(p), "{}: missing", p.string());
      const uint32_t crc = file_crc(p, &size);
      KD_CHECK(size == f.at("bytes").get<uint64_t>(), "{}: {} bytes, expected {} (truncated?)", p.string(), size,
               f.at("bytes").get<uint64_t>());
      KD_CHECK(crc == f.at("crc32").get<uint32_t>(), "{}: CRC-32 mismatch (corrupt)", p.string());
    }
    ResumeState s;
    s.epoch = j.at("epoch").get<int64_t>();
    s.best_score = j.at("best_score").get<double>();
    s.best_epoch = j.at("best_epoch").get<int64_t>();
    s.images_per_s_sum = j.at("images_per_s_sum").get<double>();
    s.history = j.at("history").get<std::vector<nlohmann::json>>();
    return s;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: bad checkpoint description ({})", state_file.string(), e.what());
  }
}

}  // namespace

void write_checkpoint(const fs::path& run_dir, const ResumeState& state,
                      const std::function<void(const fs::path&)>& write_files) {
  const fs::path final_dir = run_dir / "checkpoints" / fmt::format("epoch-{:04d}", state.epoch);
  const fs::path tmp = final_dir.string() + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  write_files(tmp);
  nlohmann::json files = nlohmann::json::object();
  for (const auto& e : fs::directory_iterator(tmp)) {
    uint64_t size = 0;
    const uint32_t crc = file_crc(e.path(), &size);
    files[e.path().filename().string()] = {{"bytes", size}, {"crc32", crc}};
  }
  nlohmann::json j = {{"epoch", state.epoch},           {"best_score", state.best_score},
                      {"best_epoch", state.best_epoch}, {"images_per_s_sum", state.images_per_s_sum},
                      {"history", state.history},       {"files", files},
                      {"written", utc_timestamp()}};
  write_text_atomically(tmp / "state.json", j.dump(1) + "\n");
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  auto folders = checkpoint_folders(run_dir);
  for (size_t i = 0; i + kKept < folders.size(); ++i) fs::remove_all(folders[i]);
}

std::optional<FoundCheckpoint> find_checkpoint(const fs::path& run_dir) {
  auto folders = checkpoint_folders(run_dir);
  for (auto it = folders.rbegin(); it != folders.rend(); ++it) {
    try {
      return FoundCheckpoint{*it, read_state(*it)};
    } catch (const Error& e) {
      spdlog::warn("checkpoint {} skipped: {}", it->filename().string(), e.what());
    }
  }
  return std::nullopt;
}

namespace {

void load_archive(const fs::path& p, torch::Device device,
                  const std::function<void(torch::serialize::InputArchive&)>& read) {
  try {
    torch::serialize::InputArchive a;
    a.load_from(p.string(), device);
    read(a);
  } catch (const c10::Error& e) {
    const std::string why = e.what_without_backtrace();
    fail("{}: cannot load ({})", p.string(), why.substr(0, why.find('\n')));
  }
}

}  // namespace

void save_training_state(const fs::path& folder, Model& model, torch::optim::Optimizer& optimizer,
                         const std::vector<torch::Tensor>& extra) {
  model.save((folder / "model.pt").string());
  torch::serialize::OutputArchive opt;
  optimizer.save(opt);
  opt.save_to((folder / "optimizer.pt").string());
  if (!extra.empty()) {
    torch::serialize::OutputArchive a;
    for (size_t k = 0; k < extra.size(); ++k) a.write(fmt::format("p{}", k), extra[k]);
    a.save_to((folder / "strategy.pt").string());
  }
  torch::save(at::detail::getDefaultCPUGenerator().get_state(), (folder / "rng.pt").string());
}

void load_training_state(const fs::path& folder, Model& model, torch::optim::Optimizer& optimizer,
                         const std::vector<torch::Tensor>& extra, torch::Device device) {
  model.load((folder / "model.pt").string());
  load_archive(folder / "optimizer.pt", device, [&](torch::serialize::InputArchive& a) { optimizer.load(a); });
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

}  // namespace kd
