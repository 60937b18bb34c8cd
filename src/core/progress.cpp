#include "kd/core/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

#include "kd/core/distributed.h"

namespace kd {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)),
      total_(total),
      tty_(::isatty(STDERR_FILENO) == 1),
      next_log_(total / 4),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

void Progress::update(int64_t done, int64_t items, double loss, double acc) {
  if (!dist::is_main()) return;  // one progress display per job, not one per rank
  items_ += items;
  auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(items_) / elapsed : 0.0;
  const double eta =
      done > 0 ? elapsed * static_cast<double>(total_ - done) / static_cast<double>(done) : 0.0;
  // A negative accuracy means there is none to show (detection, dataset building).
  const std::string acc_text = acc >= 0 ? fmt::format(" acc {:.2f}%", 100.0 * acc) : "";
  if (tty_) {
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const int width = 24;
    const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
    fmt::print(stderr, "\r{} [{}{}] {}/{} loss {:.4f}{} {:.0f} img/s ETA {:.0f}s\033[K", label_,
               std::string(filled, '#'), std::string(width - filled, '.'), done, total_, loss,
               acc_text, rate, eta);
  } else if (done >= next_log_ && done < total_) {
    fmt::print(stderr, "{} {}/{} loss {:.4f}{} {:.0f} img/s ETA {:.0f}s\n", label_, done, total_,
               loss, acc_text, rate, eta);
    next_log_ += std::max<int64_t>(1, total_ / 4);
  }
}

void Progress::finish() {
  if (tty_ && dist::is_main()) fmt::print(stderr, "\r\033[K");
}

}  // namespace kd
