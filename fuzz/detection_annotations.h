// Shared by the COCO and VOC targets: a scratch dataset folder with two real images (a PNG and a
// JPEG, 40x30) that annotations may point at.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/data/detection.h"

inline std::filesystem::path scratch_dataset(const std::string& name) {
  namespace fs = std::filesystem;
  spdlog::set_level(spdlog::level::off);
  fs::path root = fs::temp_directory_path() / ("kd-fuzz-" + name + "-" + std::to_string(getpid()));
  for (const char* sub : {"images", "JPEGImages", "Annotations"})
    fs::create_directories(root / sub);
  cv::Mat img(30, 40, CV_8UC3, cv::Scalar(10, 200, 90));
  for (const char* sub : {"images", "JPEGImages"}) {
    cv::imwrite((root / sub / "a.png").string(), img);
    cv::imwrite((root / sub / "b.jpg").string(), img);
  }
  return root;
}

// What loading must guarantee for anything it accepts: boxes inside the letterboxed frame of
// side `size`, labels among the classes.
inline void check_boxes(const kd::DetectionDataset& d, float size) {
  for (size_t i = 0; i < d.boxes.size(); ++i) {
    if (d.boxes[i].numel() == 0) continue;
    if (d.boxes[i].min().item<float>() < 0 || d.boxes[i].max().item<float>() > size)
      __builtin_trap();
    if (d.labels[i].min().item<int64_t>() < 0 ||
        d.labels[i].max().item<int64_t>() >= d.num_classes())
      __builtin_trap();
  }
}
