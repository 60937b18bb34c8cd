#include "teacher_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

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
// (or a broken teacher) and must not become a training target. Checked in slices: an entry can
// be larger than memory.
constexpr double kMaxAbsLogit = 1e4;

std::string logits_problem(const torch::Tensor& logits, int64_t rows) {
  if (logits.dim() != 2 || logits.size(0) != rows)
    return fmt::format("shape {}, expected [{}, classes]", c10::str(logits.sizes()), rows);
  constexpr int64_t kSlice = 1 << 16;
  for (int64_t s = 0; s < rows; s += kSlice) {
    auto part = logits.narrow(0, s, std::min(kSlice, rows - s)).to(torch::kFloat32);
    if (!torch::isfinite(part).all().item<bool>()) return "non-finite values";
    if (part.numel() > 0 && part.abs().max().item<double>() > kMaxAbsLogit)
      return fmt::format("values beyond +-{:g}", kMaxAbsLogit);
  }
  return "";
}

// An entry: a 32-byte header (magic, rows, columns, the CRC-32 of the key and the values), then
// the logits as float16, row by row: read by memory-mapping, so a teacher's answers for millions
// of images stay on disk (in the page cache) and only a batch's rows are read at each step.
constexpr char kMagic[8] = {'K', 'D', 'T', 'E', 'A', 'C', 'H', '1'};
struct Header {
  char magic[8];
  int64_t rows;
  int64_t cols;
  uint32_t crc;
  uint32_t reserved;
};
static_assert(sizeof(Header) == 32);

uint32_t entry_crc(const std::string& key, const void* values, size_t bytes) {
  return crc32_bytes(values, bytes, crc32_bytes(key.data(), key.size()));
}

// A read-only mapping of `path` as float16 [rows, cols]; unmapped when the tensor goes.
torch::Tensor map_values(const std::string& path, const Header& h) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  const size_t bytes = sizeof(Header) + static_cast<size_t>(h.rows * h.cols) * 2;
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return {};
  return torch::from_blob(
      static_cast<char*>(p) + sizeof(Header), {h.rows, h.cols},
      [p, bytes](void*) { ::munmap(p, bytes); }, torch::TensorOptions().dtype(torch::kFloat16));
}

// Reads an entry: a mismatch or damage reads as a miss with the reason.
std::string read_entry(const std::string& path, const std::string& key, int64_t rows,
                       torch::Tensor& logits) {
  Header h{};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in.read(reinterpret_cast<char*>(&h), sizeof h) ||
        std::memcmp(h.magic, kMagic, sizeof kMagic) != 0)
      return "unreadable";
  }
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec || h.rows < 0 || h.cols <= 0 || h.cols > (int64_t{1} << 24) ||
      size != sizeof(Header) + static_cast<uintmax_t>(h.rows) * static_cast<uintmax_t>(h.cols) * 2)
    return "unreadable";
  if (h.rows != rows)
    return fmt::format("shape [{}, {}], expected [{}, classes]", h.rows, h.cols, rows);
  auto mapped = map_values(path, h);
  if (!mapped.defined()) return "unreadable";
  if (entry_crc(key, mapped.data_ptr(), static_cast<size_t>(mapped.numel()) * 2) != h.crc)
    return "CRC-32 mismatch";
  if (auto why = logits_problem(mapped, rows); !why.empty()) return why;
  logits = mapped;
  return "";
}

// Writes an entry atomically (through a temporary file and a rename).
void write_entry(const std::string& path, const std::string& key, const torch::Tensor& half) {
  auto values = half.contiguous();
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.rows = values.size(0);
  h.cols = values.size(1);
  h.crc = entry_crc(key, values.data_ptr(), static_cast<size_t>(values.numel()) * 2);
  write_atomically(path, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(&h), sizeof h);
    out.write(static_cast<const char*>(values.data_ptr()),
              static_cast<std::streamsize>(values.numel() * 2));
    out.flush();
    KD_CHECK(out.good(), "{}: cannot write", tmp.string());
  });
}

}  // namespace

CachedLogits cached_teacher_logits(Model& teacher, const Dataset& data, const std::string& dir,
                                   int64_t batch_size, torch::Device device, bool all_ranks) {
  all_ranks = all_ranks && dist::active();
  CachedLogits out;
  const std::string key = teacher_cache_key(teacher, data);
  out.path = (fs::path(dir) / ("teacher-" + key + ".f16")).string();
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
  // Stored as float16 whether or not the entry can be written, so a run trains on the same
  // targets from a hit as from a miss.
  out.logits = (all_ranks ? predict_logits_all_ranks(teacher, data, batch_size, device)
                          : predict_logits(teacher, data, batch_size, device))
                   .to(torch::kFloat16);
  if (auto why = logits_problem(out.logits, data.size()); !why.empty())
    fail(
        "the teacher's logits over the training images have {}: the teacher is broken, not the "
        "student's settings",
        why);
  if (all_ranks && !dist::is_main()) return out;
  try {
    write_entry(out.path, key, out.logits);
    // From now on read from the file (the page cache), not kept in memory twice.
    torch::Tensor mapped;
    if (read_entry(out.path, key, data.size(), mapped).empty()) out.logits = mapped;
  } catch (const std::exception&) {
    // The cache is an optimisation: a read-only or full disk must not fail the run.
  }
  return out;
}

}  // namespace kd
