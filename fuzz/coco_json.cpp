// COCO annotation files (kd/data/detection.h): images, categories, boxes in any shape or type.
// Accepted data must hold boxes inside the letterboxed frame and labels within the classes.
#include <cstddef>
#include <cstdint>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "detection_annotations.h"
#include "kd/core/error.h"
#include "kd/data/detection.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto root = scratch_dataset("coco");
  std::ofstream(root / "train.json", std::ios::binary)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    auto d = kd::load_detection(root.string(), "train", 32);
    check_boxes(d, 32);
  } catch (const kd::Error&) {
  } catch (const nlohmann::json::exception&) {
    __builtin_trap();  // must have been turned into one clear kd::Error
  }
  return 0;
}
