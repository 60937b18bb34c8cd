#include "protocol.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

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
      double v = e.get_double().value_unsafe();
      if (in.datatype == "UINT8") {
        if (!(v >= 0 && v <= 255 && v == std::floor(v)))
          bad("inputs[0].data: element {} is {}, not a UINT8 value", in.numbers.size(), v);
        v /= 255.0;
      }
      // Past FP32's range the cast is undefined, and the model would answer inf or NaN.
      if (!(std::fabs(v) <= std::numeric_limits<float>::max()))
        bad("inputs[0].data: element {} is {}, outside FP32's range", in.numbers.size(), v);
      in.numbers.push_back(static_cast<float>(v));
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

bool numeric(const std::string& datatype) {
  return datatype == "FP32" || datatype == "FP64" || datatype == "FP16" || datatype == "UINT8";
}

int64_t element_count(const InferInput& in) {
  int64_t count = 1;
  for (int64_t v : in.shape) {
    // Saturating: the product of hostile dimensions must not overflow (found by
    // fuzz_infer_request).
    constexpr int64_t kCap = int64_t(1) << 40;
    // A zero dimension holds nothing: shape [0] with one image is a mismatch, not [1].
    count = v > 0 && count > kCap / v ? kCap : count * std::max<int64_t>(v, 0);
  }
  return count;
}

// A datatype kd reads, and no more elements than the limits allow: checked before any data is.
void check_input(const InferInput& in, const std::string& where, const InferLimits& limits) {
  const int64_t count = element_count(in);
  if (!numeric(in.datatype) && in.datatype != "BYTES")
    bad("{}.datatype {} is not supported: send FP32 (or FP64, FP16) pixels in [0, 1], UINT8 "
        "pixels in [0, 255], or BYTES (images)",
        where, in.datatype);
  if (numeric(in.datatype) && count > limits.max_elements)
    bad("{}: {} elements, more than the limit of {}", where, count, limits.max_elements);
  if (!numeric(in.datatype) && count > limits.max_strings)
    bad("{}: {} images, more than the limit of {}", where, count, limits.max_strings);
}

InferInput read_input(simdjson::dom::object o, size_t index, const InferLimits& limits) {
  InferInput in;
  const std::string where = fmt::format("inputs[{}]", index);
  for (const char* key : {"name", "shape", "datatype"})
    if (o[key].error()) bad("{} has no '{}'", where, key);
  std::string_view s;
  if (o["name"].get_string().get(s)) bad("{}.name must be a string", where);
  in.name = s;
  if (o["datatype"].get_string().get(s)) bad("{}.datatype must be a string", where);
  in.datatype = s;
  simdjson::dom::array shape;
  if (o["shape"].get_array().get(shape)) bad("{}.shape must be an array of integers", where);
  for (element d : shape) {
    int64_t v = 0;
    if (d.get_int64().get(v) || v < 0) bad("{}.shape must hold non-negative integers", where);
    in.shape.push_back(v);
  }
  const int64_t count = element_count(in);
  const bool numbers = numeric(in.datatype);
  check_input(in, where, limits);
  simdjson::dom::object params;
  if (!o["parameters"].error()) {
    if (o["parameters"].get_object().get(params)) bad("{}.parameters must be an object", where);
    if (!params["binary_data_size"].error()) {
      int64_t size = 0;
      if (params["binary_data_size"].get_int64().get(size) || size < 0)
        bad("{}.parameters.binary_data_size must be a non-negative integer", where);
      in.binary_size = size;
    }
  }
  element data;
  // "data": null stands for no data (some clients write every field of their request type).
  const bool has_data = !o["data"].get(data) && !data.is_null();
  if (in.binary_size >= 0) {
    if (has_data) bad("{} has both 'data' and a binary_data_size", where);
    return in;  // read from the binary part
  }
  if (!has_data) bad("{} has no 'data' (nor parameters.binary_data_size)", where);
  if (numbers) in.numbers.reserve(static_cast<size_t>(count));
  DataReader{in, limits, numbers}.read(data, 0);
  const size_t got = numbers ? in.numbers.size() : in.strings.size();
  if (static_cast<int64_t>(got) != count)
    bad("{}: shape [{}] holds {} elements but data has {}", where, fmt::join(in.shape, ", "), count,
        got);
  return in;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits = sign;
  if (exponent == 0x1f) {
    bits |= 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits |= ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa != 0) {  // subnormal: normalise
    exponent = 113;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      --exponent;
    }
    bits |= (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// The binary tensor data extension: this input's bytes, little-endian (as every client sends).
void read_binary(InferInput& in, std::string_view bytes, size_t index, const InferLimits& limits) {
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "binary tensors are little-endian");
  const std::string where = fmt::format("inputs[{}]", index);
  const int64_t count = element_count(in);
  in.binary = true;
  if (in.datatype == "BYTES") {
    size_t at = 0;
    while (at < bytes.size()) {
      if (static_cast<int64_t>(in.strings.size()) >= limits.max_strings)
        bad("{}: more than {} images", where, limits.max_strings);
      uint32_t n = 0;
      if (bytes.size() - at < 4)
        bad("{}: binary BYTES element {} has no length", where, in.strings.size());
      std::memcpy(&n, bytes.data() + at, 4);
      at += 4;
      if (n > bytes.size() - at)
        bad("{}: binary BYTES element {} claims {} bytes, {} are left", where, in.strings.size(), n,
            bytes.size() - at);
      in.strings.emplace_back(bytes.substr(at, n));
      at += n;
    }
    if (static_cast<int64_t>(in.strings.size()) != count)
      bad("{}: shape [{}] holds {} elements but the binary data has {}", where,
          fmt::join(in.shape, ", "), count, in.strings.size());
    return;
  }
  const size_t width = in.datatype == "FP64"   ? 8
                       : in.datatype == "FP32" ? 4
                       : in.datatype == "FP16" ? 2
                                               : 1;
  if (bytes.size() != static_cast<size_t>(count) * width)
    bad("{}: binary_data_size is {} but shape [{}] of {} needs {} bytes", where, bytes.size(),
        fmt::join(in.shape, ", "), in.datatype, static_cast<size_t>(count) * width);
  in.numbers.resize(static_cast<size_t>(count));
  const char* p = bytes.data();
  for (size_t i = 0; i < in.numbers.size(); ++i, p += width) {
    double v = 0;
    if (width == 8) {
      std::memcpy(&v, p, 8);
    } else if (width == 4) {
      float f;
      std::memcpy(&f, p, 4);
      v = f;
    } else if (width == 2) {
      uint16_t h;
      std::memcpy(&h, p, 2);
      v = half_to_float(h);
    } else {
      v = static_cast<unsigned char>(*p) / 255.0;
    }
    if (!(std::fabs(v) <= std::numeric_limits<float>::max()))
      bad("{}: element {} is {}, not a finite FP32 value", where, i, v);
    in.numbers[i] = static_cast<float>(v);
  }
}

bool true_parameter(simdjson::dom::element holder, const char* name) {
  bool v = false;
  return !holder["parameters"][name].get_bool().get(v) && v;
}

}  // namespace

