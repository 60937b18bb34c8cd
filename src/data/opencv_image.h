#pragma once
// Private to the library: the one conversion from a decoded OpenCV image to a kd input tensor.
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "kd/data/image.h"

namespace kd {

// Image files read from disk (folders, detection sets, kd predict) are held to a pixel limit,
// as uploads are: a 20000x20000 PNG would cost gigabytes once decoded.
constexpr int64_t kMaxImageFilePixels = int64_t(1) << 26;  // 64 Mpx, e.g. 8192 x 8192
constexpr int64_t kMaxImageFileBytes = int64_t(1) << 28;   // 256 MiB

// Header checks (PNG or JPEG, or BMP where allow_bmp; pixel limit, a PNG's chunks and CRCs), then
// cv::imdecode with `flags`; kd::Error on any failure, and OpenCV/libpng print nothing.
cv::Mat decode_checked(std::string_view bytes, int flags, int64_t max_pixels, bool allow_bmp);
// The same for a file: only a regular file, read whole, the error naming it.
cv::Mat read_image_file(const std::string& path, int flags,
                        int64_t max_pixels = kMaxImageFilePixels);

// The width and height in a PNG, JPEG or BMP file's header, reading only the file's start (all of
// it when a JPEG's frame header comes after large metadata); kd::Error naming the file when it is
// not a regular file, the header is broken, or the image has more than max_pixels.
ImageSize image_file_size(const std::string& path, int64_t max_pixels = kMaxImageFilePixels);

// How detection images are decoded: as stored, since boxes are annotated in the stored pixels and
// the header's size (read at load time) is the one they are scaled by.
constexpr int kLetterboxDecode = cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION;

// Detection's input: `img` (8-bit BGR) scaled to fit size x size with its aspect kept (INTER_AREA
// when shrinking, bilinear when enlarging), top-left on zeros, written to `out` as uint8 RGB
// [3, size, size]. Returns the scale (input pixels per image pixel).
double letterbox_into(cv::Mat img, int size, uint8_t* out);

// img: decoded 8-bit, 1 channel (gray) or 3 channels (BGR, OpenCV's order) -> uint8 [C, h, w]
// with C = `channels` (3 means RGB), resized with INTER_AREA when the size differs.
torch::Tensor fit_image(cv::Mat img, int channels, int h, int w);

}  // namespace kd
