#include "kd/data/detection.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <map>
#include <set>
#include <string_view>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <pugixml.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/json.h"
#include "kd/data/image.h"
#include "kd/data/source.h"
#include "opencv_image.h"
#include "pipeline.h"

namespace kd {

DetectionDataset DetectionDataset::subset(const torch::Tensor& index) const {
  DetectionDataset d;
  d.class_names = class_names;
  d.category_ids = category_ids;
  d.source = source;
  auto idx = index.to(torch::kCPU, torch::kLong).contiguous();
  if (images.streamed()) d.images = images.subset(idx);
  std::set<int64_t> ids;
  for (int64_t i = 0; i < idx.size(0); ++i) {
    const auto k = static_cast<size_t>(idx[i].item<int64_t>());
    d.boxes.push_back(boxes[k]);
    d.labels.push_back(labels[k]);
    d.ignore.push_back(ignore[k]);
    d.info.push_back(info[k]);
    ids.insert(info[k].id);
  }
  for (const auto& g : ground_truth)
    if (ids.count(g.image_id)) d.ground_truth.push_back(g);
  return d;
}

std::vector<int64_t> DetectionDataset::image_ids() const {
  std::vector<int64_t> ids;
  for (const auto& i : info) ids.push_back(i.id);
  return ids;
}

namespace {

torch::Tensor letterbox_tensor(const cv::Mat& img, int64_t size, double* scale, int64_t* width,
                               int64_t* height) {
  if (width) *width = img.cols;
  if (height) *height = img.rows;
  auto out = torch::empty({3, size, size}, torch::kUInt8);
  *scale = letterbox_into(img, static_cast<int>(size), out.data_ptr<uint8_t>());
  return out;
}

}  // namespace

torch::Tensor letterbox_image(const std::string& file, int64_t size, double* scale, int64_t* width,
                              int64_t* height) {
  return letterbox_tensor(read_image_file(file, kLetterboxDecode), size, scale, width, height);
}

torch::Tensor letterbox_encoded(std::string_view bytes, int64_t size, int64_t max_pixels,
                                double* scale, int64_t* width, int64_t* height) {
  // The header's size is checked against max_pixels before decoding; uploads are PNG or JPEG.
  return letterbox_tensor(decode_checked(bytes, kLetterboxDecode, max_pixels, /*allow_bmp=*/false),
                          size, scale, width, height);
}

namespace {

struct RawBox {
  int64_t ann_id;
  int64_t class_index;
  double x, y, w, h, area;
  bool crowd, ignore;
};

// The whole text (spaces around allowed) as a finite decimal number.
bool parse_decimal(std::string_view text, double* out) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);
  if (text.empty() || !(std::isdigit(static_cast<unsigned char>(text.front())) ||
                        text.front() == '-' || text.front() == '+' || text.front() == '.'))
    return false;
  if (text.front() == '+') text.remove_prefix(1);
  const auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), *out, std::chars_format::general);
  return ec == std::errc() && end == text.data() + text.size() && std::isfinite(*out);
}

// Validates a box against its image; bad ones are counted and skipped (one warning per file),
// boxes reaching past the border are clipped to it.
bool clip_box(RawBox& b, int64_t width, int64_t height) {
  if (!std::isfinite(b.x) || !std::isfinite(b.y) || !std::isfinite(b.w) || !std::isfinite(b.h))
    return false;
  const double x2 = std::min<double>(b.x + b.w, static_cast<double>(width));
  const double y2 = std::min<double>(b.y + b.h, static_cast<double>(height));
  const double x1 = std::max(0.0, b.x), y1 = std::max(0.0, b.y);
  if (!(b.w > 0 && b.h > 0) || x2 - x1 <= 0 || y2 - y1 <= 0) return false;
  // A box reaching past the border is clipped; one reaching several image sizes beyond it is a
  // broken annotation ([0, 0, 1e30, 1e30] would become a full-image box).
  const double W = static_cast<double>(width), H = static_cast<double>(height);
  if (b.x + b.w > 4 * W || b.y + b.h > 4 * H || b.x < -3 * W || b.y < -3 * H) return false;
  b.x = x1;
  b.y = y1;
  b.w = x2 - x1;
  b.h = y2 - y1;
  return true;
}

