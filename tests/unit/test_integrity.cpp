// Issue 14: kd never loses a user's files and never trusts damaged ones. Each test here failed
// (or could not be written) before the fix it names.
#include <fstream>

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>
#include <zlib.h>

#include "data/idx.h"
#include "distill/teacher_cache.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/data/dataset.h"
#include "kd/data/detection.h"
#include "kd/data/image.h"
#include "kd/distill/experiment.h"
#include "kd/models/model.h"
#include "kd/runs/config.h"
#include "kd/runs/run_dir.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

kd::Dataset toy(int64_t n = 32) {
  auto labels = torch::arange(n, torch::kInt64).remainder(4);
  auto images = torch::randint(0, 255, {n, 1, 8, 8}, torch::kUInt8);
  return {images, labels, {"a", "b", "c", "d"}, "toy"};
}

kd::ModelSpec toy_spec() {
  kd::ModelSpec s;
  s.arch = "mlp";
  s.input_shape = {1, 8, 8};
  s.class_names = {"a", "b", "c", "d"};
  return s;
}

// A valid size x size 8-bit grayscale PNG, written by hand (IHDR, one IDAT, IEND, each with its
// CRC).
void cv_like_png(std::vector<uint8_t>& out, int size = 4) {
  out.assign({0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'});
  auto be32 = [&](std::vector<uint8_t>& v, uint32_t x) {
    for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
  };
  auto chunk = [&](const char* type, const std::vector<uint8_t>& data) {
    be32(out, static_cast<uint32_t>(data.size()));
    std::vector<uint8_t> body(type, type + 4);
    body.insert(body.end(), data.begin(), data.end());
    out.insert(out.end(), body.begin(), body.end());
    be32(out, static_cast<uint32_t>(crc32(0, body.data(), static_cast<uInt>(body.size()))));
  };
  std::vector<uint8_t> ihdr;
  be32(ihdr, size);
  be32(ihdr, size);
  ihdr.insert(ihdr.end(), {8, 0, 0, 0, 0});
  chunk("IHDR", ihdr);
  std::vector<uint8_t> raw;
  for (int y = 0; y < size; ++y) {
    raw.push_back(0);  // filter: none
    for (int x = 0; x < size; ++x) raw.push_back(static_cast<uint8_t>((x * 37 + y * 11) & 255));
  }
  uLongf n = compressBound(raw.size());
  std::vector<uint8_t> z(n);
  compress(z.data(), &n, raw.data(), raw.size());
  z.resize(n);
  chunk("IDAT", z);
  chunk("IEND", {});
}

}  // namespace

// 1. Only directories kd made are replaced.
TEST(RunDir, ReplacesOnlyWhatKdWrote) {
  TempDir t;
  const fs::path run = t.path / "run";
  write(run / "config.yaml", "mode: train\n");
  write(run / "metrics.jsonl", "{}\n");
  write(run / "summary.json.tmp.123", "");
  // A quantization-aware run's fp32 model and phases (kd run redoes it when its stage changes).
  write(run / "fp32" / "model.pt", "");
  write(run / "qat" / "metrics.jsonl", "{}\n");
  write(run / "qat-frozen" / "metrics.jsonl", "{}\n");
  EXPECT_FALSE(kd::not_a_run_directory(run).has_value());
  { auto lock = kd::RunDirLock::claim(run, kd::RunDirLock::Claim::kReplace); }
  EXPECT_FALSE(fs::exists(run / "metrics.jsonl"));  // replaced: emptied apart from the lock

  const fs::path mine = t.path / "mine";
  write(mine / "mine.txt", "precious");
  write(mine / "d" / "f", "precious");
  EXPECT_KD_ERROR(kd::RunDirLock::claim(mine, kd::RunDirLock::Claim::kReplace), "no config.yaml");
  write(mine / "config.yaml", "mode: train\n");
  EXPECT_KD_ERROR(kd::RunDirLock::claim(mine, kd::RunDirLock::Claim::kReplace),
                  "which kd did not write");
  EXPECT_EQ(read(mine / "mine.txt"), "precious");
  EXPECT_EQ(read(mine / "d" / "f"), "precious");
  EXPECT_FALSE(fs::exists(mine / ".lock"));  // refused before writing anything
  EXPECT_KD_ERROR(kd::RunDirLock::claim(mine, kd::RunDirLock::Claim::kFresh), "pass --force");
}

TEST(RunDir, NeverTheWorkingDirectoryTeacherOrData) {
  TempDir t;
  const fs::path run = t.path / "run";
  write(run / "config.yaml", "mode: train\n");
  const auto cwd = fs::current_path();
  fs::current_path(run);
  EXPECT_KD_ERROR(kd::check_deletable_run("."), "working directory");
  fs::current_path(t.path);
  EXPECT_KD_ERROR(kd::check_deletable_run(t.path), "working directory");
  fs::current_path(cwd);
  EXPECT_KD_ERROR(kd::check_output_location(run, {{"teacher", run.string()}}),
                  "would hold the teacher");
  kd::check_output_location(t.path,
                            {{"data", (run / "x").string()}});  // no such data: nothing to protect
  write(run / "x", "");
  EXPECT_KD_ERROR(kd::check_output_location(t.path, {{"data", (run / "x").string()}}),
                  "would hold the data");
  EXPECT_KD_ERROR(kd::check_output_location(run / "sub", {{"teacher", run.string()}}),
                  "lies inside the teacher");
  kd::check_output_location(t.path / "other", {{"teacher", run.string()}});  // fine
}

// 5. One process per run directory.
TEST(RunDir, SecondClaimFailsNamingTheHolder) {
  TempDir t;
  auto first = kd::RunDirLock::claim(t.path / "conc", kd::RunDirLock::Claim::kFresh);
  EXPECT_KD_ERROR(kd::RunDirLock::claim(t.path / "conc", kd::RunDirLock::Claim::kFresh),
                  "in use by kd process " + std::to_string(::getpid()));
}

// 3. Duplicate keys, stage names, seeds; 2. names that leave `out`.
TEST(Experiment, RejectsDuplicatesAndEscapingNames) {
  TempDir t;
  auto plan = [&](const std::string& yaml) {
    write(t.path / "e.yaml", yaml);
    return kd::load_experiment(t / "e.yaml", {});
  };
  const std::string out = "out: " + (t / "o") + "\n";
  EXPECT_KD_ERROR(plan(out + "stages:\n  - {name: \"../victim\", arch: mlp}\n"),
                  "stage name '../victim'");
  EXPECT_KD_ERROR(plan(out + "stages:\n  - {name: /abs, arch: mlp}\n"), "stage name '/abs'");
  EXPECT_KD_ERROR(plan(out + "stages:\n  - {name: t}\n  - {name: t}\n"),
                  "stage name 't' is used twice");
  EXPECT_KD_ERROR(plan(out + "seeds: [0, 0]\nstages:\n  - {name: t}\n"), "seed 0 is listed twice");
  EXPECT_KD_ERROR(plan(out + "stages:\n  - {name: t, arch: a, arch: b}\n"),
                  "key 'arch' appears twice");
  EXPECT_KD_ERROR(plan(out + "stages:\n  - {name: t}\nstages:\n  - {name: u}\n"),
                  "key 'stages' appears twice");
  write(t.path / "o" / "compare.md", "my notes");
  EXPECT_KD_ERROR(plan(out + "stages:\n  - {name: t}\n"),
                  "compare.md or compare.json that kd did not write");
}

// 13. Every option is checked before anything runs.
TEST(Config, RejectsOutOfRangeNumbers) {
  auto bad = [](auto edit, const std::string& needle) {
    kd::RunConfig c;
    c.out = "x";
    edit(c);
    EXPECT_KD_ERROR(kd::validate(c), needle);
  };
  const double nan = std::numeric_limits<double>::quiet_NaN(),
               inf = std::numeric_limits<double>::infinity();
  bad([&](kd::RunConfig& c) { c.train.optim.lr = nan; }, "--lr");
  bad([&](kd::RunConfig& c) { c.train.optim.lr = inf; }, "--lr");
  bad([&](kd::RunConfig& c) { c.train.optim.momentum = 2; }, "--momentum");
  bad([&](kd::RunConfig& c) { c.train.optim.weight_decay = -1; }, "--weight-decay");
  bad([&](kd::RunConfig& c) { c.train.schedule.warmup_epochs = -1; }, "--warmup");
  bad([&](kd::RunConfig& c) { c.train.schedule.step_size = 0; }, "--step-size");
  bad([&](kd::RunConfig& c) { c.distill.temperature = nan; }, "-T");
  bad([&](kd::RunConfig& c) { c.data.limit = -5; }, "--limit");
  bad([&](kd::RunConfig& c) { c.data.channels = 2; }, "--channels");
  bad([&](kd::RunConfig& c) { c.train.crop_padding = 1000; }, "--crop-padding");
  bad([&](kd::RunConfig& c) { c.train.epochs = 0; }, "epochs must be >= 1");
}

TEST(Config, ChangesAreNamed) {
  kd::RunConfig a, b;
  b.train.epochs = 5;
  a.train.epochs = 20;
  EXPECT_EQ(kd::config_changes(kd::to_yaml(a), kd::to_yaml(b)), "train.epochs: 20 -> 5");
  EXPECT_EQ(kd::config_changes(kd::to_yaml(a), kd::to_yaml(a)), "");
  // A run started before a key existed: the key at its default is no change, any other value is.
  std::string older = kd::to_yaml(a);
  const auto key = older.find("teacher_view");
  ASSERT_NE(key, std::string::npos);
  const auto line = older.rfind('\n', key) + 1;
  older.erase(line, older.find('\n', key) - line + 1);
  EXPECT_EQ(kd::config_changes(older, kd::to_yaml(a)), "");
  a.distill.teacher_view = "clean";
  EXPECT_EQ(kd::config_changes(older, kd::to_yaml(a)), "distill.teacher_view: augmented -> clean");
}

// 6. A damaged teacher-cache entry is recomputed, never trained on.
TEST(TeacherCache, DamagedEntriesAreRecomputed) {
  TempDir t;
  auto teacher = kd::create_model(toy_spec());
  auto d = toy();
  auto first = kd::cached_teacher_logits(*teacher, d, t.path.string(), 16, torch::kCPU);
  ASSERT_FALSE(first.hit);
  EXPECT_EQ(first.logits.scalar_type(), torch::kFloat16);
  first.logits = first.logits.clone();  // the entry is about to be damaged in place
  const std::string pristine = read(first.path);
  auto damaged = [&](const std::function<void()>& damage) {
    damage();
    auto again = kd::cached_teacher_logits(*teacher, d, t.path.string(), 16, torch::kCPU);
    EXPECT_FALSE(again.hit);
    EXPECT_TRUE(torch::equal(again.logits, first.logits));
    EXPECT_TRUE(
        kd::cached_teacher_logits(*teacher, d, t.path.string(), 16, torch::kCPU).hit);  // rewritten
  };
  // Other values under the first entry's header (its CRC-32), rows as the values say.
  auto resave = [&](const torch::Tensor& logits) {
    std::string header = pristine.substr(0, 32);
    const int64_t rows = logits.size(0);
    header.replace(8, 8, reinterpret_cast<const char*>(&rows), 8);
    auto half = logits.to(torch::kFloat16).contiguous();
    write(first.path, header + std::string(static_cast<const char*>(half.data_ptr()),
                                           static_cast<size_t>(half.numel()) * 2));
  };
  damaged([&] {
    std::string bytes = pristine;
    for (size_t i = 0; i < bytes.size(); i += 997) bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
    write(first.path, bytes);
  });
  damaged([&] { resave(first.logits.roll(1, 0)); });
  damaged([&] { resave(torch::full_like(first.logits, 3e4)); });  // beyond +-1e4
  damaged([&] { resave(torch::full_like(first.logits, std::numeric_limits<float>::quiet_NaN())); });
  damaged([&] { resave(first.logits.narrow(0, 0, 5)); });
}

// 7. model.pt is checked against model.json.
TEST(ModelFile, FlippedBytesAreRefused) {
  TempDir t;
  auto m = kd::create_model(toy_spec());
  kd::save_model(*m, t.path.string());
  kd::load_model(t.path.string());
  std::string bytes = read(t.path / "model.pt");
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 1);
  write(t.path / "model.pt", bytes);
  EXPECT_KD_ERROR(kd::load_model(t.path.string()), "CRC-32 mismatch");
}

