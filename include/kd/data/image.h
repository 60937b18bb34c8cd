#pragma once
/// @file
/// Encoded images (PNG or JPEG bytes, e.g. uploaded to the server) to model inputs, decoded with
/// OpenCV the way kd's image folders are. The header is read first, so an image with too many
/// pixels is refused before a single pixel is decoded (a 20-byte PNG can claim 4 gigapixels).
#include <cstdint>
#include <string_view>

#include <torch/types.h>

#include "kd/data/dataset.h"

namespace kd {

struct ImageSize {
  int64_t width = 0, height = 0;
};

/// Width and height from a PNG or JPEG header; kd::Error for other formats or a broken header.
ImageSize encoded_image_size(std::string_view bytes);

/// Checks the header against max_pixels, then decodes to uint8 [C, H, W]: converted to
/// opts.channels (1 gray, 3 RGB) and resized to opts.height x opts.width (INTER_AREA), or with
/// opts.resize the eval transform of streamed photos (shorter side to resize, centre crop).
/// kd::Error when the bytes do not decode.
torch::Tensor decode_image(std::string_view bytes, const ImageOptions& opts, int64_t max_pixels);

}  // namespace kd
