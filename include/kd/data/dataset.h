#pragma once
/// @file
/// An image classification dataset: labels and class names in memory, pixels either in memory
/// (IDX: uint8 [N, C, H, W]) or streamed from a SampleSource (folders, lists, tar shards), read
/// and decoded per batch by the loader's workers.
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "kd/data/source.h"
#include "kd/data/transform.h"

namespace kd {

struct ImageOptions {
  int channels = 0;  ///< 0: keep the source's (1 for IDX, 3 for photos)
  int height = 0;    ///< 0: keep the source's size (streamed photos: kDefaultPhotoSize)
  int width = 0;
  /// Photos: the shorter side is resized to this and the centre height x width cropped (the
  /// eval transform); 0: default_resize(height) for streamed data, a plain resize for uploads.
  int resize = 0;
};

/// How a streamed dataset is read: the input each image becomes, and by how many threads.
struct StreamOptions {
  InputGeometry geometry;
  int workers = -1;     ///< decode threads: -1 one per core, 0 in the thread that takes batches
  bool strict = false;  ///< an image that fails to load is an error instead of a skipped warning
  double max_missing = 0.01;  ///< file lists: the share of listed files that may be missing
};

/// The label of an image without one (semi-supervised pools, merged-teacher training).
constexpr int64_t kUnlabeled = -1;

struct Dataset {
  torch::Tensor images;  ///< in memory: uint8 [N, C, H, W]; undefined when streamed
  torch::Tensor labels;  ///< int64 [N]
  std::vector<std::string> class_names;
  std::string source;  ///< where it came from, for logs and manifests
  /// A pooled dataset's sources (pool_datasets): the source of each image, int64 [N] indexing
  /// origin_classes, which lists each source's class names. Undefined for a single source.
  torch::Tensor origin = {};
  std::vector<std::vector<std::string>> origin_classes = {};
  /// Streamed: sample i is files->read(ids[i]), transformed as `stream` says.
  std::shared_ptr<const SampleSource> files = {};
  torch::Tensor ids = {};
  StreamOptions stream = {};
  /// A fixed view of every image, applied per batch (ensemble_view: teacher ensembles).
  int view = 0;

  bool streamed() const { return files != nullptr; }
  /// C, H, W of the model input a sample becomes.
  std::vector<int64_t> input_shape() const;
  int64_t size() const { return labels.size(0); }
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
  Dataset subset(const torch::Tensor& index) const;
  Dataset head(int64_t n) const;   ///< first n samples (small slices for tests and smoke runs)
  Dataset without_labels() const;  ///< every label set to kUnlabeled
};

/// Appends b's samples to a's (same image shape); a's class names are kept.
Dataset concat(const Dataset& a, const Dataset& b);

/// The class the images of the classes `select_classes` leaves out become with `others`: a
/// teacher's "not mine" class, which a multi-teacher merge reads as such.
inline constexpr const char* kOthersClass = "(others)";

/// Keeps the samples of the listed classes and relabels them 0..k-1 in the source's class
/// order. Items are class names, indices, or index ranges "A-B"; unknown ones are errors.
/// `others`: the remaining samples are kept too, as one more class, kOthersClass.
Dataset select_classes(const Dataset& data, const std::vector<std::string>& classes,
                       bool others = false);

/// uint8 [N, C, H, W] resized (bilinear) and converted to opts' channels; unchanged when opts
/// asks for neither.
torch::Tensor resize_images(const torch::Tensor& images, const ImageOptions& opts);

/// Images without labels, to train beside `like`: an image folder (all PNG/JPEG files under it,
/// sorted; streamed when `like` is, else decoded to its shape) or an IDX images file (resized
/// and recoloured to its shape).
Dataset load_unlabeled(const std::string& path, const Dataset& like);
/// The dataset of a source's listing, read as `stream` says.
Dataset streamed_dataset(SourceListing listing, const StreamOptions& stream);
/// A streamed dataset decoded into memory by the eval transform (pooling with IDX data);
/// images that fail to load are left out with a warning.
Dataset materialize(const Dataset& streamed);
/// The first n samples' pixels, uint8 [n, C, H, W] (a probe batch, calibration).
torch::Tensor first_pixels(const Dataset& data, int64_t n);

/// Per-channel mean and std of pixels scaled to [0, 1]; stored with every model trained on it.
/// Streamed data: over up to 2,000 images (evenly spaced) through the eval transform.
struct Normalization {
  std::vector<double> mean;
  std::vector<double> std;
};
Normalization compute_normalization(const Dataset& data);

/// `spec` is "fashion-mnist" (Debian's dataset-fashion-mnist), a directory holding IDX files
/// (train-images-idx3-ubyte[.gz] ...), or a streamed source (kd/data/source.h: an image folder,
/// a .csv/.tsv file list, tar shards); or several of these joined by '+'
/// ("fashion-mnist+data/mnist"), pooled into one dataset (pool_datasets). `part` is "train" or
/// "test". `stream` says how streamed sources are read (its geometry from `opts`).
/// Returns false from has_part() when the source has no such part (e.g. no test split).
Dataset load_dataset(const std::string& spec, const std::string& part, const ImageOptions& opts,
                     StreamOptions stream = {});
/// The geometry `opts` asks of streamed images: 3 channels and kDefaultPhotoSize unless given,
/// square, resize default_resize(size) unless given.
InputGeometry stream_geometry(const ImageOptions& opts);
bool has_part(const std::string& spec, const std::string& part);
/// IDX sources load at their stored size and are resized (resize_images) once sliced: cheap to
/// load whole, costly to resize whole (70,000 images at 128x128 as floats is 4.6 GB).
bool is_idx_source(const std::string& spec);

/// The same samples labelled as indices into `classes` (matched by name): how a model of those
/// classes is scored on data that has some of them, in any order. kd::Error for a class of the
/// data that `classes` lacks.
Dataset relabel_as(const Dataset& data, const std::vector<std::string>& classes);
/// The sources of a pooled spec "A+B+..." (one, when spec has no '+' or names an existing path).
std::vector<std::string> pooled_sources(const std::string& spec);
/// Datasets of one image shape as one: images and labels concatenated in order, classes matched
/// by name (a name several datasets have is one class; the others are appended in order).
Dataset pool_datasets(const std::vector<Dataset>& parts);

/// IDX pair: images [N,H,W] or [N,C,H,W] and labels [N].
Dataset load_idx_pair(const std::string& images, const std::string& labels);

}  // namespace kd
