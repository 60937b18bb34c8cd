#include "idx.h"

#include <zlib.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"

namespace kd {
namespace {

// Caps what a header may claim, so a forged one fails before a huge allocation.
constexpr size_t kMaxIdxBytes = size_t(16) << 30;

// gzread reads both compressed and plain files, so one path serves .gz and raw IDX.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    // A FIFO, a device (a symlink to /dev/zero) or a folder would be read forever or fail oddly.
    KD_CHECK(fs::is_regular_file(path), "{}: not a regular file", path);
    f_ = gzopen(path.c_str(), "rb");
    KD_CHECK(f_ != nullptr, "{}: cannot open", path);
  }
  ~GzReader() { gzclose(f_); }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;
  // Reads up to n bytes; returns how many (fewer only at the end of the data).
  size_t read(void* dst, size_t n) {
    auto* p = static_cast<uint8_t*>(dst);
    size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
      const int got = gzread(f_, p + done, chunk);
      if (got < 0) {
        int err = 0;
        fail("{}: read error ({})", path_, gzerror(f_, &err));
      }
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    return done;
  }

 private:
  std::string path_;
  gzFile f_ = nullptr;
};

}  // namespace

// Reads only what the header says (then one byte to detect trailing data): a small file whose
// gzip stream expands to gigabytes costs no more than its header's tensor.
torch::Tensor read_idx(const std::string& path) {
  GzReader in(path);
  uint8_t magic[4];
  const size_t got = in.read(magic, 4);
  KD_CHECK(got == 4, "{}: not an IDX file (only {} bytes)", path, got);
  KD_CHECK(magic[0] == 0 && magic[1] == 0, "{}: bad IDX magic number {:02x}{:02x}{:02x}{:02x}",
           path, magic[0], magic[1], magic[2], magic[3]);
  KD_CHECK(magic[2] == 0x08, "{}: IDX element type 0x{:02x} not supported (only unsigned byte)",
           path, magic[2]);
  const int ndim = magic[3];
  KD_CHECK(ndim >= 1 && ndim <= 4, "{}: IDX with {} dimensions not supported", path, ndim);
  uint8_t dim_bytes[16];
  KD_CHECK(in.read(dim_bytes, 4 * static_cast<size_t>(ndim)) == 4 * static_cast<size_t>(ndim),
           "{}: truncated IDX header", path);
  std::vector<int64_t> dims(ndim);
  size_t expected = 1;
  for (int d = 0; d < ndim; ++d) {
    const uint8_t* p = &dim_bytes[4 * d];
    dims[d] = (int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | p[3];
    KD_CHECK(dims[d] > 0 && dims[d] < (int64_t(1) << 31), "{}: bad IDX dimension {}", path,
             dims[d]);
    expected *= static_cast<size_t>(dims[d]);
    // Checked per dimension, before the product can wrap around (found by fuzz_idx).
    KD_CHECK(expected <= kMaxIdxBytes, "{}: the IDX header claims more than {} GiB of data", path,
             kMaxIdxBytes >> 30);
  }
  // Grown as the data arrives, so a header claiming gigabytes over a short file costs only what
  // is there (found by fuzz_idx: allocating the claimed size up front hit its memory limit).
  auto buf = std::make_unique<std::vector<uint8_t>>();
  constexpr size_t kChunk = size_t(64) << 20;
  size_t have = 0;
  while (have < expected) {
    const size_t want = std::min(kChunk, expected - have);
    buf->resize(have + want);
    const size_t got = in.read(buf->data() + have, want);
    have += got;
    if (got < want) break;
  }
  KD_CHECK(have == expected, "{}: truncated IDX data ({} bytes, header says {})", path, have,
           expected);
  uint8_t extra;
  KD_CHECK(in.read(&extra, 1) == 0, "{}: trailing bytes after the IDX data the header describes",
           path);
  auto* data = buf.release();
  return torch::from_blob(
      data->data(), dims, [data](void*) { delete data; }, torch::kUInt8);
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
