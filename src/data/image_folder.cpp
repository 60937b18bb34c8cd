#include <algorithm>
#include <filesystem>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "idx.h"
#include "kd/core/error.h"
#include "kd/core/json.h"
#include "kd/data/dataset.h"
#include "opencv_image.h"

namespace kd {
namespace {

bool is_image(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

torch::Tensor decode_images(const std::vector<std::string>& files, const ImageOptions& opts) {
  const int channels = opts.channels > 0 ? opts.channels : 3;
  KD_CHECK(channels == 1 || channels == 3, "image channels must be 1 or 3, got {}", channels);
  const int h = opts.height > 0 ? opts.height : 32;
  const int w = opts.width > 0 ? opts.width : h;
  auto images = torch::empty({static_cast<int64_t>(files.size()), channels, h, w}, torch::kUInt8);
  for (size_t i = 0; i < files.size(); ++i) {
    cv::Mat img =
        read_image_file(files[i], channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
    images[static_cast<int64_t>(i)].copy_(fit_image(img, channels, h, w));
  }
  return images;
}

}  // namespace

Dataset load_unlabeled(const std::string& path, const ImageOptions& opts) {
  namespace fs = std::filesystem;
  KD_CHECK(fs::exists(path), "unlabeled data {}: no such file or directory", path);
  Dataset d;
  d.source = path;
  if (fs::is_directory(path)) {
    std::vector<std::string> files;
    for (auto it = fs::recursive_directory_iterator(path); it != fs::recursive_directory_iterator();
         ++it) {
      const bool hidden = it->path().filename().string()[0] == '.';
      if (hidden && it->is_directory()) it.disable_recursion_pending();
      if (!hidden && it->is_regular_file() && is_image(it->path()))
        files.push_back(it->path().string());
    }
    std::sort(files.begin(), files.end());
    KD_CHECK(!files.empty(), "unlabeled data {}: no PNG/JPEG images in the folder", path);
    d.images = decode_images(files, opts);
  } else {
    auto images = read_idx(path);
    KD_CHECK(images.dim() == 3 || images.dim() == 4,
             "unlabeled data {}: expected IDX images of 3 or 4 dimensions, got {}", path,
             images.dim());
    KD_CHECK(images.scalar_type() == torch::kUInt8, "unlabeled data {}: expected uint8 pixels",
             path);
    if (images.dim() == 3) images = images.unsqueeze(1);
    KD_CHECK(images.size(0) > 0, "unlabeled data {}: no images", path);
    d.images = resize_images(images, opts);
  }
  d.labels = torch::full({d.images.size(0)}, kUnlabeled, torch::kInt64);
  return d;
}

Dataset load_image_folder(const std::string& root, const ImageOptions& opts) {
  namespace fs = std::filesystem;
  KD_CHECK(fs::is_directory(root), "{}: not a directory", root);
  std::vector<std::string> classes;
  // Hidden folders (.git, .ipynb_checkpoints) are tools' files, not classes.
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string()[0] != '.')
      classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  for (const auto& c : classes) check_utf8(c, root + ": class folder");
  KD_CHECK(!classes.empty(), "{}: no class sub-folders (expected {}/<class>/<image>)", root, root);

  std::vector<std::pair<std::string, int64_t>> files;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<std::string> in_class;
    for (const auto& e : fs::directory_iterator(fs::path(root) / classes[c]))
      if (e.is_regular_file() && is_image(e.path()) && e.path().filename().string()[0] != '.')
        in_class.push_back(e.path().string());
    std::sort(in_class.begin(), in_class.end());  // directory order is not stable
    for (auto& f : in_class) files.emplace_back(std::move(f), static_cast<int64_t>(c));
  }
  KD_CHECK(!files.empty(), "{}: no PNG/JPEG images in any class folder", root);

  std::vector<std::string> paths;
  auto labels = torch::empty({static_cast<int64_t>(files.size())}, torch::kInt64);
  for (size_t i = 0; i < files.size(); ++i) {
    paths.push_back(files[i].first);
    labels[static_cast<int64_t>(i)] = files[i].second;
  }
  return {decode_images(paths, opts), labels, classes, root};
}

}  // namespace kd
