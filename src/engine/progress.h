// A one-line progress bar on stderr: count, rate, time left, and free text.
#pragma once
#include <chrono>
#include <cstddef>
#include <string>

namespace maskrcnn::engine {

class ProgressBar {
 public:
  ProgressBar(std::string label, size_t total, bool enabled = true);
  void update(size_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");
  void set_total(size_t total) { total_ = total; }
  void set_unit(std::string unit) { unit_ = std::move(unit); }  // the rate's, "it/s" by default

 private:
  std::string label_, unit_ = "it/s";
  size_t total_;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace maskrcnn::engine
