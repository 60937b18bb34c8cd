#include "kd/serve/protocol.h"

#include <fmt/format.h>
#include <simdjson.h>

namespace kd {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

template <typename... Args>
[[noreturn]] void bad(fmt::format_string<Args...> f, Args&&... args) {
  throw BadRequest(fmt::format(f, std::forward<Args>(args)...));
}

const char* type_name(element_type t) {
  switch (t) {
    case element_type::ARRAY:
      return "an array";
    case element_type::OBJECT:
      return "an object";
    case element_type::STRING:
      return "a string";
    case element_type::BOOL:
      return "a boolean";
    case element_type::NULL_VALUE:
      return "null";
    default:
      return "a number";
  }
}

// Tensors here have at most 4 dimensions; deeper nesting is refused early.
constexpr int kMaxNesting = 6;

struct DataReader {
  InferInput& in;
  const InferLimits& limits;
  bool numbers;  // else strings

  void read(element e, int depth) {
    const element_type t = e.type();
    if (t == element_type::ARRAY) {
      if (depth >= kMaxNesting) bad("inputs[0].data: arrays nested deeper than {}", kMaxNesting);
      simdjson::dom::array items;
      if (e.get_array().get(items)) bad("inputs[0].data: unreadable array");
      for (element v : items) read(v, depth + 1);
      return;
    }
    if (numbers) {
      if (t != element_type::DOUBLE && t != element_type::INT64 && t != element_type::UINT64)
        bad("inputs[0].data: element {} is {}, not a number", in.numbers.size(), type_name(t));
      if (static_cast<int64_t>(in.numbers.size()) >= limits.max_elements)
        bad("inputs[0].data: more than {} values", limits.max_elements);
      in.numbers.push_back(static_cast<float>(e.get_double().value_unsafe()));
    } else {
      if (t != element_type::STRING)
        bad("inputs[0].data: element {} is {}, not a base64 string", in.strings.size(),
            type_name(t));
      if (static_cast<int64_t>(in.strings.size()) >= limits.max_strings)
        bad("inputs[0].data: more than {} images", limits.max_strings);
      in.strings.emplace_back(e.get_string().value_unsafe());
    }
  }
};

InferInput read_input(simdjson::dom::object o, size_t index, const InferLimits& limits) {
  InferInput in;
  const std::string where = fmt::format("inputs[{}]", index);
  for (const char* key : {"name", "shape", "datatype", "data"})
    if (o[key].error()) bad("{} has no '{}'", where, key);
  std::string_view s;
  if (o["name"].get_string().get(s)) bad("{}.name must be a string", where);
  in.name = s;
  if (o["datatype"].get_string().get(s)) bad("{}.datatype must be a string", where);
  in.datatype = s;
  simdjson::dom::array shape;
  if (o["shape"].get_array().get(shape)) bad("{}.shape must be an array of integers", where);
  int64_t count = 1;
  for (element d : shape) {
    int64_t v = 0;
    if (d.get_int64().get(v) || v < 0) bad("{}.shape must hold non-negative integers", where);
    in.shape.push_back(v);
    // Saturating: the product of hostile dimensions must not overflow (found by
    // fuzz_infer_request).
    constexpr int64_t kCap = int64_t(1) << 40;
    count = v > 0 && count > kCap / v ? kCap : count * std::max<int64_t>(v, 1);
  }
  const bool numbers = in.datatype == "FP32" || in.datatype == "FP64";
  if (!numbers && in.datatype != "BYTES")
    bad("{}.datatype {} is not supported: send FP32 pixels in [0, 1] or BYTES (base64 images)",
        where, in.datatype);
  if (numbers && count > limits.max_elements)
    bad("{}: {} elements, more than the limit of {}", where, count, limits.max_elements);
  if (numbers) in.numbers.reserve(static_cast<size_t>(count));
  element data;
  if (o["data"].get(data)) bad("{} has no 'data'", where);
  DataReader{in, limits, numbers}.read(data, 0);
  const size_t got = numbers ? in.numbers.size() : in.strings.size();
  if (static_cast<int64_t>(got) != count)
    bad("{}: shape [{}] holds {} elements but data has {}", where, fmt::join(in.shape, ", "), count,
        got);
  return in;
}

}  // namespace

InferRequest parse_infer_request(const std::string& body, const InferLimits& limits) {
  if (body.empty()) bad("empty body: expected a JSON object");
  // One parser per thread: its buffers are reused from request to request.
  thread_local simdjson::dom::parser parser;
  element doc;
  if (auto error = parser.parse(body).get(doc))
    bad("malformed JSON: {}", simdjson::error_message(error));
  simdjson::dom::object root;
  if (doc.get_object().get(root)) bad("the body must be a JSON object");
  InferRequest req;
  if (!root["id"].error()) {
    std::string_view id;
    if (root["id"].get_string().get(id)) bad("'id' must be a string");
    req.id = id;
    req.has_id = true;
  }
  simdjson::dom::array inputs;
  if (root["inputs"].get_array().get(inputs) || inputs.size() == 0)
    bad("'inputs' must be a non-empty array of tensors");
  size_t i = 0;
  for (element e : inputs) {
    simdjson::dom::object o;
    if (e.get_object().get(o))
      bad("inputs[{}] must be an object with name, shape, datatype and data", i);
    req.inputs.push_back(read_input(o, i++, limits));
  }
  if (!root["outputs"].error()) {
    simdjson::dom::array outputs;
    if (root["outputs"].get_array().get(outputs))
      bad("'outputs' must be an array of {{\"name\": ...}}");
    for (element e : outputs) {
      std::string_view name;
      if (e["name"].get_string().get(name))
        bad("each of 'outputs' must be an object with a 'name'");
      req.outputs.emplace_back(name);
    }
  }
  return req;
}

}  // namespace kd
