// TrainLoader: the deterministic sample order, and the worker threads that
// load ahead of the training loop.
//
// Work is queued per sample (not per batch), so several workers share one
// batch and the batch the caller waits for is always at the front of the
// queue. Results go into slots fixed by the plan, so the order in which
// workers finish never shows.
#include "data/loader.h"

#include <cmath>
#include <numeric>
#include <random>
#include <utility>

#include "data/seeding.h"
#include "maskrcnn/error.h"

namespace maskrcnn::data {
namespace {

// Epoch permutations kept around: batches straddle at most two epochs, and
// plan() for a prefetched iteration may reach one more.
constexpr size_t kCachedEpochs = 4;

void check_options(const CocoDetectionDataset& dataset, const LoaderOptions& o) {
  auto bad = [](const std::string& what) { throw Error("loader: " + what); };
  if (dataset.size() == 0) bad(dataset.coco().source + " has no images to train on");
  if (o.batch_size < 1) bad("batch_size must be at least 1, not " + std::to_string(o.batch_size));
  if (o.world_size < 1) bad("world_size must be at least 1, not " + std::to_string(o.world_size));
  if (o.rank < 0 || o.rank >= o.world_size)
    bad("rank " + std::to_string(o.rank) + " is not in [0, world_size = " + std::to_string(o.world_size) + ")");
  if (o.num_workers < 0 || o.num_workers > 256)
    bad("num_workers must be in [0, 256], not " + std::to_string(o.num_workers));
  if (o.prefetch < 0) bad("prefetch must be >= 0, not " + std::to_string(o.prefetch));
  if (!(o.hflip_prob >= 0.0 && o.hflip_prob <= 1.0))
    bad("hflip_prob must be in [0, 1], not " + std::to_string(o.hflip_prob));
}

}  // namespace

TrainLoader::TrainLoader(const CocoDetectionDataset& dataset, LoaderOptions options)
    : dataset_(dataset), options_(options) {
  check_options(dataset_, options_);
  try {
    for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
  } catch (...) {
    // No destructor runs for a half-built object: stop what was started.
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    work_ready_.notify_all();
    for (auto& t : workers_) t.join();
    throw;
  }
}

TrainLoader::~TrainLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    queue_.clear();
  }
  work_ready_.notify_all();
  for (auto& t : workers_) t.join();  // a worker finishes the sample it is loading
}

int64_t TrainLoader::iterations_per_epoch() const {
  const int64_t global = int64_t{options_.batch_size} * options_.world_size;
  return (static_cast<int64_t>(dataset_.size()) + global - 1) / global;
}

const std::vector<size_t>& TrainLoader::epoch_order_locked(int64_t epoch) const {
  auto it = epoch_orders_.find(epoch);
  if (it != epoch_orders_.end()) return it->second;
  if (epoch_orders_.size() >= kCachedEpochs) epoch_orders_.erase(epoch_orders_.begin());
  std::vector<size_t> order(dataset_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  // Fisher-Yates with our own draws: std::shuffle's output is not specified.
  std::mt19937_64 rng(hash_values(SeedDomain::EpochOrder, {options_.seed, static_cast<uint64_t>(epoch)}));
  for (size_t i = order.size(); i > 1; --i)
    std::swap(order[i - 1], order[static_cast<size_t>(uniform_int(rng, 0, static_cast<int64_t>(i) - 1))]);
  return epoch_orders_.emplace(epoch, std::move(order)).first->second;
}

size_t TrainLoader::index_at(int64_t position) const {
  if (position < 0) throw Error("loader: negative position " + std::to_string(position));
  const int64_t n = static_cast<int64_t>(dataset_.size());
  const int64_t epoch = position / n, offset = position % n;
  if (!options_.shuffle) return static_cast<size_t>(offset);
  std::lock_guard<std::mutex> lock(order_mutex_);
  return epoch_order_locked(epoch)[static_cast<size_t>(offset)];
}

std::vector<TrainLoader::Slot> TrainLoader::plan(int64_t iteration) const {
  if (iteration < 0) throw Error("loader: negative iteration " + std::to_string(iteration));
  const int64_t b = options_.batch_size;
  const int64_t first = (iteration * options_.world_size + options_.rank) * b;
  std::vector<Slot> slots(static_cast<size_t>(b));
  for (int64_t s = 0; s < b; ++s) {
    Slot& slot = slots[static_cast<size_t>(s)];
    slot.index = index_at(first + s);
    // Keyed by (iteration, image), not by position or rank: any split of the
    // global batch flips the same images.
    const std::initializer_list<uint64_t> key{options_.seed, static_cast<uint64_t>(iteration),
                                              static_cast<uint64_t>(slot.index)};
    slot.hflip = unit_from_bits(hash_values(SeedDomain::Flip, key)) < options_.hflip_prob;
    slot.sampling_seed = hash_values(SeedDomain::Sampling, key);
  }
  return slots;
}

TrainingSample TrainLoader::load(const Slot& slot) const {
  TrainingSample s = dataset_.get(slot.index, slot.hflip);
  s.target.sampling_seed = slot.sampling_seed;
  return s;
}

void TrainLoader::schedule_locked(int64_t iteration) {
  const std::vector<Slot> slots = plan(iteration);
  Pending& p = pending_[iteration];
  p.generation = generation_;
  p.samples.assign(slots.size(), TrainingSample{});
  p.errors.assign(slots.size(), nullptr);
  p.remaining = slots.size();
  for (size_t s = 0; s < slots.size(); ++s) queue_.push_back({iteration, generation_, s, slots[s]});
}

std::vector<TrainingSample> TrainLoader::batch(int64_t iteration) {
  if (workers_.empty()) {
    std::vector<TrainingSample> out;
    for (const Slot& s : plan(iteration)) out.push_back(load(s));
    return out;
  }
  plan(iteration);  // throws for a bad iteration before touching the queue
  std::unique_lock<std::mutex> lock(mutex_);
  if (!pending_.count(iteration)) {
    // Not what was prefetched (first call, a jump, a repeat): drop it all;
    // workers still busy with dropped samples see the generation change.
    queue_.clear();
    pending_.clear();
    ++generation_;
  }
  // Earlier iterations will not be asked for again.
  pending_.erase(pending_.begin(), pending_.lower_bound(iteration));
  while (!queue_.empty() && queue_.front().iteration < iteration) queue_.pop_front();
  for (int64_t k = iteration; k <= iteration + options_.prefetch; ++k)
    if (!pending_.count(k)) schedule_locked(k);
  work_ready_.notify_all();

  batch_ready_.wait(lock, [&] { return pending_.at(iteration).remaining == 0; });
  Pending done = std::move(pending_.at(iteration));
  pending_.erase(iteration);
  lock.unlock();
  // The lowest failing slot's error, whichever worker failed first.
  for (auto& e : done.errors)
    if (e) std::rethrow_exception(e);
  return std::move(done.samples);
}

void TrainLoader::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_ready_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    const Task task = queue_.front();
    queue_.pop_front();
    lock.unlock();
    TrainingSample sample;
    std::exception_ptr error;
    try {
      sample = load(task.what);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    auto it = pending_.find(task.iteration);
    if (it == pending_.end() || it->second.generation != task.generation) continue;  // dropped meanwhile
    Pending& p = it->second;
    if (error) p.errors[task.slot] = error;
    else p.samples[task.slot] = std::move(sample);
    if (--p.remaining == 0) batch_ready_.notify_all();
  }
}

}  // namespace maskrcnn::data
