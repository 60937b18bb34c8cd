#pragma once
// Private to the data area: the tar format as WebDataset shards use it. A shard is indexed once
// (each member's name, data offset and size, from its 512-byte headers, seeking over the data),
// then samples are read by offset. libarchive reads tar as a stream and does not give a member's
// data offset, which random access needs; ustar headers are simple enough to read here.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace kd {

struct TarMember {
  std::string name;
  uint64_t offset = 0;  // of the data, from the start of the file
  uint64_t size = 0;
};

class TarReader {
 public:
  explicit TarReader(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  std::string read(const TarMember& m) const;

 private:
  int fd_;
  std::string path_;
};

// Calls visit for every regular file of the archive in order (ustar, GNU long names and pax
// path records). A header cut short or a member running past the end is a kd::Error naming the
// shard and the byte.
void for_each_tar_member(const std::string& path,
                         const std::function<void(const TarMember&, const TarReader&)>& visit);
// `size` bytes at `offset`; kd::Error naming `what` and the shard when the file is shorter.
std::string read_tar_member(const std::string& path, uint64_t offset, uint64_t size,
                            const std::string& what);

// Writes a ustar archive member by member (names up to 100 bytes; kd data pack's keys are).
class TarWriter {
 public:
  explicit TarWriter(std::string* out) : out_(out) {}
  void add(std::string_view name, std::string_view data);
  void finish();  // the two zero blocks that end an archive

 private:
  std::string* out_;
};

}  // namespace kd