// 9. IDX: only what the header says is read; only regular files.
TEST(Idx, ReadsOnlyWhatTheHeaderSaysAndOnlyRegularFiles) {
  TempDir t;
  const std::string gz = t / "bomb-idx3-ubyte.gz";
  gzFile f = gzopen(gz.c_str(), "wb9");
  const uint8_t header[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28};
  gzwrite(f, header, sizeof header);
  std::vector<uint8_t> zeros(1 << 20, 0);
  for (int i = 0; i < 64; ++i)
    gzwrite(f, zeros.data(), static_cast<unsigned>(zeros.size()));  // 64 MiB of zeros
  gzclose(f);
  EXPECT_KD_ERROR(kd::read_idx(gz), "trailing bytes");
  EXPECT_KD_ERROR(kd::read_idx("/dev/zero"), "not a regular file");
  const std::string fifo = t / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_KD_ERROR(kd::read_idx(fifo), "not a regular file");
}

// Issue 33, 1: an atomic write never renames over what is not a regular file.
TEST(AtomicWrite, NeverReplacesADeviceAFifoAFolderOrALink) {
  TempDir t;
  const std::string fifo = t / "fifo", dir = t / "dir", link = t / "link", file = t / "file";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::filesystem::create_directory(dir);
  kd::write_text_atomically(file, "mine\n");
  std::filesystem::create_symlink(file, link);
  EXPECT_EQ(kd::special_file(file), std::nullopt);
  EXPECT_EQ(kd::special_file(t / "absent"), std::nullopt);
  EXPECT_EQ(kd::special_file(fifo), "a FIFO");
  EXPECT_EQ(kd::special_file("/dev/null"), "a device or special file");
  // (Only the test's own files: a regression must not cost the machine its /dev/full.)
  for (const std::string& target : {fifo, dir, link})
    EXPECT_KD_ERROR(kd::write_text_atomically(target, "x"), "not a regular file");
  EXPECT_TRUE(std::filesystem::is_fifo(fifo));
  EXPECT_TRUE(std::filesystem::is_directory(dir));
  EXPECT_TRUE(std::filesystem::is_symlink(link));
  EXPECT_EQ(kd::read_text(file), "mine\n");
}

