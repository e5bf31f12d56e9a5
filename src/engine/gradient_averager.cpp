// GradientAverager: DDP-style gradient bucketing with the allreduce of each
// bucket overlapping the rest of backward (see distributed.h).
#include <ATen/ATen.h>

#include <mutex>

#include "engine/distributed.h"

namespace maskrcnn::engine {

struct GradientAverager::State {
  struct Slot {
    at::Tensor param;
    std::size_t bucket = 0;
    int64_t offset = 0;  // in the bucket's flat buffer
    bool arrived = false;
  };
  struct Bucket {
    at::Tensor flat;
    std::vector<std::size_t> slots;
    std::size_t waiting = 0;  // slots whose gradient has not arrived yet
    ProcessGroup::Pending pending;
  };
  ProcessGroup* group = nullptr;
  std::vector<Slot> slots;
  std::vector<Bucket> buckets;
  std::size_t next_to_start = 0;  // buckets start in this order only
  std::size_t started_early = 0;
  bool collecting = false;
  std::mutex mutex;

  void start_ready_buckets() {
    while (next_to_start < buckets.size() && buckets[next_to_start].waiting == 0) {
      auto& b = buckets[next_to_start++];
      b.pending = group->allreduce_sum_async(b.flat);
    }
  }

  void on_gradient(std::size_t slot, const at::Tensor& grad) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!collecting) return;  // a backward outside prepare()/finish(): not ours to average
    Slot& s = slots[slot];
    Bucket& b = buckets[s.bucket];
    if (s.arrived) {  // a second gradient for the same parameter in one backward: accumulate
      b.flat.narrow(0, s.offset, s.param.numel()).add_(grad.reshape(-1));
      return;
    }
    s.arrived = true;
    b.flat.narrow(0, s.offset, s.param.numel()).copy_(grad.reshape(-1));
    --b.waiting;
    const std::size_t before = next_to_start;
    start_ready_buckets();
    started_early += next_to_start - before;
  }
};

GradientAverager::GradientAverager(ProcessGroup& group, std::vector<at::Tensor> params,
                                   std::size_t bucket_bytes, std::size_t first_bucket_bytes)
    : state_(std::make_shared<State>()) {
  auto& st = *state_;
  st.group = &group;
  // Reverse order: the last parameters (the heads) get their gradients first.
  std::vector<int64_t> sizes;
  std::size_t cap = first_bucket_bytes, bytes = 0;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    const at::Tensor& p = *it;
    if (!at::isFloatingType(p.scalar_type())) throw DistError("GradientAverager: a parameter is not floating point");
    const std::size_t b = p.numel() * p.element_size();
    if (st.buckets.empty() || bytes + b > cap ||
        st.slots[st.buckets.back().slots.front()].param.scalar_type() != p.scalar_type()) {
      if (!st.buckets.empty()) cap = bucket_bytes;
      st.buckets.emplace_back();
      sizes.push_back(0);
      bytes = 0;
    }
    st.slots.push_back({p, st.buckets.size() - 1, sizes.back(), false});
    st.buckets.back().slots.push_back(st.slots.size() - 1);
    sizes.back() += p.numel();
    bytes += b;
  }
  for (std::size_t k = 0; k < st.buckets.size(); ++k) {
    const auto& first = st.slots[st.buckets[k].slots.front()].param;
    st.buckets[k].flat = at::zeros({sizes[k]}, first.options().requires_grad(false));
  }
  std::weak_ptr<State> weak = state_;
  for (std::size_t i = 0; i < st.slots.size(); ++i) {
    at::Tensor p = st.slots[i].param;
    unsigned handle = p.register_hook([weak, i](const at::Tensor& grad) {
      if (auto alive = weak.lock()) alive->on_gradient(i, grad);
    });
    hooks_.emplace_back(p, handle);
  }
}

GradientAverager::~GradientAverager() {
  for (auto& [p, handle] : hooks_) p.remove_hook(handle);
}

std::size_t GradientAverager::num_buckets() const { return state_->buckets.size(); }
std::size_t GradientAverager::buckets_started_early() const { return state_->started_early; }

void GradientAverager::prepare() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  auto& st = *state_;
  for (auto& b : st.buckets) {
    if (b.pending.valid()) throw DistError("GradientAverager: prepare() before the last finish()");
    b.waiting = b.slots.size();
  }
  for (auto& s : st.slots) s.arrived = false;
  st.next_to_start = 0;
  st.started_early = 0;
  st.collecting = true;
}

void GradientAverager::finish() {
  auto& st = *state_;
  std::lock_guard<std::mutex> lock(st.mutex);
  if (!st.collecting) throw DistError("GradientAverager: finish() without prepare()");
  st.collecting = false;
  at::NoGradGuard no_grad;
  // Parameters without a gradient this time contribute zeros.
  for (auto& s : st.slots) {
    if (s.arrived) continue;
    auto& b = st.buckets[s.bucket];
    b.flat.narrow(0, s.offset, s.param.numel()).zero_();
    --b.waiting;
  }
  st.start_ready_buckets();
  const double world = st.group->world_size();
  for (auto& b : st.buckets) {
    b.pending.wait();
    b.flat.div_(world);
    for (std::size_t i : b.slots) {
      auto& s = st.slots[i];
      auto mean = b.flat.narrow(0, s.offset, s.param.numel()).view(s.param.sizes());
      auto& g = s.param.mutable_grad();
      if (g.defined()) g.copy_(mean);
      else g = mean.clone();
    }
  }
}

}  // namespace maskrcnn::engine
