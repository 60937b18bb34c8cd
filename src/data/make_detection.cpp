#include "kd/data/make_detection.h"

#include <algorithm>
#include <cmath>
#include <random>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/progress.h"
#include "kd/data/dataset.h"

namespace kd {
namespace {

using Rng = std::mt19937_64;

double uniform(Rng& rng, double a, double b) {
  return std::uniform_real_distribution<double>(a, b)(rng);
}
int64_t uniform_int(Rng& rng, int64_t a, int64_t b) {
  return std::uniform_int_distribution<int64_t>(a, b)(rng);
}

// One of three background families: a colour gradient with grain, low-frequency noise blobs,
// or a low-contrast stripe or check pattern with grain. BGR float [0, 255].
cv::Mat background(Rng& rng, int size) {
  cv::Mat bg(size, size, CV_32FC3);
  const int kind = static_cast<int>(uniform_int(rng, 0, 2));
  cv::Vec3f a(uniform(rng, 20, 200), uniform(rng, 20, 200), uniform(rng, 20, 200));
  cv::Vec3f b(uniform(rng, 20, 200), uniform(rng, 20, 200), uniform(rng, 20, 200));
  if (kind == 0) {
    const double angle = uniform(rng, 0, 2 * M_PI);
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) {
        const double t =
            0.5 +
            0.5 * ((x - size / 2.0) * std::cos(angle) + (y - size / 2.0) * std::sin(angle)) / size;
        bg.at<cv::Vec3f>(y, x) = a * static_cast<float>(1 - t) + b * static_cast<float>(t);
      }
  } else if (kind == 1) {
    const int cells = static_cast<int>(uniform_int(rng, 3, 8));
    cv::Mat small(cells, cells, CV_32FC3);
    for (int y = 0; y < cells; ++y)
      for (int x = 0; x < cells; ++x) {
        const auto t = static_cast<float>(uniform(rng, 0, 1));
        small.at<cv::Vec3f>(y, x) = a * (1 - t) + b * t;
      }
    cv::resize(small, bg, cv::Size(size, size), 0, 0, cv::INTER_CUBIC);
  } else {
    const double period = uniform(rng, 6, 24);
    const bool check = uniform(rng, 0, 1) < 0.5;
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) {
        bool on = static_cast<int>(x / period) % 2 == 0;
        if (check) on = on != (static_cast<int>(y / period) % 2 == 0);
        bg.at<cv::Vec3f>(y, x) = on ? a : a * 0.7f + b * 0.3f;
      }
  }
  cv::Mat noise(size, size, CV_32FC3);
  cv::randn(noise, cv::Scalar::all(0), cv::Scalar::all(uniform(rng, 2, 14)));
  // cv::randn draws from OpenCV's global RNG: reseed it from ours so runs are reproducible.
  return bg + noise;
}

struct Placed {
  double x1, y1, x2, y2;
};

// Two items may touch but neither may hide more than 30% of the other's box.
bool overlaps_too_much(const Placed& a, const Placed& b) {
  const double w = std::min(a.x2, b.x2) - std::max(a.x1, b.x1),
               h = std::min(a.y2, b.y2) - std::max(a.y1, b.y1);
  if (w <= 0 || h <= 0) return false;
  const double i = w * h;
  return i > 0.3 * std::min((a.x2 - a.x1) * (a.y2 - a.y1), (b.x2 - b.x1) * (b.y2 - b.y1));
}

void write_voc(const fs::path& dir, const std::string& name, int64_t canvas,
               const nlohmann::json& anns, const std::vector<std::string>& class_names) {
  std::string xml = fmt::format(
      "<annotation>\n  <folder>JPEGImages</folder>\n  <filename>{}</filename>\n"
      "  <size><width>{}</width><height>{}</height><depth>3</depth></size>\n",
      name, canvas, canvas);
  for (const auto& a : anns) {
    const auto b = a["bbox"].get<std::vector<double>>();
    // VOC: 1-based inclusive pixel indices.
    xml += fmt::format(
        "  <object>\n    <name>{}</name>\n    <difficult>0</difficult>\n"
        "    <bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox>\n  "
        "</object>\n",
        class_names[a["category_id"].get<size_t>() - 1], b[0] + 1, b[1] + 1, b[0] + b[2],
        b[1] + b[3]);
  }
  xml += "</annotation>\n";
  write_text_atomically(dir / "Annotations" / (fs::path(name).stem().string() + ".xml"), xml);
}

