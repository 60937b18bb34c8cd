// Image-folder datasets (root/<class>/<image>): the input describes a folder tree, one entry per
// line, "class/file" then '|' and the file's bytes ('P' alone: a real PNG). Class names, odd
// file names and extensions, empty or undecodable files, empty classes, files at the top level.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/data/dataset.h"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path root =
      fs::temp_directory_path() / ("kd-fuzz-folder-" + std::to_string(getpid()));
  static std::vector<uchar> png;
  if (png.empty()) cv::imencode(".png", cv::Mat(9, 7, CV_8UC1, cv::Scalar(77)), png);
  fs::remove_all(root);
  fs::create_directories(root);
  std::istringstream lines(std::string(reinterpret_cast<const char*>(data), size));
  std::string line;
  for (int n = 0; n < 16 && std::getline(lines, line); ++n) {
    const auto bar = line.find('|');
    const std::string rel = line.substr(0, bar),
                      body = bar == std::string::npos ? "" : line.substr(bar + 1);
    // The harness stays inside its folder; everything else about the names is the fuzzer's.
    if (rel.empty() || rel.size() > 64 || rel[0] == '/' || rel.find("..") != std::string::npos ||
        rel.find('\0') != std::string::npos)
      continue;
    const fs::path p = root / rel;
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    std::ofstream out(p, std::ios::binary);
    if (body == "P")
      out.write(reinterpret_cast<const char*>(png.data()),
                static_cast<std::streamsize>(png.size()));
    else
      out << body;
  }
  try {
    kd::ImageOptions opts;
    opts.channels = 1;
    opts.height = 8;
    opts.width = 8;
    // The listing, then every image through the decode workers (as a run's first pass does).
    auto d = kd::materialize(kd::load_dataset(root.string(), "train", opts));
    if (d.size() != d.labels.size(0) || d.images.size(2) != 8 || d.images.size(3) != 8)
      __builtin_trap();
    if (d.size() > 0 &&
        (d.labels.min().item<int64_t>() < 0 || d.labels.max().item<int64_t>() >= d.num_classes()))
      __builtin_trap();
  } catch (const kd::Error&) {
  }
  return 0;
}
