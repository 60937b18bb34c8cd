#include "kd/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "idx.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/json.h"
#include "kd/data/loader.h"
#include "pipeline.h"

namespace kd {
namespace {

const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
const std::vector<std::string> kFashionMnistClasses = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

std::string resolve_alias(const std::string& spec) {
  if (spec == "fashion-mnist") return kFashionMnistDir;
  return spec;
}

// Finds "<prefix>-images-idx3-ubyte" with or without .gz.
std::string find_idx(const fs::path& dir, const std::string& stem) {
  for (const char* ext : {"", ".gz"}) {
    fs::path p = dir / (stem + ext);
    if (fs::exists(p)) return p.string();
  }
  return "";
}

bool is_idx_dir(const fs::path& dir) { return !find_idx(dir, "train-images-idx3-ubyte").empty(); }

std::vector<std::string> class_names_for(const fs::path& dir, int64_t num_classes) {
  fs::path names = dir / "classes.txt";
  std::vector<std::string> out;
  if (fs::exists(names)) {
    std::istringstream in(read_text(names));
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) {
        check_utf8(line, names.string() + ": class name");
        out.push_back(line);
      }
    KD_CHECK(static_cast<int64_t>(out.size()) >= num_classes,
             "{}: lists {} class names but labels go up to {}", names.string(), out.size(),
             num_classes - 1);
    return out;
  }
  if (fs::equivalent(dir, kFashionMnistDir) || dir.filename() == "fashion-mnist")
    return kFashionMnistClasses;
  for (int64_t c = 0; c < num_classes; ++c) out.push_back(std::to_string(c));
  return out;
}

}  // namespace

torch::Tensor resize_images(const torch::Tensor& images, const ImageOptions& opts) {
  if (opts.height <= 0 && opts.channels <= 0) return images;
  const int64_t h = opts.height > 0 ? opts.height : images.size(2);
  const int64_t w = opts.height > 0 ? (opts.width > 0 ? opts.width : opts.height) : images.size(3);
  const int64_t c = opts.channels > 0 ? opts.channels : images.size(1);
  if (images.size(1) == c && images.size(2) == h && images.size(3) == w) return images;
  // In slices, so the float copy stays small whatever the dataset's size.
  constexpr int64_t kSlice = 1024;
  if (images.size(0) > kSlice) {
    auto out = torch::empty({images.size(0), c, h, w}, torch::kUInt8);
    for (int64_t s = 0; s < images.size(0); s += kSlice) {
      const int64_t n = std::min(kSlice, images.size(0) - s);
      out.narrow(0, s, n).copy_(resize_images(images.narrow(0, s, n), opts));
    }
    return out;
  }
  // Resizing/recolouring IDX data goes through the same float path as image folders.
  auto x = images.to(torch::kFloat32);
  if (opts.height > 0)
    x = torch::nn::functional::interpolate(
        x, torch::nn::functional::InterpolateFuncOptions()
               .size(std::vector<int64_t>{opts.height, opts.width > 0 ? opts.width : opts.height})
               .mode(torch::kBilinear)
               .align_corners(false));
  if (opts.channels == 3 && x.size(1) == 1) x = x.expand({-1, 3, -1, -1});
  if (opts.channels == 1 && x.size(1) == 3) x = x.mean(1, true);
  return x.round().clamp(0, 255).to(torch::kUInt8).contiguous();
}

Dataset Dataset::without_labels() const {
  Dataset d = *this;
  d.labels = torch::full_like(labels, kUnlabeled);
  return d;
}

std::vector<int64_t> Dataset::input_shape() const {
  if (streamed()) {
    const auto& g = stream.geometry;
    return {g.channels, g.size, g.size};
  }
  return images.sizes().slice(1).vec();
}