// Builds one part: `count` canvases from the items of `pool` (used once each, in a seeded order).
nlohmann::json make_part(const MakeDetectionOptions& o, const Dataset& pool,
                         const std::string& part, int64_t count, Rng& rng, nlohmann::json& stats) {
  const fs::path out(o.out);
  std::vector<int64_t> order(static_cast<size_t>(pool.size()));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  size_t next = 0;
  nlohmann::json images = nlohmann::json::array(), anns = nlohmann::json::array();
  const int size = static_cast<int>(o.canvas);
  auto pixels = pool.images.contiguous();
  Progress progress("make " + part, count);
  for (int64_t i = 0; i < count; ++i) {
    cv::theRNG().state = rng();
    cv::Mat canvas = background(rng, size);
    const int64_t k = uniform_int(rng, o.min_objects, o.max_objects);
    std::vector<Placed> placed;
    nlohmann::json here = nlohmann::json::array();
    for (int64_t n = 0; n < k; ++n) {
      KD_CHECK(next < order.size(),
               "make-detection: the {} part needs more than the {} items of the chosen "
               "classes; ask for fewer images or objects",
               part, order.size());
      const int64_t item = order[next++];
      const int side = static_cast<int>(uniform_int(rng, o.min_size, o.max_size));
      cv::Mat gray(static_cast<int>(pool.images.size(2)), static_cast<int>(pool.images.size(3)),
                   CV_8UC1, pixels[item][0].data_ptr<uint8_t>());
      cv::Mat scaled;
      cv::resize(gray, scaled, cv::Size(side, side), 0, 0, cv::INTER_LINEAR);
      // Tight box from the item's own pixels.
      cv::Mat mask = scaled > 12;
      cv::Rect r = cv::boundingRect(mask);
      if (r.width < 2 || r.height < 2) continue;
      // Try a few positions that do not hide much of the items already placed (or of this one).
      bool ok = false;
      Placed p{};
      int x0 = 0, y0 = 0;
      for (int attempt = 0; attempt < 30 && !ok; ++attempt) {
        x0 = static_cast<int>(uniform_int(rng, -r.x, size - r.x - r.width));
        y0 = static_cast<int>(uniform_int(rng, -r.y, size - r.y - r.height));
        p = {double(x0 + r.x), double(y0 + r.y), double(x0 + r.x + r.width),
             double(y0 + r.y + r.height)};
        ok = std::none_of(placed.begin(), placed.end(),
                          [&](const Placed& q) { return overlaps_too_much(p, q); });
      }
      if (!ok) continue;
      const cv::Vec3f tint(uniform(rng, 0.45, 1.0), uniform(rng, 0.45, 1.0),
                           uniform(rng, 0.45, 1.0));
      const float gain = static_cast<float>(uniform(rng, 0.8, 1.3));
      for (int y = 0; y < side; ++y)
        for (int x = 0; x < side; ++x) {
          const int cx = x0 + x, cy = y0 + y;
          if (cx < 0 || cy < 0 || cx >= size || cy >= size) continue;
          const float v = scaled.at<uint8_t>(y, x);
          const float alpha = std::min(1.0f, v / 40.0f);
          if (alpha <= 0) continue;
          auto& px = canvas.at<cv::Vec3f>(cy, cx);
          const cv::Vec3f fg = tint * std::min(255.0f, v * gain);
          px = px * (1 - alpha) + fg * alpha;
        }
      placed.push_back(p);
      const auto label = pool.labels[item].item<int64_t>();
      const double w = p.x2 - p.x1, h = p.y2 - p.y1;
      here.push_back({{"id", static_cast<int64_t>(anns.size() + here.size()) + 1},
                      {"image_id", i + 1},
                      {"category_id", label + 1},
                      {"bbox", {p.x1, p.y1, w, h}},
                      {"area", w * h},
                      {"iscrowd", 0}});
      stats["boxes"][pool.class_names[static_cast<size_t>(label)]] =
          stats["boxes"].value(pool.class_names[static_cast<size_t>(label)], 0) + 1;
      stats["box_sides"].push_back(std::sqrt(w * h));
    }
    const std::string name = fmt::format("{}_{:06d}.png", part, i + 1);
    cv::Mat u8;
    canvas.convertTo(u8, CV_8UC3);  // saturates to [0, 255]
    write_atomically(out / "images" / name, [&](const fs::path& tmp) {
      KD_CHECK(cv::imwrite(tmp.string() + ".png", u8), "{}: cannot write the image",
               (out / "images" / name).string());
      fs::rename(tmp.string() + ".png", tmp);
    });
    if (o.voc) {
      fs::create_directories(out / "voc" / "JPEGImages");
      fs::copy_file(out / "images" / name, out / "voc" / "JPEGImages" / name,
                    fs::copy_options::overwrite_existing);
      write_voc(out / "voc", name, o.canvas, here, pool.class_names);
    }
    images.push_back({{"id", i + 1},
                      {"file_name", "images/" + name},
                      {"width", o.canvas},
                      {"height", o.canvas}});
    for (auto& a : here) anns.push_back(a);
    progress.update(i + 1, 1, 0, -1);
  }
  progress.finish();
  nlohmann::json cats = nlohmann::json::array();
  for (size_t c = 0; c < pool.class_names.size(); ++c)
    cats.push_back({{"id", static_cast<int64_t>(c) + 1}, {"name", pool.class_names[c]}});
  nlohmann::json coco = {
      {"info",
       {{"description", "kd make-detection: Fashion-MNIST items on synthetic canvases"},
        {"source", pool.source},
        {"seed", o.seed}}},
      {"images", images},
      {"annotations", anns},
      {"categories", cats}};
  write_text_atomically(out / (part + ".json"), coco.dump() + "\n");
  return {{"images", count}, {"boxes", anns.size()}};
}

}  // namespace

