#pragma once
// File helpers: every output kd writes goes to a temp file first and is renamed into place,
// so a reader never sees a half-written file.
#include <filesystem>
#include <functional>
#include <string>

namespace kd {

namespace fs = std::filesystem;

// Calls write(tmp_path), fsyncs nothing (speed) but renames atomically onto `path`.
void write_atomically(const fs::path& path, const std::function<void(const fs::path&)>& write);
void write_text_atomically(const fs::path& path, const std::string& text);
std::string read_text(const fs::path& path);
// Appends one line and flushes; used for metrics.jsonl where each line is a complete record.
void append_line(const fs::path& path, const std::string& line);
// "2026-11-28T10:47:23Z": when a run finished, as summaries record it.
std::string utc_timestamp();

}  // namespace kd
