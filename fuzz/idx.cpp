// IDX files (kd/data/idx.h), raw or gzip: magic, element type, dimensions, truncation.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include <torch/torch.h>

#include "data/idx.h"
#include "kd/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/kd-fuzz-idx-" + std::to_string(getpid());
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    auto t = kd::read_idx(path);
    if (t.numel() * static_cast<int64_t>(t.element_size()) > static_cast<int64_t>(size) * 1100 + 64)
      __builtin_trap();  // never more data than the file (gzip aside) can hold
  } catch (const kd::Error&) {
  }
  return 0;
}
