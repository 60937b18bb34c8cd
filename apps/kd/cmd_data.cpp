#include <algorithm>
#include <cmath>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include "commands.h"
#include "kd/core/error.h"
#include "kd/data/dataset.h"
#include "kd/data/detection.h"
#include "kd/data/make_detection.h"
#include "kd/data/source.h"
#include "kd/data/split.h"
#include "kd/runs/run_dir.h"

namespace kd::cli {
namespace {

struct SplitArgs {
  std::string data = "fashion-mnist";
  double ratio = 0.8;
  uint64_t seed = 0;
  std::string out;
};

struct PackArgs {
  std::string data;
  std::string out;
  std::string part = "train";
  int64_t shard_mb = 256;
};

struct InfoArgs {
  std::string data = "fashion-mnist";
  int size = 0;  // 0: the source's size (IDX), or image folders' default
};

void split(const SplitArgs& a) {
  check_output_file(a.out, "--out", {{"data", a.data}});
  // Detection sets are split by image (one label each: a seeded shuffle), as runs split them.
  torch::Tensor labels =
      is_detection_source(a.data)
          ? torch::zeros({load_detection(a.data, "train", 32).size()}, torch::kLong)
          : load_dataset(a.data, "train", {}).labels;
  Split s = make_split(labels, a.ratio, a.seed, a.data);
  save_split(s, a.out);
  fmt::print("{}: {} train / {} eval of {} ({} seed {}) -> {}\n", a.data, s.train.numel(),
             s.eval.numel(), s.num_samples, a.ratio, a.seed, a.out);
}

void detection_info(const InfoArgs& a) {
  for (const char* part : {"train", "test"}) {
    if (!has_detection_part(a.data, part)) continue;
    DetectionDataset d = load_detection(a.data, part, 32);
    std::vector<int64_t> per_class(static_cast<size_t>(d.num_classes()), 0);
    std::vector<double> sides;
    int64_t ignored = 0;
    for (const auto& g : d.ground_truth) {
      auto k = std::find(d.category_ids.begin(), d.category_ids.end(), g.category_id) -
               d.category_ids.begin();
      ++per_class[static_cast<size_t>(k)];
      sides.push_back(std::sqrt(g.bbox[2] * g.bbox[3]));
      ignored += g.iscrowd || g.ignore;
    }
    std::sort(sides.begin(), sides.end());
    auto q = [&](double f) {
      return sides.empty() ? 0.0 : sides[static_cast<size_t>(f * double(sides.size() - 1))];
    };
    fmt::print(
        "{} [{}]: {} images, {} boxes ({} crowd/ignored), {} classes; box side sqrt(w*h) "
        "min {:.0f} median {:.0f} max {:.0f} px\n",
        a.data, part, d.size(), sides.size(), ignored, d.num_classes(), q(0), q(0.5), q(1));
    for (int64_t c = 0; c < d.num_classes(); ++c)
      fmt::print("  {:>3} {:<16} (id {}) {} boxes\n", c, d.class_names[static_cast<size_t>(c)],
                 d.category_ids[static_cast<size_t>(c)], per_class[static_cast<size_t>(c)]);
  }
}

void pack(const PackArgs& a) {
  KD_CHECK(is_streamed_source(a.data),
           "--data {}: not a folder of images or a file list (IDX data is packed already)", a.data);
  check_output_location(a.out, {{"data", a.data}});
  const PackResult r =
      pack_shards(open_source(a.data, a.part), a.out, a.part, a.shard_mb * (int64_t{1} << 20));
  fmt::print("{} [{}]: {} images in {} shards ({:.1f} MB){} -> --data {}\n", a.data, a.part,
             r.samples, r.shards, static_cast<double>(r.bytes) / 1e6,
             r.skipped ? fmt::format(", {} skipped", r.skipped) : "", r.pattern);
}

void info(const InfoArgs& a) {
  if (is_detection_source(a.data)) return detection_info(a);
  for (const char* part : {"train", "test"}) {
    if (!has_part(a.data, part)) {
      fmt::print(
          "{}: no {} part: runs test on their eval split (hold out a test set as "
          "DIR/train/<class>/ and DIR/test/<class>/)\n",
          a.data, part);
      continue;
    }
    Dataset d = load_dataset(a.data, part, {0, a.size, a.size});
    Normalization n = compute_normalization(d);
    const auto s = d.input_shape();
    const auto& g = d.stream.geometry;
    fmt::print("{} [{}]: {} images{}, input {}x{}x{}{}, {} classes, mean {} std {}\n", a.data, part,
               d.size(), d.streamed() ? " (streamed)" : "", s[0], s[1], s[2],
               d.streamed() ? fmt::format(" (eval: shorter side {}, centre crop{}; --size)",
                                          g.resize, a.size == 0 ? ", the photo default" : "")
                            : "",
               d.num_classes(), fmt::join(n.mean, ","), fmt::join(n.std, ","));
    auto counts = torch::bincount(d.labels, {}, d.num_classes());
    for (int64_t c = 0; c < d.num_classes(); ++c)
      fmt::print("  {:>3} {:<16} {}\n", c, d.class_names[c], counts[c].item<int64_t>());
  }
}

}  // namespace

void add_data_commands(CLI::App& app) {
  auto* data = app.add_subcommand("data", "inspect datasets and make train/eval splits");
  data->require_subcommand(1);

  auto s = std::make_shared<SplitArgs>();
  auto* sc =
      data->add_subcommand("split", "write a reproducible, stratified train/eval split manifest");
  sc->footer("Example: kd data split --data fashion-mnist --ratio 0.8 --seed 0 --out split.json");
  sc->add_option("--data", s->data, "dataset (see `kd train --help`)")->capture_default_str();
  sc->add_option("--ratio", s->ratio, "train share")->capture_default_str();
  sc->add_option("--seed", s->seed, "shuffle seed")->capture_default_str();
  sc->add_option("--out,-o", s->out, "manifest to write (JSON)")->required();
  sc->callback([s] { split(*s); });

  auto m = std::make_shared<MakeDetectionOptions>();
  auto* mc = data->add_subcommand(
      "make-detection",
      "build a detection dataset: Fashion-MNIST items pasted on textured canvases "
      "(PNG + COCO JSON, VOC XML with --voc)");
  mc->footer(
      "Example: kd data make-detection --out data/det --images 3000 --test-images 600 --seed 0");
  mc->add_option("--out,-o", m->out, "folder to write (images/, train.json, test.json, info.json)")
      ->required();
  mc->add_option("--source", m->source, "labeled images to cut items from")->capture_default_str();
  mc->add_option("--classes", m->classes, "item classes (names or indices), comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  mc->add_option("--images", m->train_images, "training canvases (from the source's train part)")
      ->capture_default_str();
  mc->add_option("--test-images", m->test_images,
                 "test canvases (from the source's test part; 0: none)")
      ->capture_default_str();
  mc->add_option("--canvas", m->canvas, "canvas side in pixels")->capture_default_str();
  mc->add_option("--min-objects", m->min_objects)->capture_default_str();
  mc->add_option("--max-objects", m->max_objects)->capture_default_str();
  mc->add_option("--min-size", m->min_size, "smallest item side in pixels")->capture_default_str();
  mc->add_option("--max-size", m->max_size, "largest item side in pixels")->capture_default_str();
  mc->add_option("--seed", m->seed)->capture_default_str();
  mc->add_flag("--voc", m->voc, "also write Pascal VOC XML (voc/Annotations, voc/JPEGImages)");
  mc->callback([m] {
    auto info = make_detection_dataset(*m);
    fmt::print("{}\n", info.dump(2));
  });

  auto p = std::make_shared<PackArgs>();
  auto* pc = data->add_subcommand(
      "pack", "write an image folder or file list into tar shards (WebDataset layout)");
  pc->footer("Example: kd data pack --data photos --out photos-shards --shard-size 256");
  pc->add_option("--data", p->data, "image folder or .csv/.tsv file list")->required();
  pc->add_option("--out,-o", p->out, "folder to write (new or empty)")->required();
  pc->add_option("--part", p->part, "train or test (folders with train/ and test/)")
      ->check(CLI::IsMember({"train", "test"}))
      ->capture_default_str();
  pc->add_option("--shard-size", p->shard_mb, "MB per shard")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  pc->callback([p] { pack(*p); });

  auto i = std::make_shared<InfoArgs>();
  auto* ic = data->add_subcommand("info", "sizes, classes, class counts and pixel statistics");
  ic->footer("Example: kd data info --data fashion-mnist");
  ic->add_option("--data", i->data, "dataset")->capture_default_str();
  ic->add_option("--size", i->size, "photos' input SIZE x SIZE (as kd train --size)")
      ->check(CLI::Range(1, 4096));
  ic->callback([i] { info(*i); });
}

}  // namespace kd::cli
