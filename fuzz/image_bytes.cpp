// Uploaded images: base64 text, then the PNG/JPEG header read and the decode behind the pixel
// limit (kd/core/base64.h, kd/data/image.h). Inputs starting with '{' go through base64 first.
#include <cstddef>
#include <cstdint>
#include <string>

#include <torch/types.h>

#include "kd/core/base64.h"
#include "kd/core/error.h"
#include "kd/data/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    if (!bytes.empty() && bytes[0] == '{') {
      bytes = kd::base64_decode(bytes.substr(1));
      if (kd::base64_decode(kd::base64_encode(bytes)) != bytes) __builtin_trap();  // round trip
    }
    const kd::ImageSize s = kd::encoded_image_size(bytes);
    (void)s;
    auto x = kd::decode_image(bytes, kd::ImageOptions{1, 28, 28}, 1 << 16);
    if (x.size(1) != 28 || x.size(2) != 28) __builtin_trap();
  } catch (const kd::Error&) {
  }
  return 0;
}
