// `maskrcnn serve`: an HTTP/1.1 model server (cpp-httplib underneath, kept
// out of this header).
//
//   GET  /            the web page (page.h)
//   GET  /healthz     200 while the process serves
//   GET  /readyz      503 until the model is loaded and warmed up, then 200
//   GET  /v1/model    architecture, classes, input sizes, precision, device
//   GET  /metrics     Prometheus text (metrics.h)
//   POST /v1/predict  an image as the body, or multipart parts named "image";
//                     ?score_thresh=&mask_thresh=&max_detections=
//
// Every connection's images go through one RequestQueue into the model. The
// model is loaded on a background thread after the port is bound, so that
// /healthz and /readyz answer while it loads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "maskrcnn/config.h"

namespace maskrcnn {
class MaskRCNN;
}

namespace maskrcnn::serve {

struct ServeOptions {
  // The model, as `maskrcnn predict` takes it.
  std::string weights;  // a .pth (and its sidecar .json when there is one)
  std::optional<Arch> arch;
  std::optional<int> num_classes;
  std::optional<int> min_size, max_size;
  std::vector<std::string> class_names;  // label -> name; empty: the model's
  double score_thresh = 0.05;  // the loosest a request may ask for
  double mask_thresh = 0.5;    // a request's default
  int max_detections = 100;    // the most a request may ask for
  int64_t max_pixels = 40'000'000;  // larger images are refused from their header (400)
  std::string device = "cpu";
  int threads = 0;  // CPU threads of the model (process-wide); 0: all cores

  // HTTP.
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: a free port, see Server::port()
  int http_threads = 16;  // connections served at once; more wait to be accepted
  size_t max_body_bytes = size_t{32} << 20;  // larger bodies: 413
  double request_timeout_s = 60;  // longest wait in the queue: then 504
  double drain_s = 30;            // SIGTERM/SIGINT: longest wait for what is queued
  int keep_alive_s = 5;           // idle keep-alive connections are closed after this
  int read_timeout_s = 15;        // a client that sends nothing for this long is dropped

  // Batching.
  int max_batch = 4;
  double max_delay_ms = 5;
  int max_queue = 64;  // images waiting; a request that does not fit: 503

  // For tests: run on the loading thread before the weights are read, and on
  // the batcher thread before each model call with the batch's image count
  // (sleep to make the model slow; throw to make it fail).
  std::function<void()> before_load;
  std::function<void(size_t images)> before_batch;
};
// Throws maskrcnn::Error naming the first option out of its range.
void check_serve_options(const ServeOptions& options);
// GET /v1/model's JSON: architecture, classes, input sizes, precision, device, limits.
std::string describe_model(const MaskRCNN& model, const std::vector<std::string>& names,
                           const ServeOptions& options);


class Server {
 public:
  explicit Server(ServeOptions options);
  // drain(), then joins every thread (the model loading included).
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Checks the options and the device, binds host:port, starts answering and
  // starts loading the model. Returns once connections are being accepted.
  // Throws maskrcnn::Error for bad options or an address that cannot be bound.
  void start();
  int port() const;         // the bound port (the chosen one when options.port is 0)
  std::string url() const;  // http://host:port
  bool ready() const;       // model loaded and warmed up
  // The model failed to load: its one-line error (empty otherwise). The
  // server keeps answering /healthz; run_server stops on it.
  std::string load_error() const;
  size_t queued_images() const;

  // Graceful stop: stops accepting connections, answers every request already
  // received (their queued images run), then stops the batcher. After
  // options.drain_s, images still queued are answered 503 and drain returns
  // false if a handler is still busy (a model call in progress). Idempotent.
  bool drain();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The command: start, print "serving on http://HOST:PORT" to stdout once the
// port is bound, serve until SIGTERM or SIGINT, drain (the process ends
// within options.drain_s even if a model call holds on), return 0. Throws
// maskrcnn::Error when the server cannot start or the model fails to load.
int run_server(const ServeOptions& options);

}  // namespace maskrcnn::serve
