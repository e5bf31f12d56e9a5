// The one queue between the HTTP connections and the model, and the batcher
// thread that drains it (`maskrcnn serve`). Nothing here knows about HTTP:
// a request submits its decoded images, waits, and gets one result per image.
//
//   RequestQueue queue(options, [&](const std::vector<at::Tensor>& images) { return model.predict(images); });
//   auto s = queue.submit(images, RequestQueue::Clock::now() + timeout);
//   if (s.admission == Admission::Accepted) auto results = queue.wait(s.ticket);
//
// The batcher takes up to `max_batch` images at a time. It waits for more only
// while the oldest queued image is younger than `max_delay`, so a lone request
// pays at most `max_delay` extra and a busy server runs full batches.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "maskrcnn/types.h"

namespace maskrcnn::serve {

enum class ImageStatus {
  Pending,   // not answered yet (never returned by wait)
  Done,      // detections hold the model's answer
  Failed,    // the model threw on this image; error says what
  TimedOut,  // waited in the queue past its request's deadline, never run
  Rejected,  // dropped unrun: the queue shut down; error says why
};

struct ImageResult {
  ImageStatus status = ImageStatus::Pending;
  Detections detections;
  std::string error;
  double queue_ms = 0;      // submitted -> taken by the batcher (or given up)
  double inference_ms = 0;  // the model call that answered it
  size_t batch_size = 0;    // images in that call's batch
};

enum class Admission {
  Accepted,
  QueueFull,  // queued + new images would pass max_queue: try again later (503)
  TooMany,    // more images than max_queue in one request: it can never fit
  Closed,     // close() was called (shutting down)
};

// The message an exception gives a user: c10::Error without its backtrace,
// and only the first line of anything.
std::string describe_exception(const std::exception& e);

class RequestQueue {
 public:
  using Clock = std::chrono::steady_clock;
  // Runs the model on a batch: one Detections per image, in order. May throw;
  // the batch's images are then retried one by one, so that one bad image
  // fails only its own request.
  using RunBatch = std::function<std::vector<Detections>(const std::vector<at::Tensor>& images)>;

  struct Options {
    size_t max_batch = 4;
    Clock::duration max_delay = std::chrono::milliseconds(5);
    size_t max_queue = 64;  // images waiting, not counting the batch being run
  };
  // Reported after every model call (on the batcher thread, outside the lock).
  struct BatchReport {
    size_t images = 0;
    double seconds = 0;
    bool ok = false;
  };
  using OnBatch = std::function<void(const BatchReport&)>;

  struct Ticket;  // one request's images; opaque outside request_queue.cpp
  struct Submission {
    Admission admission = Admission::Closed;
    std::shared_ptr<Ticket> ticket;  // set when Accepted
  };

  // Starts the batcher thread.
  RequestQueue(Options options, RunBatch run, OnBatch on_batch = {});
  // Closes the queue, answers whatever is still queued Rejected, waits for
  // the batch being run and joins the batcher.
  ~RequestQueue();
  RequestQueue(const RequestQueue&) = delete;
  RequestQueue& operator=(const RequestQueue&) = delete;

  // All of a request's images are admitted, or none. Images that are still
  // queued at `deadline` time out (see wait); 0 images give a finished ticket.
  Submission submit(std::vector<at::Tensor> images, Clock::time_point deadline);
  // Blocks until every image of the ticket is answered. At the ticket's
  // deadline its images still in the queue are taken out as TimedOut; images
  // the batcher already took are waited for (a model call is not interrupted).
  std::vector<ImageResult> wait(const std::shared_ptr<Ticket>& ticket);

  size_t queued() const;   // images waiting
  size_t running() const;  // images in the model call under way

  // Refuses new submissions (Closed); the batcher still answers everything
  // queued, without waiting max_delay for company.
  void close();
  // Answers every queued image Rejected with `why` (the drain's deadline).
  void reject_queued(const std::string& why);
  // True once nothing is queued or running; false if `deadline` came first.
  bool wait_idle(Clock::time_point deadline);

 private:
  struct Item {
    std::shared_ptr<Ticket> ticket;
    size_t index = 0;  // position in the ticket's request
    at::Tensor image;
    Clock::time_point enqueued;
  };

  void batcher_loop();
  // Runs the model on a batch (never throws): one result per item.
  std::vector<ImageResult> run_batch(const std::vector<Item>& batch);
  // Fills in a result under the lock and wakes the ticket's waiter when it was the last.
  void answer(Item& item, ImageResult result);

  const Options options_;
  const RunBatch run_;
  const OnBatch on_batch_;

  mutable std::mutex mutex_;           // guards everything below and every Ticket
  std::condition_variable work_cv_;    // the batcher: new images, close, stop
  std::condition_variable idle_cv_;    // wait_idle: a batch finished or the queue emptied
  std::deque<Item> queue_;
  size_t running_ = 0;
  bool closed_ = false;
  bool stop_ = false;
  std::thread batcher_;  // last: started once everything above exists
};

}  // namespace maskrcnn::serve