// 12. A stray label without classes.txt is refused, not made into 201 classes.
TEST(Idx, GapsInLabelsAreRefused) {
  TempDir t;
  kd::write_idx(t / "train-images-idx3-ubyte", torch::zeros({4, 2, 2}, torch::kUInt8));
  kd::write_idx(t / "train-labels-idx1-ubyte", torch::tensor({0, 1, 2, 200}, torch::kUInt8));
  EXPECT_KD_ERROR(kd::load_dataset(t.path.string(), "train", {}),
                  "labels go up to 200 but 197 of the labels");
}

// 14. Hidden folders are not classes.
TEST(ImageFolder, HiddenFoldersAreSkipped) {
  TempDir t;
  std::vector<uint8_t> png;
  cv_like_png(png);
  for (const char* dir : {"cat", "dog", ".git", ".ipynb_checkpoints"}) {
    fs::create_directories(t.path / dir);
    std::ofstream(t.path / dir / "a.png", std::ios::binary)
        .write(reinterpret_cast<const char*>(png.data()), png.size());
  }
  auto d = kd::open_source(t.path.string(), "train");
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"cat", "dog"}));
}

// 14. A truncated PNG is one error line (libpng printed its own before); 10. pixel limit.
TEST(Images, TruncatedAndHugeImagesAreRefused) {
  std::vector<uint8_t> png;
  cv_like_png(png);
  const std::string whole(png.begin(), png.end());
  EXPECT_EQ(kd::decode_image(whole, {1, 0, 0}, 1 << 20).size(1), 4);
  EXPECT_KD_ERROR(kd::decode_image(whole.substr(0, whole.size() - 20), {1, 0, 0}, 1 << 20),
                  "truncated PNG");
  std::string flipped = whole;
  flipped[40] = static_cast<char>(flipped[40] ^ 1);
  EXPECT_KD_ERROR(kd::decode_image(flipped, {1, 0, 0}, 1 << 20), "CRC mismatch");
  EXPECT_KD_ERROR(kd::decode_image(whole, {1, 0, 0}, 8), "more than the limit");
}

