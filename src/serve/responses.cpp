#include "responses.h"

#include <cmath>
#include <limits>

#include <fmt/ranges.h>

#include "kd/core/base64.h"
#include "kd/core/error.h"

namespace kd::serve_detail {

HttpResponse json_response(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

HttpResponse error_response(int status, const std::string& message) {
  return json_response(status, {{"error", message}});
}

json parse_body(const std::string& body) {
  if (body.empty()) bad_request("empty body: expected a JSON object");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    const std::string what = e.what();  // "[json.exception.parse_error.101] parse error at ..."
    bad_request("malformed JSON: {}", what.substr(what.find(']') + 2));
  }
  if (!j.is_object()) bad_request("the body must be a JSON object");
  return j;
}

// Tensors have at most 4 dimensions here; deeper nesting is refused before it can exhaust the
// stack.
constexpr int kMaxNesting = 6;

void flatten_numbers(const json& j, std::vector<float>& out, int64_t limit,
                     const std::string& where, int depth) {
  if (j.is_array()) {
    if (depth >= kMaxNesting) bad_request("{}: arrays nested deeper than {}", where, kMaxNesting);
    for (const auto& v : j) flatten_numbers(v, out, limit, where, depth + 1);
    return;
  }
  if (!j.is_number())
    bad_request("{}: element {} is {}, not a number", where, out.size(), j.type_name());
  if (static_cast<int64_t>(out.size()) >= limit)
    bad_request("{}: more than {} values", where, limit);
  const double v = j.get<double>();
  if (!(std::fabs(v) <= std::numeric_limits<float>::max()))
    bad_request("{}: element {} is {}, outside FP32's range", where, out.size(), v);
  out.push_back(static_cast<float>(v));
}

std::string shape_str(const std::vector<int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

torch::Tensor wire_tensor(const torch::Tensor& t) {
  return t.scalar_type() == torch::kInt32 ? t.contiguous() : t.to(torch::kFloat).contiguous();
}

json tensor_json(const std::string& name, const torch::Tensor& t, std::string* binary) {
  const auto c = wire_tensor(t);
  const bool int32 = c.scalar_type() == torch::kInt32;
  json out = {{"name", name}, {"datatype", wire_datatype(c)}, {"shape", c.sizes().vec()}};
  if (binary) {
    const size_t bytes = static_cast<size_t>(c.numel()) * c.element_size();
    binary->append(static_cast<const char*>(c.data_ptr()), bytes);
    out["parameters"] = {{"binary_data_size", bytes}};
  } else if (int32) {
    out["data"] = std::vector<int32_t>(c.data_ptr<int32_t>(), c.data_ptr<int32_t>() + c.numel());
  } else {
    out["data"] = std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }
  return out;
}

std::string decode_base64_image(const std::string& text, const std::string& where) {
  try {
    return base64_decode(text);
  } catch (const Error& e) {
    bad_request("{}: {}", where, e.what());
  }
}

}  // namespace kd::serve_detail
