#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include "commands.h"
#include "kd/core/error.h"
#include "kd/data/dataset.h"
#include "kd/data/split.h"

namespace kd::cli {
namespace {

struct SplitArgs {
  std::string data = "fashion-mnist";
  double ratio = 0.8;
  uint64_t seed = 0;
  std::string out;
};

struct InfoArgs {
  std::string data = "fashion-mnist";
};

void split(const SplitArgs& a) {
  Dataset d = load_dataset(a.data, "train", {});
  Split s = make_split(d.labels, a.ratio, a.seed, a.data);
  save_split(s, a.out);
  fmt::print("{}: {} train / {} eval of {} ({} seed {}) -> {}\n", a.data, s.train.numel(),
             s.eval.numel(), s.num_samples, a.ratio, a.seed, a.out);
}

void info(const InfoArgs& a) {
  for (const char* part : {"train", "test"}) {
    if (!has_part(a.data, part)) {
      fmt::print("{}: no {} part\n", a.data, part);
      continue;
    }
    Dataset d = load_dataset(a.data, part, {});
    Normalization n = compute_normalization(d);
    fmt::print("{} [{}]: {} images of {}x{}x{}, {} classes, mean {} std {}\n", a.data, part,
               d.size(), d.images.size(1), d.images.size(2), d.images.size(3), d.num_classes(),
               fmt::join(n.mean, ","), fmt::join(n.std, ","));
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
  auto* sc = data->add_subcommand("split", "write a reproducible, stratified train/eval split manifest");
  sc->footer("Example: kd data split --data fashion-mnist --ratio 0.8 --seed 0 --out split.json");
  sc->add_option("--data", s->data, "dataset (see `kd train --help`)")->capture_default_str();
  sc->add_option("--ratio", s->ratio, "train share")->capture_default_str();
  sc->add_option("--seed", s->seed, "shuffle seed")->capture_default_str();
  sc->add_option("--out,-o", s->out, "manifest to write (JSON)")->required();
  sc->callback([s] { split(*s); });

  auto i = std::make_shared<InfoArgs>();
  auto* ic = data->add_subcommand("info", "sizes, classes, class counts and pixel statistics");
  ic->footer("Example: kd data info --data fashion-mnist");
  ic->add_option("--data", i->data, "dataset")->capture_default_str();
  ic->callback([i] { info(*i); });
}

}  // namespace kd::cli
