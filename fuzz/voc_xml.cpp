// Pascal VOC annotations (kd/data/detection.h): one XML file per image, any content.
#include <cstddef>
#include <cstdint>
#include <fstream>

#include <torch/torch.h>

#include "detection_annotations.h"
#include "kd/core/error.h"
#include "kd/data/detection.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto root = scratch_dataset("voc");
  std::ofstream(root / "Annotations" / "a.xml", std::ios::binary)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    auto d = kd::load_detection(root.string(), "train", 32);
    check_boxes(d, 32);
  } catch (const kd::Error&) {
  }
  return 0;
}
