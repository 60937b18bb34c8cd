#pragma once
/// @file
/// `kd data make-detection`: a detection dataset built from real images. Fashion-MNIST items of a
/// few look-alike classes are rescaled and pasted, 1 to N per canvas, onto textured or noisy
/// backgrounds, with tight boxes taken from the item's pixels. Training canvases use the source's
/// training images and test canvases its test images, each item at most once, so no garment is in
/// both parts. Written as PNG + COCO JSON (train.json, test.json), and Pascal VOC XML on request.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kd {

struct MakeDetectionOptions {
  std::string source = "fashion-mnist";  ///< any labeled source load_dataset() reads
  std::vector<std::string> classes = {"T-shirt/top", "Pullover", "Coat", "Shirt", "Bag"};
  int64_t train_images = 3000;
  int64_t test_images = 600;
  int64_t canvas = 128;
  int64_t min_objects = 1, max_objects = 6;
  int64_t min_size = 20, max_size = 64;  ///< side of the pasted item in pixels (items are square)
  uint64_t seed = 0;
  bool voc = false;
  std::string out;
};

/// Returns a summary (images, boxes per class, box size quantiles) also written as info.json.
nlohmann::json make_detection_dataset(const MakeDetectionOptions& opts);

}  // namespace kd
