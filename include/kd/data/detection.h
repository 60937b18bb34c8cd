#pragma once
/// @file
/// Detection datasets: COCO JSON or Pascal VOC XML annotations over image files. Only the
/// annotations and each image's size (from its header) are held in memory; the images are read
/// and letterboxed (scaled to fit, top-left, zero padding) to the model's square input per batch
/// by the loader's worker threads. Boxes are kept in input pixels; each image remembers its scale
/// so detections map back to the original pixels for COCO evaluation.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <torch/types.h>

#include "kd/data/coco_boxes.h"
#include "kd/data/dataset.h"

namespace kd {

struct DetectionImage {
  int64_t id = 0;  ///< COCO image id (VOC: position in the sorted annotation list + 1)
  std::string file;
  int64_t width = 0, height = 0;  ///< original pixels
  double scale = 1.0;             ///< input pixels per original pixel
};

struct DetectionDataset {
  /// The images as a streamed dataset (letterboxed to 3 x S x S; its labels unused); empty when
  /// only the annotations were loaded.
  Dataset images;
  std::vector<torch::Tensor> boxes;   ///< per image float [n, 4] xyxy, input pixels
  std::vector<torch::Tensor> labels;  ///< per image int64 [n], class index
  std::vector<torch::Tensor>
      ignore;  ///< per image bool [n]: crowd or VOC difficult (not trained on)
  std::vector<GroundTruthBox>
      ground_truth;  ///< every annotation kept, original pixels (evaluation)
  std::vector<DetectionImage> info;
  std::vector<std::string> class_names;
  std::vector<int64_t> category_ids;  ///< COCO category id of each class
  std::string source;

  int64_t size() const { return static_cast<int64_t>(info.size()); }
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
  int64_t image_size() const { return images.stream.geometry.size; }  ///< S
  DetectionDataset subset(const torch::Tensor& index) const;
  std::vector<int64_t> image_ids() const;
};

/// `source`: a COCO JSON file (image file_name relative to the file's folder or its images/
/// subfolder), a folder holding train.json (and test.json when it has a test part: what
/// `kd data make-detection` writes), or a Pascal VOC folder (Annotations/*.xml, JPEGImages/).
/// `part` is "train" or "test". Images are letterboxed to size x size; each image's header is
/// read now (a file that is missing, not an image or too large is an error naming it), its pixels
/// when a batch needs them, by `stream.workers` threads (`stream.strict`: an image that fails then
/// is an error, not a skipped warning).
DetectionDataset load_detection(const std::string& source, const std::string& part, int64_t size,
                                const StreamOptions& stream = {});
bool has_detection_part(const std::string& source, const std::string& part);
bool is_detection_source(const std::string& source);

/// size 0: the annotations alone (ground truth to score a results file against, as pycocotools
/// does): images are neither read nor required, boxes are clipped to the sizes the file declares.
DetectionDataset load_coco(const std::string& json_path, int64_t size,
                           const StreamOptions& stream = {});
DetectionDataset load_voc(const std::string& root, int64_t size, const StreamOptions& stream = {});

/// Decodes an image file to RGB uint8 [3, size, size] letterboxed; returns the scale.
torch::Tensor letterbox_image(const std::string& file, int64_t size, double* scale,
                              int64_t* width = nullptr, int64_t* height = nullptr);
/// The same from encoded PNG/JPEG bytes, refusing images over max_pixels before decoding them.
torch::Tensor letterbox_encoded(std::string_view bytes, int64_t size, int64_t max_pixels,
                                double* scale, int64_t* width = nullptr, int64_t* height = nullptr);

struct DetectionBatch {
  torch::Tensor x;       ///< float [B, 3, S, S] in [0, 1]
  torch::Tensor boxes;   ///< float [B, G, 4] xyxy, padded
  torch::Tensor labels;  ///< int64 [B, G]: class, -1 padding, -2 ignore region
  torch::Tensor index;   ///< int64 [B]: the images' positions in the dataset
};

class BatchPipeline;

struct DetectionAugment {
  bool hflip = false;
  double scale_jitter = 0.0;  ///< scale drawn from [1 - j, 1 + j], random placement
  bool enabled() const { return hflip || scale_jitter > 0; }
};

/// Batches of a detection set: images letterboxed by the worker pool of kd::Loader (the same
/// --workers, prefetch and skipping of an image that fails to load, whose boxes go with it), boxes
/// padded per batch, then the batch-level augmentation.
class DetectionLoader {
 public:
  /// rank / world_size: this process's share of each epoch, as kd::Loader (loader.h) shards it.
  DetectionLoader(const DetectionDataset& data, int64_t batch_size, bool shuffle,
                  DetectionAugment augment, uint64_t seed, torch::Device device, int rank = 0,
                  int world_size = 1);
  ~DetectionLoader();
  void start_epoch(int64_t epoch);
  int64_t num_batches() const;
  DetectionBatch get(int64_t i);
  int64_t skipped() const;  ///< images that failed to load so far

 private:
  const DetectionDataset& data_;
  int64_t batch_size_;
  bool shuffle_;
  DetectionAugment augment_;
  uint64_t seed_;
  torch::Device device_;
  int rank_, world_size_;
  torch::Tensor order_;
  torch::Generator gen_;
  std::unique_ptr<BatchPipeline> pipeline_;
};

/// Box-aware augmentation of a batch: per image, a horizontal flip and a scale about a random
/// placement (bilinear resampling of the whole batch at once); boxes follow, are clipped, and
/// boxes left with less than 40% of their area or under 2 pixels become padding.
void augment_detection_batch(DetectionBatch& b, const DetectionAugment& aug, torch::Generator& gen);

/// A box to draw: corners in the image's pixels, its class (which picks the colour) and caption.
struct LabeledBox {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  int64_t class_index = 0;
  std::string label;
};

/// Writes `image` (a file) with `boxes` drawn on it to `out` (atomically; the format from its
/// extension, PNG without one).
void write_image_with_boxes(const std::string& image, const std::vector<LabeledBox>& boxes,
                            const std::string& out);

}  // namespace kd
