#pragma once
/// @file
/// Run directories under hostile use. kd deletes or overwrites only a directory it can prove it
/// made (a config.yaml, and nothing but the entries kd writes), never the working directory, a
/// teacher or the data; and it holds an exclusive lock (flock on DIR/.lock, which holds the pid)
/// for the life of a run, so a second process on the same directory fails at once.
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kd {

/// What a run directory may hold: kd's names only (temporary files of an atomic write included).
bool is_run_entry(const std::string& name);

/// `inner` is `outer` or lies below it, compared component by component (both already canonical).
bool lies_within(const std::filesystem::path& inner, const std::filesystem::path& outer);

/// Why `dir` is not provably a kd run directory (its first foreign entry, or no config.yaml);
/// nullopt when it is one.
std::optional<std::string> not_a_run_directory(const std::filesystem::path& dir);

/// An input a run must never write into or delete: {"teacher", path}, {"data", path}, ...
using ProtectedPath = std::pair<std::string, std::string>;

/// Refuses `out` when it is, holds, or lies inside a protected path that exists.
void check_output_location(const std::filesystem::path& out,
                           const std::vector<ProtectedPath>& inputs);

/// Refuses (usage_fail, before any work) a file the user named as an output, or a file kd writes
/// beside it (`flag` names the option in the message), when it: exists and is not a regular file
/// (a device such as /dev/full, a FIFO, a directory, a symbolic link: an atomic rename would
/// replace it); lies under /dev, /proc or /sys; lies inside a directory kd can prove is a run
/// (not_a_run_directory), whose files it would corrupt; or is, holds or lies inside one of `inputs`.
void check_output_file(const std::filesystem::path& path, const std::string& flag,
                       const std::vector<ProtectedPath>& inputs = {});

/// Refuses to delete `path`: the working directory or one above it, or a folder kd did not make.
void check_deletable_run(const std::filesystem::path& path);

/// A teacher given as a run directory without summary.json did not finish: say so (its best
/// weights so far are what it teaches with).
void warn_if_unfinished_run(const std::string& path, const std::string& role);

class RunDirLock {
 public:
  enum class Claim { kFresh, kReplace, kResume };
  /// Creates `dir` if needed and locks it. kFresh: the directory must be empty (apart from the
  /// lock); kReplace: its entries are deleted once proven kd's; kResume: it must be a run
  /// directory.
  static RunDirLock claim(const std::filesystem::path& dir, Claim how);
  RunDirLock(RunDirLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  RunDirLock& operator=(RunDirLock&&) = delete;
  RunDirLock(const RunDirLock&) = delete;
  ~RunDirLock();

 private:
  explicit RunDirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace kd