namespace {

std::string shape_text(const Dataset& d) { return c10::str(c10::IntArrayRef(d.input_shape())); }

// The samples of a and b as one streamed dataset (the same source, or both sources in turn).
Dataset concat_streamed(const Dataset& a, const Dataset& b) {
  Dataset out = a;
  out.images = torch::Tensor();
  if (a.files == b.files) {
    out.ids = torch::cat({a.ids, b.ids});
  } else {
    out.files = concat_sources(a.files, b.files);
    out.ids = torch::cat({a.ids, b.ids + a.files->size()});
  }
  return out;
}

}  // namespace

Dataset concat(const Dataset& a, const Dataset& b) {
  KD_CHECK(a.input_shape() == b.input_shape(), "{} has images of {} but {} has {}", a.source,
           shape_text(a), b.source, shape_text(b));
  KD_CHECK(a.streamed() == b.streamed(), "{} and {}: streamed images cannot join in-memory ones",
           a.source, b.source);
  Dataset out = a.streamed() ? concat_streamed(a, b) : a;
  if (!a.streamed()) out.images = torch::cat({a.images, b.images});
  out.labels = torch::cat({a.labels, b.labels});
  out.source = a.source + " + " + b.source;
  out.origin = torch::Tensor();
  out.origin_classes.clear();
  // Pool origins survive only when both halves come from the same pool.
  if (a.origin.defined() && b.origin.defined() && a.origin_classes == b.origin_classes) {
    out.origin = torch::cat({a.origin, b.origin});
    out.origin_classes = a.origin_classes;
  }
  return out;
}

Dataset select_classes(const Dataset& data, const std::vector<std::string>& classes, bool others) {
  const int64_t n = data.num_classes();
  std::vector<bool> keep(static_cast<size_t>(n), false);
  auto index_of = [&](const std::string& item) -> int64_t {
    for (int64_t c = 0; c < n; ++c)
      if (data.class_names[static_cast<size_t>(c)] == item) return c;
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (!item.empty() && *end == '\0' && v >= 0 && v < n) return v;
    fail("--classes: '{}' is neither a class of {} nor an index below {} (classes: {})", item,
         data.source, n, fmt::join(data.class_names, ", "));
  };
  for (const auto& item : classes) {
    const auto dash = item.find('-', 1);
    const bool is_range =
        dash != std::string::npos &&
        std::find(data.class_names.begin(), data.class_names.end(), item) == data.class_names.end();
    const int64_t lo = index_of(is_range ? item.substr(0, dash) : item);
    const int64_t hi = is_range ? index_of(item.substr(dash + 1)) : lo;
    KD_CHECK(lo <= hi, "--classes: empty range '{}'", item);
    for (int64_t c = lo; c <= hi; ++c) keep[static_cast<size_t>(c)] = true;
  }
  auto remap = torch::full({n}, int64_t{-1}, torch::kInt64);
  std::vector<std::string> names;
  for (int64_t c = 0; c < n; ++c)
    if (keep[static_cast<size_t>(c)]) {
      remap[c] = static_cast<int64_t>(names.size());
      names.push_back(data.class_names[static_cast<size_t>(c)]);
    }
  KD_CHECK(!names.empty(), "--classes: no class selected");
  if (others) {
    KD_CHECK(static_cast<int64_t>(names.size()) < n,
             "--others: --classes keeps every class of {}; there are no others", data.source);
    KD_CHECK(std::find(data.class_names.begin(), data.class_names.end(), kOthersClass) ==
                 data.class_names.end(),
             "--others: {} already has a class named '{}'", data.source, kOthersClass);
    const auto rest = static_cast<int64_t>(names.size());
    for (int64_t c = 0; c < n; ++c)
      if (!keep[static_cast<size_t>(c)]) remap[c] = rest;
    names.push_back(kOthersClass);
  }
  auto new_labels = remap.index_select(0, data.labels.clamp_min(0));
  auto index = (new_labels >= 0).logical_and(data.labels >= 0).nonzero().flatten();
  Dataset out = data.subset(index);
  out.labels = new_labels.index_select(0, index);
  out.class_names = names;
  return out;
}

