#include "kd/detect/boxes.h"

#include <cmath>

#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/models/effdet.h"

namespace kd {

torch::Tensor make_anchors(const nlohmann::json& arch_options, int64_t height, int64_t width) {
  const double anchor_scale = arch_options.at("anchor_scale").get<double>();
  const double ratios[3][2] = {{1.0, 1.0}, {1.4, 0.7}, {0.7, 1.4}};  // (x, y) multipliers
  std::vector<float> out;
  int64_t h = height, w = width;
  for (int64_t level = 1; level <= kMaxLevel; ++level) {
    h = (h + 1) / 2;  // a stride-2 conv with "same" padding: ceil
    w = (w + 1) / 2;
    if (level < kMinLevel) continue;
    const double stride = std::pow(2.0, static_cast<double>(level));
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int s = 0; s < 3; ++s)
          for (const auto& r : ratios) {
            const double base = anchor_scale * stride * std::pow(2.0, s / 3.0);
            const double cx = (static_cast<double>(x) + 0.5) * stride,
                         cy = (static_cast<double>(y) + 0.5) * stride;
            const double hw = base * r[0] / 2, hh = base * r[1] / 2;
            for (double v : {cx - hw, cy - hh, cx + hw, cy + hh})
              out.push_back(static_cast<float>(v));
          }
  }
  return torch::tensor(out).view({-1, 4});
}

torch::Tensor box_iou(const torch::Tensor& a, const torch::Tensor& b) {
  auto area_a = (a.select(1, 2) - a.select(1, 0)).clamp_min(0) *
                (a.select(1, 3) - a.select(1, 1)).clamp_min(0);
  auto area_b = (b.select(1, 2) - b.select(1, 0)).clamp_min(0) *
                (b.select(1, 3) - b.select(1, 1)).clamp_min(0);
  auto lt = torch::max(a.unsqueeze(1).narrow(2, 0, 2), b.unsqueeze(0).narrow(2, 0, 2));
  auto rb = torch::min(a.unsqueeze(1).narrow(2, 2, 2), b.unsqueeze(0).narrow(2, 2, 2));
  auto wh = (rb - lt).clamp_min(0);
  auto inter = wh.select(2, 0) * wh.select(2, 1);
  return inter / (area_a.unsqueeze(1) + area_b.unsqueeze(0) - inter).clamp_min(1e-9);
}

namespace {
// (cx, cy, w, h) of xyxy boxes.
std::array<torch::Tensor, 4> center_size(const torch::Tensor& b) {
  auto w = b.select(-1, 2) - b.select(-1, 0), h = b.select(-1, 3) - b.select(-1, 1);
  return {b.select(-1, 0) + 0.5 * w, b.select(-1, 1) + 0.5 * h, w, h};
}
}  // namespace

torch::Tensor encode_boxes(const torch::Tensor& boxes, const torch::Tensor& anchors) {
  auto [cx, cy, w, h] = center_size(boxes);
  auto [acx, acy, aw, ah] = center_size(anchors);
  w = w.clamp_min(1e-6);
  h = h.clamp_min(1e-6);
  return torch::stack({(cy - acy) / ah, (cx - acx) / aw, torch::log(h / ah), torch::log(w / aw)},
                      -1);
}

torch::Tensor decode_boxes(const torch::Tensor& deltas, const torch::Tensor& anchors) {
  auto [acx, acy, aw, ah] = center_size(anchors);
  const double max_log = std::log(1000.0 / 16.0);  // keep exp() finite on wild outputs
  auto cy = deltas.select(-1, 0) * ah + acy, cx = deltas.select(-1, 1) * aw + acx;
  auto h = torch::exp(deltas.select(-1, 2).clamp_max(max_log)) * ah;
  auto w = torch::exp(deltas.select(-1, 3).clamp_max(max_log)) * aw;
  return torch::stack({cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h}, -1);
}

