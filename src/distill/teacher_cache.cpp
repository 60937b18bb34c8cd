#include "kd/distill/teacher_cache.h"

#include <cstdlib>

#include <fmt/format.h>
#include <torch/torch.h>

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
  data_hash.add(data.images);
  return fmt::format("{:016x}-{:016x}", model_hash.h, data_hash.h);
}

CachedLogits cached_teacher_logits(Model& teacher, const Dataset& data, const std::string& dir,
                                   int64_t batch_size, torch::Device device, bool all_ranks) {
  all_ranks = all_ranks && dist::active();
  CachedLogits out;
  out.path = (fs::path(dir) / ("teacher-" + teacher_cache_key(teacher, data) + ".pt")).string();
  if (fs::exists(out.path)) {
    try {
      torch::load(out.logits, out.path);
      out.hit = out.logits.dim() == 2 && out.logits.size(0) == data.size();
    } catch (const c10::Error&) {
      // A damaged entry is recomputed and replaced below.
    }
  }
  // Ranks on other machines have other caches: use the entry only if every rank has it.
  if (all_ranks) out.hit = dist::sum({out.hit ? 1.0 : 0.0})[0] == static_cast<double>(dist::world_size());
  if (out.hit) return out;
  out.logits = all_ranks ? predict_logits_all_ranks(teacher, data, batch_size, device)
                         : predict_logits(teacher, data, batch_size, device);
  if (all_ranks && !dist::is_main()) return out;
  try {
    write_atomically(out.path, [&](const fs::path& tmp) {
      write_serialized(tmp, [&](std::ostream& s) { torch::save(out.logits, s); });
    });
  } catch (const std::exception&) {
    // The cache is an optimisation: a read-only or full disk must not fail the run.
  }
  return out;
}

}  // namespace kd
