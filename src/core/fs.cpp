#include "kd/core/fs.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "kd/core/error.h"

namespace kd {

std::optional<std::string> special_file(const fs::path& path) {
  std::error_code ec;
  const auto st = fs::symlink_status(path, ec);
  if (ec || !fs::exists(st) || fs::is_regular_file(st)) return std::nullopt;
  return fs::is_symlink(st)     ? "a symbolic link"
         : fs::is_directory(st) ? "a directory"
         : fs::is_fifo(st)      ? "a FIFO"
         : fs::is_socket(st)    ? "a socket"
                                : "a device or special file";
}

void write_atomically(const fs::path& path, const std::function<void(const fs::path&)>& write) {
  // rename() replaces whatever is there: a device (/dev/full), a FIFO, a symbolic link.
  if (auto what = special_file(path))
    fail("{}: exists and is not a regular file ({}); not replacing it", path.string(), *what);
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  try {
    write(tmp);
    fs::rename(tmp, path);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  write_atomically(path, [&](const fs::path& tmp) { write_file(tmp, text); });
}

void write_file(const fs::path& path, std::string_view bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail("cannot write {}: {}", path.string(), std::strerror(errno));
  const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const int write_errno = errno;
  const bool closed = std::fclose(f) == 0;
  if (written != bytes.size() || !closed)
    fail("cannot write {}: {}", path.string(),
         std::strerror(written != bytes.size() ? write_errno : errno));
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  KD_CHECK(in, "cannot read {}", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void append_line(const fs::path& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  KD_CHECK(out, "cannot append to {}", path.string());
  out << line << '\n';
  out.flush();
  KD_CHECK(out, "cannot append to {}: {}", path.string(), std::strerror(errno));
}

std::string utc_timestamp() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace kd
