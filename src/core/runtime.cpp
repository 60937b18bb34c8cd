#include "kd/core/runtime.h"

#include <dlfcn.h>
#include <malloc.h>

#include <cstdlib>
#include <thread>

#include <fmt/format.h>
#include <torch/torch.h>

#include "kd/core/error.h"

namespace kd {
namespace {

std::string g_blas = "unknown";
std::string g_malloc = "glibc default";

// glibc serves large allocations with a fresh mmap and gives them back with munmap when freed,
// so each batch's activations fault their pages in again (7.7 million minor faults in one
// 12,000-image teacher epoch). tcmalloc, which the CLI links, keeps freed memory for reuse; without
// it, raising glibc's thresholds does the same (measured in bench/README.md).
void tune_malloc() {
  if (dlsym(RTLD_DEFAULT, "tc_malloc") != nullptr) {
    g_malloc = "tcmalloc";
    return;
  }
  // KD_DEFAULT_MALLOC=1 keeps glibc's defaults, for measuring what the tuning buys.
  if (std::getenv("KD_DEFAULT_MALLOC")) return;
  // 32 MiB is the largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2).
  if (mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 &&
      mallopt(M_TOP_PAD, 64 << 20) == 1)
    g_malloc = "glibc tuned (mmap 32 MiB, trim 1 GiB)";
}

// OpenBLAS's pthread pool and LibTorch's OpenMP pool oversubscribe two cores; LibTorch already
// parallelises around BLAS calls, so OpenBLAS runs single-threaded.
void tune_blas() {
  using SetThreads = void (*)(int);
  using GetConfig = char* (*)();
  auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  auto cfg = reinterpret_cast<GetConfig>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  if (set) {
    set(1);
    g_blas = cfg ? fmt::format("OpenBLAS ({}), 1 thread", cfg()) : "OpenBLAS, 1 thread";
  } else {
    g_blas = "reference BLAS (install libopenblas0-pthread: Linear layers are ~50x slower)";
  }
}

}  // namespace

torch::Device parse_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available())
      usage_fail("--device {}: this LibTorch build has no CUDA device available", name);
    return torch::Device(name);
  }
  usage_fail("--device {}: expected cpu, cuda or auto", name);
}

void seed_everything(uint64_t seed) {
  torch::manual_seed(seed);
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

torch::Device init_runtime(const RuntimeOptions& opts) {
  tune_malloc();
  tune_blas();
  if (opts.threads < 0) usage_fail("--threads {}: must be >= 0", opts.threads);
  // Default: OMP_NUM_THREADS when set, else the cores shared among the processes of this
  // machine (LOCAL_WORLD_SIZE, set by `kd launch` and torchrun), so ranks do not oversubscribe.
  int threads = opts.threads;
  if (threads == 0) {
    const char* omp = std::getenv("OMP_NUM_THREADS");
    const char* local = std::getenv("LOCAL_WORLD_SIZE");
    const int procs = local && std::atoi(local) > 0 ? std::atoi(local) : 1;
    threads = omp && std::atoi(omp) > 0
                  ? std::atoi(omp)
                  : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / procs);
  }
  torch::set_num_threads(threads);
  seed_everything(opts.seed);
  if (opts.deterministic) at::globalContext().setDeterministicAlgorithms(true, true);
  return parse_device(opts.device);
}

std::string runtime_summary() {
  return fmt::format("threads={} blas={} malloc={}", torch::get_num_threads(), g_blas,
                     g_malloc);
}

}  // namespace kd
