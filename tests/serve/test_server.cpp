// The server over real sockets: in-process servers on 127.0.0.1, a free port
// each, a tiny random model (serve_test_util.h), httplib's client and raw
// sockets. Answers are compared with the library's own predict JSON.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "serve/server.h"
#include "serve/serve_test_util.h"
#include "support/temp_dir.h"

// Last: httplib.h pulls in <resolv.h>, whose macros (T_A, QUERY, STATUS, ...)
// must not reach the headers above.
#include <httplib.h>

using namespace maskrcnn::testing;
using maskrcnn::serve::ServeOptions;
using maskrcnn::serve::Server;
using std::chrono::milliseconds;

namespace {

class ServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<TempDir>("serve");
    weights_ = write_tiny_model(dir_->path().string());
    png_ = png_bytes(dir_->path().string(), 120, 160);
    png_small_ = png_bytes(dir_->path().string(), 90, 70, true, 2);
    png_flat_ = png_bytes(dir_->path().string(), 32, 40, false);
  }
  static void TearDownTestSuite() { dir_.reset(); }

  static ServeOptions options() {
    ServeOptions o;
    o.weights = weights_;
    o.port = 0;
    o.threads = 2;
    o.http_threads = 16;
    o.keep_alive_s = 1;  // a drain waits for idle keep-alive connections
    o.drain_s = 20;
    o.request_timeout_s = 30;
    return o;
  }

  // A started server; waits for the model unless told not to.
  std::unique_ptr<Server> serve(ServeOptions o, bool wait_ready = true) {
    auto s = std::make_unique<Server>(std::move(o));
    s->start();
    EXPECT_GT(s->port(), 0);
    if (wait_ready) {
      EXPECT_TRUE(eventually([&] { return s->ready() || !s->load_error().empty(); })) << "model never loaded";
      EXPECT_EQ(s->load_error(), "");
    }
    return s;
  }

  static std::unique_ptr<httplib::Client> client(const Server& s) {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", s.port());
    c->set_connection_timeout(5, 0);
    c->set_read_timeout(60, 0);
    c->set_write_timeout(60, 0);
    return c;
  }

  static httplib::Result post_image(const Server& s, const std::string& bytes, const std::string& query = "") {
    return client(s)->Post("/v1/predict" + query, bytes, "image/png");
  }

  static nlohmann::json json_of(const httplib::Result& r) {
    if (!r) return nlohmann::json();
    return nlohmann::json::parse(r->body, nullptr, false);
  }

  static std::unique_ptr<TempDir> dir_;
  static std::string weights_, png_, png_small_, png_flat_;
};

std::unique_ptr<TempDir> ServeTest::dir_;
std::string ServeTest::weights_, ServeTest::png_, ServeTest::png_small_, ServeTest::png_flat_;

