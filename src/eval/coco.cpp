#include "kd/eval/coco.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/json.h"

namespace kd {
namespace {

constexpr int kT = 10, kR = 101, kA = 4, kM = 3;
const double kAreaRange[kA][2] = {
    {0, 1e10}, {0, 32.0 * 32}, {32.0 * 32, 96.0 * 96}, {96.0 * 96, 1e10}};
const int64_t kMaxDets[kM] = {1, 10, 100};

// numpy.linspace(start, stop, n): start + i * step, the last point exactly stop.
double linspace(double start, double stop, int n, int i) {
  return i == n - 1 ? stop : start + i * ((stop - start) / (n - 1));
}

double bbox_iou(const std::array<double, 4>& d, const std::array<double, 4>& g, bool crowd) {
  const double w = std::min(d[0] + d[2], g[0] + g[2]) - std::max(d[0], g[0]);
  const double h = std::min(d[1] + d[3], g[1] + g[3]) - std::max(d[1], g[1]);
  if (w <= 0 || h <= 0) return 0.0;
  const double inter = w * h;
  // A crowd region counts only the detection's area as union (maskUtils.iou).
  const double uni = crowd ? d[2] * d[3] : d[2] * d[3] + g[2] * g[3] - inter;
  return uni > 0 ? inter / uni : 0.0;
}

// COCOeval.evaluateImg for one image, category and area range (maxDet 100).
struct ImageEval {
  std::vector<double> scores;                 // detections, best first
  std::array<std::vector<char>, kT> matched;  // per threshold, per detection
  std::array<std::vector<char>, kT> ignored;
  int64_t num_gt_not_ignored = 0;
};

ImageEval evaluate_image(const std::vector<const GroundTruthBox*>& gt_in,
                         const std::vector<const DetectionBox*>& dt, const double* range) {
  // Ground truth: not-ignored first (stable), as np.argsort(kind="mergesort") orders it.
  std::vector<const GroundTruthBox*> gt;
  std::vector<char> gt_ignore;
  for (int pass = 0; pass < 2; ++pass)
    for (const auto* g : gt_in) {
      const bool ig = g->iscrowd || g->ignore || g->area < range[0] || g->area > range[1];
      if (ig == (pass == 1)) {
        gt.push_back(g);
        gt_ignore.push_back(ig);
      }
    }
  ImageEval e;
  const size_t D = dt.size(), G = gt.size();
  for (const auto* d : dt) e.scores.push_back(d->score);
  for (auto ig : gt_ignore) e.num_gt_not_ignored += ig ? 0 : 1;
  std::vector<double> ious(D * G);
  for (size_t d = 0; d < D; ++d)
    for (size_t g = 0; g < G; ++g)
      ious[d * G + g] = bbox_iou(dt[d]->bbox, gt[g]->bbox, gt[g]->iscrowd);
  for (int t = 0; t < kT; ++t) {
    const double thr = linspace(0.5, 0.95, kT, t);
    std::vector<char> gt_matched(G, 0);
    e.matched[t].assign(D, 0);
    e.ignored[t].assign(D, 0);
    for (size_t d = 0; d < D; ++d) {
      double best = std::min(thr, 1 - 1e-10);
      int64_t m = -1;
      for (size_t g = 0; g < G; ++g) {
        if (gt_matched[g] && !gt[g]->iscrowd) continue;
        // Once matched to a real object, never trade it for an ignored one.
        if (m > -1 && !gt_ignore[static_cast<size_t>(m)] && gt_ignore[g]) break;
        if (ious[d * G + g] < best) continue;
        best = ious[d * G + g];
        m = static_cast<int64_t>(g);
      }
      if (m == -1) continue;
      e.ignored[t][d] = gt_ignore[static_cast<size_t>(m)];
      e.matched[t][d] = 1;
      gt_matched[static_cast<size_t>(m)] = 1;
    }
    for (size_t d = 0; d < D; ++d) {
      const double a = dt[d]->bbox[2] * dt[d]->bbox[3];
      if (!e.matched[t][d] && (a < range[0] || a > range[1])) e.ignored[t][d] = 1;
    }
  }
  return e;
}

double mean_valid(const std::vector<double>& v) {
  double s = 0;
  int64_t n = 0;
  for (double x : v)
    if (x > -1) {
      s += x;
      ++n;
    }
  return n == 0 ? -1.0 : s / static_cast<double>(n);
}

}  // namespace

CocoMetrics evaluate_coco(const std::vector<GroundTruthBox>& gt,
                          const std::vector<DetectionBox>& dt,
                          const std::vector<int64_t>& image_ids_in,
                          const std::vector<int64_t>& category_ids_in) {
  std::vector<int64_t> image_ids = image_ids_in, category_ids = category_ids_in;
  std::sort(image_ids.begin(), image_ids.end());
  image_ids.erase(std::unique(image_ids.begin(), image_ids.end()), image_ids.end());
  std::sort(category_ids.begin(), category_ids.end());
  category_ids.erase(std::unique(category_ids.begin(), category_ids.end()), category_ids.end());
  const size_t K = category_ids.size();

  std::map<std::pair<int64_t, int64_t>, std::vector<const GroundTruthBox*>> gts;
  std::map<std::pair<int64_t, int64_t>, std::vector<const DetectionBox*>> dts;
  for (const auto& g : gt) gts[{g.image_id, g.category_id}].push_back(&g);
  for (const auto& d : dt) dts[{d.image_id, d.category_id}].push_back(&d);
  for (auto& [key, v] : dts) {
    std::stable_sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->score > b->score; });
    if (v.size() > static_cast<size_t>(kMaxDets[kM - 1]))
      v.resize(static_cast<size_t>(kMaxDets[kM - 1]));
  }

  // precision[t][r][k][a][m] and recall[t][k][a][m], -1 where undefined.
  auto P = [&](int t, int r, size_t k, int a, int m) {
    return (((t * kR + r) * K + k) * kA + a) * kM + m;
  };
  auto Rc = [&](int t, size_t k, int a, int m) { return ((t * K + k) * kA + a) * kM + m; };
  std::vector<double> precision(kT * kR * K * kA * kM, -1.0), recall(kT * K * kA * kM, -1.0);
  static const std::vector<const GroundTruthBox*> no_gt;
  static const std::vector<const DetectionBox*> no_dt;

  for (size_t k = 0; k < K; ++k) {
    for (int a = 0; a < kA; ++a) {
      std::vector<ImageEval> evals;
      for (int64_t img : image_ids) {
        auto gi = gts.find({img, category_ids[k]});
        auto di = dts.find({img, category_ids[k]});
        if (gi == gts.end() && di == dts.end()) continue;
        evals.push_back(evaluate_image(gi == gts.end() ? no_gt : gi->second,
                                       di == dts.end() ? no_dt : di->second, kAreaRange[a]));
      }
      if (evals.empty()) continue;
      int64_t npig = 0;
      for (const auto& e : evals) npig += e.num_gt_not_ignored;
      if (npig == 0) continue;
      for (int m = 0; m < kM; ++m) {
        // All images' detections (each cut at maxDet), ordered by score (stable).
        struct Ref {
          double score;
          const ImageEval* e;
          size_t d;
        };
        std::vector<Ref> refs;
        for (const auto& e : evals)
          for (size_t d = 0; d < std::min(e.scores.size(), static_cast<size_t>(kMaxDets[m])); ++d)
            refs.push_back({e.scores[d], &e, d});
        std::stable_sort(refs.begin(), refs.end(),
                         [](const Ref& x, const Ref& y) { return x.score > y.score; });
        for (int t = 0; t < kT; ++t) {
          std::vector<double> rc, pr;
          double tp = 0, fp = 0;
          for (const auto& r : refs) {
            if (r.e->ignored[t][r.d]) {
              // Ignored detections still occupy a position (tp and fp unchanged).
            } else if (r.e->matched[t][r.d]) {
              tp += 1;
            } else {
              fp += 1;
            }
            rc.push_back(tp / static_cast<double>(npig));
            pr.push_back(tp / (fp + tp + std::numeric_limits<double>::epsilon()));
          }
          const size_t nd = rc.size();
          recall[Rc(t, k, a, m)] = nd ? rc.back() : 0.0;
          for (size_t i = nd; i-- > 1;)
            if (pr[i] > pr[i - 1]) pr[i - 1] = pr[i];
          for (int r = 0; r < kR; ++r) {
            const double thr = linspace(0.0, 1.0, kR, r);
            // np.searchsorted(rc, thr, side="left"); past the end, precision stays 0.
            const size_t pi =
                static_cast<size_t>(std::lower_bound(rc.begin(), rc.end(), thr) - rc.begin());
            precision[P(t, r, k, a, m)] = pi < nd ? pr[pi] : 0.0;
          }
        }
      }
    }
  }

  auto summarize = [&](bool ap, int t_only, int a, int m) {
    std::vector<double> v;
    for (int t = 0; t < kT; ++t) {
      if (t_only >= 0 && t != t_only) continue;
      for (size_t k = 0; k < K; ++k) {
        if (ap)
          for (int r = 0; r < kR; ++r) v.push_back(precision[P(t, r, k, a, m)]);
        else
          v.push_back(recall[Rc(t, k, a, m)]);
      }
    }
    return mean_valid(v);
  };
  CocoMetrics out;
  out.stats = {summarize(true, -1, 0, 2),  summarize(true, 0, 0, 2),   summarize(true, 5, 0, 2),
               summarize(true, -1, 1, 2),  summarize(true, -1, 2, 2),  summarize(true, -1, 3, 2),
               summarize(false, -1, 0, 0), summarize(false, -1, 0, 1), summarize(false, -1, 0, 2),
               summarize(false, -1, 1, 2), summarize(false, -1, 2, 2), summarize(false, -1, 3, 2)};
  out.category_ids = category_ids;
  for (size_t k = 0; k < K; ++k) {
    std::vector<double> all, at50;
    for (int t = 0; t < kT; ++t)
      for (int r = 0; r < kR; ++r) {
        all.push_back(precision[P(t, r, k, 0, 2)]);
        if (t == 0) at50.push_back(precision[P(t, r, k, 0, 2)]);
      }
    out.per_class_ap.push_back(mean_valid(all));
    out.per_class_ap50.push_back(mean_valid(at50));
    out.per_class_pr50.push_back(at50);
  }
  return out;
}

