#include "kd/models/weights.h"

#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>
#include <torch/script.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"

namespace kd {
namespace {

// The Python values a state_dict's pickle holds. Anything else is refused when the pickle would
// build it (REDUCE of a callable outside the few torch.save uses): nothing is ever run.
struct PyValue;
using Value = std::shared_ptr<PyValue>;
struct PyValue {
  enum Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Tensor } kind = None;
  int64_t i = 0;  // Bool, Int
  double f = 0;
  std::string s;  // Str; Global: "module.name"
  std::vector<Value> items;
  std::vector<std::pair<Value, Value>> entries;
  torch::Tensor tensor;
};

Value make(PyValue::Kind k) {
  auto v = std::make_shared<PyValue>();
  v->kind = k;
  return v;
}

torch::ScalarType storage_type(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> types = {
      {"torch.FloatStorage", torch::kFloat}, {"torch.DoubleStorage", torch::kDouble},
      {"torch.HalfStorage", torch::kHalf},   {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kLong},   {"torch.IntStorage", torch::kInt},
      {"torch.ShortStorage", torch::kShort}, {"torch.CharStorage", torch::kChar},
      {"torch.ByteStorage", torch::kByte},   {"torch.BoolStorage", torch::kBool}};
  auto it = types.find(name);
  if (it == types.end()) fail("storage type {} is not one kd reads", name);
  return it->second;
}

class Unpickler {
 public:
  Unpickler(const std::string& bytes, caffe2::serialize::PyTorchStreamReader& zip)
      : b_(bytes), zip_(zip) {}

