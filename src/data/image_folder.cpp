#include <algorithm>
#include <filesystem>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/data/dataset.h"

namespace kd {
namespace {

bool is_image(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

}  // namespace

Dataset load_image_folder(const std::string& root, const ImageOptions& opts) {
  namespace fs = std::filesystem;
  KD_CHECK(fs::is_directory(root), "{}: not a directory", root);
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  KD_CHECK(!classes.empty(), "{}: no class sub-folders (expected {}/<class>/<image>)", root,
           root);

  std::vector<std::pair<std::string, int64_t>> files;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<std::string> in_class;
    for (const auto& e : fs::directory_iterator(fs::path(root) / classes[c]))
      if (e.is_regular_file() && is_image(e.path())) in_class.push_back(e.path().string());
    std::sort(in_class.begin(), in_class.end());  // directory order is not stable
    for (auto& f : in_class) files.emplace_back(std::move(f), static_cast<int64_t>(c));
  }
  KD_CHECK(!files.empty(), "{}: no PNG/JPEG images in any class folder", root);

  const int channels = opts.channels > 0 ? opts.channels : 3;
  KD_CHECK(channels == 1 || channels == 3, "image channels must be 1 or 3, got {}", channels);
  const int h = opts.height > 0 ? opts.height : 32;
  const int w = opts.width > 0 ? opts.width : h;
  auto images = torch::empty({static_cast<int64_t>(files.size()), channels, h, w}, torch::kUInt8);
  auto labels = torch::empty({static_cast<int64_t>(files.size())}, torch::kInt64);
  for (size_t i = 0; i < files.size(); ++i) {
    cv::Mat img = cv::imread(files[i].first, channels == 1 ? cv::IMREAD_GRAYSCALE
                                                           : cv::IMREAD_COLOR);
    KD_CHECK(!img.empty(), "{}: cannot decode image", files[i].first);
    if (img.rows != h || img.cols != w) cv::resize(img, img, cv::Size(w, h), 0, 0, cv::INTER_AREA);
    if (channels == 3) cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
    auto hwc = torch::from_blob(img.data, {h, w, channels}, torch::kUInt8);
    images[static_cast<int64_t>(i)].copy_(hwc.permute({2, 0, 1}));
    labels[static_cast<int64_t>(i)] = files[i].second;
  }
  return {images, labels, classes, root};
}

}  // namespace kd
