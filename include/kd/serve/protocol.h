#pragma once
// Reading an Open Inference Protocol v2 infer request body (JSON) into plain values: the one
// parser of the serving hot path, separate from the routes so it can be tested and fuzzed alone.
// Tensor data is streamed straight into floats (simdjson), never held as a JSON tree: a
// 28x28 request is ~800 numbers and parsing them dominated a request's CPU with a DOM library.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace kd {

// A request the client got wrong; `what()` says where ("inputs[0].shape ...").
class BadRequest : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct InferInput {
  std::string name, datatype;
  std::vector<int64_t> shape;
  std::vector<float> numbers;        // FP32 / FP64 data, row-major
  std::vector<std::string> strings;  // BYTES data
};

struct InferRequest {
  std::string id;  // echoed back when present
  bool has_id = false;
  std::vector<InferInput> inputs;
  std::vector<std::string> outputs;  // names asked for; empty: all
};

struct InferLimits {
  int64_t max_elements = 1 << 24;  // numbers per request
  int64_t max_strings = 64;        // BYTES elements per request
};

// BadRequest for malformed JSON, missing or mistyped fields, data not matching its shape,
// unsupported datatypes (FP32, FP64 and BYTES are read) or anything over the limits.
InferRequest parse_infer_request(const std::string& body, const InferLimits& limits);

}  // namespace kd
