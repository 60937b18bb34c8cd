// Server request bodies: the Open Inference Protocol v2 infer parser (kd/serve/protocol.h).
#include <cstddef>
#include <cstdint>
#include <string>

#include "kd/serve/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  try {
    kd::InferRequest r = kd::parse_infer_request(body, {4096, 8});
    for (const auto& in : r.inputs)
      if (in.numbers.size() > 4096 || in.strings.size() > 8) __builtin_trap();  // limits must hold
  } catch (const kd::BadRequest&) {
  }
  return 0;
}