// 8. VOC numbers must be numbers; a COCO box far outside its image is skipped, not clipped.
TEST(DetectionData, BadNumbersAndHugeBoxesAreSkipped) {
  TempDir t;
  std::vector<uint8_t> png;
  cv_like_png(png, 64);
  fs::create_directories(t.path / "JPEGImages");
  std::ofstream(t.path / "JPEGImages" / "a.png", std::ios::binary)
      .write(reinterpret_cast<const char*>(png.data()), png.size());
  std::string objects;
  const std::vector<std::string> xmins = {"abc", "10e", "0x10", "50.9px", "inf", "5"};
  for (const auto& x : xmins)
    objects += "<object><name>c</name><bndbox><xmin>" + x +
               "</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax>"
               "</bndbox></object>";
  write(t.path / "Annotations" / "a.xml",
        "<annotation><filename>a.png</filename><size><width>64</width><height>64</height></size>" +
            objects + "</annotation>");
  auto voc = kd::load_detection(t.path.string(), "train", 64);
  ASSERT_EQ(voc.ground_truth.size(), 1u);  // only xmin=5
  EXPECT_DOUBLE_EQ(voc.ground_truth[0].bbox[0], 4.0);

  write(t.path / "coco.json",
        R"({"images": [{"id": 1, "file_name": "JPEGImages/a.png", "width": 64, "height": 64}],
            "categories": [{"id": 1, "name": "c"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1e30, 1e30]},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [-1e9, 5, 10, 10]},
                            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}]})");
  auto coco = kd::load_detection(t / "coco.json", "train", 64);
  ASSERT_EQ(coco.ground_truth.size(), 1u);
  EXPECT_DOUBLE_EQ(coco.ground_truth[0].bbox[2], 20.0);
}