void read_tensor_bytes(InferInput& in, std::string_view bytes, size_t index,
                       const InferLimits& limits) {
  const std::string where = fmt::format("inputs[{}]", index);
  for (int64_t d : in.shape)
    if (d < 0) bad("{}.shape must hold non-negative integers", where);
  check_input(in, where, limits);
  read_binary(in, bytes, index, limits);
}

InferRequest parse_infer_request(const std::string& body, const InferLimits& limits,
                                 int64_t json_bytes) {
  if (body.empty()) bad("empty body: expected a JSON object");
  std::string_view text = body, binary;
  if (json_bytes >= 0) {
    if (static_cast<size_t>(json_bytes) > body.size())
      bad("Inference-Header-Content-Length {} is more than the body's {} bytes", json_bytes,
          body.size());
    text = text.substr(0, static_cast<size_t>(json_bytes));
    binary = std::string_view(body).substr(static_cast<size_t>(json_bytes));
  }
  // One parser per thread: its buffers are reused from request to request. A large body gets a
  // parser of its own, freed with it, so that no thread keeps the largest body's capacity.
  thread_local simdjson::dom::parser shared;
  std::optional<simdjson::dom::parser> own;
  simdjson::dom::parser& parser = body.size() > (1u << 20) ? own.emplace() : shared;
  element doc;
  if (auto error = parser.parse(text.data(), text.size()).get(doc))
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
  req.binary_outputs = true_parameter(doc, "binary_data_output");
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
  size_t at = 0;
  for (i = 0; i < req.inputs.size(); ++i) {
    auto& in = req.inputs[i];
    if (in.binary_size < 0) continue;
    if (json_bytes < 0)
      bad("inputs[{}] gives a binary_data_size but the request has no "
          "Inference-Header-Content-Length header",
          i);
    if (static_cast<size_t>(in.binary_size) > binary.size() - at)
      bad("inputs[{}]: binary_data_size {} is more than the {} bytes left in the body", i,
          in.binary_size, binary.size() - at);
    read_binary(in, binary.substr(at, static_cast<size_t>(in.binary_size)), i, limits);
    at += static_cast<size_t>(in.binary_size);
  }
  if (at != binary.size())
    bad("{} bytes of binary data follow the inputs' binary_data_size", binary.size() - at);
  if (!root["outputs"].error()) {
    simdjson::dom::array outputs;
    if (root["outputs"].get_array().get(outputs))
      bad("'outputs' must be an array of {{\"name\": ...}}");
    for (element e : outputs) {
      std::string_view name;
      if (e["name"].get_string().get(name))
        bad("each of 'outputs' must be an object with a 'name'");
      req.outputs.push_back(
          {std::string(name), req.binary_outputs || true_parameter(e, "binary_data")});
    }
  }
  return req;
}

}  // namespace kd
