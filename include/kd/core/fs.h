#pragma once
/// @file
/// File helpers: every output kd writes goes to a temp file first and is renamed into place,
/// so a reader never sees a half-written file.
#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

namespace kd {

namespace fs = std::filesystem;

/// What `path` is when it exists and is not a regular file ("a symbolic link", "a directory",
/// "a FIFO", "a socket", "a device or special file"): a writer must not replace it. nullopt when
/// it is a regular file or does not exist.
std::optional<std::string> special_file(const fs::path& path);
/// Calls write(tmp_path), fsyncs nothing (speed) but renames atomically onto `path`. A `path`
/// that exists and is not a regular file (a device, a FIFO, a symbolic link) is a kd::Error:
/// the rename would replace it.
void write_atomically(const fs::path& path, const std::function<void(const fs::path&)>& write);
void write_text_atomically(const fs::path& path, const std::string& text);
/// Writes `bytes` to `path` (not atomically); a failed write (a full disk) is a kd::Error naming
/// the file and the reason.
void write_file(const fs::path& path, std::string_view bytes);
/// save(stream) serializes into memory, then write_file writes it. For LibTorch archives: their
/// writer reports a failed write from its destructor, which terminates the process (found by
/// filling a small tmpfs mid-run); in memory it cannot fail, and the file write is checked here.
template <typename Save>
void write_serialized(const fs::path& path, Save&& save) {
  std::ostringstream buffer(std::ios::out | std::ios::binary);
  save(buffer);
  write_file(path, buffer.str());
}
std::string read_text(const fs::path& path);
/// Appends one line and flushes; used for metrics.jsonl where each line is a complete record.
void append_line(const fs::path& path, const std::string& line);
/// "2026-11-28T10:47:23Z": when a run finished, as summaries record it.
std::string utc_timestamp();

}  // namespace kd
