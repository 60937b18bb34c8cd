#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/json.h"
#include "kd/data/dataset.h"
#include "kd/data/source.h"
#include "opencv_image.h"
#include "tar.h"

namespace kd {
namespace {

// Paths are compact in memory: one string of all names and an offset per name (a million
// std::strings would cost 32 bytes each before their characters).
class PathTable {
 public:
  void add(std::string_view path) {
    chars_.append(path);
    ends_.push_back(chars_.size());
  }
  int64_t size() const { return static_cast<int64_t>(ends_.size()); }
  std::string_view at(int64_t i) const {
    const uint64_t begin = i == 0 ? 0 : ends_[static_cast<size_t>(i - 1)];
    return std::string_view(chars_).substr(begin, ends_[static_cast<size_t>(i)] - begin);
  }

 private:
  std::string chars_;
  std::vector<uint64_t> ends_;
};

bool is_image_name(std::string_view name) {
  const auto dot = name.rfind('.');
  if (dot == std::string_view::npos) return false;
  std::string ext(name.substr(dot + 1));
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext == "png" || ext == "jpg" || ext == "jpeg" || ext == "bmp";
}

std::string read_image_bytes(const std::string& path) {
  // O_NONBLOCK: a FIFO put where an image was listed must not block the open; it is then refused
  // as not a regular file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open ({})", path, std::strerror(errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail("{}: cannot read ({})", path, std::strerror(errno));
  KD_CHECK(S_ISREG(st.st_mode), "{}: not a regular file", path);
  KD_CHECK(st.st_size <= kMaxImageFileBytes, "{}: {} bytes, more than an image file may have ({})",
           path, st.st_size, kMaxImageFileBytes);
  std::string data(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pread(fd, data.data() + done, data.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("{}: cannot read ({})", path, n < 0 ? std::strerror(errno) : "cut short");
    done += static_cast<size_t>(n);
  }
  return data;
}

struct Fnv {
  uint64_t h = 1469598103934665603ULL;
  void add(const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ULL;
  }
  void add(std::string_view s) { add(s.data(), s.size()); }
  void add(int64_t v) { add(&v, sizeof v); }
};

// Files on disk: a folder's images or a list's entries.
class FileSource final : public SampleSource {
 public:
  FileSource(PathTable paths, uint64_t fingerprint)
      : paths_(std::move(paths)), fingerprint_(fingerprint) {}
  int64_t size() const override { return paths_.size(); }
  std::string read(int64_t i) const override { return read_image_bytes(name(i)); }
  std::string name(int64_t i) const override { return std::string(paths_.at(i)); }
  uint64_t fingerprint() const override { return fingerprint_; }

 private:
  PathTable paths_;
  uint64_t fingerprint_;
};

class ConcatSource final : public SampleSource {
 public:
  ConcatSource(std::shared_ptr<const SampleSource> a, std::shared_ptr<const SampleSource> b)
      : a_(std::move(a)), b_(std::move(b)) {}
  int64_t size() const override { return a_->size() + b_->size(); }
  std::string read(int64_t i) const override {
    return i < a_->size() ? a_->read(i) : b_->read(i - a_->size());
  }
  std::string name(int64_t i) const override {
    return i < a_->size() ? a_->name(i) : b_->name(i - a_->size());
  }
  uint64_t fingerprint() const override {
    return a_->fingerprint() * 1099511628211ULL ^ b_->fingerprint();
  }

 private:
  std::shared_ptr<const SampleSource> a_, b_;
};

// Lists the files (sorted) and fingerprints their sizes and modification times.
struct Stat {
  bool exists = false, regular = false;
  int64_t size = 0, mtime_ns = 0;
};
Stat stat_path(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {true, S_ISREG(st.st_mode), static_cast<int64_t>(st.st_size),
          static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

// A file's share of a source's fingerprint: its name, size and modification time.
void add_file(Fnv& fp, const std::string& path, const Stat& s) {
  fp.add(path);
  fp.add(s.size);
  fp.add(s.mtime_ns);
}

SourceListing open_folder(const fs::path& dir, const std::string& source) {
  KD_CHECK(fs::is_directory(dir), "{}: not a directory", dir.string());
  std::vector<std::string> classes;
  // Hidden folders (.git, .ipynb_checkpoints) are tools' files, not classes.
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string()[0] != '.')
      classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  for (const auto& c : classes) check_utf8(c, dir.string() + ": class folder");
  KD_CHECK(!classes.empty(), "{}: no class sub-folders (expected {}/<class>/<image>)", dir.string(),
           dir.string());
  PathTable paths;
  std::vector<int64_t> labels;
  Fnv fp;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<std::string> in_class;
    for (const auto& e : fs::directory_iterator(dir / classes[c]))
      if (e.is_regular_file() && is_image_name(e.path().filename().string()) &&
          e.path().filename().string()[0] != '.')
        in_class.push_back(e.path().string());
    std::sort(in_class.begin(), in_class.end());  // directory order is not stable
    for (const auto& f : in_class) {
      const Stat s = stat_path(f);
      add_file(fp, f, s);
      paths.add(f);
      labels.push_back(static_cast<int64_t>(c));
    }
  }
  KD_CHECK(paths.size() > 0, "{}: no PNG/JPEG images in any class folder", dir.string());
  return {std::make_shared<FileSource>(std::move(paths), fp.h),
          torch::tensor(labels, torch::kInt64), classes, source};
}

// One CSV/TSV field list: commas (or tabs) outside double quotes split; "" is a quote.
std::vector<std::string> split_fields(const std::string& line, char sep) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '"') {
      if (quoted && i + 1 < line.size() && line[i + 1] == '"') {
        out.back() += '"';
        ++i;
      } else {
        quoted = !quoted;
      }
    } else if (c == sep && !quoted) {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ')) s.pop_back();
  size_t start = 0;
  while (start < s.size() && s[start] == ' ') ++start;
  return s.substr(start);
}

SourceListing open_list(const fs::path& list, double max_missing) {
  KD_CHECK(!special_file(list) || fs::is_symlink(list), "{}: not a regular file", list.string());
  std::string ext = list.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  const char sep = ext == ".tsv" ? '\t' : ',';
  std::ifstream in(list);
  KD_CHECK(in, "{}: cannot read", list.string());
  const fs::path base = list.parent_path();
  PathTable paths;
  // Labels as indices into the names in order of appearance (a million entries name a few
  // classes: no string per entry), sorted below.
  std::map<std::string, int64_t> seen;
  std::vector<std::string> names;
  std::vector<int64_t> labels;
  int64_t line_no = 0, missing = 0, total = 0;
  std::string first_missing;
  Fnv fp;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    auto fields = split_fields(line, sep);
    KD_CHECK(fields.size() == 2, "{}:{}: expected `path{}label`, got {} field(s)", list.string(),
             line_no, sep == '\t' ? "<TAB>" : ",", fields.size());
    const std::string path = trim(fields[0]), label = trim(fields[1]);
    // A header line names its columns: its first field is not an image file name.
    if (total == 0 && paths.size() == 0 && missing == 0 && !is_image_name(path)) continue;
    KD_CHECK(is_image_name(path), "{}:{}: '{}' is not a PNG, JPEG or BMP file name", list.string(),
             line_no, path);
    check_utf8(label, fmt::format("{}:{}: label", list.string(), line_no));
    ++total;
    const std::string full = fs::path(path).is_absolute() ? path : (base / path).string();
    const Stat s = stat_path(full);
    if (!s.exists) {
      if (missing++ == 0) first_missing = fmt::format("{} (line {})", full, line_no);
      continue;
    }
    KD_CHECK(s.regular, "{}:{}: {}: not a regular file", list.string(), line_no, full);
    add_file(fp, full, s);
    paths.add(full);
    if (label.empty()) {
      labels.push_back(kUnlabeled);
      continue;
    }
    auto [it, added] = seen.emplace(label, static_cast<int64_t>(names.size()));
    if (added) names.push_back(label);
    labels.push_back(it->second);
  }
  KD_CHECK(total > 0, "{}: lists no images", list.string());
  if (missing > 0) {
    const std::string what = fmt::format("{}: {} of {} files missing, first: {}", list.string(),
                                         missing, total, first_missing);
    KD_CHECK(static_cast<double>(missing) <= max_missing * static_cast<double>(total),
             "{} (more than the {:g} % allowed by data.max_missing)", what, 100 * max_missing);
    spdlog::warn("{}; training without them", what);
  }
  // Classes are the label names, sorted (as a folder's class sub-folders are); an empty label is
  // an unlabeled image.
  KD_CHECK(!names.empty(), "{}: no image has a label", list.string());
  std::vector<std::string> classes = names;
  std::sort(classes.begin(), classes.end());
  std::vector<int64_t> sorted_index(names.size());
  for (size_t k = 0; k < names.size(); ++k)
    sorted_index[k] = std::lower_bound(classes.begin(), classes.end(), names[k]) - classes.begin();
  for (auto& l : labels)
    if (l >= 0) l = sorted_index[static_cast<size_t>(l)];
  return {std::make_shared<FileSource>(std::move(paths), fp.h),
          torch::tensor(labels, torch::kInt64), classes, list.string()};
}

// WebDataset tar shards: each sample's image bytes read by offset from its shard.
class ShardSource final : public SampleSource {
 public:
  struct Sample {
    uint32_t shard;
    uint64_t offset;
    uint64_t size;
  };
  ShardSource(std::vector<std::string> shards, std::vector<Sample> samples, PathTable keys,
              uint64_t fingerprint)
      : shards_(std::move(shards)),
        samples_(std::move(samples)),
        keys_(std::move(keys)),
        fingerprint_(fingerprint) {}
  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  std::string read(int64_t i) const override {
    const Sample& s = samples_[static_cast<size_t>(i)];
    return read_tar_member(shards_[s.shard], s.offset, s.size, name(i));
  }
  std::string name(int64_t i) const override {
    return fmt::format("{}:{}", shards_[samples_[static_cast<size_t>(i)].shard], keys_.at(i));
  }
  uint64_t fingerprint() const override { return fingerprint_; }