// Reads each image's size from its header and fills the tensors from boxes in original pixels; the
// pixels are read per batch (size 0: annotations only, no image read).
DetectionDataset assemble(std::vector<DetectionImage> info,
                          const std::vector<std::vector<RawBox>>& raw,
                          std::vector<std::string> class_names, std::vector<int64_t> category_ids,
                          const std::string& source, int64_t size, StreamOptions stream) {
  KD_CHECK(!info.empty(), "{}: the dataset has no images", source);
  KD_CHECK(!class_names.empty(), "{}: the dataset has no categories", source);
  DetectionDataset d;
  d.source = source;
  d.class_names = std::move(class_names);
  d.category_ids = std::move(category_ids);
  if (size > 0) {
    std::vector<std::string> files;
    for (const auto& i : info) files.push_back(i.file);
    stream.geometry = {3, static_cast<int>(size), static_cast<int>(size), /*letterbox=*/true};
    d.images = streamed_dataset(open_files(files, source), stream);
  }
  int64_t outside = 0;
  for (size_t i = 0; i < info.size(); ++i) {
    int64_t w = info[i].width, h = info[i].height;
    if (size > 0) {
      const ImageSize file = image_file_size(info[i].file);
      w = file.width;
      h = file.height;
      // As letterbox_into scales it.
      info[i].scale = std::min(static_cast<double>(size) / static_cast<double>(w),
                               static_cast<double>(size) / static_cast<double>(h));
      if (info[i].width > 0 && info[i].height > 0 && (info[i].width != w || info[i].height != h))
        spdlog::warn("{}: image is {}x{} but the annotations say {}x{}; using the file's size",
                     info[i].file, w, h, info[i].width, info[i].height);
      info[i].width = w;
      info[i].height = h;
    } else if (w <= 0 || h <= 0) {
      w = h = INT64_MAX / 8;  // annotations only, no size given: nothing to clip to
    }
    std::vector<float> boxes;
    std::vector<int64_t> labels;
    std::vector<uint8_t> ignore;
    for (RawBox b : raw[i]) {
      // Boxes were clipped to the size the annotations declare; the file's size is what counts
      // (found by fuzz/voc_xml: a <size> wider than the image let boxes leave the frame).
      const double declared_w = b.w, declared_h = b.h;
      if (!clip_box(b, w, h)) {
        ++outside;
        continue;
      }
      if (b.w != declared_w || b.h != declared_h) b.area = b.w * b.h;
      const double s = info[i].scale;
      for (double v : {b.x * s, b.y * s, (b.x + b.w) * s, (b.y + b.h) * s})
        boxes.push_back(static_cast<float>(v));
      labels.push_back(b.class_index);
      ignore.push_back(b.crowd || b.ignore);
      GroundTruthBox g;
      g.image_id = info[i].id;
      g.category_id = d.category_ids[static_cast<size_t>(b.class_index)];
      g.bbox = {b.x, b.y, b.w, b.h};
      g.area = b.area;
      g.iscrowd = b.crowd;
      g.ignore = b.ignore;
      d.ground_truth.push_back(g);
    }
    const auto n = static_cast<int64_t>(labels.size());
    d.boxes.push_back(torch::tensor(boxes, torch::kFloat).view({n, 4}));
    d.labels.push_back(torch::tensor(labels, torch::kLong).view({n}));
    d.ignore.push_back(
        torch::tensor(std::vector<int64_t>(ignore.begin(), ignore.end()), torch::kLong)
            .view({n})
            .to(torch::kBool));
  }
  if (outside > 0)
    spdlog::warn("{}: skipped {} box(es) outside their image's actual size", source, outside);
  d.info = std::move(info);
  return d;
}

