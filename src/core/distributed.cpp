#include "kd/core/distributed.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include "kd/core/error.h"

namespace kd::dist {
namespace {

struct Group {
  Env env;
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

std::once_flag g_once;
std::unique_ptr<Group> g_group;

int int_var(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < lo || x > hi)
    usage_fail("environment variable {}='{}': expected an integer in [{}, {}]", name, v, lo, hi);
  return static_cast<int>(x);
}

// Gloo and c10d report a dead peer as a socket error from deep inside; say what it means.
template <typename F>
auto collective(const char* what, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    const std::string why = first_line(e.what());
    fail("rank {}: {} failed: {} (another rank has probably stopped; see its output)", rank(), what,
         why);
  }
}

c10d::ProcessGroupGloo& pg() { return *g_group->pg; }

}  // namespace

Env env_from_environment() {
  Env e;
  e.world_size = int_var("WORLD_SIZE", 1, 1, 65536);
  e.rank = int_var("RANK", 0, 0, e.world_size - 1);
  e.local_rank = int_var("LOCAL_RANK", e.rank, 0, 65535);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  e.master_port = int_var("MASTER_PORT", e.master_port, 1, 65535);
  e.timeout = std::chrono::seconds(
      int_var("KD_DIST_TIMEOUT", static_cast<int>(e.timeout.count()), 1, 86400));
  if (e.world_size > 1 && !std::getenv("RANK"))
    usage_fail(
        "WORLD_SIZE={} but RANK is not set (launch with `kd launch` or torchrun-style variables)",
        e.world_size);
  return e;
}

void init_from_environment() {
  std::call_once(g_once, [] {
    Env env = env_from_environment();
    if (env.world_size == 1) return;
    auto g = std::make_unique<Group>();
    g->env = env;
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = env.world_size;
    so.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(env.timeout);
    const std::string where = fmt::format("{}:{}", env.master_addr, env.master_port);
    try {
      g->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
      auto opts = c10d::ProcessGroupGloo::Options::create(
          std::chrono::duration_cast<std::chrono::milliseconds>(env.timeout));
      // As torch.distributed: GLOO_SOCKET_IFNAME picks the interface, else the one the host name
      // resolves to (loopback when it does not resolve).
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      opts->devices.push_back(ifname && *ifname
                                  ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                  : c10d::ProcessGroupGloo::createDefaultDevice());
      g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, env.rank, env.world_size, opts);
    } catch (const std::exception& e) {
      std::string why = e.what();
      fail("rank {} of {}: cannot join the job at {} within {} s: {}", env.rank, env.world_size,
           where, env.timeout.count(), first_line(why));
    }
    g_group = std::move(g);
    spdlog::info("rank {} of {} joined {} (Gloo)", env.rank, env.world_size, where);
    // Rank 0 reports progress; the others speak up only for warnings and errors.
    spdlog::set_pattern(fmt::format("[%H:%M:%S rank {}] %v", env.rank));
    if (env.rank != 0) spdlog::set_level(spdlog::level::warn);
  });
}

int rank() { return g_group ? g_group->env.rank : 0; }
int world_size() { return g_group ? g_group->env.world_size : 1; }

void all_reduce_sum(torch::Tensor& t) {
  if (!active()) return;
  collective("allreduce", [&] {
    std::vector<torch::Tensor> v{t};
    pg().allreduce(v)->wait();
  });
}

void broadcast(std::vector<torch::Tensor> ts, int root) {
  if (!active() || ts.empty()) return;
  collective("broadcast", [&] {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    for (auto& t : ts) {
      std::vector<torch::Tensor> v{t};
      pg().broadcast(v, o)->wait();
    }
  });
}

void barrier() {
  if (!active()) return;
  collective("barrier", [&] { pg().barrier()->wait(); });
}

torch::Tensor all_gather_rows(const torch::Tensor& part) {
  if (!active()) return part;
  return collective("allgather", [&] {
    auto in = part.contiguous();
    std::vector<std::vector<torch::Tensor>> out(1);
    for (int r = 0; r < world_size(); ++r) out[0].push_back(torch::empty_like(in));
    std::vector<torch::Tensor> inputs{in};
    pg().allgather(out, inputs)->wait();
    return torch::cat(out[0]);
  });
}

std::vector<double> sum(std::vector<double> values) {
  if (!active() || values.empty()) return values;
  auto t = torch::tensor(values, torch::kFloat64);
  all_reduce_sum(t);
  return {t.data_ptr<double>(), t.data_ptr<double>() + t.numel()};
}

bool same_on_all_ranks(int64_t value) {
  if (!active()) return true;
  // One MIN over (v, -v) gives the smallest and (negated) the largest value of all ranks.
  auto t =
      torch::tensor({static_cast<double>(value), -static_cast<double>(value)}, torch::kFloat64);
  collective("allreduce", [&] {
    std::vector<torch::Tensor> v{t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::MIN;
    pg().allreduce(v, o)->wait();
  });
  return t[0].item<double>() == -t[1].item<double>();
}

void start_from_main(const std::vector<torch::Tensor>& params,
                     const std::vector<torch::Tensor>& buffers) {
  if (!active()) return;
  std::vector<torch::Tensor> all = params;
  all.insert(all.end(), buffers.begin(), buffers.end());
  broadcast(all);
}

struct GradientSync::Impl {
  std::unique_ptr<c10d::Reducer> reducer;
};

GradientSync::GradientSync(std::vector<torch::Tensor> params, bool find_unused)
    : impl_(std::make_unique<Impl>()) {
  if (!active()) return;
  params.erase(std::remove_if(params.begin(), params.end(),
                              [](const torch::Tensor& p) { return !p.requires_grad(); }),
               params.end());
  // The same bucketing DistributedDataParallel computes: parameters in reverse order (roughly
  // the order backward produces their gradients), a small first bucket so communication starts
  // early, then 25 MiB buckets.
  constexpr int64_t kFirstBucket = 1 << 20, kBucket = 25 << 20;
  std::vector<torch::Tensor> rev(params.rbegin(), params.rend());
  std::vector<bool> sparse(rev.size(), false);
  auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(
      rev, {static_cast<size_t>(kFirstBucket), static_cast<size_t>(kBucket)}, sparse, {}, {});
  std::reverse(buckets.begin(), buckets.end());
  std::reverse(limits.begin(), limits.end());
  collective("gradient reducer set-up", [&] {
    impl_->reducer = std::make_unique<c10d::Reducer>(
        rev, buckets, limits, g_group->pg, sparse, kBucket, find_unused, false,
        std::unordered_map<size_t, std::string>{}, kFirstBucket);
  });
}

GradientSync::~GradientSync() = default;

void GradientSync::backward(const torch::Tensor& loss) {
  if (!impl_->reducer) {
    loss.backward();
    return;
  }
  collective("gradient allreduce", [&] {
    impl_->reducer->prepare_for_backward({loss});
    loss.backward();
  });
}

}  // namespace kd::dist