// 10. A TorchScript zip bomb is refused from its directory, before LibTorch inflates it.
TEST(TorchScript, ZipBombIsRefusedBeforeLoading) {
  TempDir t;
  // One deflated entry of 64 MiB of zeros (~64 KiB compressed), as a zip with a central directory.
  std::vector<uint8_t> zeros(64 << 20, 0);
  uLongf packed_size = compressBound(zeros.size());
  std::vector<uint8_t> packed(packed_size);
  z_stream z{};
  deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY);
  z.next_in = zeros.data();
  z.avail_in = static_cast<uInt>(zeros.size());
  z.next_out = packed.data();
  z.avail_out = static_cast<uInt>(packed.size());
  deflate(&z, Z_FINISH);
  packed.resize(z.total_out);
  deflateEnd(&z);
  const uint32_t crc = crc32(0, zeros.data(), static_cast<uInt>(zeros.size()));
  std::string zip;
  auto u16 = [&](uint32_t v) {
    zip += char(v & 255);
    zip += char((v >> 8) & 255);
  };
  auto u32 = [&](uint32_t v) {
    u16(v & 0xffff);
    u16(v >> 16);
  };
  const std::string name = "archive/data.pkl";
  u32(0x04034b50);
  u16(20);
  u16(0);
  u16(8);
  u16(0);
  u16(0);
  u32(crc);
  u32(packed.size());
  u32(zeros.size());
  u16(name.size());
  u16(0);
  zip += name;
  zip.append(packed.begin(), packed.end());
  const uint32_t dir_at = zip.size();
  u32(0x02014b50);
  u16(20);
  u16(20);
  u16(0);
  u16(8);
  u16(0);
  u16(0);
  u32(crc);
  u32(packed.size());
  u32(zeros.size());
  u16(name.size());
  u16(0);
  u16(0);
  u16(0);
  u16(0);
  u32(0);
  u32(0);
  zip += name;
  const uint32_t dir_size = zip.size() - dir_at;
  u32(0x06054b50);
  u16(0);
  u16(0);
  u16(1);
  u16(1);
  u32(dir_size);
  u32(dir_at);
  u16(0);
  write(t.path / "bomb.pt", zip);
  EXPECT_KD_ERROR(kd::load_model(t / "bomb.pt"), "zip bomb");
}
