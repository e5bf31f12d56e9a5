#include "common/stage_profile.h"

#include <ATen/ATen.h>
#include <sys/resource.h>

#include <cstring>

#include "maskrcnn/profile.h"

namespace maskrcnn {

using Clock = std::chrono::steady_clock;

struct StageProfiler::State {
  struct Running {
    std::size_t index;
    Clock::time_point since;  // when it last (re)started counting
  };
  std::vector<StageTime> stages;
  std::vector<const char*> keys;  // literal per stage, compared by content
  std::vector<Running> stack;
  State* previous = nullptr;  // the enclosing profiler on this thread

  std::size_t index_of(const char* name) {
    for (std::size_t i = 0; i < keys.size(); ++i)
      if (keys[i] == name || std::strcmp(keys[i], name) == 0) return i;
    keys.push_back(name);
    stages.push_back(StageTime{name});
    return keys.size() - 1;
  }
  void push(const char* name) {
    const auto now = Clock::now();
    if (!stack.empty()) {  // the outer stage pauses: times are exclusive
      auto& outer = stack.back();
      stages[outer.index].seconds += std::chrono::duration<double>(now - outer.since).count();
    }
    stack.push_back({index_of(name), now});
  }
  void pop() {
    const auto now = Clock::now();
    auto& s = stages[stack.back().index];
    s.seconds += std::chrono::duration<double>(now - stack.back().since).count();
    if (++s.calls == 1) s.peak_rss_mb = peak_rss_mb();  // where the peak grows, in order
    stack.pop_back();
    if (!stack.empty()) stack.back().since = now;
  }
};

namespace {
// This thread's profilers, innermost first, chained through State::previous.
thread_local StageProfiler::State* current = nullptr;

bool installed(const StageProfiler::State* s) {
  for (auto* p = current; p != nullptr; p = p->previous)
    if (p == s) return true;
  return false;
}
}  // namespace

StageProfiler::StageProfiler() : state_(std::make_unique<State>()) {
  state_->previous = current;
  current = state_.get();
}

StageProfiler::~StageProfiler() {
  // Unlink this profiler wherever it is in the chain: profilers may end in
  // any order (not only innermost first).
  State* self = state_.get();
  if (current == self) {
    current = self->previous;
    return;
  }
  for (auto* p = current; p != nullptr; p = p->previous)
    if (p->previous == self) {
      p->previous = self->previous;
      return;
    }
}

std::vector<StageTime> StageProfiler::stages() const { return state_->stages; }

void StageProfiler::reset() {
  state_->stages.clear();
  state_->keys.clear();
  state_->stack.clear();
}

double peak_rss_mb() {
  struct rusage usage {};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux: KB
}

namespace common {

ScopedStage::ScopedStage(const char* name) {
  if (current == nullptr) return;
  current->push(name);
  state_ = current;
}

ScopedStage::~ScopedStage() {
  // On the profiler it started on, if that one still exists.
  if (state_ != nullptr && installed(state_) && !state_->stack.empty()) state_->pop();
}

bool stage_profiling() { return current != nullptr; }

void add_stage_flops(double flops) {
  if (current == nullptr || current->stack.empty()) return;
  current->stages[current->stack.back().index].gflop += flops * 1e-9;
}

void add_conv_flops(const at::Tensor& output, const at::Tensor& weight) {
  if (current == nullptr) return;
  add_stage_flops(2.0 * static_cast<double>(output.numel()) *
                  static_cast<double>(weight.size(1) * weight.size(2) * weight.size(3)));
}

void add_conv_transpose_flops(const at::Tensor& input, const at::Tensor& weight) {
  if (current == nullptr) return;
  add_stage_flops(2.0 * static_cast<double>(input.numel()) *
                  static_cast<double>(weight.size(1) * weight.size(2) * weight.size(3)));
}

void add_linear_flops(const at::Tensor& output, const at::Tensor& weight) {
  if (current == nullptr) return;
  add_stage_flops(2.0 * static_cast<double>(output.numel()) * static_cast<double>(weight.size(1)));
}

}  // namespace common
}  // namespace maskrcnn