  Value run() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80:
          byte();
          break;  // PROTO
        case 0x95:
          take(8);
          break;  // FRAME
        case '(':
          marks_.push_back(stack_.size());
          break;
        case '.':
          return pop();  // STOP
        case '0':
          pop();
          break;  // POP
        case '1':
          popmark();
          break;  // POP_MARK
        case '2':
          push(top());
          break;  // DUP
        case 'N':
          push(make(PyValue::None));
          break;
        case 0x88:
          push(integer(1, PyValue::Bool));
          break;
        case 0x89:
          push(integer(0, PyValue::Bool));
          break;
        case 'J':
          push(integer(static_cast<int32_t>(le(4))));
          break;
        case 'K':
          push(integer(static_cast<int64_t>(le(1))));
          break;
        case 'M':
          push(integer(static_cast<int64_t>(le(2))));
          break;
        case 0x8a: {  // LONG1: n little-endian two's complement bytes
          const auto n = static_cast<int>(le(1));
          check(n <= 8, "an integer wider than 64 bits");
          uint64_t v = n ? le(n) : 0;
          if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);
          push(integer(static_cast<int64_t>(v)));
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          uint64_t v = 0;
          for (char c : take(8)) v = (v << 8) | static_cast<uint8_t>(c);
          auto x = make(PyValue::Float);
          std::memcpy(&x->f, &v, 8);
          push(x);
          break;
        }
        case 'X':
          push(str(take(le(4))));
          break;  // BINUNICODE
        case 0x8c:
          push(str(take(le(1))));
          break;  // SHORT_BINUNICODE
        case 0x8d:
          push(str(take(le(8))));
          break;  // BINUNICODE8
        case 'U':
        case 'C':
          push(str(take(le(1))));
          break;  // SHORT_BINSTRING / BYTES
        case 'T':
        case 'B':
          push(str(take(le(4))));
          break;  // BINSTRING / BINBYTES
        case ')':
          push(make(PyValue::Tuple));
          break;
        case 't':
          push(sequence(PyValue::Tuple, popmark()));
          break;
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          const size_t n = op - 0x84u;
          check(stack_.size() >= n, "a tuple of missing items");
          std::vector<Value> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          push(sequence(PyValue::Tuple, std::move(items)));
          break;
        }
        case ']':
          push(make(PyValue::List));
          break;
        case 'l':
          push(sequence(PyValue::List, popmark()));
          break;
        case 'a': {
          auto v = pop();
          list_of(top())->items.push_back(v);
          break;
        }
        case 'e': {
          auto items = popmark();
          auto& l = list_of(top())->items;
          l.insert(l.end(), items.begin(), items.end());
          break;
        }
        case '}':
          push(make(PyValue::Dict));
          break;
        case 'd': {
          auto d = make(PyValue::Dict);
          add_items(d, popmark());
          push(d);
          break;
        }
        case 's': {
          auto v = pop(), k = pop();
          add_items(top(), {k, v});
          break;
        }
        case 'u': {
          auto items = popmark();
          add_items(top(), items);
          break;
        }
        case 'q':
          memo_[le(1)] = top();
          break;  // BINPUT
        case 'r':
          memo_[le(4)] = top();
          break;  // LONG_BINPUT
        case 0x94:
          memo_[memo_.size()] = top();
          break;  // MEMOIZE
        case 'h':
          push(memo(le(1)));
          break;
        case 'j':
          push(memo(le(4)));
          break;
        case 'c': {  // GLOBAL module\nname\n
          std::string module = line(), name = line();
          auto g = make(PyValue::Global);
          g->s = module + "." + name;
          push(g);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop(), module = pop();
          check(name->kind == PyValue::Str && module->kind == PyValue::Str, "a bad global");
          auto g = make(PyValue::Global);
          g->s = module->s + "." + name->s;
          push(g);
          break;
        }
        case 'R': {
          auto args = pop(), callable = pop();
          push(reduce(callable, args));
          break;
        }
        case 'Q':
          push(persistent(pop()));
          break;     // BINPERSID
        case 'b': {  // BUILD: a state_dict's _metadata, a parameter's attributes: not needed
          pop();
          const auto k = top()->kind;
          check(k == PyValue::Dict || k == PyValue::Tensor, "BUILD of something else");
          break;
        }
        default:
          fail("pickle opcode 0x{:02x} at byte {} is not one a state_dict uses", op, pos_ - 1);
      }
    }
  }

 private:
  void check(bool ok, const char* what) const {
    if (!ok) fail("damaged pickle at byte {}: {}", pos_, what);
  }
  uint8_t byte() { return static_cast<uint8_t>(take(1)[0]); }
  std::string_view take(uint64_t n) {
    if (n > b_.size() - pos_) fail("damaged pickle: it ends at byte {} inside a value", b_.size());
    auto v = std::string_view(b_).substr(pos_, n);
    pos_ += n;
    return v;
  }
  uint64_t le(int n) {
    uint64_t v = 0;
    auto bytes = take(static_cast<uint64_t>(n));
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<uint8_t>(bytes[k]);
    return v;
  }
  std::string line() {
    const auto end = b_.find('\n', pos_);
    if (end == std::string::npos) fail("damaged pickle: a global without its name");
    std::string s = b_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  void push(Value v) {
    check(stack_.size() < (1u << 22), "too deep");
    stack_.push_back(std::move(v));
  }
  Value pop() {
    check(!stack_.empty() && (marks_.empty() || stack_.size() > marks_.back()), "an empty stack");
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value& top() {
    check(!stack_.empty(), "an empty stack");
    return stack_.back();
  }
  std::vector<Value> popmark() {
    check(!marks_.empty(), "no mark");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Value memo(uint64_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("damaged pickle: memo {} read before it was written", k);
    return it->second;
  }
  static Value integer(int64_t v, PyValue::Kind k = PyValue::Int) {
    auto x = make(k);
    x->i = v;
    return x;
  }
  static Value str(std::string_view s) {
    auto x = make(PyValue::Str);
    x->s = std::string(s);
    return x;
  }
  static Value sequence(PyValue::Kind k, std::vector<Value> items) {
    auto x = make(k);
    x->items = std::move(items);
    return x;
  }
  Value& list_of(Value& v) {
    check(v->kind == PyValue::List, "APPEND to something other than a list");
    return v;
  }
  void add_items(const Value& d, const std::vector<Value>& kv) {
    check(d->kind == PyValue::Dict, "SETITEM on something other than a dict");
    check(kv.size() % 2 == 0, "a dict item without its value");
    for (size_t k = 0; k < kv.size(); k += 2) d->entries.emplace_back(kv[k], kv[k + 1]);
  }
  int64_t int_of(const Value& v) const {
    check(v->kind == PyValue::Int, "a tensor's size or stride is not an integer");
    return v->i;
  }
  std::vector<int64_t> ints(const Value& v) const {
    check(v->kind == PyValue::Tuple, "a tensor's size or stride is not a tuple");
    std::vector<int64_t> out;
    for (const auto& x : v->items) out.push_back(int_of(x));
    return out;
  }

  Value reduce(const Value& callable, const Value& args) {
    check(callable->kind == PyValue::Global, "REDUCE of something that is not a global");
    check(args->kind == PyValue::Tuple, "REDUCE arguments are not a tuple");
    const std::string& f = callable->s;
    const auto& a = args->items;
    if (f == "collections.OrderedDict") {
      auto d = make(PyValue::Dict);
      if (!a.empty()) {
        check(a[0]->kind == PyValue::List, "OrderedDict of something other than a list");
        for (const auto& kv : a[0]->items) {
          check(kv->kind == PyValue::Tuple && kv->items.size() == 2, "OrderedDict item");
          d->entries.emplace_back(kv->items[0], kv->items[1]);
        }
      }
      return d;
    }
    if (f == "torch._utils._rebuild_tensor_v2") {
      check(a.size() >= 4 && a[0]->kind == PyValue::Tensor, "_rebuild_tensor_v2 arguments");
      const auto& storage = a[0]->tensor;
      const int64_t offset = int_of(a[1]);
      const auto size = ints(a[2]), stride = ints(a[3]);
      check(size.size() == stride.size(), "a tensor's size and stride differ in length");
      // Every element inside the storage: a damaged file must not read past it.
      int64_t last = offset, numel = 1;
      for (size_t d = 0; d < size.size(); ++d) {
        check(size[d] >= 0 && stride[d] >= 0, "a negative size or stride");
        numel *= size[d];
        if (size[d] > 0) last += (size[d] - 1) * stride[d];
      }
      check(offset >= 0 && (numel == 0 || last < storage.numel()),
            "a tensor reaching past its storage");
      auto t = make(PyValue::Tensor);
      t->tensor = numel == 0 ? torch::empty(size, storage.options())
                             : storage.as_strided(size, stride, offset);
      return t;
    }
    if (f == "torch._utils._rebuild_parameter" ||
        f == "torch._utils._rebuild_parameter_with_state") {
      check(!a.empty() && a[0]->kind == PyValue::Tensor, "_rebuild_parameter arguments");
      return a[0];
    }
    fail("the pickle builds a {} object, which a state_dict does not hold (refused, not run)", f);
  }

  Value persistent(const Value& pid) {
    check(pid->kind == PyValue::Tuple && pid->items.size() == 5 &&
              pid->items[0]->kind == PyValue::Str && pid->items[0]->s == "storage" &&
              pid->items[1]->kind == PyValue::Global && pid->items[2]->kind == PyValue::Str,
          "a persistent id that is not a storage");
    const std::string& key = pid->items[2]->s;
    auto t = make(PyValue::Tensor);
    if (auto it = storages_.find(key); it != storages_.end()) {
      t->tensor = it->second;
      return t;
    }
    const auto dtype = storage_type(pid->items[1]->s);
    const int64_t numel = int_of(pid->items[4]);
    const std::string record = "data/" + key;
    if (!zip_.hasRecord(record)) fail("storage {} is missing from the archive", key);
    auto [data, bytes] = zip_.getRecord(record);
    const auto element = static_cast<int64_t>(c10::elementSize(dtype));
    if (numel < 0 || static_cast<uint64_t>(numel) * static_cast<uint64_t>(element) != bytes)
      fail("storage {}: {} bytes for {} elements of {} bytes", key, bytes, numel, element);
    torch::Tensor s = torch::empty({numel}, torch::dtype(dtype));
    if (bytes > 0) std::memcpy(s.data_ptr(), data.get(), bytes);
    storages_[key] = s;
    t->tensor = s;
    return t;
  }

  const std::string& b_;
  size_t pos_ = 0;
  caffe2::serialize::PyTorchStreamReader& zip_;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, Value> memo_;
  std::map<std::string, torch::Tensor> storages_;
};

// The tensors of a dict, or of the dict a checkpoint keeps them in.
StateDict tensors_of(const Value& v, const std::string& path) {
  KD_CHECK(v->kind == PyValue::Dict, "{}: holds a {}, not a dict of tensors", path,
           v->kind == PyValue::List ? "list" : "single value");
  StateDict out;
  for (const auto& [k, x] : v->entries)
    if (k->kind == PyValue::Str && x->kind == PyValue::Tensor) out.emplace_back(k->s, x->tensor);
  if (!out.empty()) return out;
  for (const char* inner : {"state_dict", "model", "model_state_dict"})
    for (const auto& [k, x] : v->entries)
      if (k->kind == PyValue::Str && k->s == inner && x->kind == PyValue::Dict)
        return tensors_of(x, path);
  fail("{}: a dict without tensors (and no 'state_dict' or 'model' entry holding them)", path);
}

}  // namespace

StateDict read_state_dict(const std::string& path) {
  KD_CHECK(fs::is_regular_file(path), "{}: no such file", path);
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error&) {
    fail(
        "{}: not a PyTorch zip archive (torch.save of PyTorch 1.6 or later, or TorchScript); a "
        "file "
        "from an older torch.save: load it in Python and save it again",
        path);
  }
  StateDict out;
  if (zip->hasRecord("constants.pkl")) {  // TorchScript: its parameters and buffers
    torch::jit::Module m;
    try {
      m = torch::jit::load(path, torch::kCPU);
    } catch (const c10::Error& e) {
      fail("{}: a TorchScript archive that does not load ({})", path,
           std::string(e.what_without_backtrace()).substr(0, 200));
    }
    for (const auto& p : m.named_parameters(true)) out.emplace_back(p.name, p.value);
    for (const auto& b : m.named_buffers(true)) out.emplace_back(b.name, b.value);
  } else {
    KD_CHECK(zip->hasRecord("data.pkl"), "{}: a zip archive without data.pkl", path);
    auto [data, size] = zip->getRecord("data.pkl");
    const std::string pickle(static_cast<const char*>(data.get()), size);
    try {
      out = tensors_of(Unpickler(pickle, *zip).run(), path);
    } catch (const c10::Error& e) {
      fail("{}: {}", path, std::string(e.what_without_backtrace()).substr(0, 200));
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.rfind(path, 0) == 0) throw;
      fail("{}: {}", path, what);
    }
  }
  KD_CHECK(!out.empty(), "{}: holds no tensors", path);
  // DataParallel and DistributedDataParallel save their module's names under `module.`.
  const bool wrapped = std::all_of(out.begin(), out.end(),
                                   [](const auto& e) { return e.first.rfind("module.", 0) == 0; });
  if (wrapped)
    for (auto& e : out) e.first = e.first.substr(7);
  return out;
}