nlohmann::json make_detection_dataset(const MakeDetectionOptions& o) {
  KD_CHECK(!o.out.empty(), "make-detection: --out is required");
  KD_CHECK(o.train_images > 0 && o.test_images >= 0, "make-detection: --images must be > 0");
  KD_CHECK(o.canvas >= 32, "make-detection: --canvas must be at least 32");
  KD_CHECK(1 <= o.min_objects && o.min_objects <= o.max_objects,
           "make-detection: need 1 <= --min-objects <= --max-objects");
  KD_CHECK(4 <= o.min_size && o.min_size <= o.max_size && o.max_size <= o.canvas,
           "make-detection: need 4 <= --min-size <= --max-size <= --canvas");
  KD_CHECK(o.classes.size() >= 1, "make-detection: choose at least one class");
  fs::create_directories(fs::path(o.out) / "images");
  Rng rng(o.seed);
  nlohmann::json stats = {{"boxes", nlohmann::json::object()},
                          {"box_sides", nlohmann::json::array()}};
  nlohmann::json info = {{"source", o.source},
                         {"classes", o.classes},
                         {"canvas", o.canvas},
                         {"seed", o.seed},
                         {"objects_per_image", {o.min_objects, o.max_objects}},
                         {"item_size", {o.min_size, o.max_size}}};
  Dataset train = select_classes(load_dataset(o.source, "train", {}), o.classes);
  info["train"] = make_part(o, train, "train", o.train_images, rng, stats);
  if (o.test_images > 0) {
    KD_CHECK(has_part(o.source, "test"), "make-detection: {} has no test part for --test-images",
             o.source);
    Dataset test = select_classes(load_dataset(o.source, "test", {}), o.classes);
    info["test"] = make_part(o, test, "test", o.test_images, rng, stats);
  }
  auto sides = stats["box_sides"].get<std::vector<double>>();
  std::sort(sides.begin(), sides.end());
  auto q = [&](double f) {
    return sides.empty() ? 0.0
                         : sides[static_cast<size_t>(f * static_cast<double>(sides.size() - 1))];
  };
  info["boxes_per_class"] = stats["boxes"];
  info["box_side_quantiles"] = {
      {"min", q(0)}, {"p25", q(0.25)}, {"median", q(0.5)}, {"p75", q(0.75)}, {"max", q(1)}};
  write_text_atomically(fs::path(o.out) / "info.json", info.dump(2) + "\n");
  return info;
}

}  // namespace kd
