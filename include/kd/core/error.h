#pragma once
/// @file
/// Errors kd reports to users: one line naming the file, key or value that was wrong.
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace kd {

/// Something in the user's input (a file, a config value, a request) is wrong. Exit code 1.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The command line itself is wrong (unknown flag value, missing argument). Exit code 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

/// SIGINT or SIGTERM arrived during a run (see InterruptGuard). Exit code 128 + signal.
class Interrupted : public Error {
 public:
  Interrupted(int signal, const std::string& what) : Error(what), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

/// While one lives, SIGINT and SIGTERM only set a flag, which check_interrupted() turns into an
/// Interrupted error at the next safe point (a batch boundary), so the run records error.txt and
/// the CLI says why it stopped. A second signal kills the process as usual.
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
};
void check_interrupted();

/// The first line of a library's error message (c10 and Gloo append backtraces and context), for
/// quoting it inside one of kd's one-line errors.
inline std::string first_line(const std::string& message) {
  return message.substr(0, message.find('\n'));
}

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
[[noreturn]] void usage_fail(fmt::format_string<Args...> f, Args&&... args) {
  throw UsageError(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace kd

#define KD_CHECK(cond, ...)    \
  do {                         \
    if (!(cond)) {             \
      ::kd::fail(__VA_ARGS__); \
    }                          \
  } while (0)