Dataset Dataset::subset(const torch::Tensor& index) const {
  Dataset d = *this;
  d.labels = labels.index_select(0, index);
  if (streamed())
    d.ids = ids.index_select(0, index);
  else
    d.images = images.index_select(0, index);
  d.origin = torch::Tensor();
  d.origin_classes.clear();
  if (origin.defined()) {
    d.origin = origin.index_select(0, index);
    d.origin_classes = origin_classes;
  }
  return d;
}

Dataset Dataset::head(int64_t n) const {
  return subset(torch::arange(std::min(n, size()), torch::kInt64));
}

Normalization compute_normalization(const Dataset& data) {
  KD_CHECK(data.size() > 0, "{}: cannot compute normalization of an empty dataset", data.source);
  if (data.streamed()) {
    // Evenly spaced samples, decoded: the statistics of photos settle long before 2,000.
    constexpr int64_t kSamples = 2000;
    const int64_t n = std::min(kSamples, data.size());
    auto pick = torch::linspace(0, static_cast<double>(data.size() - 1), n, torch::kFloat64)
                    .round()
                    .to(torch::kInt64);
    return compute_normalization(materialize(data.subset(pick)));
  }
  // Per channel, exact integer sums of the pixels and their squares over slices: the whole set as
  // float64 would be 8 bytes a pixel (1 GiB for 4,800 RGB images of 96 px, and as much again for
  // std's temporary).
  const int64_t channels = data.images.size(1);
  KD_CHECK(data.images.size(0) > 0, "{}: no image loaded", data.source);
  const int64_t slice =
      std::max<int64_t>(1, (int64_t{4} << 20) / (data.images.numel() / data.size()));
  auto sum = torch::zeros({channels}, torch::kInt64),
       sum_sq = torch::zeros({channels}, torch::kInt64);
  for (int64_t s = 0; s < data.size(); s += slice) {
    auto x = data.images.narrow(0, s, std::min(slice, data.size() - s)).to(torch::kInt64);
    sum += x.sum({0, 2, 3});
    sum_sq += (x * x).sum({0, 2, 3});
  }
  const auto count = static_cast<long double>(data.images.numel() / channels);
  Normalization n;
  for (int64_t c = 0; c < channels; ++c) {
    const auto s1 = static_cast<long double>(sum[c].item<int64_t>());
    const auto s2 = static_cast<long double>(sum_sq[c].item<int64_t>());
    const long double var = count > 1 ? (s2 - s1 * s1 / count) / (count - 1) : 0;
    n.mean.push_back(static_cast<double>(s1 / count / 255));
    n.std.push_back(std::max(1e-6, static_cast<double>(std::sqrt(std::max(var, 0.0L)) / 255)));
  }
  return n;
}

Dataset load_idx_pair(const std::string& images_path, const std::string& labels_path) {
  auto images = read_idx(images_path);
  auto labels = read_idx(labels_path);
  KD_CHECK(images.dim() == 3 || images.dim() == 4,
           "{}: expected images of 3 or 4 dimensions, got {}", images_path, images.dim());
  KD_CHECK(labels.dim() == 1, "{}: expected 1-D labels, got {} dimensions", labels_path,
           labels.dim());
  KD_CHECK(images.size(0) == labels.size(0), "{} has {} images but {} has {} labels", images_path,
           images.size(0), labels_path, labels.size(0));
  if (images.dim() == 3) images = images.unsqueeze(1);
  Dataset d;
  d.images = images.contiguous();
  d.labels = labels.to(torch::kInt64);
  d.source = images_path;
  int64_t num_classes = d.labels.numel() ? d.labels.max().item<int64_t>() + 1 : 0;
  const fs::path dir = fs::path(images_path).parent_path();
  d.class_names = class_names_for(dir, num_classes);
  // Without classes.txt the labels define the classes: a gap (one stray label 200 among 0-9)
  // would silently make a model of 201 classes.
  if (!fs::exists(dir / "classes.txt") && num_classes > 0) {
    auto counts = torch::bincount(d.labels, {}, num_classes);
    const int64_t present = (counts > 0).sum().item<int64_t>();
    if (present < num_classes) {
      const int64_t missing = (counts == 0).nonzero()[0].item<int64_t>();
      fail(
          "{}: labels go up to {} but {} of the labels 0-{} never occur (the first: {}); fix the "
          "stray labels "
          "or list the class names in {}",
          labels_path, num_classes - 1, num_classes - present, num_classes - 1, missing,
          (dir / "classes.txt").string());
    }
  }
  return d;
}

