#pragma once
/// @file
/// An in-memory image classification dataset: uint8 pixels plus int64 labels.
#include <string>
#include <vector>

#include <torch/types.h>

namespace kd {

struct ImageOptions {
  int channels = 0;  ///< 0: keep the source's (1 for IDX, 3 for image folders)
  int height = 0;    ///< 0: keep the source's size (image folders need one: default 32)
  int width = 0;
};

/// The label of an image without one (semi-supervised pools, merged-teacher training).
constexpr int64_t kUnlabeled = -1;

struct Dataset {
  torch::Tensor images;  ///< uint8 [N, C, H, W]
  torch::Tensor labels;  ///< int64 [N]
  std::vector<std::string> class_names;
  std::string source;  ///< where it came from, for logs and manifests
  /// A pooled dataset's sources (pool_datasets): the source of each image, int64 [N] indexing
  /// origin_classes, which lists each source's class names. Undefined for a single source.
  torch::Tensor origin = {};
  std::vector<std::vector<std::string>> origin_classes = {};

  int64_t size() const { return images.size(0); }
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

/// Images without labels: an image folder (all PNG/JPEG files under it, sorted) or an IDX
/// images file. Resized/recoloured to `opts` like labeled images.
Dataset load_unlabeled(const std::string& path, const ImageOptions& opts);

/// Per-channel mean and std of pixels scaled to [0, 1]; stored with every model trained on it.
struct Normalization {
  std::vector<double> mean;
  std::vector<double> std;
};
Normalization compute_normalization(const Dataset& data);

/// `spec` is "fashion-mnist" (Debian's dataset-fashion-mnist), a directory holding IDX files
/// (train-images-idx3-ubyte[.gz] ...), or an image folder (one sub-folder per class, or
/// train/ and test/ each holding one sub-folder per class); or several of these joined by '+'
/// ("fashion-mnist+data/mnist"), pooled into one dataset (pool_datasets). `part` is "train" or
/// "test".
/// Returns false from has_part() when the source has no such part (e.g. no test split).
Dataset load_dataset(const std::string& spec, const std::string& part, const ImageOptions& opts);
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

/// Image folder: `root/CLASS/IMAGE`, PNG or JPEG, decoded with OpenCV.
Dataset load_image_folder(const std::string& root, const ImageOptions& opts);
/// IDX pair: images [N,H,W] or [N,C,H,W] and labels [N].
Dataset load_idx_pair(const std::string& images, const std::string& labels);

}  // namespace kd
