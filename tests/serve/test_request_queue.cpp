// The queue and batcher of `maskrcnn serve` with a fake model: batch sizes,
// the batching delay, admission, timeouts, failures and the drain.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <chrono>
#include <functional>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "serve/request_queue.h"

using maskrcnn::Detections;
using namespace maskrcnn::serve;
using Clock = RequestQueue::Clock;
using std::chrono::milliseconds;

namespace {

// An image tagged by its height, which the fake model echoes back.
at::Tensor tagged(int64_t tag) { return at::zeros({3, tag, 4}, at::TensorOptions().dtype(at::kByte)); }

Detections echo(const at::Tensor& image) {
  Detections d;
  d.image_height = image.size(1);
  d.image_width = image.size(2);
  return d;
}

// A fake model: records each batch's size, optionally waits for a gate or
// sleeps, and throws on images tagged `poison`.
struct FakeModel {
  std::mutex mutex;
  std::vector<size_t> batches;
  std::shared_future<void> gate;
  milliseconds sleep{0};
  int64_t poison = -1;

  RequestQueue::RunBatch fn() {
    return [this](const std::vector<at::Tensor>& images) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        batches.push_back(images.size());
      }
      if (gate.valid()) gate.wait();
      if (sleep.count() > 0) std::this_thread::sleep_for(sleep);
      std::vector<Detections> out;
      for (const auto& im : images) {
        if (im.size(1) == poison) throw std::runtime_error("poisoned image");
        out.push_back(echo(im));
      }
      return out;
    };
  }
  std::vector<size_t> seen() {
    std::lock_guard<std::mutex> lock(mutex);
    return batches;
  }
};

// Holds the fake model's calls until opened. Declared after the queue, so
// that a failed assertion opens it before the queue's destructor joins the
// batcher (which would otherwise wait on it forever).
struct Gate {
  std::promise<void> promise;
  std::shared_future<void> future = promise.get_future().share();
  bool opened = false;
  void open() {
    if (!opened) promise.set_value();
    opened = true;
  }
  ~Gate() { open(); }
};

RequestQueue::Options opts(size_t max_batch, milliseconds delay, size_t max_queue = 64) {
  RequestQueue::Options o;
  o.max_batch = max_batch;
  o.max_delay = delay;
  o.max_queue = max_queue;
  return o;
}

Clock::time_point in(milliseconds ms) { return Clock::now() + ms; }

bool eventually(const std::function<bool()>& done) {
  const auto until = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return done();
}

TEST(RequestQueue, BatchesUpToMaxBatchInOrder) {
  FakeModel model;
  RequestQueue queue(opts(3, milliseconds(10000)), model.fn());
  std::vector<at::Tensor> images;
  for (int64_t tag = 10; tag < 17; ++tag) images.push_back(tagged(tag));
  auto s = queue.submit(images, in(milliseconds(60000)));
  ASSERT_EQ(s.admission, Admission::Accepted);
  // Two full batches go at once; the last image waits for company until closed.
  ASSERT_TRUE(eventually([&] { return model.seen().size() == 2; }));
  EXPECT_EQ(queue.queued(), 1u);
  queue.close();
  const auto results = queue.wait(s.ticket);
  EXPECT_EQ(model.seen(), (std::vector<size_t>{3, 3, 1}));
  ASSERT_EQ(results.size(), 7u);
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].status, ImageStatus::Done) << i;
    EXPECT_EQ(results[i].detections.image_height, static_cast<int64_t>(10 + i)) << "answers keep their order";
    EXPECT_EQ(results[i].batch_size, i < 6 ? 3u : 1u) << i;
  }
}

TEST(RequestQueue, LoneImageWaitsAtMostTheDelay) {
  FakeModel model;
  RequestQueue queue(opts(4, milliseconds(100)), model.fn());
  const auto t0 = Clock::now();
  auto s = queue.submit({tagged(5)}, in(milliseconds(60000)));
  const auto results = queue.wait(s.ticket);
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  ASSERT_EQ(results.at(0).status, ImageStatus::Done);
  EXPECT_EQ(results[0].batch_size, 1u);
  EXPECT_GE(results[0].queue_ms, 90.0);
  EXPECT_LT(ms, 5000.0);
}

TEST(RequestQueue, RequestsWithinTheDelayShareABatch) {
  FakeModel model;
  RequestQueue queue(opts(4, milliseconds(1000)), model.fn());
  auto a = queue.submit({tagged(1)}, in(milliseconds(60000)));
  std::this_thread::sleep_for(milliseconds(20));
  auto b = queue.submit({tagged(2), tagged(3)}, in(milliseconds(60000)));
  std::this_thread::sleep_for(milliseconds(20));
  auto c = queue.submit({tagged(4)}, in(milliseconds(60000)));  // the fourth image fills the batch: no more waiting
  const auto t0 = Clock::now();
  const auto ra = queue.wait(a.ticket), rb = queue.wait(b.ticket), rc = queue.wait(c.ticket);
  const double waited_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  EXPECT_LT(waited_ms, 900.0);
  EXPECT_EQ(model.seen(), (std::vector<size_t>{4}));
  EXPECT_EQ(rb.at(1).detections.image_height, 3);
  EXPECT_EQ(rc.at(0).batch_size, 4u);
}