template <typename T>
T field(const nlohmann::json& obj, const char* key, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key)) fail("{}: missing '{}'", where, key);
  if constexpr (std::is_integral_v<T>) {
    return json_int<T>(obj.at(key), fmt::format("{}: '{}'", where, key));
  }
  try {
    return obj.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: '{}' has the wrong type ({})", where, key, obj.at(key).dump().substr(0, 60));
  }
}

}  // namespace

DetectionDataset load_coco(const std::string& json_path, int64_t size,
                           const StreamOptions& stream) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(json_path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", json_path, e.what());
  }
  for (const char* key : {"images", "annotations", "categories"})
    KD_CHECK(j.is_object() && j.contains(key) && j[key].is_array(), "{}: missing the '{}' list",
             json_path, key);
  const fs::path dir = fs::path(json_path).parent_path();

  std::map<int64_t, size_t> class_of;  // category id -> class index (ids sorted)
  std::map<int64_t, std::string> categories;
  for (size_t i = 0; i < j["categories"].size(); ++i) {
    const auto where = fmt::format("{}: category {}", json_path, i);
    const auto id = field<int64_t>(j["categories"][i], "id", where);
    KD_CHECK(!categories.count(id), "{}: category id {} appears twice", json_path, id);
    categories[id] = field<std::string>(j["categories"][i], "name", where);
  }
  std::vector<std::string> names;
  std::vector<int64_t> cat_ids;
  for (const auto& [id, name] : categories) {
    class_of[id] = names.size();
    names.push_back(name);
    cat_ids.push_back(id);
  }

  std::vector<DetectionImage> info;
  std::map<int64_t, size_t> image_of;
  for (size_t i = 0; i < j["images"].size(); ++i) {
    const auto& im = j["images"][i];
    const auto where = fmt::format("{}: image {}", json_path, i);
    DetectionImage d;
    d.id = field<int64_t>(im, "id", where);
    const auto name = field<std::string>(im, "file_name", where);
    d.width = im.value("width", 0);
    d.height = im.value("height", 0);
    fs::path file = dir / name;
    if (!fs::exists(file) && fs::exists(dir / "images" / name)) file = dir / "images" / name;
    KD_CHECK(size == 0 || fs::exists(file),
             "{}: image id {}: {} not found (looked in {} and {}/images)", json_path, d.id, name,
             dir.string(), dir.string());
    d.file = file.string();
    KD_CHECK(!image_of.count(d.id), "{}: image id {} appears twice", json_path, d.id);
    image_of[d.id] = info.size();
    info.push_back(d);
  }
  KD_CHECK(!info.empty(), "{}: the dataset has no images", json_path);

  std::vector<std::vector<RawBox>> raw(info.size());
  int64_t skipped = 0;
  std::string first_skipped;
  for (size_t i = 0; i < j["annotations"].size(); ++i) {
    const auto& a = j["annotations"][i];
    const auto id = a.is_object() && a.contains("id") && a["id"].is_number_integer()
                        ? json_int<int64_t>(a["id"], "id")
                        : static_cast<int64_t>(i);
    const auto where = fmt::format("{}: annotation id {}", json_path, id);
    const auto image_id = field<int64_t>(a, "image_id", where);
    const auto cat = field<int64_t>(a, "category_id", where);
    auto bbox = field<std::vector<double>>(a, "bbox", where);
    KD_CHECK(bbox.size() == 4, "{}: bbox must be [x, y, width, height], got {} numbers", where,
             bbox.size());
    auto im = image_of.find(image_id);
    KD_CHECK(im != image_of.end(), "{}: unknown image_id {}", where, image_id);
    auto c = class_of.find(cat);
    KD_CHECK(c != class_of.end(), "{}: unknown category_id {}", where, cat);
    RawBox b{id,
             static_cast<int64_t>(c->second),
             bbox[0],
             bbox[1],
             bbox[2],
             bbox[3],
             0.0,
             a.value("iscrowd", 0) != 0,
             a.value("ignore", 0) != 0};
    const auto& img = info[im->second];
    // Width/height may be absent from the image entry; clip once the file is decoded then.
    if (!clip_box(b, img.width > 0 ? img.width : INT64_MAX / 4,
                  img.height > 0 ? img.height : INT64_MAX / 4)) {
      if (skipped++ == 0) first_skipped = where;
      continue;
    }
    b.area = a.contains("area") && a["area"].is_number() ? a["area"].get<double>() : b.w * b.h;
    raw[im->second].push_back(b);
  }
  if (skipped > 0)
    spdlog::warn(
        "{}: skipped {} box(es) with zero area, bad numbers or outside their image (first: {})",
        json_path, skipped, first_skipped);
  return assemble(std::move(info), raw, names, cat_ids, json_path, size, stream);
}

