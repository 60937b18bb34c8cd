#include <filesystem>

#include <torch/torch.h>

#include "idx.h"
#include "kd/core/error.h"
#include "kd/data/dataset.h"

namespace kd {

Dataset load_unlabeled(const std::string& path, const Dataset& like) {
  namespace fs = std::filesystem;
  KD_CHECK(fs::exists(path), "unlabeled data {}: no such file or directory", path);
  const auto shape = like.input_shape();
  if (fs::is_directory(path)) {
    Dataset d = streamed_dataset(open_unlabeled_folder(path), like.stream);
    if (!like.streamed()) {
      // Beside in-memory (IDX) images: decoded once at their shape.
      d.stream.geometry = {static_cast<int>(shape[0]), static_cast<int>(shape[1]),
                           static_cast<int>(shape[1])};
      return materialize(d);
    }
    return d;
  }
  KD_CHECK(!like.streamed(),
           "unlabeled data {}: IDX images cannot join streamed training images; give a folder",
           path);
  auto images = read_idx(path);
  KD_CHECK(images.dim() == 3 || images.dim() == 4,
           "unlabeled data {}: expected IDX images of 3 or 4 dimensions, got {}", path,
           images.dim());
  KD_CHECK(images.scalar_type() == torch::kUInt8, "unlabeled data {}: expected uint8 pixels", path);
  if (images.dim() == 3) images = images.unsqueeze(1);
  KD_CHECK(images.size(0) > 0, "unlabeled data {}: no images", path);
  Dataset d;
  d.source = path;
  d.images =
      resize_images(images, ImageOptions{static_cast<int>(shape[0]), static_cast<int>(shape[1]),
                                         static_cast<int>(shape[2])});
  d.labels = torch::full({d.images.size(0)}, kUnlabeled, torch::kInt64);
  return d;
}

}  // namespace kd