void write_state_dict(const StateDict& weights, const std::string& path) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, t] : weights) dict.insert(name, t.detach().to(torch::kCPU).contiguous());
  const std::vector<char> bytes = torch::pickle_save(dict);
  write_atomically(path, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    KD_CHECK(out.good(), "{}: cannot write", path);
  });
}

std::vector<std::string> load_state_dict(const StateDict& into, const StateDict& weights,
                                         const std::string& source,
                                         const std::set<std::string>& may_differ) {
  std::map<std::string, torch::Tensor> have;
  for (const auto& [name, t] : into) have[name] = t;
  std::map<std::string, const torch::Tensor*> given;
  for (const auto& [name, t] : weights) given[name] = &t;
  std::vector<std::string> missing, unexpected, shapes, fresh;
  for (const auto& [name, t] : have) {
    auto it = given.find(name);
    if (it == given.end())
      missing.push_back(name);
    else if (it->second->sizes() != t.sizes() && may_differ.count(name))
      fresh.push_back(name);
    else if (it->second->sizes() != t.sizes())
      shapes.push_back(fmt::format("{} is {} in the file, {} here", name,
                                   c10::str(it->second->sizes()), c10::str(t.sizes())));
  }
  for (const auto& [name, t] : given)
    if (!have.count(name)) unexpected.push_back(name);
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t k = 0; k < v.size() && k < 8; ++k) s += (k ? ", " : "") + v[k];
    if (v.size() > 8) s += fmt::format(" and {} more", v.size() - 8);
    return s;
  };
  std::vector<std::string> problems;
  if (!missing.empty())
    problems.push_back(fmt::format("missing {} ({})", list(missing), missing.size()));
  if (!unexpected.empty())
    problems.push_back(fmt::format("unexpected {} ({})", list(unexpected), unexpected.size()));
  if (!shapes.empty()) problems.push_back(fmt::format("mis-shaped: {}", list(shapes)));
  if (!problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += (all.empty() ? "" : "; ") + p;
    fail("{}: the weights do not fit the network: {}", source, all);
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : have) {
    if (std::find(fresh.begin(), fresh.end(), name) != fresh.end()) continue;
    const torch::Tensor& w = *given.at(name);
    KD_CHECK(w.is_floating_point() == t.is_floating_point(), "{}: {} is {} in the file, {} here",
             source, name, c10::toString(w.scalar_type()), c10::toString(t.scalar_type()));
    t.copy_(w);
  }
  return fresh;
}

}  // namespace kd
