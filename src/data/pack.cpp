#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/data/image.h"
#include "kd/data/source.h"
#include "tar.h"

namespace kd {

PackResult pack_shards(const SourceListing& listing, const std::string& out_dir,
                       const std::string& prefix, int64_t shard_bytes) {
  KD_CHECK(shard_bytes >= (1 << 20), "--shard-size must be at least 1 MB");
  const fs::path dir = out_dir;
  KD_CHECK(!fs::exists(dir) || (fs::is_directory(dir) && fs::is_empty(dir)),
           "--out {}: exists and is not an empty folder", out_dir);
  fs::create_directories(dir);
  PackResult r;
  std::string shard;  // the shard being filled, written whole (atomically) when full
  auto flush = [&] {
    if (shard.empty()) return;
    TarWriter(&shard).finish();
    write_atomically(dir / fmt::format("{}-{:06d}.tar", prefix, r.shards),
                     [&](const fs::path& tmp) { write_file(tmp, shard); });
    r.bytes += static_cast<int64_t>(shard.size());
    ++r.shards;
    shard.clear();
  };
  const auto labels = listing.labels.contiguous();
  const int64_t* label = labels.data_ptr<int64_t>();
  const int64_t n = listing.files->size();
  for (int64_t i = 0; i < n; ++i) {
    std::string bytes;
    try {
      bytes = listing.files->read(i);
      if (bytes.substr(0, 2) != "BM") (void)encoded_image_size(bytes);  // a PNG or JPEG header
    } catch (const std::exception& e) {
      ++r.skipped;
      spdlog::warn("skipped {}: {}", listing.files->name(i), e.what());
      continue;
    }
    const std::string name = listing.files->name(i);
    std::string ext = fs::path(name).extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    const std::string key = fmt::format("{:09d}", i);
    TarWriter w(&shard);
    w.add(key + ext, bytes);
    if (label[i] >= 0) w.add(key + ".cls", std::to_string(label[i]));
    ++r.samples;
    if (static_cast<int64_t>(shard.size()) >= shard_bytes) flush();
  }
  flush();
  KD_CHECK(r.shards > 0, "{}: no image could be read", listing.source);
  std::string names;
  for (const auto& c : listing.class_names) names += c + "\n";
  write_text_atomically(dir / "classes.txt", names);
  r.pattern = (dir / fmt::format("{}-{{{:06d}..{:06d}}}.tar", prefix, 0, r.shards - 1)).string();
  return r;
}

}  // namespace kd
