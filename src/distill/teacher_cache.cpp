#include "teacher_cache.h"

#include <cstdlib>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/crc.h"
#include "kd/core/distributed.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/eval/classify.h"

namespace kd {
namespace {

// FNV-1a, 64-bit: not cryptographic, but any change to the weights or pixels changes it.
struct Fnv1a {
  uint64_t h = 1469598103934665603ULL;
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  }
  void add(const std::string& s) { add(s.data(), s.size()); }
  void add(const torch::Tensor& t) {
    auto c = t.detach().to(torch::kCPU).contiguous();
    add(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
    add(c10::str(c.sizes()));
  }
};

}  // namespace

std::string default_cache_dir() {
  if (const char* d = std::getenv("KD_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/kd";
  if (const char* d = std::getenv("HOME"); d && *d) return std::string(d) + "/.cache/kd";
  return "/tmp/kd-cache";
}

std::string teacher_cache_key(Model& teacher, const Dataset& data) {
  Fnv1a model_hash, data_hash;
  model_hash.add(teacher.spec().to_json().dump());
  for (const auto& [name, t] : teacher.state()) {
    model_hash.add(name);
    model_hash.add(t);
  }
  if (data.streamed()) {
    // The files (names, sizes, modification times), which of them, and how they are decoded.
    const uint64_t fp = data.files->fingerprint();
    data_hash.add(&fp, sizeof fp);
    data_hash.add(data.ids);
    const auto& g = data.stream.geometry;
    data_hash.add(fmt::format("{} {} {}", g.channels, g.size, g.resize));
  } else {
    data_hash.add(data.images);
  }
  data_hash.add(fmt::format("view {}", data.view));
  return fmt::format("{:016x}-{:016x}", model_hash.h, data_hash.h);
}

namespace {

// Teacher logits must be finite and of a size a classifier produces; anything else is damage
// (or a broken teacher) and must not become a training target.
constexpr double kMaxAbsLogit = 1e4;

std::string logits_problem(const torch::Tensor& logits, int64_t rows) {
  if (logits.dim() != 2 || logits.size(0) != rows)
    return fmt::format("shape {}, expected [{}, classes]", c10::str(logits.sizes()), rows);
  if (!torch::isfinite(logits).all().item<bool>()) return "non-finite values";
  if (logits.numel() > 0 && logits.abs().max().item<double>() > kMaxAbsLogit)
    return fmt::format("values beyond +-{:g}", kMaxAbsLogit);
  return "";
}

// The CRC-32 covers the key (an entry copied under another name fails) and the values.
uint32_t entry_crc(const std::string& key, const torch::Tensor& logits) {
  auto c = logits.contiguous();
  return crc32_bytes(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size(),
                     crc32_bytes(key.data(), key.size()));
}

// An entry: logits plus the CRC-32; a mismatch or damage reads as a miss with the reason.
std::string read_entry(const std::string& path, const std::string& key, int64_t rows,
                       torch::Tensor& logits) {
  torch::Tensor crc;
  try {
    torch::serialize::InputArchive a;
    a.load_from(path);
    a.read("logits", logits);
    a.read("crc32", crc);
  } catch (const std::exception&) {  // c10::Error, or the TorchScript parser's ErrorReport
    return "unreadable";
  }
  if (crc.numel() != 1 || crc.scalar_type() != torch::kInt64 ||
      logits.scalar_type() != torch::kFloat32)
    return "unreadable";
  if (auto why = logits_problem(logits, rows); !why.empty()) return why;
  if (static_cast<uint32_t>(crc.item<int64_t>()) != entry_crc(key, logits))
    return "CRC-32 mismatch";
  return "";
}

}  // namespace

CachedLogits cached_teacher_logits(Model& teacher, const Dataset& data, const std::string& dir,
                                   int64_t batch_size, torch::Device device, bool all_ranks) {
  all_ranks = all_ranks && dist::active();
  CachedLogits out;
  const std::string key = teacher_cache_key(teacher, data);
  out.path = (fs::path(dir) / ("teacher-" + key + ".pt")).string();
  if (auto what = special_file(out.path)) {
    // A FIFO would block the read; write_atomically refuses to replace it.
    spdlog::warn("teacher cache {}: {}, not a regular file; not reading or replacing it", out.path,
                 *what);
  } else if (fs::exists(out.path)) {
    const std::string why = read_entry(out.path, key, data.size(), out.logits);
    out.hit = why.empty();
    if (!out.hit) spdlog::warn("teacher cache {}: {}; recomputing it", out.path, why);
  }
  // Ranks on other machines have other caches: use the entry only if every rank has it.
  if (all_ranks)
    out.hit = dist::sum({out.hit ? 1.0 : 0.0})[0] == static_cast<double>(dist::world_size());
  if (out.hit) return out;
  out.logits = all_ranks ? predict_logits_all_ranks(teacher, data, batch_size, device)
                         : predict_logits(teacher, data, batch_size, device);
  if (auto why = logits_problem(out.logits, data.size()); !why.empty())
    fail(
        "the teacher's logits over the training images have {}: the teacher is broken, not the "
        "student's settings",
        why);
  if (all_ranks && !dist::is_main()) return out;
  try {
    write_atomically(out.path, [&](const fs::path& tmp) {
      torch::serialize::OutputArchive a;
      a.write("logits", out.logits);
      a.write("crc32", torch::tensor(static_cast<int64_t>(entry_crc(key, out.logits))));
      write_serialized(tmp, [&](std::ostream& s) { a.save_to(s); });
    });
  } catch (const std::exception&) {
    // The cache is an optimisation: a read-only or full disk must not fail the run.
  }
  return out;
}

}  // namespace kd
