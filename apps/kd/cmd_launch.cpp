// `kd launch`: torchrun's job for one machine. Starts N copies of a command with the torchrun
// variables set, and stops them all as soon as one fails, so a dead rank never leaves the
// others waiting on it.
#include <arpa/inet.h>
#include <csignal>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "kd/core/error.h"

namespace kd::cli {
namespace {

struct LaunchArgs {
  int nproc = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  double grace_s = 10;
  std::vector<std::string> command;
};

volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_signal(int sig) { g_signal = sig; }

// A port the kernel says is free now (torchrun does the same for a single-machine job).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  KD_CHECK(fd >= 0, "launch: cannot open a socket: {}", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  KD_CHECK(ok, "launch: cannot find a free port: {}", std::strerror(errno));
  return ntohs(a.sin_port);
}

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status),
                       strsignal(WTERMSIG(status)));
  return "stopped";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

int launch(LaunchArgs& a) {
  if (a.nproc < 1) usage_fail("--nproc {}: must be at least 1", a.nproc);
  if (a.nnodes < 1 || a.node_rank < 0 || a.node_rank >= a.nnodes)
    usage_fail("--node-rank {} of --nnodes {}: out of range", a.node_rank, a.nnodes);
  if (a.master_port == 0) {
    if (a.nnodes > 1)
      usage_fail(
          "--master-port is required with --nnodes > 1 (every machine must use the same one)");
    a.master_port = free_port();
  }
  // `kd` means this very binary, so the ranks run the same build even when kd is not on PATH.
  std::vector<std::string> argv = a.command;
  if (argv[0] == "kd") {
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) argv[0] = std::string(self, static_cast<size_t>(n));
  }
  const int world = a.nnodes * a.nproc;
  spdlog::info("launch: {} rank(s) on this machine, {} in all, rendezvous at {}:{}", a.nproc, world,
               a.master_addr, a.master_port);
  std::vector<pid_t> pids(static_cast<size_t>(a.nproc), -1);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const pid_t launcher = ::getpid();
  for (int local = 0; local < a.nproc; ++local) {
    const pid_t pid = ::fork();
    KD_CHECK(pid >= 0, "launch: fork failed: {}", std::strerror(errno));
    if (pid == 0) {
      // The rank dies with its launcher, however the launcher dies (SIGKILL included), instead
      // of training on as an orphan and writing the run after the launcher reported failure.
      // The check after prctl covers a launcher that died before it.
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != launcher) ::_exit(137);
      std::signal(SIGINT, SIG_DFL);
      std::signal(SIGTERM, SIG_DFL);
      const int rank = a.node_rank * a.nproc + local;
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(a.nproc).c_str(), 1);
      ::setenv("GROUP_RANK", std::to_string(a.node_rank).c_str(), 1);
      ::setenv("MASTER_ADDR", a.master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(a.master_port).c_str(), 1);
      std::vector<char*> cargv;
      for (auto& s : argv) cargv.push_back(s.data());
      cargv.push_back(nullptr);
      ::execvp(cargv[0], cargv.data());
      std::fprintf(stderr, "kd: error: launch: cannot run '%s': %s\n", cargv[0],
                   std::strerror(errno));
      ::_exit(127);
    }
    pids[static_cast<size_t>(local)] = pid;
  }

  // Wait for every rank; the first failure (or a signal to us) stops the rest: SIGTERM, then
  // SIGKILL after the grace period.
  int result = 0, running = a.nproc;
  bool stopping = false;
  auto stop_deadline = std::chrono::steady_clock::time_point::max();
  auto stop_all = [&](int sig) {
    for (pid_t p : pids)
      if (p > 0) ::kill(p, sig);
  };
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (size_t local = 0; local < pids.size(); ++local) {
        if (pids[local] != pid) continue;
        pids[local] = -1;
        --running;
        const int rank = a.node_rank * a.nproc + static_cast<int>(local);
        if (exit_code(status) != 0 && !stopping) {
          spdlog::error("launch: rank {} {}; stopping the other ranks", rank, describe(status));
          result = exit_code(status);
          stopping = true;
          stop_deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(static_cast<int64_t>(a.grace_s * 1000));
          stop_all(SIGTERM);
        }
      }
      continue;
    }
    if (g_signal != 0 && !stopping) {
      spdlog::warn("launch: signal {}: stopping the ranks", static_cast<int>(g_signal));
      result = 128 + g_signal;
      stopping = true;
      stop_deadline = std::chrono::steady_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(a.grace_s * 1000));
      stop_all(SIGTERM);
    }
    if (stopping && std::chrono::steady_clock::now() > stop_deadline) {
      stop_all(SIGKILL);
      stop_deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return result;
}

}  // namespace

void add_launch_command(CLI::App& app) {
  auto args = std::make_shared<LaunchArgs>();
  auto* l =
      app.add_subcommand("launch", "run a command as N data-parallel ranks (torchrun's variables)");
  l->footer(
      "Examples:\n"
      "  kd launch --nproc 2 -- kd distill --teacher runs/teacher --out runs/distilled-2r\n"
      "  kd launch --nnodes 2 --node-rank 0 --nproc 1 --master-addr 10.0.0.1 --master-port 29500 "
      "-- kd train ...\n"
      "Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT; "
      "--batch-size stays the global batch. If one rank fails, the others are stopped.");
  l->add_option("--nproc", args->nproc, "ranks to start on this machine")->required();
  l->add_option("--nnodes", args->nnodes, "machines in the job")->capture_default_str();
  l->add_option("--node-rank", args->node_rank, "this machine's index, 0 to nnodes-1")
      ->capture_default_str();
  l->add_option("--master-addr", args->master_addr, "address of the machine running rank 0")
      ->capture_default_str();
  l->add_option("--master-port", args->master_port,
                "rendezvous port (default: a free one; required with --nnodes > 1)");
  l->add_option("--grace", args->grace_s,
                "seconds the other ranks get to stop after a failure before SIGKILL")
      ->capture_default_str();
  l->add_option("command", args->command, "the command each rank runs, after --")->required();
  l->callback([args] {
    const int code = launch(*args);
    if (code != 0) std::exit(code);
  });
}

}  // namespace kd::cli