TEST(RequestQueue, FullQueueRejectsAndOversizedRequestsNeverFit) {
  FakeModel model;
  RequestQueue queue(opts(1, milliseconds(0), 2), model.fn());
  Gate gate;
  model.gate = gate.future;
  auto running = queue.submit({tagged(1)}, in(milliseconds(60000)));
  ASSERT_TRUE(eventually([&] { return queue.running() == 1; }));
  auto b = queue.submit({tagged(2)}, in(milliseconds(60000)));
  auto c = queue.submit({tagged(3)}, in(milliseconds(60000)));
  EXPECT_EQ(b.admission, Admission::Accepted);
  EXPECT_EQ(c.admission, Admission::Accepted);
  EXPECT_EQ(queue.queued(), 2u);
  EXPECT_EQ(queue.submit({tagged(4)}, in(milliseconds(60000))).admission, Admission::QueueFull);
  EXPECT_EQ(queue.submit({tagged(5), tagged(6), tagged(7)}, in(milliseconds(60000))).admission, Admission::TooMany);
  EXPECT_EQ(queue.queued(), 2u) << "a refused request leaves nothing behind";
  gate.open();
  for (auto* s : {&running, &b, &c}) EXPECT_EQ(queue.wait(s->ticket).at(0).status, ImageStatus::Done);
}

TEST(RequestQueue, ImagesStillQueuedAtTheDeadlineTimeOut) {
  FakeModel model;
  RequestQueue queue(opts(1, milliseconds(0)), model.fn());
  Gate gate;
  model.gate = gate.future;
  auto running = queue.submit({tagged(1)}, in(milliseconds(50)));  // taken at once: its deadline no longer applies
  ASSERT_TRUE(eventually([&] { return queue.running() == 1; }));
  const auto t0 = Clock::now();
  auto late = queue.submit({tagged(2)}, in(milliseconds(100)));
  const auto r = queue.wait(late.ticket);
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  ASSERT_EQ(r.at(0).status, ImageStatus::TimedOut);
  EXPECT_GE(ms, 90.0);
  EXPECT_LT(ms, 5000.0) << "answered while the model is still busy";
  EXPECT_EQ(queue.queued(), 0u);
  gate.open();
  EXPECT_EQ(queue.wait(running.ticket).at(0).status, ImageStatus::Done);
  EXPECT_EQ(model.seen(), (std::vector<size_t>{1})) << "the timed-out image never reached the model";
}

TEST(RequestQueue, CloseAnswersEverythingQueuedThenRefuses) {
  FakeModel model;
  model.sleep = milliseconds(20);
  RequestQueue queue(opts(2, milliseconds(50)), model.fn());
  std::vector<RequestQueue::Submission> subs;
  for (int64_t tag = 1; tag <= 9; ++tag) subs.push_back(queue.submit({tagged(tag)}, in(milliseconds(60000))));
  queue.close();
  EXPECT_EQ(queue.submit({tagged(99)}, in(milliseconds(60000))).admission, Admission::Closed);
  EXPECT_TRUE(queue.wait_idle(in(milliseconds(20000))));
  for (size_t i = 0; i < subs.size(); ++i) {
    ASSERT_EQ(subs[i].admission, Admission::Accepted);
    const auto r = queue.wait(subs[i].ticket);
    EXPECT_EQ(r.at(0).status, ImageStatus::Done) << i;
    EXPECT_EQ(r[0].detections.image_height, static_cast<int64_t>(i + 1));
  }
  size_t total = 0;
  for (size_t n : model.seen()) {
    EXPECT_LE(n, 2u);
    total += n;
  }
  EXPECT_EQ(total, 9u);
}

TEST(RequestQueue, RejectQueuedAnswersTheWaitingOnes) {
  FakeModel model;
  RequestQueue queue(opts(1, milliseconds(0)), model.fn());
  Gate gate;
  model.gate = gate.future;
  auto running = queue.submit({tagged(1)}, in(milliseconds(60000)));
  ASSERT_TRUE(eventually([&] { return queue.running() == 1; }));
  auto waiting = queue.submit({tagged(2), tagged(3)}, in(milliseconds(60000)));
  queue.reject_queued("shutting down");
  const auto r = queue.wait(waiting.ticket);
  ASSERT_EQ(r.size(), 2u);
  for (const auto& x : r) {
    EXPECT_EQ(x.status, ImageStatus::Rejected);
    EXPECT_EQ(x.error, "shutting down");
  }
  gate.open();
  EXPECT_EQ(queue.wait(running.ticket).at(0).status, ImageStatus::Done);
}

TEST(RequestQueue, AFailedBatchIsRetriedImageByImage) {
  FakeModel model;
  model.poison = 13;
  std::mutex reports_mutex;
  std::vector<std::pair<size_t, bool>> reports;
  RequestQueue queue(opts(3, milliseconds(0)), model.fn(), [&](const RequestQueue::BatchReport& r) {
    std::lock_guard<std::mutex> lock(reports_mutex);
    reports.emplace_back(r.images, r.ok);
  });
  auto s = queue.submit({tagged(10), tagged(13), tagged(12)}, in(milliseconds(60000)));
  const auto r = queue.wait(s.ticket);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].status, ImageStatus::Done);
  EXPECT_EQ(r[1].status, ImageStatus::Failed);
  EXPECT_EQ(r[1].error, "poisoned image");
  EXPECT_EQ(r[2].status, ImageStatus::Done);
  EXPECT_EQ(r[2].detections.image_height, 12);
  std::lock_guard<std::mutex> lock(reports_mutex);
  EXPECT_EQ(reports, (std::vector<std::pair<size_t, bool>>{{3, false}, {1, true}, {1, false}, {1, true}}));
}

TEST(RequestQueue, EmptyRequestIsAnsweredAtOnce) {
  FakeModel model;
  RequestQueue queue(opts(2, milliseconds(5)), model.fn());
  auto s = queue.submit({}, in(milliseconds(60000)));
  ASSERT_EQ(s.admission, Admission::Accepted);
  EXPECT_TRUE(queue.wait(s.ticket).empty());
}

}  // namespace
