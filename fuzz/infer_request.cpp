// Server request bodies: the Open Inference Protocol v2 infer parser (src/serve/protocol.h), with
// and without the binary tensor data extension (an input starting with 0xB1 gives the JSON part's
// size in its next two bytes, little-endian).
#include <cstddef>
#include <cstdint>
#include <string>

#include "serve/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int64_t json_bytes = -1;
  if (size >= 3 && data[0] == 0xB1) {
    json_bytes = data[1] | (data[2] << 8);
    data += 3;
    size -= 3;
  }
  const std::string body(reinterpret_cast<const char*>(data), size);
  try {
    kd::InferRequest r = kd::parse_infer_request(body, {4096, 8}, json_bytes);
    for (const auto& in : r.inputs)
      if (in.numbers.size() > 4096 || in.strings.size() > 8) __builtin_trap();  // limits must hold
  } catch (const kd::BadRequest&) {
  }
  return 0;
}