DetectionDataset load_voc(const std::string& root, int64_t size, const StreamOptions& stream) {
  const fs::path ann_dir = fs::path(root) / "Annotations";
  KD_CHECK(fs::is_directory(ann_dir), "{}: no Annotations/ folder (expected a Pascal VOC layout)",
           root);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(ann_dir))
    if (e.is_regular_file() && e.path().extension() == ".xml") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  KD_CHECK(!files.empty(), "{}: no .xml files in Annotations/", root);

  struct Obj {
    std::string name;
    RawBox box;
  };
  std::vector<DetectionImage> info;
  std::vector<std::vector<Obj>> objs;
  std::set<std::string> name_set;
  int64_t skipped = 0;
  std::string first_skipped;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string f = files[i].string();
    pugi::xml_document doc;
    auto ok = doc.load_file(f.c_str());
    KD_CHECK(ok, "{}: not valid XML ({} at offset {})", f, ok.description(), ok.offset);
    auto ann = doc.child("annotation");
    KD_CHECK(ann, "{}: no <annotation> element", f);
    const std::string filename = ann.child_value("filename");
    KD_CHECK(!filename.empty(), "{}: missing <filename>", f);
    DetectionImage d;
    d.id = static_cast<int64_t>(i) + 1;
    d.file = (fs::path(root) / "JPEGImages" / filename).string();
    KD_CHECK(fs::exists(d.file), "{}: image {} not found", f, d.file);
    d.width = ann.child("size").child("width").text().as_llong(0);
    d.height = ann.child("size").child("height").text().as_llong(0);
    std::vector<Obj> here;
    int64_t k = 0;
    for (auto o : ann.children("object")) {
      const auto where = fmt::format("{}: object {}", f, k++);
      Obj ob;
      ob.name = o.child_value("name");
      KD_CHECK(!ob.name.empty(), "{}: missing <name>", where);
      auto bb = o.child("bndbox");
      KD_CHECK(bb && bb.child("xmin") && bb.child("ymin") && bb.child("xmax") && bb.child("ymax"),
               "{}: missing <bndbox> with xmin, ymin, xmax, ymax", where);
      // VOC pixel indices are 1-based and inclusive; a coordinate that is not a plain finite
      // decimal number ("abc", "10e", "0x10", "50.9px", "inf") skips the box.
      double c[4];
      std::string bad;
      for (int n = 0; n < 4; ++n) {
        const char* tag = std::array<const char*, 4>{"xmin", "ymin", "xmax", "ymax"}[n];
        if (!parse_decimal(bb.child(tag).child_value(), &c[n]) && bad.empty())
          bad = fmt::format("<{}>{}</{}>", tag,
                            std::string(bb.child(tag).child_value()).substr(0, 20), tag);
      }
      if (!bad.empty()) {
        if (skipped++ == 0) first_skipped = where + ", " + bad;
        continue;
      }
      const double x1 = c[0] - 1, y1 = c[1] - 1, x2 = c[2], y2 = c[3];
      ob.box = {k - 1, 0,       x1,
                y1,    x2 - x1, y2 - y1,
                0.0,   false,   o.child("difficult").text().as_int(0) != 0};
      if (!clip_box(ob.box, d.width > 0 ? d.width : INT64_MAX / 4,
                    d.height > 0 ? d.height : INT64_MAX / 4)) {
        if (skipped++ == 0) first_skipped = where;
        continue;
      }
      ob.box.area = ob.box.w * ob.box.h;
      name_set.insert(ob.name);
      here.push_back(ob);
    }
    info.push_back(d);
    objs.push_back(here);
  }
  if (skipped > 0)
    spdlog::warn(
        "{}: skipped {} box(es) with zero area, bad numbers or outside their image (first: {})",
        root, skipped, first_skipped);
  std::vector<std::string> names(name_set.begin(), name_set.end());
  std::vector<int64_t> ids;
  for (size_t c = 0; c < names.size(); ++c) ids.push_back(static_cast<int64_t>(c) + 1);
  std::vector<std::vector<RawBox>> raw(objs.size());
  for (size_t i = 0; i < objs.size(); ++i)
    for (auto& o : objs[i]) {
      o.box.class_index = std::find(names.begin(), names.end(), o.name) - names.begin();
      raw[i].push_back(o.box);
    }
  return assemble(std::move(info), raw, names, ids, root, size, stream);
}

