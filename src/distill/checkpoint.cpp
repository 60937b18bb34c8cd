#include "kd/distill/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include <spdlog/spdlog.h>

#include "kd/core/crc.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/json.h"

namespace kd {
namespace {

constexpr int kKept = 2;

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
      // Only files inside this folder: a name like "/dev/zero" or "../x" is a damaged description.
      KD_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "." &&
                   name != ".." && name.find('\0') == std::string::npos,
               "{}: bad file name '{}'", state_file.string(), name.substr(0, 80));
      uint64_t size = 0;
      const fs::path p = folder / name;
      KD_CHECK(fs::exists(p), "{}: missing", p.string());
      const uint32_t crc = file_crc32(p, &size);
      const auto bytes = json_int<uint64_t>(f.at("bytes"), state_file.string() + ": bytes");
      KD_CHECK(size == bytes, "{}: {} bytes, expected {} (truncated?)", p.string(), size, bytes);
      KD_CHECK(crc == json_int<uint32_t>(f.at("crc32"), state_file.string() + ": crc32"),
               "{}: CRC-32 mismatch (corrupt)", p.string());
    }
    ResumeState s;
    s.epoch = json_int<int64_t>(j.at("epoch"), state_file.string() + ": epoch");
    s.best_score = j.at("best_score").get<double>();
    s.best_epoch = json_int<int64_t>(j.at("best_epoch"), state_file.string() + ": best_epoch");
    s.images_per_s_sum = j.at("images_per_s_sum").get<double>();
    s.history = j.at("history").get<std::vector<nlohmann::json>>();
    const std::string expected = fmt::format("epoch-{:04d}", s.epoch);
    KD_CHECK(s.epoch >= 1 && folder.filename() == expected,
             "{}: epoch {} does not match the folder name", state_file.string(), s.epoch);
    KD_CHECK(s.best_epoch >= 0 && s.best_epoch <= s.epoch && std::isfinite(s.best_score) &&
                 std::isfinite(s.images_per_s_sum),
             "{}: best epoch or scores out of range", state_file.string());
    KD_CHECK(static_cast<int64_t>(s.history.size()) == s.epoch &&
                 std::all_of(s.history.begin(), s.history.end(),
                             [](const nlohmann::json& r) { return r.is_object(); }),
             "{}: history must hold one record per epoch", state_file.string());
    return s;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: bad checkpoint description ({})", state_file.string(), e.what());
  }
}

// The checkpoint's files, then state.json with each one's size and CRC-32.
void write_checkpoint_files(const fs::path& tmp, const ResumeState& state,
                            const std::function<void(const fs::path&)>& write_files) {
  write_files(tmp);
  nlohmann::json files = nlohmann::json::object();
  for (const auto& e : fs::directory_iterator(tmp)) {
    uint64_t size = 0;
    const uint32_t crc = file_crc32(e.path(), &size);
    files[e.path().filename().string()] = {{"bytes", size}, {"crc32", crc}};
  }
  nlohmann::json j = {
      {"epoch", state.epoch},           {"best_score", state.best_score},
      {"best_epoch", state.best_epoch}, {"images_per_s_sum", state.images_per_s_sum},
      {"history", state.history},       {"files", files},
      {"written", utc_timestamp()}};
  write_text_atomically(tmp / "state.json", j.dump(1) + "\n");
}

}  // namespace

void write_checkpoint(const fs::path& run_dir, const ResumeState& state,
                      const std::function<void(const fs::path&)>& write_files) {
  const fs::path final_dir = run_dir / "checkpoints" / fmt::format("epoch-{:04d}", state.epoch);
  const fs::path tmp = final_dir.string() + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    write_checkpoint_files(tmp, state, write_files);
  } catch (...) {  // a full disk: no half-written folder left behind
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  auto folders = checkpoint_folders(run_dir);
  for (size_t i = 0; i + kKept < folders.size(); ++i) fs::remove_all(folders[i]);
}

std::optional<FoundCheckpoint> find_checkpoint(
    const fs::path& run_dir, const std::function<void(const FoundCheckpoint&)>& load) {
  auto folders = checkpoint_folders(run_dir);
  for (auto it = folders.rbegin(); it != folders.rend(); ++it) {
    try {
      FoundCheckpoint found{*it, read_state(*it)};
      if (load) load(found);
      return found;
    } catch (const Error& e) {
      spdlog::warn("checkpoint {} skipped: {}", it->filename().string(), e.what());
    }
  }
  return std::nullopt;
}

}  // namespace kd
