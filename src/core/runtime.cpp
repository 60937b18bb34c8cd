#include "kd/core/runtime.h"

#include <fstream>
#include <set>
#include <sstream>

#include <ATen/autocast_mode.h>

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
  check_precision(opts.precision, opts.device);
  set_precision(opts.precision);
  return parse_device(opts.device);
}

std::string runtime_summary() {
  return fmt::format("threads={} blas={} malloc={}", torch::get_num_threads(), g_blas, g_malloc);
}

namespace {
bool g_bf16 = false;

std::set<std::string> cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::set<std::string> flags;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;) flags.insert(w);
    break;
  }
  return flags;
}
}  // namespace

std::string cpu_bf16_flags() {
  std::string found;
  for (const auto& w : cpu_flags())
    if (w == "amx_bf16" || w == "avx512_bf16") found += (found.empty() ? "" : " ") + w;
  return found;
}

std::string openblas_core_to_force() {
  if (std::getenv("OPENBLAS_CORETYPE")) return "";
  using GetCore = char* (*)();
  auto core = reinterpret_cast<GetCore>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (!core || std::string(core()) != "Prescott") return "";
  const auto f = cpu_flags();
  auto has = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (!f.count(n)) return false;
    return true;
  };
  if (has({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})) return "SkylakeX";
  if (has({"avx2", "fma"})) return "Haswell";
  return "";
}

void check_precision(const std::string& precision, const std::string& device) {
  if (precision == "fp32") return;
  if (precision != "bf16") usage_fail("--precision '{}': expected fp32 or bf16", precision);
  const bool cuda = device == "cuda" || (device == "auto" && torch::cuda::is_available());
  if (cuda) return;  // Ampere and later; older GPUs fail inside LibTorch with their own message
  if (cpu_bf16_flags().empty())
    usage_fail(
        "--precision bf16: this CPU has no native bfloat16 arithmetic (no avx512_bf16 or amx_bf16 "
        "in "
        "/proc/cpuinfo); LibTorch would emulate it, slower than fp32: use --precision fp32");
}

void set_precision(const std::string& precision) { g_bf16 = precision == "bf16"; }
bool bf16_autocast() { return g_bf16; }

AutocastScope::AutocastScope(torch::Device device) : cuda_(device.is_cuda()) {
  previous_ = cuda_ ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
  previous_dtype_ =
      cuda_ ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
  if (cuda_) {
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
  } else {
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  }
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  if (cuda_) {
    at::autocast::set_enabled(previous_);
    at::autocast::set_autocast_gpu_dtype(previous_dtype_);
  } else {
    at::autocast::set_cpu_enabled(previous_);
    at::autocast::set_autocast_cpu_dtype(previous_dtype_);
  }
}

}  // namespace kd
