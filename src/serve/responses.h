#pragma once
// Private to the serve area: how the routes build responses and refuse requests.
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "kd/serve/service.h"

namespace kd::serve_detail {

using nlohmann::json;

// A request-level failure with the status it should be answered with; Service::handle maps it.
struct HttpError : std::runtime_error {
  HttpError(int s, const std::string& m) : std::runtime_error(m), status(s) {}
  int status;
};

template <typename... Args>
[[noreturn]] void bad_request(fmt::format_string<Args...> f, Args&&... args) {
  throw HttpError(400, fmt::format(f, std::forward<Args>(args)...));
}

HttpResponse json_response(int status, const json& body);
HttpResponse error_response(int status, const std::string& message);
// The body as a JSON object, or a 400 naming what is wrong with it.
json parse_body(const std::string& body);
// Row-major flattening of a (possibly nested) JSON array of numbers, refusing more than `limit`
// values as soon as they are seen and nesting deeper than a tensor can need.
void flatten_numbers(const json& j, std::vector<float>& out, int64_t limit,
                     const std::string& where, int depth = 0);
std::string shape_str(const std::vector<int64_t>& s);
// An output tensor as it goes out (JSON, binary extension, gRPC): INT32 kept, anything else as
// FP32; contiguous, row-major, little-endian (the machine's own layout: x86-64, aarch64).
torch::Tensor wire_tensor(const torch::Tensor& t);
inline const char* wire_datatype(const torch::Tensor& wire) {
  return wire.scalar_type() == torch::kInt32 ? "INT32" : "FP32";
}
// An output tensor: FP32 or INT32, its data in JSON, or appended to `binary` (the binary tensor data
// extension: the JSON then gives parameters.binary_data_size).
json tensor_json(const std::string& name, const torch::Tensor& t, std::string* binary = nullptr);
// The one decoder of base64 images in a request (OIP BYTES, v1 {"b64"}, the image route's
// {"b64"}): `where(i)` names item i in the 400 for an undecodable one.
std::string decode_base64_image(const std::string& text, const std::string& where);

}  // namespace kd::serve_detail
