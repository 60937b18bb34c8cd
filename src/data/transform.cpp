#include "kd/data/transform.h"

#include <algorithm>
#include <cmath>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "kd/core/error.h"
#include "kd/data/dataset.h"
#include "kd/data/image.h"
#include "opencv_image.h"

namespace kd {
namespace {

uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Uniform draws from one sample's seed.
struct Draws {
  uint64_t state;
  double uniform(double lo = 0, double hi = 1) {
    return lo + (hi - lo) * static_cast<double>(splitmix(state) >> 11) * 0x1.0p-53;
  }
  int64_t integer(int64_t lo, int64_t hi) {  // [lo, hi]
    return lo + static_cast<int64_t>(splitmix(state) % static_cast<uint64_t>(hi - lo + 1));
  }
};

struct Box {
  double x, y, w, h;
};

// torchvision.transforms.RandomResizedCrop.get_params: ten tries at an area and a log-uniform
// aspect ratio, else the centre crop of the whole image clamped to the ratio range.
Box random_resized_box(int64_t W, int64_t H, double scale_min, Draws& d) {
  const double area = static_cast<double>(W * H);
  const double lo = std::log(3.0 / 4.0), hi = std::log(4.0 / 3.0);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * d.uniform(scale_min, 1.0);
    const double ratio = std::exp(d.uniform(lo, hi));
    const auto w = static_cast<int64_t>(std::lround(std::sqrt(target * ratio)));
    const auto h = static_cast<int64_t>(std::lround(std::sqrt(target / ratio)));
    if (w > 0 && h > 0 && w <= W && h <= H) {
      const int64_t top = d.integer(0, H - h), left = d.integer(0, W - w);
      return {static_cast<double>(left), static_cast<double>(top), static_cast<double>(w),
              static_cast<double>(h)};
    }
  }
  const double in_ratio = static_cast<double>(W) / static_cast<double>(H);
  double w = static_cast<double>(W), h = static_cast<double>(H);
  if (in_ratio < 3.0 / 4.0)
    h = std::round(w / (3.0 / 4.0));
  else if (in_ratio > 4.0 / 3.0)
    w = std::round(h * (4.0 / 3.0));
  return {(static_cast<double>(W) - w) / 2, (static_cast<double>(H) - h) / 2, w, h};
}

// The eval transform's region: the centre `size` x `size` of the image resized so that its
// shorter side is `resize` (torchvision Resize(resize) then CenterCrop(size)), in source pixels.
Box centre_box(int64_t W, int64_t H, int resize, int size) {
  const double scale = static_cast<double>(resize) / static_cast<double>(std::min(W, H));
  // torchvision: the longer side becomes int(long * resize / short).
  const double rw = W <= H ? resize : std::floor(static_cast<double>(W) * scale);
  const double rh = H <= W ? resize : std::floor(static_cast<double>(H) * scale);
  const double top = std::round((rh - size) / 2), left = std::round((rw - size) / 2);
  const double sx = static_cast<double>(W) / rw, sy = static_cast<double>(H) / rh;
  return {left * sx, top * sy, size * sx, size * sy};
}

int decode_flags(int channels, int reduce) {
  if (channels == 1)
    return reduce == 8   ? cv::IMREAD_REDUCED_GRAYSCALE_8
           : reduce == 4 ? cv::IMREAD_REDUCED_GRAYSCALE_4
           : reduce == 2 ? cv::IMREAD_REDUCED_GRAYSCALE_2
                         : cv::IMREAD_GRAYSCALE;
  return reduce == 8   ? cv::IMREAD_REDUCED_COLOR_8
         : reduce == 4 ? cv::IMREAD_REDUCED_COLOR_4
         : reduce == 2 ? cv::IMREAD_REDUCED_COLOR_2
                       : cv::IMREAD_COLOR;
}

// An 8-bit HWC image (BGR or gray) into the top-left of CHW (RGB) planes of side `size` at `out`,
// mirrored across the image's width when `flip`.
void to_planes(const cv::Mat& img, int size, bool flip, uint8_t* out) {
  const int C = img.channels();
  const int64_t plane = static_cast<int64_t>(size) * size;
  for (int y = 0; y < img.rows; ++y) {
    const uint8_t* row = img.ptr<uint8_t>(y);
    for (int x = 0; x < img.cols; ++x) {
      const int ox = flip ? img.cols - 1 - x : x;
      const uint8_t* px = row + static_cast<ptrdiff_t>(x) * C;
      for (int c = 0; c < C; ++c)
        out[c * plane + static_cast<int64_t>(y) * size + ox] = px[C == 3 ? 2 - c : 0];
    }
  }
}

}  // namespace

InputGeometry stream_geometry(const ImageOptions& opts) {
  InputGeometry g;
  g.channels = opts.channels > 0 ? opts.channels : 3;
  KD_CHECK(g.channels == 1 || g.channels == 3, "image channels must be 1 or 3, got {}", g.channels);
  g.size = opts.height > 0 ? opts.height : kDefaultPhotoSize;
  KD_CHECK(opts.width <= 0 || opts.width == g.size,
           "streamed images are cropped square: data.height {} != data.width {}", opts.height,
           opts.width);
  g.resize = opts.resize > 0 ? opts.resize : default_resize(g.size);
  KD_CHECK(g.resize >= g.size, "data.resize {} is smaller than the crop {}", g.resize, g.size);
  return g;
}

int default_resize(int size) { return static_cast<int>(std::lround(size * 256.0 / 224.0)); }

uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t index) {
  uint64_t s = seed;
  uint64_t a = splitmix(s) ^ static_cast<uint64_t>(epoch);
  uint64_t b = splitmix(a) ^ static_cast<uint64_t>(index);
  return splitmix(b);
}

double letterbox_into(cv::Mat img, int size, uint8_t* out) {
  const double s =
      std::min(static_cast<double>(size) / img.cols, static_cast<double>(size) / img.rows);
  const int w = std::max(1, static_cast<int>(std::lround(img.cols * s)));
  const int h = std::max(1, static_cast<int>(std::lround(img.rows * s)));
  if (w != img.cols || h != img.rows)
    cv::resize(img, img, cv::Size(w, h), 0, 0, s < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
  std::fill(out, out + int64_t{3} * size * size, uint8_t{0});
  to_planes(img, size, /*flip=*/false, out);
  return s;
}

void transform_image(std::string_view bytes, const InputGeometry& g, const ImageAugment& aug,
                     uint64_t seed, uint8_t* out, int64_t max_pixels) {
  KD_CHECK(g.channels == 1 || g.channels == 3, "image channels must be 1 or 3, got {}", g.channels);
  if (g.letterbox) {
    KD_CHECK(g.channels == 3, "letterboxed images have 3 channels, not {}", g.channels);
    letterbox_into(decode_checked(bytes, kLetterboxDecode, max_pixels, /*allow_bmp=*/true), g.size,
                   out);
    return;
  }
  const bool bmp = bytes.size() >= 2 && bytes.substr(0, 2) == "BM";
  const bool jpeg = bytes.size() >= 2 && uint8_t(bytes[0]) == 0xFF && uint8_t(bytes[1]) == 0xD8;
  // The region is chosen on the header's size, before decoding, so a JPEG can be decoded at the
  // smallest DCT scale that still covers the output.
  ImageSize full{};
  if (!bmp) full = encoded_image_size(bytes);
  Draws d{seed};
  Box box{};
  int reduce = 1;
  if (!bmp && full.width > 0 && full.height > 0) {
    box = aug.random_resized_crop ? random_resized_box(full.width, full.height, aug.scale_min, d)
                                  : centre_box(full.width, full.height, g.resize, g.size);
    if (jpeg)
      while (reduce < 8 && box.w / (2 * reduce) >= g.size && box.h / (2 * reduce) >= g.size)
        reduce *= 2;
  }
  cv::Mat img = decode_checked(bytes, decode_flags(g.channels, reduce), max_pixels,
                               /*allow_bmp=*/true);
  if (bmp) {  // no header size above: the region comes from the decoded image
    box = aug.random_resized_crop ? random_resized_box(img.cols, img.rows, aug.scale_min, d)
                                  : centre_box(img.cols, img.rows, g.resize, g.size);
    full = {img.cols, img.rows};
  }
  // Box in decoded pixels (a reduced JPEG is ceil(side / reduce) pixels a side).
  const double sx = static_cast<double>(img.cols) / static_cast<double>(full.width);
  const double sy = static_cast<double>(img.rows) / static_cast<double>(full.height);
  int x0 = static_cast<int>(std::floor(box.x * sx)), y0 = static_cast<int>(std::floor(box.y * sy));
  int x1 = static_cast<int>(std::ceil((box.x + box.w) * sx));
  int y1 = static_cast<int>(std::ceil((box.y + box.h) * sy));
  x0 = std::clamp(x0, 0, img.cols - 1);
  y0 = std::clamp(y0, 0, img.rows - 1);
  x1 = std::clamp(x1, x0 + 1, img.cols);
  y1 = std::clamp(y1, y0 + 1, img.rows);
  cv::Mat crop = img(cv::Rect(x0, y0, x1 - x0, y1 - y0));
  cv::Mat resized;
  const bool shrink = crop.cols >= g.size && crop.rows >= g.size;
  // INTER_AREA averages when shrinking (as PIL's antialiased bilinear does); it would repeat
  // pixels when enlarging, where bilinear is right.
  cv::resize(crop, resized, cv::Size(g.size, g.size), 0, 0,
             shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
  const bool flip = aug.hflip && d.uniform() < 0.5;
  double brightness = 1, contrast = 1, saturation = 1;
  if (aug.jitter > 0) {
    brightness = d.uniform(std::max(0.0, 1 - aug.jitter), 1 + aug.jitter);
    contrast = d.uniform(std::max(0.0, 1 - aug.jitter), 1 + aug.jitter);
    saturation = d.uniform(std::max(0.0, 1 - aug.jitter), 1 + aug.jitter);
  }
  const int S = g.size, C = g.channels;
  if (aug.jitter > 0) {
    // torchvision's order: brightness, contrast (towards the mean grey), saturation (towards
    // each pixel's grey), each clamped to [0, 255].
    cv::Mat f;
    resized.convertTo(f, CV_32F, brightness);
    cv::min(f, 255.0, f);
    cv::Mat grey;
    if (C == 3)
      cv::cvtColor(f, grey, cv::COLOR_BGR2GRAY);
    else
      grey = f;
    const double mean = cv::mean(grey)[0];
    f = f * contrast + (1 - contrast) * mean;
    cv::min(cv::max(f, 0.0), 255.0, f);
    if (C == 3) {
      cv::cvtColor(f, grey, cv::COLOR_BGR2GRAY);
      cv::Mat grey3;
      cv::cvtColor(grey, grey3, cv::COLOR_GRAY2BGR);
      f = f * saturation + grey3 * (1 - saturation);
      cv::min(cv::max(f, 0.0), 255.0, f);
    }
    f.convertTo(resized, CV_8U);
  }
  to_planes(resized, S, flip, out);
}

}  // namespace kd
