#include "kd/core/crc.h"

#include <algorithm>
#include <fstream>
#include <vector>

#include <zlib.h>

#include "kd/core/error.h"

namespace kd {

uint32_t crc32_bytes(const void* data, size_t n, uint32_t crc) {
  const auto* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  while (n > 0) {  // zlib takes uInt lengths
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = crc32(c, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

uint32_t file_crc32(const std::filesystem::path& p, uint64_t* size) {
  std::ifstream in(p, std::ios::binary);
  KD_CHECK(in.good(), "{}: cannot read", p.string());
  uint32_t crc = 0;
  std::vector<char> buf(1 << 16);
  *size = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = in.gcount();
    if (n <= 0) break;
    crc = crc32_bytes(buf.data(), static_cast<size_t>(n), crc);
    *size += static_cast<uint64_t>(n);
  }
  return crc;
}

}  // namespace kd