torch::Tensor nms(const torch::Tensor& boxes, const torch::Tensor& scores, double iou_threshold) {
  KD_CHECK(boxes.dim() == 2 && boxes.size(1) == 4 && scores.dim() == 1 &&
               scores.size(0) == boxes.size(0),
           "nms: expected boxes [N, 4] and scores [N]");
  const int64_t n = boxes.size(0);
  if (n == 0) return torch::empty({0}, torch::kLong);
  auto order = std::get<1>(
      scores.to(torch::kCPU, torch::kFloat).sort(/*stable=*/true, 0, /*descending=*/true));
  auto b = boxes.to(torch::kCPU, torch::kFloat).index_select(0, order).contiguous();
  auto iou = box_iou(b, b).contiguous();
  auto m = iou.accessor<float, 2>();
  auto ord = order.accessor<int64_t, 1>();
  std::vector<char> removed(static_cast<size_t>(n), 0);
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < n; ++i) {
    if (removed[static_cast<size_t>(i)]) continue;
    keep.push_back(ord[i]);
    for (int64_t j = i + 1; j < n; ++j)
      if (m[i][j] > iou_threshold) removed[static_cast<size_t>(j)] = 1;
  }
  return torch::tensor(keep, torch::kLong);
}

torch::Tensor batched_nms(const torch::Tensor& boxes, const torch::Tensor& scores,
                          const torch::Tensor& classes, double iou_threshold) {
  if (boxes.size(0) == 0) return torch::empty({0}, torch::kLong);
  // Shift each class's boxes to their own region so one NMS pass never compares classes.
  auto offset = classes.to(boxes.dtype()).unsqueeze(1) * (boxes.abs().max() + 1);
  return nms(boxes + offset, scores, iou_threshold);
}

Detections postprocess(const torch::Tensor& output, const torch::Tensor& anchors,
                       int64_t num_classes, double clip_w, double clip_h,
                       const PostprocessOptions& opts) {
  auto out = output.to(torch::kCPU, torch::kFloat);
  auto scores = torch::sigmoid(out.narrow(1, 0, num_classes)).reshape({-1});
  const int64_t k = std::min<int64_t>(opts.pre_nms_top_k, scores.size(0));
  auto [top, idx] = scores.topk(k);
  auto keep = top >= opts.score_threshold;
  top = top.masked_select(keep);
  idx = idx.masked_select(keep);
  auto anchor = idx.div(num_classes, "floor"), cls = idx.remainder(num_classes);
  auto deltas = out.narrow(1, num_classes, 4).index_select(0, anchor);
  auto boxes = decode_boxes(deltas, anchors.index_select(0, anchor));
  boxes = torch::stack({boxes.select(1, 0).clamp(0, clip_w), boxes.select(1, 1).clamp(0, clip_h),
                        boxes.select(1, 2).clamp(0, clip_w), boxes.select(1, 3).clamp(0, clip_h)},
                       1);
  auto kept = batched_nms(boxes, top, cls, opts.iou_threshold);
  if (kept.size(0) > opts.max_detections) kept = kept.narrow(0, 0, opts.max_detections);
  return {boxes.index_select(0, kept), top.index_select(0, kept), cls.index_select(0, kept)};
}

std::vector<ImageDetection> image_detections(const torch::Tensor& output,
                                             const torch::Tensor& anchors, int64_t num_classes,
                                             double width, double height, double scale,
                                             const PostprocessOptions& opts) {
  auto det = postprocess(output, anchors, num_classes, width * scale, height * scale, opts);
  auto b = (det.boxes / scale).contiguous();
  auto ba = b.accessor<float, 2>();
  auto sa = det.scores.accessor<float, 1>();
  auto ca = det.classes.accessor<int64_t, 1>();
  std::vector<ImageDetection> out;
  out.reserve(static_cast<size_t>(b.size(0)));
  for (int64_t k = 0; k < b.size(0); ++k)
    out.push_back({ba[k][0], ba[k][1], ba[k][2], ba[k][3], sa[k], ca[k]});
  return out;
}

}  // namespace kd
