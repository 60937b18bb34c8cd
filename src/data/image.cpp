#include "kd/data/image.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "opencv_image.h"

namespace kd {
namespace {

uint32_t be32(std::string_view b, size_t at) {
  return (uint32_t(uint8_t(b[at])) << 24) | (uint32_t(uint8_t(b[at + 1])) << 16) |
         (uint32_t(uint8_t(b[at + 2])) << 8) | uint32_t(uint8_t(b[at + 3]));
}
uint32_t be16(std::string_view b, size_t at) { return (uint32_t(uint8_t(b[at])) << 8) | uint8_t(b[at + 1]); }

ImageSize jpeg_size(std::string_view b) {
  size_t pos = 2;
  while (pos + 4 <= b.size()) {
    if (uint8_t(b[pos]) != 0xFF) fail("broken JPEG: no marker at byte {}", pos);
    while (pos < b.size() && uint8_t(b[pos]) == 0xFF) ++pos;  // fill bytes
    if (pos >= b.size()) break;
    const uint8_t marker = uint8_t(b[pos++]);
    if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;
    if (marker == 0xD9 || marker == 0xDA) break;  // end of image / start of scan before any frame
    if (pos + 2 > b.size()) break;
    const uint32_t length = be16(b, pos);
    if (length < 2) fail("broken JPEG: segment length {} at byte {}", length, pos);
    const bool frame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (frame) {
      if (pos + 7 > b.size()) break;
      return {be16(b, pos + 5), be16(b, pos + 3)};
    }
    pos += length;
  }
  fail("broken JPEG: no frame header");
}

}  // namespace

ImageSize encoded_image_size(std::string_view b) {
  static constexpr char kPng[] = "\x89PNG\r\n\x1a\n";
  if (b.size() >= 24 && b.substr(0, 8) == std::string_view(kPng, 8)) {
    if (b.substr(12, 4) != "IHDR") fail("broken PNG: no IHDR chunk");
    return {be32(b, 16), be32(b, 20)};
  }
  if (b.size() >= 4 && uint8_t(b[0]) == 0xFF && uint8_t(b[1]) == 0xD8) return jpeg_size(b);
  fail("not a PNG or JPEG image ({} bytes)", b.size());
}

torch::Tensor decode_image(std::string_view bytes, const ImageOptions& opts, int64_t max_pixels) {
  const ImageSize size = encoded_image_size(bytes);
  KD_CHECK(size.width > 0 && size.height > 0, "image header says {}x{} pixels", size.width, size.height);
  // Divided, not multiplied: header sizes go up to 2^32 each (found by fuzz_image_bytes).
  KD_CHECK(size.width <= max_pixels / size.height, "image is {}x{} pixels, more than the limit of {}", size.width,
           size.height, max_pixels);
  const int channels = opts.channels > 0 ? opts.channels : 3;
  KD_CHECK(channels == 1 || channels == 3, "image channels must be 1 or 3, got {}", channels);
  cv::Mat img;
  try {
    const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
    img = cv::imdecode(raw, channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    fail("cannot decode the image ({})", e.err);
  }
  KD_CHECK(!img.empty(), "cannot decode the image (corrupt or truncated {}x{} image)", size.width, size.height);
  const int h = opts.height > 0 ? opts.height : img.rows;
  const int w = opts.width > 0 ? opts.width : img.cols;
  return fit_image(img, channels, h, w);
}

torch::Tensor fit_image(cv::Mat img, int channels, int h, int w) {
  if (img.rows != h || img.cols != w) cv::resize(img, img, cv::Size(w, h), 0, 0, cv::INTER_AREA);
  if (channels == 3) cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
  if (!img.isContinuous()) img = img.clone();
  auto hwc = torch::from_blob(img.data, {h, w, channels}, torch::kUInt8);
  return hwc.permute({2, 0, 1}).contiguous();
}

}  // namespace kd