Dataset relabel_as(const Dataset& data, const std::vector<std::string>& classes) {
  std::vector<int64_t> to;
  for (const auto& name : data.class_names) {
    auto it = std::find(classes.begin(), classes.end(), name);
    KD_CHECK(it != classes.end(), "{}: class '{}' is not one of [{}]", data.source, name,
             fmt::join(classes, ", "));
    to.push_back(it - classes.begin());
  }
  Dataset out = data;
  out.class_names = classes;
  if (to.empty()) return out;
  auto remap = torch::tensor(to, torch::kInt64);
  out.labels =
      torch::where(data.labels >= 0, remap.index_select(0, data.labels.clamp_min(0)), data.labels);
  return out;
}

std::vector<std::string> pooled_sources(const std::string& spec) {
  if (spec.find('+') == std::string::npos || fs::exists(spec)) return {spec};
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t plus = spec.find('+', start);
    out.push_back(spec.substr(start, plus == std::string::npos ? plus : plus - start));
    KD_CHECK(!out.back().empty(), "--data {}: an empty source in the pooled list", spec);
    if (plus == std::string::npos) return out;
    start = plus + 1;
  }
}

Dataset pool_datasets(const std::vector<Dataset>& parts) {
  KD_CHECK(!parts.empty(), "no datasets to pool");
  // Streamed and in-memory sources pool in memory: the streamed ones are decoded at the shape
  // asked for (IDX data is small; pooling it with a large photo set is not what it is for).
  const bool mixed =
      std::any_of(parts.begin(), parts.end(), [](const Dataset& d) { return d.streamed(); }) &&
      std::any_of(parts.begin(), parts.end(), [](const Dataset& d) { return !d.streamed(); });
  auto part = [&](size_t i) {
    return mixed && parts[i].streamed() && parts[i].input_shape() == parts[0].input_shape()
               ? materialize(parts[i])
               : parts[i];
  };
  Dataset out = part(0);
  std::vector<torch::Tensor> origin = {torch::zeros({out.size()}, torch::kInt64)};
  for (size_t i = 1; i < parts.size(); ++i) {
    const Dataset d = part(i);
    KD_CHECK(d.input_shape() == out.input_shape(),
             "{} has images of {} but {} has {}: give --size and --channels to pool them",
             parts[0].source, shape_text(out), d.source, shape_text(d));
    // Classes are matched by name: a name both sources have is one class.
    for (const auto& name : d.class_names)
      if (std::find(out.class_names.begin(), out.class_names.end(), name) == out.class_names.end())
        out.class_names.push_back(name);
    const auto classes = out.class_names;
    auto labels = torch::cat({out.labels, relabel_as(d, classes).labels});
    out = concat(out, d);
    out.labels = labels;
    out.class_names = classes;
    origin.push_back(torch::full({d.size()}, static_cast<int64_t>(i), torch::kInt64));
  }
  out.origin = torch::cat(origin);
  out.origin_classes.clear();
  for (const auto& p : parts) out.origin_classes.push_back(p.class_names);
  return out;
}

bool is_idx_source(const std::string& spec) {
  const auto sources = pooled_sources(spec);
  return std::all_of(sources.begin(), sources.end(),
                     [](const std::string& s) { return is_idx_dir(resolve_alias(s)); });
}

