// Shared by the COCO and VOC targets: a scratch dataset folder with two real images (a PNG and a
// JPEG, 40x30) that annotations may point at.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <spdlog/spdlog.h>

inline std::filesystem::path scratch_dataset(const std::string& name) {
  namespace fs = std::filesystem;
  spdlog::set_level(spdlog::level::off);
  fs::path root = fs::temp_directory_path() / ("kd-fuzz-" + name + "-" + std::to_string(getpid()));
  for (const char* sub : {"images", "JPEGImages", "Annotations"}) fs::create_directories(root / sub);
  cv::Mat img(30, 40, CV_8UC3, cv::Scalar(10, 200, 90));
  for (const char* sub : {"images", "JPEGImages"}) {
    cv::imwrite((root / sub / "a.png").string(), img);
    cv::imwrite((root / sub / "b.jpg").string(), img);
  }
  return root;
}
