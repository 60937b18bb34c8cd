#include "kd/runs/run_dir.h"

#include <cerrno>
#include <cstring>
#include <set>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"

namespace kd {
namespace {

const char* const kLock = ".lock";

// The names kd writes at the top of a run directory (see kd/distill/run.h): a quantization-aware
// run's fp32 model and its two phases (src/distill/qat.cpp) included; and `kd export`'s default
// folder.
const std::set<std::string>& run_entries() {
  static const std::set<std::string> names = {
      "config.yaml", "summary.json", "metrics.jsonl", "error.txt", "model.pt",   "model.json",
      "checkpoints", "generations",  "fp32",          "qat",       "qat-frozen", "export",
      kLock};
  return names;
}

fs::path canonical_or_self(const fs::path& p) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? fs::absolute(p).lexically_normal() : c;
}

}  // namespace

bool lies_within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // a trailing separator
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

namespace {

bool empty_but_lock(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename() != kLock) return false;
  return true;
}

}  // namespace

bool is_run_entry(const std::string& name) {
  if (run_entries().count(name)) return true;
  // "summary.json.tmp.1234": an atomic write that a kill interrupted.
  const auto at = name.find(".tmp.");
  if (at == std::string::npos || !run_entries().count(name.substr(0, at))) return false;
  const std::string pid = name.substr(at + 5);
  return !pid.empty() && pid.find_first_not_of("0123456789") == std::string::npos;
}

std::optional<std::string> not_a_run_directory(const fs::path& dir) {
  if (!fs::is_directory(dir)) return "not a directory";
  if (!fs::is_regular_file(dir / "config.yaml")) return "no config.yaml";
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!is_run_entry(name)) return fmt::format("it holds '{}', which kd did not write", name);
  }
  return std::nullopt;
}

// The innermost kd run directory that `p` lies strictly inside, if any.
static std::optional<fs::path> enclosing_run(const fs::path& p) {
  for (fs::path dir = p.parent_path(); !dir.empty(); dir = dir.parent_path()) {
    if (!not_a_run_directory(dir)) return dir;
    if (dir == dir.root_path()) break;
  }
  return std::nullopt;
}

void check_output_location(const fs::path& out, const std::vector<ProtectedPath>& inputs) {
  const fs::path o = canonical_or_self(out);
  if (auto run = enclosing_run(o))
    usage_fail("--out {} lies inside the run directory {}: choose a run directory outside it",
               out.string(), run->string());
  for (const auto& [what, path] : inputs) {
    if (path.empty() || !fs::exists(path)) continue;
    const fs::path p = canonical_or_self(path);
    if (lies_within(p, o))
      usage_fail("--out {} would hold the {} {}: choose another run directory", out.string(), what,
                 path);
    if (lies_within(o, p))
      usage_fail("--out {} lies inside the {} {}: choose another run directory", out.string(), what,
                 path);
  }
}

void check_output_file(const fs::path& path, const std::string& flag,
                       const std::vector<ProtectedPath>& inputs) {
  if (auto what = special_file(path))
    usage_fail("{} {}: exists and is not a regular file ({}); kd writes only regular files", flag,
               path.string(), *what);
  const fs::path p = canonical_or_self(path);
  for (const char* system : {"/dev", "/proc", "/sys"})
    if (lies_within(p, system))
      usage_fail("{} {}: lies under {}, which kd does not write to", flag, path.string(), system);
  if (auto run = enclosing_run(p))
    usage_fail(
        "{} {}: lies inside the kd run directory {}, whose files it would replace; "
        "write it elsewhere",
        flag, path.string(), run->string());
  for (const auto& [what, input] : inputs) {
    if (input.empty() || !fs::exists(input)) continue;
    const fs::path i = canonical_or_self(input);
    if (lies_within(p, i))
      usage_fail("{} {}: is or lies inside the {} {}; write it elsewhere", flag, path.string(),
                 what, input);
  }
}

void check_deletable_run(const fs::path& path) {
  const fs::path p = canonical_or_self(path);
  if (lies_within(canonical_or_self(fs::current_path()), p))
    usage_fail("{}: not replacing the working directory (or one above it)", path.string());
  if (auto why = not_a_run_directory(path))
    usage_fail("{}: not replacing it: {} (kd replaces only run directories it made)", path.string(),
               *why);
}

void warn_if_unfinished_run(const std::string& path, const std::string& role) {
  if (fs::is_directory(path) && !fs::exists(fs::path(path) / "summary.json"))
    spdlog::warn("{} {}: no summary.json, the run did not finish; using its best weights so far",
                 role, path);
}

RunDirLock RunDirLock::claim(const fs::path& dir, Claim how) {
  KD_CHECK(!fs::exists(dir) || fs::is_directory(dir), "{}: exists and is not a directory",
           dir.string());
  const bool existed = fs::exists(dir) && !empty_but_lock(dir);
  // Refuse before writing anything, so a user's folder gains no lock file.
  if (existed && how == Claim::kFresh)
    usage_fail("{}: run directory exists (pass --force to replace it)", dir.string());
  if (existed && how == Claim::kReplace) check_deletable_run(dir);
  // Resuming deletes nothing: a run's config.yaml is proof enough.
  if (how == Claim::kResume && !fs::is_regular_file(dir / "config.yaml"))
    fail("{}: cannot resume: no config.yaml (not a kd run directory)", dir.string());
  fs::create_directories(dir);

  const fs::path lock = dir / kLock;
  const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create {}: {}", lock.string(), std::strerror(errno));
  RunDirLock held(fd);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    const std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("?");
    fail("{}: in use by kd process {} (it holds {})", dir.string(), first_line(pid), lock.string());
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    fail("cannot write {}: {}", lock.string(), std::strerror(errno));

  // Under the lock: what another process may have made meanwhile is judged again.
  if (!empty_but_lock(dir)) {
    if (how == Claim::kFresh)
      usage_fail("{}: run directory exists (pass --force to replace it)", dir.string());
    if (how == Claim::kReplace) {
      check_deletable_run(dir);
      for (const auto& e : fs::directory_iterator(dir))
        if (e.path().filename() != kLock) fs::remove_all(e.path());
    }
  }
  return held;
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock; the file stays (removing it would race)
}

}  // namespace kd