 private:
  std::vector<std::string> shards_;
  std::vector<Sample> samples_;
  PathTable keys_;
  uint64_t fingerprint_;
};

bool is_shard_pattern(const std::string& spec) {
  return spec.size() > 4 && spec.compare(spec.size() - 4, 4, ".tar") == 0;
}

// A .cls member: a class index; a .json member: {"label": index or name} ("class" also read).
std::string label_of(const std::string& ext, const std::string& text, const std::string& where) {
  if (ext == "cls") return trim(text);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception&) {
    fail("{}: not JSON", where);
  }
  for (const char* key : {"label", "class", "cls"})
    if (j.is_object() && j.contains(key)) {
      const auto& v = j[key];
      if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
      if (v.is_string()) return v.get<std::string>();
      fail("{}: \"{}\" is neither a class index nor a name", where, key);
    }
  fail("{}: no \"label\" field", where);
}

SourceListing open_shards(const std::string& spec) {
  const auto shards = expand_braces(spec);
  std::vector<ShardSource::Sample> samples;
  std::vector<std::string> label_texts;
  PathTable keys;
  Fnv fp;
  for (size_t s = 0; s < shards.size(); ++s) {
    const Stat st = stat_path(shards[s]);
    KD_CHECK(st.exists, "--data {}: shard {} does not exist", spec, shards[s]);
    KD_CHECK(st.regular, "{}: not a regular file", shards[s]);
    add_file(fp, shards[s], st);
    // Members of one sample share a key and follow each other (WebDataset's rule).
    std::string key, label;
    int64_t image_at = -1;
    uint64_t image_offset = 0, image_size = 0;
    auto flush = [&] {
      if (key.empty()) return;
      KD_CHECK(image_at >= 0, "{}: sample '{}' has no image (.jpg, .jpeg, .png or .bmp member)",
               shards[s], key);
      samples.push_back({static_cast<uint32_t>(s), image_offset, image_size});
      keys.add(key);
      label_texts.push_back(label);
      key.clear();
      label.clear();
      image_at = -1;
    };
    for_each_tar_member(shards[s], [&](const TarMember& m, const TarReader& r) {
      const auto slash = m.name.rfind('/');
      const auto dot = m.name.find('.', slash == std::string::npos ? 0 : slash + 1);
      if (dot == std::string::npos) return;  // not a sample's file
      const std::string k = m.name.substr(0, dot), ext = m.name.substr(dot + 1);
      if (k != key) flush();
      key = k;
      if (is_image_name(m.name)) {
        image_at = 1;
        image_offset = m.offset;
        image_size = m.size;
      } else if (ext == "cls" || ext == "json") {
        KD_CHECK(m.size < (1 << 20), "{}: {} is {} bytes, too big for a label", shards[s], m.name,
                 m.size);
        label = label_of(ext, r.read(m), fmt::format("{}:{}", shards[s], m.name));
      }
    });
    flush();
  }
  KD_CHECK(!samples.empty(), "--data {}: the shards hold no samples", spec);
  // Class names: classes.txt beside the shards, else the labels themselves (indices or names).
  const fs::path names_file = fs::path(shards[0]).parent_path() / "classes.txt";
  std::vector<std::string> classes;
  bool numeric = std::all_of(label_texts.begin(), label_texts.end(), [](const std::string& t) {
    return !t.empty() && std::all_of(t.begin(), t.end(), ::isdigit);
  });
  std::vector<int64_t> labels;
  if (fs::exists(names_file)) {
    std::istringstream in(read_text(names_file));
    for (std::string line; std::getline(in, line);)
      if (!trim(line).empty()) classes.push_back(trim(line));
  }
  if (numeric) {
    int64_t top = -1;
    for (const auto& t : label_texts) {
      labels.push_back(std::stoll(t));
      top = std::max(top, labels.back());
    }
    if (classes.empty())
      for (int64_t c = 0; c <= top; ++c) classes.push_back(std::to_string(c));
    KD_CHECK(top < static_cast<int64_t>(classes.size()), "{}: class index {} but {} names {}", spec,
             top, names_file.string(), classes.size());
  } else {
    if (classes.empty()) {
      for (const auto& t : label_texts)
        if (!t.empty()) classes.push_back(t);
      std::sort(classes.begin(), classes.end());
      classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
    }
    for (const auto& t : label_texts) {
      if (t.empty()) {
        labels.push_back(kUnlabeled);
        continue;
      }
      auto it = std::find(classes.begin(), classes.end(), t);
      KD_CHECK(it != classes.end(), "{}: label '{}' is not in {}", spec, t, names_file.string());
      labels.push_back(it - classes.begin());
    }
  }
  return {std::make_shared<ShardSource>(shards, std::move(samples), std::move(keys), fp.h),
          torch::tensor(labels, torch::kInt64), classes, spec};
}

