#pragma once
/// @file
/// Box geometry for detection: anchors, the box coder, IoU and non-maximum suppression.
/// Boxes are float [..., 4] as (x1, y1, x2, y2) in input pixels, unless a name says xywh.
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace kd {

/// The anchors of a detector (kd/models/effdet.h) for a height x width input: [A, 4], ordered by
/// level, row, column, then scale (2^0, 2^(1/3), 2^(2/3)) and aspect ratio (1:1, 1.4:0.7,
/// 0.7:1.4). Level l has stride 2^l, its feature map ceil(size / 2^l) cells, and anchors of
/// side anchor_scale * stride * scale, centred on the cells.
torch::Tensor make_anchors(const nlohmann::json& arch_options, int64_t height, int64_t width);

/// [N, 4] x [M, 4] -> [N, M]
torch::Tensor box_iou(const torch::Tensor& a, const torch::Tensor& b);

/// EfficientDet's (Faster R-CNN) coder without scale factors: (dy, dx, dh, dw) =
/// ((cy - cya) / ha, (cx - cxa) / wa, log(h / ha), log(w / wa)). Broadcasts over leading dims.
torch::Tensor encode_boxes(const torch::Tensor& boxes, const torch::Tensor& anchors);
torch::Tensor decode_boxes(const torch::Tensor& deltas, const torch::Tensor& anchors);

/// Greedy NMS: indices of the kept boxes in decreasing score order; a box is dropped when its IoU
/// with a kept, higher-scoring box is > iou_threshold (torchvision.ops.nms semantics; equal
/// scores keep the lower index first).
torch::Tensor nms(const torch::Tensor& boxes, const torch::Tensor& scores, double iou_threshold);
/// NMS within each class (boxes of different classes never suppress each other).
torch::Tensor batched_nms(const torch::Tensor& boxes, const torch::Tensor& scores,
                          const torch::Tensor& classes, double iou_threshold);

struct Detections {
  torch::Tensor boxes;    ///< [K, 4] xyxy, input pixels
  torch::Tensor scores;   ///< [K]
  torch::Tensor classes;  ///< [K] int64
};

struct PostprocessOptions {
  double score_threshold = 0.001;  ///< COCO evaluation keeps low scores; predict raises it
  double iou_threshold = 0.5;
  int64_t pre_nms_top_k = 1000;
  int64_t max_detections = 100;
};

/// One image's raw output [A, C + 4] to boxes: sigmoid scores, top-k candidates over (anchor,
/// class), decode, clip to clip_w x clip_h, per-class NMS, best max_detections.
Detections postprocess(const torch::Tensor& output, const torch::Tensor& anchors,
                       int64_t num_classes, double clip_w, double clip_h,
                       const PostprocessOptions& opts = {});

/// One detection in an image's own pixels.
struct ImageDetection {
  float x1, y1, x2, y2, score;
  int64_t cls;
};
/// postprocess() of a letterboxed image (its width x height pixels scaled by `scale`, padding
/// right and below) back in the image's own pixels; boxes are clipped to the image, not the
/// padding.
std::vector<ImageDetection> image_detections(const torch::Tensor& output,
                                             const torch::Tensor& anchors, int64_t num_classes,
                                             double width, double height, double scale,
                                             const PostprocessOptions& opts = {});

}  // namespace kd
