// Deterministic, prefetching training batches from a CocoDetectionDataset.
//
// The order is a pure function of (seed, iteration), the same for any number of
// worker threads and any split of the global batch over ranks:
//
//   * an endless sequence of data set indices: epoch e is a permutation of
//     0..N-1 seeded by hash(seed, e) (the identity without shuffle), epochs
//     concatenated; batches run across epoch boundaries;
//   * the global batch of iteration `it` is positions
//     [it * B * W, (it + 1) * B * W) of that sequence (B = batch_size,
//     W = world_size); rank r takes [r * B, (r + 1) * B) of it;
//   * image i of iteration `it` is flipped iff hash(seed, it, i) < hflip_prob,
//     and its target's sampling_seed (the model's RPN/RoI sampling) is another
//     hash of (seed, it, i).
//
// So 2 ranks x batch 1 see exactly the samples of 1 rank x batch 2, and a run
// resumed at iteration k sees what an uninterrupted run would have.
//
// num_workers threads load (read, decode, build targets) the next `prefetch`
// iterations while the caller trains; batch() blocks until its own is ready and
// rethrows a worker's error. The threads only call dataset.get(); they leave
// LibTorch's thread settings alone.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "data/coco_detection.h"

namespace maskrcnn::data {

struct LoaderOptions {
  int batch_size = 2;  // images per rank and iteration
  uint64_t seed = 0;
  int num_workers = 2;  // 0: load in batch() itself, nothing ahead
  double hflip_prob = 0.5;
  bool shuffle = true;
  int rank = 0, world_size = 1;
  int prefetch = 2;  // iterations loaded ahead of the one asked for
};

class TrainLoader {
 public:
  // The dataset must outlive the loader. Throws maskrcnn::Error for bad options
  // or an empty dataset.
  TrainLoader(const CocoDetectionDataset& dataset, LoaderOptions options);
  ~TrainLoader();
  TrainLoader(const TrainLoader&) = delete;
  TrainLoader& operator=(const TrainLoader&) = delete;

  // This rank's batch_size samples of iteration `it` (>= 0), in plan() order.
  // Meant to be called from one thread with increasing it; any other order
  // (e.g. a resume) works but restarts the prefetching.
  std::vector<TrainingSample> batch(int64_t iteration);

  // ceil(N / (batch_size * world_size)): iterations to see every image once.
  int64_t iterations_per_epoch() const;

  // What batch(it) loads, without loading it: data set index, flip and the
  // target's sampling_seed per slot.
  struct Slot {
    size_t index = 0;
    bool hflip = false;
    uint64_t sampling_seed = 0;
  };
  std::vector<Slot> plan(int64_t iteration) const;
  // The data set index at position `position` of the endless sequence.
  size_t index_at(int64_t position) const;

  const LoaderOptions& options() const { return options_; }

 private:
  struct Pending {
    uint64_t generation = 0;
    std::vector<TrainingSample> samples;
    std::vector<std::exception_ptr> errors;  // per slot
    size_t remaining = 0;
  };
  struct Task {
    int64_t iteration;
    uint64_t generation;
    size_t slot;
    Slot what;
  };

  TrainingSample load(const Slot& slot) const;
  void schedule_locked(int64_t iteration);
  void worker_loop();
  const std::vector<size_t>& epoch_order_locked(int64_t epoch) const;

  const CocoDetectionDataset& dataset_;
  const LoaderOptions options_;

  mutable std::mutex order_mutex_;  // the epoch permutation cache (plan() is const)
  mutable std::map<int64_t, std::vector<size_t>> epoch_orders_;

  std::mutex mutex_;
  std::condition_variable work_ready_, batch_ready_;
  std::deque<Task> queue_;
  std::map<int64_t, Pending> pending_;  // iteration -> loading or loaded
  uint64_t generation_ = 0;             // bumped when pending work is thrown away
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace maskrcnn::data
