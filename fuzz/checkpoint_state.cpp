// Checkpoint descriptions (checkpoints/epoch-NNNN/state.json, kd/distill/checkpoint.h): a damaged
// one is skipped with a warning, never trusted; what is accepted is consistent.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <spdlog/spdlog.h>

#include "kd/core/error.h"
#include "kd/distill/checkpoint.h"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path run = [] {
    spdlog::set_level(spdlog::level::off);
    fs::path r = fs::temp_directory_path() / ("kd-fuzz-ckpt-" + std::to_string(getpid()));
    fs::create_directories(r / "checkpoints" / "epoch-0002");
    std::ofstream(r / "checkpoints" / "epoch-0002" / "model.pt") << "weights";  // 7 bytes
    return r;
  }();
  std::ofstream(run / "checkpoints" / "epoch-0002" / "state.json", std::ios::binary)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    if (auto found = kd::find_checkpoint(run)) {
      const auto& s = found->state;
      if (s.epoch != 2 || s.history.size() != 2 || s.best_epoch < 0 || s.best_epoch > s.epoch)
        __builtin_trap();
    }
  } catch (const kd::Error&) {
  }
  return 0;
}
