#pragma once
/// @file
/// Per-image transforms of streamed images, run in the loader's worker threads: decode at the
/// source's resolution, then either torchvision's training crop (RandomResizedCrop with its
/// scale and ratio defaults and sampling, horizontal flip, optional colour jitter) or its eval
/// transform (resize the shorter side, centre crop). Every random draw comes from
/// (seed, epoch, sample index), so the result does not depend on which thread ran it.
#include <cstdint>
#include <string_view>

namespace kd {

/// The input a streamed image becomes: channels x size x size.
struct InputGeometry {
  int channels = 3;
  int size = 224;    ///< the training crop and the eval crop
  int resize = 256;  ///< eval: the shorter side is resized to this, then centre-cropped to size
  /// Detection: the whole image scaled to fit size x size, top-left, zero padding (3 channels;
  /// no crop, and the augmentation is left to the batch, where the boxes follow it).
  bool letterbox = false;
};

/// The training default for photos, as torchvision trains ImageNet: 224 crop, 256 -> 224 eval.
constexpr int kDefaultPhotoSize = 224;
/// The eval resize for a crop of `size`: size * 256 / 224, rounded.
int default_resize(int size);

struct ImageAugment {
  bool random_resized_crop = false;  ///< scale [0.08, 1], ratio [3/4, 4/3]; off: eval transform
  double scale_min = 0.08;
  bool hflip = false;  ///< with probability 1/2
  double jitter = 0;   ///< brightness, contrast and saturation factors drawn from [1 - j, 1 + j]
  bool any() const { return random_resized_crop || hflip || jitter > 0; }
};

/// The seed of one sample's draws: (seed, epoch, index) mixed by SplitMix64.
uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t index);

/// Decodes `bytes` (PNG, JPEG or BMP; header and pixel limit checked first) and writes the
/// input into `out`: uint8 [channels, size, size], channels in RGB order (letterboxed when the
/// geometry says so). JPEGs are decoded at
/// 1/2, 1/4 or 1/8 scale when the crop is that much larger than its output (libjpeg's DCT
/// scaling): the same pixels up to resampling, several times less decode work. kd::Error when
/// the image does not decode or has more than max_pixels (64 Mpx: as image files are held).
void transform_image(std::string_view bytes, const InputGeometry& geometry,
                     const ImageAugment& augment, uint64_t seed, uint8_t* out,
                     int64_t max_pixels = int64_t{1} << 26);

}  // namespace kd