nlohmann::json CocoMetrics::to_json(const std::vector<std::string>& names) const {
  static const char* keys[12] = {"map", "map50", "map75", "map_small", "map_medium", "map_large",
                                 "ar1", "ar10",  "ar100", "ar_small",  "ar_medium",  "ar_large"};
  nlohmann::json j;
  for (int i = 0; i < 12; ++i) j[keys[i]] = stats[static_cast<size_t>(i)];
  nlohmann::json per = nlohmann::json::array();
  for (size_t k = 0; k < category_ids.size(); ++k)
    per.push_back({{"category_id", category_ids[k]},
                   {"name", k < names.size() ? names[k] : std::to_string(category_ids[k])},
                   {"ap", per_class_ap[k]},
                   {"ap50", per_class_ap50[k]}});
  j["per_class"] = per;
  return j;
}

std::vector<DetectionBox> read_coco_results(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path, e.what());
  }
  KD_CHECK(j.is_array(), "{}: a COCO results file is a JSON list of detections", path);
  std::vector<DetectionBox> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& r = j[i];
    try {
      DetectionBox d;
      const std::string where = fmt::format("{}: detection {}", path, i);
      d.image_id = json_int<int64_t>(r.at("image_id"), where + ": image_id");
      d.category_id = json_int<int64_t>(r.at("category_id"), where + ": category_id");
      auto b = r.at("bbox").get<std::vector<double>>();
      KD_CHECK(b.size() == 4, "{}: detection {}: bbox must be [x, y, w, h]", path, i);
      d.bbox = {b[0], b[1], b[2], b[3]};
      d.score = r.at("score").get<double>();
      KD_CHECK(std::isfinite(d.score) &&
                   std::all_of(b.begin(), b.end(), [](double v) { return std::isfinite(v); }),
               "{}: detection {}: non-finite bbox or score", path, i);
      out.push_back(d);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: detection {}: {}", path, i, e.what());
    }
  }
  return out;
}

nlohmann::json to_coco_results(const std::vector<DetectionBox>& dt) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& d : dt)
    out.push_back({{"image_id", d.image_id},
                   {"category_id", d.category_id},
                   {"bbox", {d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]}},
                   {"score", d.score}});
  return out;
}

}  // namespace kd
