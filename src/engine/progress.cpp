#include "engine/progress.h"

#include <unistd.h>

#include <cstdio>

namespace maskrcnn::engine {

ProgressBar::ProgressBar(std::string label, size_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(::isatty(2) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

void ProgressBar::update(size_t done, const std::string& extra) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  // Redraw at most 5x/s on a terminal; every 10 s (one line each) in logs.
  if ((total_ == 0 || done < total_) && since_draw < (tty_ ? 0.2 : 10.0)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? done / elapsed : 0;
  if (total_ == 0) {  // length not known yet
    std::fprintf(stderr, "%s%s %zu %.2f %s %s%s", tty_ ? "\r" : "", label_.c_str(), done, rate, unit_.c_str(),
                 extra.c_str(),
                 tty_ ? "\x1b[K" : "\n");
    std::fflush(stderr);
    return;
  }
  const double left = rate > 0 ? (total_ > done ? total_ - done : 0) / rate : 0;
  const int width = 30;
  const int filled = total_ ? static_cast<int>(width * done / total_) : width;
  std::string bar(filled, '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "%s%s [%s] %zu/%zu %.2f %s, %02d:%02d left %s%s", tty_ ? "\r" : "",
               label_.c_str(), bar.c_str(), done, total_, rate, unit_.c_str(), static_cast<int>(left) / 60,
               static_cast<int>(left) % 60, extra.c_str(), tty_ ? "\x1b[K" : "\n");
  std::fflush(stderr);
}

void ProgressBar::finish(const std::string& extra) {
  if (!enabled_) return;
  update(total_, extra);
  if (tty_) std::fputc('\n', stderr);
}

}  // namespace maskrcnn::engine
