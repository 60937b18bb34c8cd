#include <csignal>
#include <cstring>

#include "kd/core/error.h"

namespace kd {
namespace {

volatile std::sig_atomic_t g_signal = 0;
int g_guards = 0;

void on_stop_signal(int sig) {
  g_signal = sig;
  std::signal(sig, SIG_DFL);  // the next one is not delayed
}

}  // namespace

InterruptGuard::InterruptGuard() {
  if (g_guards++ > 0) return;
  g_signal = 0;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

InterruptGuard::~InterruptGuard() {
  if (--g_guards > 0) return;
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

void check_interrupted() {
  const int sig = g_signal;
  if (sig != 0)
    throw Interrupted(sig, fmt::format("interrupted by {} ({}); resume with --resume",
                                       sig == SIGINT ? "SIGINT" : "SIGTERM", strsignal(sig)));
}

}  // namespace kd
