#include "kd/data/idx.h"

#include <zlib.h>

#include <fstream>
#include <vector>

#include <torch/torch.h>

#include "kd/core/error.h"

namespace kd {
namespace {

// gzread reads both compressed and plain files, so one path serves .gz and raw IDX.
std::vector<uint8_t> read_all(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  KD_CHECK(f != nullptr, "{}: cannot open", path);
  std::vector<uint8_t> out;
  std::vector<uint8_t> chunk(1 << 20);
  while (true) {
    int n = gzread(f, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      fail("{}: read error ({})", path, msg);
    }
    if (n == 0) break;
    out.insert(out.end(), chunk.begin(), chunk.begin() + n);
  }
  gzclose(f);
  return out;
}

}  // namespace

torch::Tensor read_idx(const std::string& path) {
  std::vector<uint8_t> buf = read_all(path);
  KD_CHECK(buf.size() >= 4, "{}: not an IDX file (only {} bytes)", path, buf.size());
  KD_CHECK(buf[0] == 0 && buf[1] == 0, "{}: bad IDX magic number {:02x}{:02x}{:02x}{:02x}", path,
           buf[0], buf[1], buf[2], buf[3]);
  KD_CHECK(buf[2] == 0x08, "{}: IDX element type 0x{:02x} not supported (only unsigned byte)",
           path, buf[2]);
  const int ndim = buf[3];
  KD_CHECK(ndim >= 1 && ndim <= 4, "{}: IDX with {} dimensions not supported", path, ndim);
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  KD_CHECK(buf.size() >= header, "{}: truncated IDX header", path);
  std::vector<int64_t> dims(ndim);
  size_t expected = 1;
  for (int d = 0; d < ndim; ++d) {
    const uint8_t* p = &buf[4 + 4 * d];
    dims[d] = (int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | p[3];
    KD_CHECK(dims[d] > 0 && dims[d] < (int64_t(1) << 31), "{}: bad IDX dimension {}", path,
             dims[d]);
    expected *= static_cast<size_t>(dims[d]);
    // Checked per dimension, before the product can wrap around (found by fuzz_idx).
    KD_CHECK(expected <= buf.size(), "{}: truncated IDX data ({} bytes, header says at least {})", path,
             buf.size() - header, expected);
  }
  const size_t have = buf.size() - header;
  KD_CHECK(have >= expected, "{}: truncated IDX data ({} bytes, header says {})", path, have,
           expected);
  KD_CHECK(have == expected, "{}: {} trailing bytes after IDX data", path, have - expected);
  auto t = torch::empty(dims, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), buf.data() + header, expected);
  return t;
}

void write_idx(const std::string& path, const torch::Tensor& data) {
  KD_CHECK(data.scalar_type() == torch::kUInt8, "write_idx: {} must be uint8", path);
  auto t = data.contiguous();
  std::ofstream out(path, std::ios::binary);
  KD_CHECK(out, "{}: cannot write", path);
  const uint8_t magic[4] = {0, 0, 0x08, static_cast<uint8_t>(t.dim())};
  out.write(reinterpret_cast<const char*>(magic), 4);
  for (int64_t d : t.sizes()) {
    const uint8_t be[4] = {uint8_t(d >> 24), uint8_t(d >> 16), uint8_t(d >> 8), uint8_t(d)};
    out.write(reinterpret_cast<const char*>(be), 4);
  }
  out.write(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), t.numel());
  KD_CHECK(out, "{}: write failed", path);
}

}  // namespace kd
