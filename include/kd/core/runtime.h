#pragma once
/// @file
/// Process-wide set-up: device choice, threads, seeding, allocator and BLAS tuning.
#include <cstdint>
#include <string>

#include <torch/types.h>

namespace kd {

struct RuntimeOptions {
  std::string device = "auto";  ///< auto | cpu | cuda
  int threads = 0;              ///< 0: one per core
  uint64_t seed = 0;
  bool deterministic = false;
  std::string precision = "fp32";  ///< fp32 | bf16 (check_precision, set_precision)
};

/// Tunes the allocator and BLAS once per process (see runtime.cpp for why), sets threads,
/// seeds and the forward passes' precision. Returns the device models and tensors should live on.
torch::Device init_runtime(const RuntimeOptions& opts);
torch::Device parse_device(const std::string& name);
void seed_everything(uint64_t seed);
/// --precision: "fp32", or "bf16": forward passes (student, teacher, eval, serving) under bfloat16
/// autocast with fp32 master weights, outputs returned in fp32. bf16 is refused with one line
/// where the hardware has no native bfloat16 arithmetic (CPU: AVX512_BF16 or AMX-BF16; CUDA:
/// compute capability 8.0), since LibTorch would emulate it slower than fp32.
void check_precision(const std::string& precision, const std::string& device);
void set_precision(const std::string& precision);
bool bf16_autocast();
/// The CPU's native bfloat16 instructions, from /proc/cpuinfo ("" when none).
std::string cpu_bf16_flags();

/// A forward pass under bf16 autocast on `device` (nestable); the autocast cast cache is dropped
/// when the outermost scope ends, so updated weights are cast again on the next pass.
class AutocastScope {
 public:
  explicit AutocastScope(torch::Device device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool cuda_, previous_;
  c10::ScalarType previous_dtype_;
};

/// Describes what init_runtime did (threads, BLAS, allocator) for logs and benchmark output.
std::string runtime_summary();

/// OpenBLAS chooses its kernels by CPUID family and model when it is loaded; a CPU it does not
/// know (virtual machines that report a generic "Intel Xeon Processor") gets its Prescott (SSE3)
/// fallback, 3-5x slower on the matrix products of Linear layers than the AVX-512 kernels. Where
/// that happened, OPENBLAS_CORETYPE is unset and the CPU has AVX-512 (SkylakeX kernels) or AVX2
/// and FMA (Haswell kernels), returns the core to ask for; else "". The choice is read only
/// while OpenBLAS loads, so the CLI starts itself again with it set (apps/kd/main.cpp).
std::string openblas_core_to_force();

}  // namespace kd
