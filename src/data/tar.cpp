#include "tar.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "kd/core/error.h"

namespace kd {
namespace {

constexpr uint64_t kBlock = 512;

struct Fd {
  int fd;
  explicit Fd(const std::string& path)
      : fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC)) {
    if (fd < 0) fail("{}: cannot open ({})", path, std::strerror(errno));
  }
  ~Fd() { ::close(fd); }
};

// Reads exactly n bytes at offset; false when the file ends first.
bool pread_all(int fd, char* out, uint64_t n, uint64_t offset) {
  uint64_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, out + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    done += static_cast<uint64_t>(r);
  }
  return true;
}

uint64_t octal(const char* field, size_t n, const std::string& where) {
  if (static_cast<uint8_t>(field[0]) & 0x80) {  // GNU base-256 for sizes of 8 GiB and more
    uint64_t v = 0;
    for (size_t i = 1; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(field[i]);
    return v;
  }
  uint64_t v = 0;
  size_t i = 0;
  while (i < n && field[i] == ' ') ++i;
  for (; i < n && field[i] >= '0' && field[i] <= '7'; ++i) v = v * 8 + (field[i] - '0');
  if (i < n && field[i] != '\0' && field[i] != ' ') fail("{}: a damaged tar header", where);
  return v;
}

std::string field(const char* p, size_t n) { return std::string(p, strnlen(p, n)); }

bool checksum_ok(const char* h) {
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i)
    sum += (i >= 148 && i < 156) ? uint8_t(' ') : static_cast<uint8_t>(h[i]);
  return sum == octal(h + 148, 8, "");
}

// A pax record list "LEN key=value\n"...: the path, if any.
std::string pax_path(const std::string& records) {
  size_t pos = 0;
  while (pos < records.size()) {
    const auto space = records.find(' ', pos);
    if (space == std::string::npos) break;
    const size_t len = std::strtoull(records.c_str() + pos, nullptr, 10);
    if (len == 0 || pos + len > records.size()) break;
    const std::string rec = records.substr(space + 1, pos + len - space - 2);
    if (rec.rfind("path=", 0) == 0) return rec.substr(5);
    pos += len;
  }
  return "";
}

}  // namespace

std::string TarReader::read(const TarMember& m) const {
  std::string out(m.size, '\0');
  if (!pread_all(fd_, out.data(), m.size, m.offset))
    fail("{}: truncated at member {} (byte {})", path_, m.name, m.offset);
  return out;
}

void for_each_tar_member(const std::string& path,
                         const std::function<void(const TarMember&, const TarReader&)>& visit) {
  Fd f(path);
  struct stat st {};
  KD_CHECK(::fstat(f.fd, &st) == 0 && S_ISREG(st.st_mode), "{}: not a regular file", path);
  const auto file_size = static_cast<uint64_t>(st.st_size);
  TarReader reader(f.fd, path);
  char h[kBlock];
  uint64_t pos = 0;
  std::string long_name;
  while (true) {
    if (pos == file_size) return;  // no end blocks: tolerated, as tar does
    if (!pread_all(f.fd, h, kBlock, pos))
      fail("{}: truncated tar shard (a header cut short at byte {})", path, pos);
    if (h[0] == '\0') return;  // the zero blocks that end the archive
    if (!checksum_ok(h)) fail("{}: not a tar archive, or damaged at byte {}", path, pos);
    const uint64_t size = octal(h + 124, 12, path);
    const char type = h[156];
    const uint64_t data = pos + kBlock;
    if (data + size > file_size)
      fail("{}: truncated tar shard (member {} runs past the end at byte {})", path, field(h, 100),
           file_size);
    if (type == 'L' || type == 'x') {  // the next member's long name
      TarMember m{"", data, size};
      const std::string text = reader.read(m);
      long_name = type == 'L' ? field(text.data(), text.size()) : pax_path(text);
    } else {
      if (type == '0' || type == '\0') {
        std::string name = long_name;
        if (name.empty()) {
          const std::string prefix = field(h + 345, 155);
          name = (std::string_view(h + 257, 5) == "ustar" && !prefix.empty())
                     ? prefix + "/" + field(h, 100)
                     : field(h, 100);
        }
        visit({name, data, size}, reader);
      }
      if (type != 'g') long_name.clear();
    }
    pos = data + (size + kBlock - 1) / kBlock * kBlock;
  }
}

std::string read_tar_member(const std::string& path, uint64_t offset, uint64_t size,
                            const std::string& what) {
  Fd f(path);
  std::string out(size, '\0');
  if (!pread_all(f.fd, out.data(), size, offset))
    fail("{}: truncated tar shard (cut short at {})", path, what);
  return out;
}

void TarWriter::add(std::string_view name, std::string_view data) {
  KD_CHECK(name.size() < 100, "tar member name '{}' is longer than 99 bytes", name);
  char h[kBlock] = {};
  std::memcpy(h, name.data(), name.size());
  std::snprintf(h + 100, 8, "%07o", 0644);
  std::snprintf(h + 108, 8, "%07o", 0);
  std::snprintf(h + 116, 8, "%07o", 0);
  std::snprintf(h + 124, 12, "%011llo", static_cast<unsigned long long>(data.size()));
  std::snprintf(h + 136, 12, "%011o", 0);
  h[156] = '0';
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (char c : h) sum += static_cast<uint8_t>(c);
  std::snprintf(h + 148, 8, "%06o", sum);
  out_->append(h, kBlock);
  out_->append(data);
  out_->append((kBlock - data.size() % kBlock) % kBlock, '\0');
}

void TarWriter::finish() { out_->append(2 * kBlock, '\0'); }

}  // namespace kd