bool has_part(const std::string& spec, const std::string& part) {
  if (const auto sources = pooled_sources(spec); sources.size() > 1)
    return std::all_of(sources.begin(), sources.end(),
                       [&](const std::string& s) { return has_part(s, part); });
  // A file list or tar shards: one part, split 8:2.
  if (!fs::is_directory(spec) && is_streamed_source(spec)) return part == "train";
  fs::path root = resolve_alias(spec);
  if (is_idx_dir(root)) {
    const std::string stem = part == "train" ? "train" : "t10k";
    return !find_idx(root, stem + "-images-idx3-ubyte").empty();
  }
  if (fs::is_directory(root / "train")) return fs::is_directory(root / part);
  return part == "train" && fs::is_directory(root);
}

Dataset load_dataset(const std::string& spec, const std::string& part, const ImageOptions& opts,
                     StreamOptions stream) {
  KD_CHECK(part == "train" || part == "test", "unknown dataset part '{}'", part);
  if (const auto sources = pooled_sources(spec); sources.size() > 1) {
    std::vector<Dataset> parts;
    for (const auto& s : sources) parts.push_back(load_dataset(s, part, opts, stream));
    return pool_datasets(parts);
  }
  fs::path root = resolve_alias(spec);
  if (spec == "fashion-mnist" && !fs::exists(root))
    fail("fashion-mnist: {} is missing (apt-get install dataset-fashion-mnist)", root.string());
  if (is_streamed_source(spec)) {
    StreamOptions read_as = stream;
    read_as.geometry = stream_geometry(opts);
    return streamed_dataset(open_source(spec, part, stream.max_missing), read_as);
  }
  KD_CHECK(fs::exists(root), "--data {}: no such file or directory", spec);
  KD_CHECK(fs::is_directory(root), "--data {}: not a directory", spec);
  const std::string stem = part == "train" ? "train" : "t10k";
  std::string images = find_idx(root, stem + "-images-idx3-ubyte");
  std::string labels = find_idx(root, stem + "-labels-idx1-ubyte");
  KD_CHECK(!images.empty(), "{}: no {}-images-idx3-ubyte[.gz]", root.string(), stem);
  KD_CHECK(!labels.empty(), "{}: no {}-labels-idx1-ubyte[.gz]", root.string(), stem);
  Dataset d = load_idx_pair(images, labels);
  d.images = resize_images(d.images, opts);
  return d;
}

Dataset streamed_dataset(SourceListing listing, const StreamOptions& stream) {
  Dataset d;
  d.labels = std::move(listing.labels);
  d.class_names = std::move(listing.class_names);
  d.source = std::move(listing.source);
  d.files = std::move(listing.files);
  d.ids = torch::arange(d.labels.size(0), torch::kInt64);
  d.stream = stream;
  return d;
}

Dataset materialize(const Dataset& data) {
  if (!data.streamed()) return data;
  const int64_t batch = std::min<int64_t>(256, std::max<int64_t>(1, data.size()));
  BatchPipeline pipeline(pipeline_options(data, batch));
  pipeline.start(data.ids, torch::arange(data.size(), torch::kInt64), 0);
  std::vector<torch::Tensor> pixels, kept;
  for (int64_t b = 0; b * batch < data.size(); ++b) {
    auto [x, rows] = pipeline.take(b, [](const torch::Tensor& t) { return t.clone(); });
    pixels.push_back(x);
    kept.push_back(rows + b * batch);
  }
  Dataset out = data.subset(torch::cat(kept));
  out.files = nullptr;
  out.ids = torch::Tensor();
  out.images = torch::cat(pixels);
  return out;
}

torch::Tensor first_pixels(const Dataset& data, int64_t n) {
  n = std::min(n, data.size());
  const auto head = data.head(n);
  return head.streamed() ? materialize(head).images : head.images;
}

}  // namespace kd