bool is_detection_source(const std::string& source) {
  const fs::path p(source);
  return (fs::is_regular_file(p) && p.extension() == ".json") ||
         (fs::is_directory(p) &&
          (fs::exists(p / "train.json") || fs::is_directory(p / "Annotations")));
}

bool has_detection_part(const std::string& source, const std::string& part) {
  const fs::path p(source);
  if (part == "train") return true;
  return fs::is_directory(p) && fs::exists(p / (part + ".json"));
}

DetectionDataset load_detection(const std::string& source, const std::string& part, int64_t size,
                                const StreamOptions& stream) {
  const fs::path p(source);
  KD_CHECK(fs::exists(p), "{}: no such file or directory", source);
  if (fs::is_regular_file(p)) {
    KD_CHECK(part == "train", "{}: a single annotation file has no '{}' part", source, part);
    return load_coco(source, size, stream);
  }
  if (fs::exists(p / (part + ".json")))
    return load_coco((p / (part + ".json")).string(), size, stream);
  if (fs::is_directory(p / "Annotations")) {
    KD_CHECK(part == "train", "{}: a VOC folder has no '{}' part here", source, part);
    return load_voc(source, size, stream);
  }
  fail(
      "{}: not a detection dataset (expected a COCO .json, a folder with {}.json, or a VOC folder)",
      source, part);
}

DetectionLoader::DetectionLoader(const DetectionDataset& data, int64_t batch_size, bool shuffle,
                                 DetectionAugment augment, uint64_t seed, torch::Device device,
                                 int rank, int world_size)
    : data_(data),
      batch_size_(batch_size),
      shuffle_(shuffle),
      augment_(augment),
      seed_(seed),
      device_(device),
      rank_(rank),
      world_size_(world_size),
      gen_(at::detail::createCPUGenerator(seed)) {
  KD_CHECK(world_size >= 1 && rank >= 0 && rank < world_size,
           "loader: rank {} of {} is out of range", rank, world_size);
  KD_CHECK(data.images.streamed(), "{}: the annotations were loaded without their images",
           data.source);
  auto opts = pipeline_options(data.images, batch_size);
  opts.seed = seed;
  opts.device = device;
  pipeline_ = std::make_unique<BatchPipeline>(std::move(opts));
  start_epoch(0);
}

DetectionLoader::~DetectionLoader() = default;

