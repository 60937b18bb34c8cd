#include "kd/data/image.h"

#include <filesystem>
#include <fstream>

#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "kd/core/crc.h"
#include "kd/core/error.h"
#include "kd/data/transform.h"
#include "opencv_image.h"

namespace kd {
namespace {

uint32_t be32(std::string_view b, size_t at) {
  return (uint32_t(uint8_t(b[at])) << 24) | (uint32_t(uint8_t(b[at + 1])) << 16) |
         (uint32_t(uint8_t(b[at + 2])) << 8) | uint32_t(uint8_t(b[at + 3]));
}
uint32_t be16(std::string_view b, size_t at) {
  return (uint32_t(uint8_t(b[at])) << 8) | uint8_t(b[at + 1]);
}

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
    const bool frame =
        marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (frame) {
      if (pos + 7 > b.size()) break;
      return {be16(b, pos + 5), be16(b, pos + 3)};
    }
    pos += length;
  }
  fail("broken JPEG: no frame header");
}

ImageSize bmp_size(std::string_view b) {
  if (b.size() < 26) fail("broken BMP: {} bytes", b.size());
  auto le32 = [&](size_t at) {
    return static_cast<int32_t>(uint32_t(uint8_t(b[at])) | (uint32_t(uint8_t(b[at + 1])) << 8) |
                                (uint32_t(uint8_t(b[at + 2])) << 16) |
                                (uint32_t(uint8_t(b[at + 3])) << 24));
  };
  const int64_t w = le32(18), h = le32(22);
  return {w < 0 ? -w : w, h < 0 ? -h : h};  // a negative height means top-down rows
}

// Walks a PNG's chunks: each within the file, each CRC-32 right, ending in IEND. A truncated or
// damaged PNG is refused here in one line; libpng would print its own error to stderr first.
void check_png_chunks(std::string_view b) {
  size_t pos = 8;
  while (true) {
    if (pos + 12 > b.size()) fail("truncated PNG ({} bytes, no IEND chunk)", b.size());
    const uint32_t length = be32(b, pos);
    if (length > b.size() - pos - 12)
      fail("truncated PNG: chunk at byte {} runs past the end", pos);
    const uint32_t want = be32(b, pos + 8 + length);
    if (crc32_bytes(b.data() + pos + 4, length + 4) != want)
      fail("damaged PNG: CRC mismatch in the chunk at byte {}", pos);
    if (b.substr(pos + 4, 4) == "IEND") return;
    pos += 12 + length;
  }
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

cv::Mat decode_checked(std::string_view bytes, int flags, int64_t max_pixels, bool allow_bmp) {
  // OpenCV logs its own warnings (findDecoder, ...) to stderr; kd reports errors in one line.
  static const bool quiet = [] {
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    return true;
  }();
  (void)quiet;
  // BMP only from image folders on disk: uploads stay PNG or JPEG (the decoders fuzzed here).
  const bool bmp = allow_bmp && bytes.size() >= 2 && bytes.substr(0, 2) == "BM";
  const ImageSize size = bmp ? bmp_size(bytes) : encoded_image_size(bytes);
  KD_CHECK(size.width > 0 && size.height > 0, "image header says {}x{} pixels", size.width,
           size.height);
  // Divided, not multiplied: header sizes go up to 2^32 each (found by fuzz_image_bytes).
  KD_CHECK(size.width <= max_pixels / size.height,
           "image is {}x{} pixels, more than the limit of {}", size.width, size.height, max_pixels);
  if (bytes.substr(0, 4) == "\x89PNG") check_png_chunks(bytes);
  cv::Mat img;
  try {
    const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
    img = cv::imdecode(raw, flags);
  } catch (const cv::Exception& e) {
    fail("cannot decode the image ({})", e.err);
  }
  KD_CHECK(!img.empty(), "cannot decode the image (corrupt or truncated {}x{} image)", size.width,
           size.height);
  return img;
}

cv::Mat read_image_file(const std::string& path, int flags, int64_t max_pixels) {
  namespace fs = std::filesystem;
  // A FIFO or a device would block or never end; a file bigger than any image kd accepts is
  // refused before it is read.
  std::error_code ec;
  KD_CHECK(fs::is_regular_file(path, ec), "{}: not a regular file", path);
  const auto bytes = fs::file_size(path, ec);
  KD_CHECK(!ec, "{}: cannot read ({})", path, ec.message());
  KD_CHECK(bytes <= static_cast<uintmax_t>(kMaxImageFileBytes),
           "{}: {} bytes, more than an image file may have ({})", path, bytes, kMaxImageFileBytes);
  std::ifstream in(path, std::ios::binary);
  KD_CHECK(in, "{}: cannot read", path);
  std::string data(static_cast<size_t>(bytes), '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  KD_CHECK(in.gcount() == static_cast<std::streamsize>(data.size()), "{}: cannot read", path);
  try {
    return decode_checked(data, flags, max_pixels, /*allow_bmp=*/true);
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }
}

ImageSize image_file_size(const std::string& path, int64_t max_pixels) {
  namespace fs = std::filesystem;
  std::error_code ec;
  KD_CHECK(fs::is_regular_file(path, ec), "{}: not a regular file", path);
  const auto bytes = fs::file_size(path, ec);
  KD_CHECK(!ec, "{}: cannot read ({})", path, ec.message());
  std::ifstream in(path, std::ios::binary);
  KD_CHECK(in, "{}: cannot read", path);
  // A JPEG's frame header may follow tens of kilobytes of EXIF data and thumbnails.
  constexpr uintmax_t kHead = 64 << 10;
  std::string data(static_cast<size_t>(std::min(bytes, kHead)), '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  KD_CHECK(in.gcount() == static_cast<std::streamsize>(data.size()), "{}: cannot read", path);
  auto header = [](std::string_view b) {
    return b.size() >= 2 && b.substr(0, 2) == "BM" ? bmp_size(b) : encoded_image_size(b);
  };
  ImageSize size;
  try {
    try {
      size = header(data);
    } catch (const Error&) {
      if (data.size() == bytes) throw;
      KD_CHECK(bytes <= static_cast<uintmax_t>(kMaxImageFileBytes),
               "{} bytes, more than an image file may have ({})", bytes, kMaxImageFileBytes);
      data.resize(static_cast<size_t>(bytes));
      const auto more = static_cast<std::streamsize>(bytes - kHead);
      in.read(data.data() + kHead, more);
      KD_CHECK(in.gcount() == more, "cannot read");
      size = header(data);
    }
    KD_CHECK(size.width > 0 && size.height > 0, "image header says {}x{} pixels", size.width,
             size.height);
    KD_CHECK(size.width <= max_pixels / size.height,
             "image is {}x{} pixels, more than the limit of {}", size.width, size.height,
             max_pixels);
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }
  return size;
}

torch::Tensor decode_image(std::string_view bytes, const ImageOptions& opts, int64_t max_pixels) {
  const int channels = opts.channels > 0 ? opts.channels : 3;
  KD_CHECK(channels == 1 || channels == 3, "image channels must be 1 or 3, got {}", channels);
  if (opts.resize > 0) {              // the eval transform of a model trained on streamed photos
    (void)encoded_image_size(bytes);  // uploads are PNG or JPEG, not BMP
    const InputGeometry g = stream_geometry(opts);
    auto out = torch::empty({g.channels, g.size, g.size}, torch::kUInt8);
    transform_image(bytes, g, {}, 0, out.data_ptr<uint8_t>(), max_pixels);
    return out;
  }
  cv::Mat img = decode_checked(bytes, channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR,
                               max_pixels, false);
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