bool is_list(const std::string& spec) {
  std::string ext = fs::path(spec).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext == ".csv" || ext == ".tsv";
}

}  // namespace

std::vector<std::string> expand_braces(const std::string& pattern) {
  const auto open = pattern.find('{');
  if (open == std::string::npos) return {pattern};
  const auto close = pattern.find('}', open);
  KD_CHECK(close != std::string::npos, "'{}': a '{{' without its '}}'", pattern);
  const std::string head = pattern.substr(0, open),
                    body = pattern.substr(open + 1, close - open - 1),
                    tail = pattern.substr(close + 1);
  std::vector<std::string> items;
  if (const auto dots = body.find(".."); dots != std::string::npos) {
    const std::string lo = body.substr(0, dots), hi = body.substr(dots + 2);
    KD_CHECK(!lo.empty() && !hi.empty() && std::all_of(lo.begin(), lo.end(), ::isdigit) &&
                 std::all_of(hi.begin(), hi.end(), ::isdigit),
             "'{}': a range must be {{FIRST..LAST}} of numbers", pattern);
    const int64_t a = std::stoll(lo), b = std::stoll(hi);
    KD_CHECK(a <= b && b - a < 1000000, "'{}': range {}..{} is empty or too long", pattern, a, b);
    for (int64_t v = a; v <= b; ++v) items.push_back(fmt::format("{:0{}}", v, lo.size()));
  } else {
    std::string item;
    for (char c : body + ",") {
      if (c == ',') {
        items.push_back(item);
        item.clear();
      } else {
        item += c;
      }
    }
  }
  std::vector<std::string> out;
  for (const auto& item : items)
    for (auto& rest : expand_braces(tail)) out.push_back(head + item + rest);
  return out;
}