void DetectionLoader::start_epoch(int64_t epoch) {
  const uint64_t s = seed_ * 1000003ULL + static_cast<uint64_t>(epoch);
  gen_ = at::detail::createCPUGenerator(s);
  order_ = shuffle_ ? torch::randperm(data_.size(), gen_, torch::kLong)
                    : torch::arange(data_.size(), torch::kLong);
  if (world_size_ > 1) {
    const int64_t n = order_.size(0), w = world_size_, padded = (n + w - 1) / w * w;
    if (padded > n) order_ = torch::cat({order_, order_.narrow(0, 0, padded - n)});
    order_ = order_.slice(0, rank_, padded, w).contiguous();
    gen_ = at::detail::createCPUGenerator(s * 65537ULL +
                                          static_cast<uint64_t>(rank_));  // own augmentation draws
  }
  // Letterboxing draws nothing: the pixels do not depend on the epoch's seed.
  pipeline_->start(data_.images.ids.index_select(0, order_), order_, epoch);
}

int64_t DetectionLoader::num_batches() const {
  return (order_.size(0) + batch_size_ - 1) / batch_size_;
}

int64_t DetectionLoader::skipped() const { return pipeline_->skipped(); }

DetectionBatch DetectionLoader::get(int64_t i) {
  const int64_t start = i * batch_size_, rows = std::min(batch_size_, order_.size(0) - start);
  DetectionBatch b;
  auto [x, kept] = pipeline_->take(
      i, [](const torch::Tensor& pixels) { return pixels.to(torch::kFloat).div_(255.0); });
  b.x = x;
  // An image that failed to load leaves the batch with its boxes.
  b.index = kept.size(0) == rows ? order_.narrow(0, start, rows)
                                 : order_.narrow(0, start, rows).index_select(0, kept);
  const int64_t n = b.index.size(0);
  const int64_t* idx = b.index.data_ptr<int64_t>();
  int64_t g = 1;
  for (int64_t k = 0; k < n; ++k) g = std::max(g, data_.boxes[static_cast<size_t>(idx[k])].size(0));
  b.boxes = torch::zeros({n, g, 4});
  b.labels = torch::full({n, g}, -1, torch::kLong);
  for (int64_t k = 0; k < n; ++k) {
    const auto j = static_cast<size_t>(idx[k]);
    const int64_t m = data_.boxes[j].size(0);
    if (m == 0) continue;
    b.boxes[k].narrow(0, 0, m).copy_(data_.boxes[j]);
    b.labels[k].narrow(0, 0, m).copy_(
        torch::where(data_.ignore[j], torch::full_like(data_.labels[j], -2), data_.labels[j]));
  }
  if (augment_.enabled()) augment_detection_batch(b, augment_, gen_);
  b.x = b.x.to(device_);
  b.boxes = b.boxes.to(device_);
  b.labels = b.labels.to(device_);
  return b;
}