TEST_F(ServeTest, HealthReadinessModelPageAndMetrics) {
  auto s = serve(options());
  auto c = client(*s);
  auto r = c->Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = c->Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = c->Get("/v1/model");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const auto model = nlohmann::json::parse(r->body);
  EXPECT_EQ(model["architecture"], "maskrcnn_resnet50_fpn");
  EXPECT_EQ(model["backbone"], "resnet18");
  EXPECT_EQ(model["classes"], nlohmann::json({"__background__", "circle", "square", "triangle"}));
  EXPECT_EQ(model["min_size"], 96);
  EXPECT_EQ(model["max_size"], 128);
  EXPECT_EQ(model["device"], "cpu");
  EXPECT_TRUE(model["precision"] == "f32" || model["precision"] == "bf16");
  EXPECT_EQ(model["model"], "tiny.pth");
  r = c->Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/html", 0), 0u);
  for (const char* id : {"file-input", "drop-zone", "canvas", "score-slider", "detections", "timing",
                         "class-toggles", "status"})
    EXPECT_NE(r->body.find(std::string("id=\"") + id + "\""), std::string::npos) << id;
  EXPECT_EQ(r->body.find("http://"), std::string::npos) << "the page loads nothing from the network";
  r = c->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
  EXPECT_NE(r->body.find("\nmaskrcnn_ready 1\n"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("maskrcnn_http_requests_total{route=\"/healthz\",code=\"200\"} 1"), std::string::npos)
      << r->body;
  r = c->Get("/no/such/route");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(json_of(r).contains("error")) << r->body;
}

TEST_F(ServeTest, ReadyzIs503UntilTheModelIsLoaded) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  ServeOptions o = options();
  o.before_load = [released] { released.wait(); };
  auto s = serve(o, false);
  struct Release {  // the server's destructor joins the loading thread
    std::promise<void>& p;
    bool done = false;
    void operator()() {
      if (!done) p.set_value();
      done = true;
    }
    ~Release() { (*this)(); }
  } unblock{release};
  auto c = client(*s);
  auto r = c->Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = c->Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(json_of(r)["status"], "loading");
  r = c->Get("/v1/model");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  r = post_image(*s, png_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_FALSE(r->get_header_value("Retry-After").empty());
  unblock();
  ASSERT_TRUE(eventually([&] {
    auto x = c->Get("/readyz");
    return x && x->status == 200;
  }));
  r = post_image(*s, png_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServeTest, PredictEqualsTheLibrarysJson) {
  auto s = serve(options());
  auto r = post_image(*s, png_);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  const auto body = nlohmann::json::parse(r->body);
  EXPECT_EQ(body["model"], "tiny.pth");
  ASSERT_EQ(body["images"].size(), 1u);
  const auto& image = body["images"][0];
  EXPECT_EQ(image["width"], 160);
  EXPECT_EQ(image["height"], 120);
  ASSERT_GT(image["detections"].size(), 0u) << "a random model finds plenty";
  expect_same_detections(image["detections"], library_records(weights_, png_));
  for (const char* k : {"decode", "queue", "inference", "encode", "total"})
    EXPECT_TRUE(body["timing_ms"].contains(k)) << k;
  EXPECT_GE(body["timing_ms"]["total"].get<double>(), body["timing_ms"]["inference"].get<double>());
}

TEST_F(ServeTest, QueryThresholdsEqualAModelBuiltWithThem) {
  auto s = serve(options());
  auto r = post_image(*s, png_);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const auto all = nlohmann::json::parse(r->body)["images"][0]["detections"];
  ASSERT_GE(all.size(), 4u);
  // A threshold in the middle of this model's scores (its scores sit near 1/4).
  const double thresh = all[all.size() / 2]["score"].get<double>();
  const std::string query = "?score_thresh=" + nlohmann::json(thresh).dump() + "&max_detections=3&mask_thresh=0.6";
  r = post_image(*s, png_, query);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << query << ": " << r->body;
  const auto dets = nlohmann::json::parse(r->body)["images"][0]["detections"];
  EXPECT_GT(dets.size(), 0u);
  EXPECT_LE(dets.size(), 3u);
  for (const auto& d : dets) EXPECT_GT(d["score"].get<double>(), thresh);
  expect_same_detections(dets, library_records(weights_, png_, thresh, 3, 0.6));
}

TEST_F(ServeTest, MultipartWithTwoImages) {
  auto s = serve(options());
  httplib::MultipartFormDataItems items{
      {"image", png_, "big.png", "image/png"},
      {"note", "ignored: not an image part", "", "text/plain"},
      {"image", png_small_, "small.png", "image/png"},
  };
  auto r = client(*s)->Post("/v1/predict", items);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const auto body = nlohmann::json::parse(r->body);
  ASSERT_EQ(body["images"].size(), 2u);
  EXPECT_EQ(body["images"][0]["width"], 160);
  EXPECT_EQ(body["images"][1]["width"], 70);
  // Images of different sizes never share a forward pass: each equals its own predict.
  expect_same_detections(body["images"][0]["detections"], library_records(weights_, png_));
  expect_same_detections(body["images"][1]["detections"], library_records(weights_, png_small_));
}

TEST_F(ServeTest, BadInputIs400WithAMessageAndHurtsNothing) {
  auto s = serve(options());
  const auto expect_400 = [&](const httplib::Result& r, const std::string& words) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    const auto j = json_of(r);
    ASSERT_TRUE(j.contains("error")) << r->body;
    EXPECT_NE(j["error"].get<std::string>().find(words), std::string::npos) << r->body;
  };
  expect_400(client(*s)->Post("/v1/predict", std::string("this is not an image"), "image/jpeg"),
             "not a JPEG, PNG or BMP");
  expect_400(client(*s)->Post("/v1/predict", std::string(), "image/png"), "empty request body");
  expect_400(post_image(*s, png_.substr(0, 20)), "truncated PNG");
  expect_400(post_image(*s, png_, "?score_thresh=abc"), "score_thresh");
  expect_400(post_image(*s, png_, "?score_thresh=0.01"), "score_thresh");
  expect_400(post_image(*s, png_, "?mask_thresh=2"), "mask_thresh");
  expect_400(post_image(*s, png_, "?max_detections=0"), "max_detections");
  expect_400(post_image(*s, png_, "?max_detections=1000"), "max_detections");
  expect_400(post_image(*s, png_, "?colour=red"), "unknown query parameter");
  httplib::MultipartFormDataItems no_image{{"file", png_, "a.png", "image/png"}};
  expect_400(client(*s)->Post("/v1/predict", no_image), "part named \"image\"");
  auto r = post_image(*s, png_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServeTest, ExplainAnswersTheReportOfThePhoto) {
  auto s = serve(options());
  auto r = client(*s)->Post("/v1/explain", png_, "image/png");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 300);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/html; charset=utf-8");
  size_t at = 0;
  for (const char* id : {"transform", "backbone", "anchors", "rpn", "box-head", "roi-align", "mask-head", "result"}) {
    const size_t pos = r->body.find(std::string("id=\"") + id + "\"");
    ASSERT_NE(pos, std::string::npos) << id;
    EXPECT_GT(pos, at) << id << " out of order";
    at = pos;
  }
  EXPECT_NE(r->body.find("data:image/png;base64,"), std::string::npos);
  // The report's detections are predict's for the same image and thresholds.
  const auto records = library_records(weights_, png_);
  EXPECT_NE(r->body.find(" " + std::to_string(records.size()) + " detections &middot;"), std::string::npos);
  const auto expect_400 = [&](const httplib::Result& bad) {
    ASSERT_TRUE(bad);
    EXPECT_EQ(bad->status, 400) << bad->body;
    EXPECT_TRUE(json_of(bad).contains("error")) << bad->body;
  };
  expect_400(client(*s)->Post("/v1/explain", std::string("this is not an image"), "image/jpeg"));
  expect_400(client(*s)->Post("/v1/explain", std::string(), "image/png"));
  auto after = post_image(*s, png_);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200);
}