std::shared_ptr<const SampleSource> concat_sources(std::shared_ptr<const SampleSource> a,
                                                   std::shared_ptr<const SampleSource> b) {
  return std::make_shared<ConcatSource>(std::move(a), std::move(b));
}

bool is_streamed_source(const std::string& spec) {
  if (is_shard_pattern(spec)) return true;
  if (is_list(spec)) return true;
  if (spec == "fashion-mnist" || !fs::is_directory(spec)) return false;
  return !is_idx_source(spec);
}

SourceListing open_source(const std::string& spec, const std::string& part, double max_missing) {
  KD_CHECK(part == "train" || part == "test", "unknown dataset part '{}'", part);
  if (is_shard_pattern(spec)) {
    // Shards are one part, split 8:2 like a folder without train/ and test/.
    KD_CHECK(part == "train", "--data {}: tar shards have no test part", spec);
    return open_shards(spec);
  }
  if (is_list(spec)) {
    KD_CHECK(part == "train", "--data {}: a file list has no test part", spec);
    KD_CHECK(fs::exists(spec), "--data {}: no such file", spec);
    return open_list(spec, max_missing);
  }
  KD_CHECK(fs::exists(spec), "--data {}: no such file or directory", spec);
  KD_CHECK(fs::is_directory(spec), "--data {}: not a directory", spec);
  const fs::path root = spec;
  const fs::path dir = fs::is_directory(root / "train") ? root / part : root;
  KD_CHECK(fs::is_directory(dir), "{}: has no '{}' folder", root.string(), part);
  return open_folder(dir, dir.string());
}

SourceListing open_unlabeled_folder(const std::string& path) {
  std::vector<std::string> files;
  for (auto it = fs::recursive_directory_iterator(path); it != fs::recursive_directory_iterator();
       ++it) {
    const bool hidden = it->path().filename().string()[0] == '.';
    if (hidden && it->is_directory()) it.disable_recursion_pending();
    if (!hidden && it->is_regular_file() && is_image_name(it->path().filename().string()))
      files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  KD_CHECK(!files.empty(), "unlabeled data {}: no PNG/JPEG images in the folder", path);
  return open_files(files, path);
}

SourceListing open_files(const std::vector<std::string>& files, const std::string& source) {
  PathTable paths;
  Fnv fp;
  for (const auto& f : files) {
    add_file(fp, f, stat_path(f));
    paths.add(f);
  }
  const auto n = static_cast<int64_t>(files.size());
  return {std::make_shared<FileSource>(std::move(paths), fp.h),
          torch::full({n}, kUnlabeled, torch::kInt64),
          {},
          source};
}

}  // namespace kd
