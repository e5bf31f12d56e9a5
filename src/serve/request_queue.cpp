#include "serve/request_queue.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <iterator>
#include <stdexcept>
#include <utility>

namespace maskrcnn::serve {
namespace {

using Clock = RequestQueue::Clock;

double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

}  // namespace

std::string describe_exception(const std::exception& e) {
  // LibTorch's messages carry a backtrace after the first line.
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string s = c10_error != nullptr ? c10_error->what_without_backtrace() : e.what();
  const auto end = s.find('\n');
  if (end != std::string::npos) s.resize(end);
  return s.empty() ? std::string("unknown error") : s;
}

// A request's images in flight. Guarded by the queue's mutex; `done` waits on it.
struct RequestQueue::Ticket {
  std::vector<ImageResult> results;
  size_t remaining = 0;
  Clock::time_point deadline;
  std::condition_variable done;
};

RequestQueue::RequestQueue(Options options, RunBatch run, OnBatch on_batch)
    : options_(options), run_(std::move(run)), on_batch_(std::move(on_batch)) {
  if (options_.max_batch == 0) throw std::invalid_argument("RequestQueue: max_batch must be >= 1");
  batcher_ = std::thread([this] { batcher_loop(); });
}

RequestQueue::~RequestQueue() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    stop_ = true;
  }
  reject_queued("the server is shutting down");
  work_cv_.notify_all();
  if (batcher_.joinable()) batcher_.join();
}

RequestQueue::Submission RequestQueue::submit(std::vector<at::Tensor> images,
                                              Clock::time_point deadline) {
  auto ticket = std::make_shared<Ticket>();
  ticket->results.resize(images.size());
  ticket->remaining = images.size();
  ticket->deadline = deadline;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return {Admission::Closed, nullptr};
    if (images.size() > options_.max_queue) return {Admission::TooMany, nullptr};
    if (queue_.size() + images.size() > options_.max_queue) return {Admission::QueueFull, nullptr};
    const auto now = Clock::now();
    for (size_t i = 0; i < images.size(); ++i) queue_.push_back(Item{ticket, i, std::move(images[i]), now});
  }
  work_cv_.notify_all();
  return {Admission::Accepted, std::move(ticket)};
}

std::vector<ImageResult> RequestQueue::wait(const std::shared_ptr<Ticket>& ticket) {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto finished = [&] { return ticket->remaining == 0; };
  if (!ticket->done.wait_until(lock, ticket->deadline, finished)) {
    // Past the deadline: what has not reached the model never will.
    const auto now = Clock::now();
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->ticket != ticket) {
        ++it;
        continue;
      }
      ImageResult r;
      r.status = ImageStatus::TimedOut;
      r.queue_ms = ms_between(it->enqueued, now);
      r.error = "waited " + std::to_string(static_cast<long long>(r.queue_ms)) + " ms in the queue";
      answer(*it, std::move(r));
      it = queue_.erase(it);
    }
    if (queue_.empty() && running_ == 0) idle_cv_.notify_all();
    ticket->done.wait(lock, finished);  // images being run now: their answers come
  }
  return std::move(ticket->results);
}

size_t RequestQueue::queued() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

size_t RequestQueue::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_;
}

void RequestQueue::close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
  }
  work_cv_.notify_all();
}

void RequestQueue::reject_queued(const std::string& why) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = Clock::now();
  for (auto& item : queue_) {
    ImageResult r;
    r.status = ImageStatus::Rejected;
    r.error = why;
    r.queue_ms = ms_between(item.enqueued, now);
    answer(item, std::move(r));
  }
  queue_.clear();
  if (running_ == 0) idle_cv_.notify_all();
}

bool RequestQueue::wait_idle(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  return idle_cv_.wait_until(lock, deadline, [&] { return queue_.empty() && running_ == 0; });
}

void RequestQueue::answer(Item& item, ImageResult result) {
  Ticket& t = *item.ticket;
  t.results[item.index] = std::move(result);
  if (--t.remaining == 0) t.done.notify_all();
}

void RequestQueue::batcher_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_, and nothing left to answer
    // Wait for a full batch, but never let the oldest image wait more than
    // max_delay for company. Closing flushes at once: nobody else is coming.
    while (!closed_ && !queue_.empty() && queue_.size() < options_.max_batch) {
      const auto flush_at = queue_.front().enqueued + options_.max_delay;
      if (Clock::now() >= flush_at) break;
      work_cv_.wait_until(lock, flush_at);
    }
    if (queue_.empty()) continue;  // its requests timed out while we waited
    const size_t n = std::min(options_.max_batch, queue_.size());
    std::vector<Item> batch(std::make_move_iterator(queue_.begin()),
                            std::make_move_iterator(queue_.begin() + static_cast<std::ptrdiff_t>(n)));
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    running_ = n;
    const auto taken = Clock::now();
    lock.unlock();
    std::vector<ImageResult> results = run_batch(batch);
    lock.lock();
    for (size_t i = 0; i < n; ++i) {
      results[i].queue_ms = ms_between(batch[i].enqueued, taken);
      answer(batch[i], std::move(results[i]));
    }
    running_ = 0;
    if (queue_.empty()) idle_cv_.notify_all();
  }
}

std::vector<ImageResult> RequestQueue::run_batch(const std::vector<Item>& batch) {
  std::vector<ImageResult> results(batch.size());
  // One model call; reports it; returns its detections or the error.
  const auto call = [&](const std::vector<at::Tensor>& images, std::vector<Detections>& out,
                        std::string& error, double& ms) {
    const auto t0 = Clock::now();
    bool ok = false;
    try {
      out = run_(images);
      if (out.size() == images.size()) {
        ok = true;
      } else {
        error = "the model returned " + std::to_string(out.size()) + " results for " +
                std::to_string(images.size()) + " images";
      }
    } catch (const std::exception& e) {
      error = describe_exception(e);
    } catch (...) {
      error = "unknown error";
    }
    ms = ms_between(t0, Clock::now());
    if (on_batch_) on_batch_(BatchReport{images.size(), ms / 1000.0, ok});
    return ok;
  };

  std::vector<at::Tensor> images;
  images.reserve(batch.size());
  for (const auto& item : batch) images.push_back(item.image);
  std::vector<Detections> out;
  std::string error;
  double ms = 0;
  if (call(images, out, error, ms)) {
    for (size_t i = 0; i < batch.size(); ++i) {
      results[i].status = ImageStatus::Done;
      results[i].detections = std::move(out[i]);
      results[i].inference_ms = ms;
      results[i].batch_size = batch.size();
    }
    return results;
  }
  if (batch.size() == 1) {
    results[0].status = ImageStatus::Failed;
    results[0].error = error;
    results[0].inference_ms = ms;
    results[0].batch_size = 1;
    return results;
  }
  // The batch failed: one image alone, so that only a bad image's request fails.
  for (size_t i = 0; i < batch.size(); ++i) {
    std::vector<Detections> one;
    std::string one_error;
    double one_ms = 0;
    const bool ok = call({batch[i].image}, one, one_error, one_ms);
    results[i].status = ok ? ImageStatus::Done : ImageStatus::Failed;
    if (ok) results[i].detections = std::move(one[0]);
    results[i].error = one_error;
    results[i].inference_ms = one_ms;
    results[i].batch_size = 1;
  }
  return results;
}

}  // namespace maskrcnn::serve
