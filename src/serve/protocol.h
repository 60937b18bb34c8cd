#pragma once
// Reading an Open Inference Protocol v2 infer request body (JSON) into plain values: the one
// parser of the serving hot path, separate from the routes so it can be tested and fuzzed alone.
// Tensor data is streamed straight into floats (simdjson), never held as a JSON tree: a
// 28x28 request is ~800 numbers and parsing them dominated a request's CPU with a DOM library.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace kd {

// A request the client got wrong; `what()` says where ("inputs[0].shape ...").
class BadRequest : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The datatypes an input may have. Pixels arrive as FP32 (or FP64, FP16: converted) in [0, 1],
// or as UINT8 in [0, 255] (divided by 255, as an image's bytes are); BYTES are encoded images.
struct InferInput {
  std::string name, datatype;
  std::vector<int64_t> shape;
  std::vector<float> numbers;        // numeric data as FP32, row-major
  std::vector<std::string> strings;  // BYTES data: base64 text from JSON, raw bytes from binary
  bool binary = false;               // its data came in the binary part of the body
  int64_t binary_size = -1;          // parameters.binary_data_size, or -1
};

struct InferOutput {
  std::string name;
  bool binary = false;  // parameters.binary_data: answered in the binary part
};

struct InferRequest {
  std::string id;  // echoed back when present
  bool has_id = false;
  std::vector<InferInput> inputs;
  std::vector<InferOutput> outputs;  // asked for; empty: all
  bool binary_outputs = false;       // parameters.binary_data_output: every output in binary
};

struct InferLimits {
  int64_t max_elements = 1 << 24;  // numbers per request
  int64_t max_strings = 64;        // BYTES elements per request
};

// BadRequest for malformed JSON, missing or mistyped fields, data not matching its shape,
// unsupported datatypes, numbers that are not finite FP32 values, or anything over the limits.
// `json_bytes` >= 0 is the binary tensor data extension's Inference-Header-Content-Length: the
// body's first json_bytes are the JSON, the rest the data of the inputs that give a
// binary_data_size, one after another in input order (BYTES elements each as a 4-byte
// little-endian length and the bytes).
InferRequest parse_infer_request(const std::string& body, const InferLimits& limits,
                                 int64_t json_bytes = -1);

// An input whose name, datatype and shape are set and whose data comes as raw bytes (gRPC's
// raw_input_contents, or its typed contents laid out the same way): checked and read as the
// binary extension's are. `index` names the input in errors.
void read_tensor_bytes(InferInput& in, std::string_view bytes, size_t index,
                       const InferLimits& limits);

}  // namespace kd
