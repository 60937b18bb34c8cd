#pragma once
/// @file
/// Streamed image sources: sample index -> encoded bytes (PNG, JPEG or BMP). Only the listing
/// (names, labels, where each sample's bytes are) is kept in memory; pixels are read and decoded
/// per batch by the loader's workers, so memory does not grow with the number of images.
/// @verbatim
///   image folder   root/CLASS/IMAGE, or root/train/CLASS/IMAGE and root/test/CLASS/IMAGE
///   file list      list.csv or list.tsv: `path,label` lines (an optional header line), paths
///                  relative to the list's folder, labels class names
///   tar shards     WebDataset layout: key.jpg (.jpeg, .png) + key.cls (class index) or key.json
///                  ({"label": name or index}), shards named by a brace pattern, e.g.
///                  shards/train-{000000..000009}.tar; classes.txt beside them names the classes
/// @endverbatim
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace kd {

class SampleSource {
 public:
  virtual ~SampleSource() = default;
  virtual int64_t size() const = 0;
  /// The encoded bytes of sample i; kd::Error naming the sample when they cannot be read (a
  /// file that vanished, a shard cut short). Safe to call from several threads at once.
  virtual std::string read(int64_t i) const = 0;
  /// The sample's name in logs and warnings: a path, or "shard.tar:key".
  virtual std::string name(int64_t i) const = 0;
  /// Changes when the listing or a file's size or modification time changes (teacher cache key).
  virtual uint64_t fingerprint() const = 0;
};

/// A source's samples with their labels (int64 [N], kUnlabeled for none) and class names.
struct SourceListing {
  std::shared_ptr<const SampleSource> files;
  torch::Tensor labels;
  std::vector<std::string> class_names;
  std::string source;  ///< the path it came from, for logs
};

/// Whether `spec` names a streamed source (a folder of images, a .csv/.tsv list, a tar shard
/// pattern), as opposed to IDX data or the fashion-mnist alias, which load into memory.
bool is_streamed_source(const std::string& spec);
/// The listing of a streamed source's part ("train" or "test"). Missing files of a list are
/// found with one stat() each: up to `max_missing` (a fraction) are left out with a warning
/// naming the first, more is an error.
SourceListing open_source(const std::string& spec, const std::string& part,
                          double max_missing = 0.01);
/// A flat folder of images without labels (semi-supervised pools), every label kUnlabeled.
SourceListing open_unlabeled_folder(const std::string& path);
/// Image files in the given order, unlabeled (the images of a detection set's annotations).
SourceListing open_files(const std::vector<std::string>& paths, const std::string& source);
/// Two sources as one: samples of `a`, then those of `b`.
std::shared_ptr<const SampleSource> concat_sources(std::shared_ptr<const SampleSource> a,
                                                   std::shared_ptr<const SampleSource> b);
/// "a-{000..009}.tar" -> a-000.tar ... a-009.tar (numbers keep their zero padding); "{a,b}"
/// alternatives too; a name without braces is itself.
std::vector<std::string> expand_braces(const std::string& pattern);

}  // namespace kd

namespace kd {

struct PackResult {
  std::string pattern;  ///< the shards as --data takes them: DIR/PREFIX-{000000..00000N}.tar
  int64_t shards = 0, samples = 0, skipped = 0, bytes = 0;
};

/// Writes a source's samples into tar shards of about `shard_bytes` each, in the WebDataset
/// layout (KEY.jpg or .png as the file was, KEY.cls the class index; classes.txt beside them),
/// each shard written atomically. Files that cannot be read or are not images are skipped with
/// a warning. `out_dir` must not exist or be empty.
PackResult pack_shards(const SourceListing& listing, const std::string& out_dir,
                       const std::string& prefix, int64_t shard_bytes);

}  // namespace kd