void augment_detection_batch(DetectionBatch& b, const DetectionAugment& aug,
                             torch::Generator& gen) {
  const int64_t n = b.x.size(0);
  const double S = static_cast<double>(b.x.size(3)), H = static_cast<double>(b.x.size(2));
  auto opts = torch::TensorOptions().dtype(torch::kFloat);
  auto flip = aug.hflip ? torch::rand({n}, gen, opts) < 0.5 : torch::zeros({n}, torch::kBool);
  auto s = aug.scale_jitter > 0 ? 1.0 + (torch::rand({n}, gen, opts) * 2 - 1) * aug.scale_jitter
                                : torch::ones({n}, opts);
  // Placement: anywhere that keeps the scaled image covering (s >= 1) or inside (s < 1) the frame.
  auto room_x = (1 - s) * S, room_y = (1 - s) * H;
  auto tx = torch::minimum(room_x, torch::zeros_like(room_x)) +
            torch::rand({n}, gen, opts) * room_x.abs();
  auto ty = torch::minimum(room_y, torch::zeros_like(room_y)) +
            torch::rand({n}, gen, opts) * room_y.abs();
  // Output pixel X samples input (X - t) / s (flip first: X -> S - X). In affine_grid's
  // normalized coordinates (align_corners=false) x_n = 2X/S - 1.
  auto sign = torch::where(flip, -torch::ones_like(s), torch::ones_like(s));
  auto theta = torch::zeros({n, 2, 3}, opts);
  theta.select(1, 0).select(1, 0).copy_(sign / s);
  theta.select(1, 0).select(1, 2).copy_(sign * (1 / s - 1 - 2 * tx / (s * S)));
  theta.select(1, 1).select(1, 1).copy_(1 / s);
  theta.select(1, 1).select(1, 2).copy_(1 / s - 1 - 2 * ty / (s * H));
  auto grid = torch::nn::functional::affine_grid(theta, b.x.sizes().vec(), /*align_corners=*/false);
  b.x = torch::nn::functional::grid_sample(b.x, grid,
                                           torch::nn::functional::GridSampleFuncOptions()
                                               .mode(torch::kBilinear)
                                               .padding_mode(torch::kZeros)
                                               .align_corners(false));

  auto bx = b.boxes;
  auto x1 = torch::where(flip.unsqueeze(1), S - bx.select(2, 2), bx.select(2, 0));
  auto x2 = torch::where(flip.unsqueeze(1), S - bx.select(2, 0), bx.select(2, 2));
  auto sc = s.unsqueeze(1);
  x1 = x1 * sc + tx.unsqueeze(1);
  x2 = x2 * sc + tx.unsqueeze(1);
  auto y1 = bx.select(2, 1) * sc + ty.unsqueeze(1), y2 = bx.select(2, 3) * sc + ty.unsqueeze(1);
  const auto area = (x2 - x1) * (y2 - y1);
  x1 = x1.clamp(0, S);
  x2 = x2.clamp(0, S);
  y1 = y1.clamp(0, H);
  y2 = y2.clamp(0, H);
  const auto kept_area = (x2 - x1) * (y2 - y1);
  auto lost = (kept_area < 0.4 * area) | ((x2 - x1) < 2) | ((y2 - y1) < 2);
  b.boxes = torch::stack({x1, y1, x2, y2}, 2);
  // A box mostly pushed out of the frame becomes an ignore region while part of it shows.
  auto gone =
      torch::where(kept_area > 0, torch::full_like(b.labels, -2), torch::full_like(b.labels, -1));
  b.labels = torch::where(lost & (b.labels >= 0), gone, b.labels);
}

void write_image_with_boxes(const std::string& image, const std::vector<LabeledBox>& boxes,
                            const std::string& out) {
  cv::Mat img = read_image_file(image, cv::IMREAD_COLOR);
  const int thick =
      std::max(1, static_cast<int>(std::lround(std::max(img.cols, img.rows) / 200.0)));
  for (const auto& b : boxes) {
    const int64_t c = b.class_index;
    const cv::Scalar colour(64 + (c * 97) % 192, 64 + (c * 57) % 192, 64 + (c * 151) % 192);
    cv::rectangle(img, cv::Point(static_cast<int>(b.x1), static_cast<int>(b.y1)),
                  cv::Point(static_cast<int>(b.x2), static_cast<int>(b.y2)), colour, thick);
    cv::putText(img, b.label,
                cv::Point(static_cast<int>(b.x1), std::max(8, static_cast<int>(b.y1) - 2)),
                cv::FONT_HERSHEY_SIMPLEX, 0.3 * thick, colour, 1);
  }
  const std::string ext = fs::path(out).extension().string();
  write_atomically(out, [&](const fs::path& tmp) {
    // OpenCV picks the encoder from the extension; the temporary name keeps it.
    const std::string t = tmp.string() + (ext.empty() ? ".png" : ext);
    KD_CHECK(cv::imwrite(t, img), "{}: cannot write the image", out);
    fs::rename(t, tmp);
  });
}

}  // namespace kd