TEST_F(ServeTest, TooManyPixelsIs400) {
  ServeOptions o = options();
  o.max_pixels = 10000;  // the 120 x 160 image has 19200
  auto s = serve(o);
  auto r = post_image(*s, png_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(json_of(r)["error"].get<std::string>().find("limit"), std::string::npos) << r->body;
  r = post_image(*s, png_flat_);  // 32 x 40 fits
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServeTest, OversizedBodyIs413) {
  ServeOptions o = options();
  o.max_body_bytes = 16 << 10;
  auto s = serve(o);
  ASSERT_GT(png_.size(), size_t{16} << 10);
  auto r = post_image(*s, png_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(json_of(r).contains("error")) << r->body;
  httplib::MultipartFormDataItems items{{"image", png_, "big.png", "image/png"}};
  r = client(*s)->Post("/v1/predict", items);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  r = post_image(*s, png_flat_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// A slow model: the first request runs while the second waits in a queue of
// one; the third finds the queue full.
TEST_F(ServeTest, FullQueueIs503WithRetryAfter) {
  std::atomic<int> calls{0};
  ServeOptions o = options();
  o.max_queue = 1;
  o.max_batch = 1;
  o.max_delay_ms = 0;
  o.before_batch = [&calls](size_t) {
    if (calls.fetch_add(1) == 0) std::this_thread::sleep_for(milliseconds(1500));
  };
  auto s = serve(o);
  auto first = std::async(std::launch::async, [&] { return post_image(*s, png_flat_); });
  ASSERT_TRUE(eventually([&] { return calls.load() >= 1; }));
  auto second = std::async(std::launch::async, [&] { return post_image(*s, png_flat_); });
  ASSERT_TRUE(eventually([&] { return s->queued_images() == 1; }));
  auto r = post_image(*s, png_flat_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503) << r->body;
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  // Two images in one request can never fit a queue of one.
  httplib::MultipartFormDataItems two{{"image", png_flat_, "a.png", "image/png"},
                                      {"image", png_flat_, "b.png", "image/png"}};
  r = client(*s)->Post("/v1/predict", two);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  auto a = first.get();
  auto b = second.get();
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  EXPECT_EQ(a->status, 200);
  EXPECT_EQ(b->status, 200);
}

TEST_F(ServeTest, WaitingPastTheTimeoutIs504) {
  std::atomic<int> calls{0};
  ServeOptions o = options();
  o.max_batch = 1;
  o.max_delay_ms = 0;
  o.request_timeout_s = 0.3;
  o.before_batch = [&calls](size_t) {
    if (calls.fetch_add(1) == 0) std::this_thread::sleep_for(milliseconds(2000));
  };
  auto s = serve(o);
  auto first = std::async(std::launch::async, [&] { return post_image(*s, png_flat_); });
  ASSERT_TRUE(eventually([&] { return calls.load() >= 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  auto r = post_image(*s, png_flat_);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504) << r->body;
  EXPECT_LT(waited, 1.8) << "answered at its deadline, not when the model got to it";
  auto a = first.get();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->status, 200) << "the request that was running is not disturbed";
}

TEST_F(ServeTest, ModelErrorIs500AndTheServerKeepsServing) {
  std::atomic<bool> fail{true};
  ServeOptions o = options();
  o.before_batch = [&fail](size_t) {
    if (fail.load()) throw std::runtime_error("simulated model failure");
  };
  auto s = serve(o);
  auto r = post_image(*s, png_flat_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_NE(json_of(r)["error"].get<std::string>().find("simulated model failure"), std::string::npos) << r->body;
  fail = false;
  r = post_image(*s, png_flat_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServeTest, ConcurrentClientsAllGetAnswers) {
  auto s = serve(options());
  constexpr int kThreads = 8, kRequests = 3;
  std::vector<std::future<std::vector<int>>> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.push_back(std::async(std::launch::async, [&] {
      std::vector<int> codes;
      auto c = client(*s);
      for (int i = 0; i < kRequests; ++i) {
        auto r = c->Post("/v1/predict", png_small_, "image/png");
        codes.push_back(r ? r->status : -1);
        if (r && r->status == 200) {
          const auto j = nlohmann::json::parse(r->body, nullptr, false);
          if (!j.is_object() || j["images"].size() != 1 || !j["images"][0]["detections"].is_array()) codes.back() = -2;
        }
      }
      return codes;
    }));
  }
  for (auto& f : clients)
    for (int code : f.get()) EXPECT_EQ(code, 200);
  auto m = client(*s)->Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("\nmaskrcnn_images_processed_total 24\n"), std::string::npos) << m->body;
  // Requests are counted once their answer is written, which the client may see first.
  EXPECT_TRUE(eventually([&] {
    auto x = client(*s)->Get("/metrics");
    return x && x->body.find("maskrcnn_http_requests_total{route=\"/v1/predict\",code=\"200\"} 24\n") !=
                    std::string::npos;
  }));
}

TEST_F(ServeTest, ClientLeavingMidBodyDoesNotHurtTheNextRequest) {
  auto s = serve(options());
  const int fd = connect_loopback(s->port());
  ASSERT_GE(fd, 0);
  const std::string head = "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                           "Content-Length: " + std::to_string(png_.size()) + "\r\n\r\n";
  ASSERT_TRUE(send_all(fd, head.data(), head.size()));
  ASSERT_TRUE(send_all(fd, png_.data(), png_.size() / 3));
  ::close(fd);
  auto r = post_image(*s, png_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  expect_same_detections(nlohmann::json::parse(r->body)["images"][0]["detections"], library_records(weights_, png_));
}

TEST_F(ServeTest, SlowClientSendingByteByByteGets200) {
  auto s = serve(options());
  const int fd = connect_loopback(s->port());
  ASSERT_GE(fd, 0);
  const std::string request = "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                              "Connection: close\r\nContent-Length: " + std::to_string(png_flat_.size()) +
                              "\r\n\r\n" + png_flat_;
  ASSERT_LT(request.size(), 1000u) << "a flat PNG is small";
  for (char ch : request) {
    ASSERT_TRUE(send_all(fd, &ch, 1));
    std::this_thread::sleep_for(milliseconds(1));
  }
  const std::string response = receive_all(fd);
  ::close(fd);
  EXPECT_EQ(status_of(response), 200) << response.substr(0, 300);
  const auto body = nlohmann::json::parse(body_of(response), nullptr, false);
  ASSERT_TRUE(body.is_object()) << response.substr(0, 300);
  EXPECT_EQ(body["images"][0]["width"], 40);
}

// What SIGTERM does in `maskrcnn serve`: drain() while requests are queued
// and running. Every request already received is answered; then the port is closed.
TEST_F(ServeTest, DrainAnswersEveryRequestInFlight) {
  std::atomic<size_t> taken{0};
  ServeOptions o = options();
  o.max_batch = 2;
  o.before_batch = [&taken](size_t images) {
    taken.fetch_add(images);
    std::this_thread::sleep_for(milliseconds(200));
  };
  auto s = serve(o);
  const int port = s->port();
  constexpr int kRequests = 6;
  std::vector<std::future<int>> pending;
  for (int i = 0; i < kRequests; ++i) {
    pending.push_back(std::async(std::launch::async, [&] {
      auto r = post_image(*s, png_flat_);
      return r ? r->status : -1;
    }));
  }
  // Every request submitted (taken by the model or queued), most still waiting.
  ASSERT_TRUE(eventually([&] { return taken.load() + s->queued_images() == static_cast<size_t>(kRequests); }));
  EXPECT_GT(s->queued_images(), 0u);
  EXPECT_TRUE(s->drain());
  for (auto& f : pending) EXPECT_EQ(f.get(), 200);
  httplib::Client after("127.0.0.1", port);
  after.set_connection_timeout(2, 0);
  auto r = after.Get("/healthz");
  EXPECT_FALSE(r) << "the port is closed after the drain";
}

TEST_F(ServeTest, PortInUseIsAnError) {
  auto s = serve(options(), false);
  ServeOptions o = options();
  o.port = s->port();
  Server second(o);
  EXPECT_THROW(second.start(), maskrcnn::Error);
}

}  // namespace
