#pragma once
// Private to the library: the one conversion from a decoded OpenCV image to a kd input tensor.
#include <opencv2/core.hpp>
#include <torch/types.h>

namespace kd {

// img: decoded 8-bit, 1 channel (gray) or 3 channels (BGR, OpenCV's order) -> uint8 [C, h, w]
// with C = `channels` (3 means RGB), resized with INTER_AREA when the size differs.
torch::Tensor fit_image(cv::Mat img, int channels, int h, int w);

}  // namespace kd
