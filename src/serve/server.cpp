// The HTTP side of `maskrcnn serve`: routes, limits, the model's loading and
// the hand-over to the RequestQueue. httplib.h is included here only: it must
// see the macros its library was built with (pkg-config's cpp-httplib
// Cflags, which CMake passes on), or its structs do not match the library's.
#include "serve/server.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "maskrcnn/cpu_settings.h"
#include "maskrcnn/error.h"
#include "maskrcnn/explain.h"
#include "maskrcnn/image.h"
#include "maskrcnn/model.h"
#include "serve/metrics.h"
#include "serve/page.h"
#include "serve/predict_response.h"
#include "serve/request_queue.h"

// Last: httplib.h pulls in <resolv.h>, whose macros (T_A, QUERY, STATUS, ...)
// must not reach the headers above.
#include <httplib.h>

namespace maskrcnn::serve {
namespace {

using Clock = std::chrono::steady_clock;
using HandlerResponse = httplib::Server::HandlerResponse;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

double round_ms(double ms) { return std::round(ms * 1000.0) / 1000.0; }

// 0.3, not std::to_string's 0.300000.
std::string number(double v) { return nlohmann::json(v).dump(); }

void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, status, nlohmann::json{{"error", message}});
}

// The routes /metrics counts by; anything else is "other".
std::string route_of(const std::string& path) {
  for (const char* r : {"/", "/healthz", "/readyz", "/v1/model", "/v1/predict", "/v1/explain", "/metrics"})
    if (path == r) return r;
  return "other";
}

// A request body: the image bytes, or every part of a multipart form.
struct Upload {
  struct Part {
    std::string name, filename, bytes;
  };
  std::vector<Part> parts;
  bool multipart = false;
  bool too_large = false;
};

// Reads the whole body, at most `limit` bytes of content. httplib refuses a
// Content-Length over its own limit (the same) with 413; a chunked body has no
// length up front and is counted here. False when the body was not all read.
bool read_upload(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader,
                 size_t limit, Upload& up) {
  size_t total = 0;
  const auto take = [&](std::string& into, const char* data, size_t n) {
    total += n;
    if (total > limit) {
      up.too_large = true;
      return false;
    }
    into.append(data, n);
    return true;
  };
  bool ok = false;
  if (req.is_multipart_form_data()) {
    up.multipart = true;
    ok = reader(
        [&](const httplib::MultipartFormData& part) {
          up.parts.push_back(Upload::Part{part.name, part.filename, std::string()});
          return true;
        },
        [&](const char* data, size_t n) { return up.parts.empty() || take(up.parts.back().bytes, data, n); });
  } else {
    up.parts.push_back(Upload::Part{"image", "", std::string()});
    ok = reader([&](const char* data, size_t n) { return take(up.parts.back().bytes, data, n); });
  }
  if (!ok && res.status == 413) up.too_large = true;
  return ok && !up.too_large;
}

}  // namespace

struct Server::Impl {
  explicit Impl(ServeOptions o) : options(std::move(o)) {}

  void start();
  bool drain();
  void install_routes();
  void configure_http();
  void bind_port();
  void start_listening();
  void load_model_in_background();
  std::vector<Detections> run_batch(const std::vector<at::Tensor>& images);
  void handle_predict(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader);
  void answer_predict(const httplib::Request& req, httplib::Response& res, const Upload& up);
  void handle_explain(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader);

  ServeOptions options;
  Metrics metrics;
  httplib::Server http;
  std::unique_ptr<RequestQueue> queue;
  at::Device device{at::kCPU};
  int port = -1;
  std::atomic<bool> started{false}, ready{false}, draining{false};
  std::thread listener, loader;
  std::promise<void> listener_done;
  std::shared_future<void> listener_finished;

  mutable std::mutex model_mutex;  // guards the four below
  std::shared_ptr<const MaskRCNN> model;
  std::vector<std::string> class_names;
  std::string model_json;  // GET /v1/model
  std::string load_error;

  std::mutex explain_mutex;  // one explain at a time: it holds every intermediate
  std::mutex drain_mutex;
  bool drained = false;
  bool drained_cleanly = true;
};

void Server::Impl::start() {
  if (started.exchange(true)) throw Error("the server is already started");
  check_serve_options(options);
  // A client that closes its socket before the answer is written must cost
  // that answer, not the process (SIGPIPE's default action).
  std::signal(SIGPIPE, SIG_IGN);
  device = parse_device(options.device);  // before anything is bound or loaded
  at::set_num_threads(options.threads > 0 ? options.threads
                                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  RequestQueue::Options q;
  q.max_batch = static_cast<size_t>(options.max_batch);
  q.max_delay = seconds(options.max_delay_ms / 1000.0);
  q.max_queue = static_cast<size_t>(options.max_queue);
  queue = std::make_unique<RequestQueue>(
      q, [this](const std::vector<at::Tensor>& images) { return run_batch(images); },
      [this](const RequestQueue::BatchReport& r) { metrics.observe_batch(r.images, r.seconds, r.ok); });
  install_routes();
  configure_http();
  bind_port();
  start_listening();
  load_model_in_background();
}

void Server::Impl::configure_http() {
  http.set_payload_max_length(options.max_body_bytes);
  http.set_keep_alive_max_count(1000);
  http.set_keep_alive_timeout(options.keep_alive_s);
  http.set_read_timeout(options.read_timeout_s, 0);
  http.set_write_timeout(30, 0);
  // Small answers on keep-alive connections would otherwise wait for the
  // client's delayed ACK (Nagle): ~40 ms a request.
  http.set_tcp_nodelay(true);
  // httplib's default sets SO_REUSEPORT, which lets a second server bind a
  // port that is in use and silently share its connections.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  const size_t threads = static_cast<size_t>(options.http_threads);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
}

void Server::Impl::bind_port() {
  if (options.port == 0) {
    port = http.bind_to_any_port(options.host);
    if (port < 0) throw Error("cannot listen on " + options.host + " (not an address of this machine?)");
  } else {
    if (!http.bind_to_port(options.host, options.port))
      throw Error("cannot listen on " + options.host + ":" + std::to_string(options.port) +
                  " (port in use, or not an address of this machine)");
    port = options.port;
  }
}

void Server::Impl::start_listening() {
  listener_finished = listener_done.get_future().share();
  listener = std::thread([this] {
    http.listen_after_bind();
    listener_done.set_value();
  });
  // httplib's stop() does nothing before the loop runs: a drain right after
  // start would be lost. Return only once it runs.
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (!http.is_running()) {
    if (listener_finished.wait_for(std::chrono::milliseconds(1)) == std::future_status::ready)
      throw Error("the HTTP server on " + options.host + ":" + std::to_string(port) + " stopped at once");
    if (Clock::now() > until) throw Error("the HTTP server did not start");
  }
}

void Server::Impl::load_model_in_background() {
  loader = std::thread([this] {
    try {
      at::init_num_threads();  // this thread's share of at::set_num_threads
      if (options.before_load) options.before_load();
      const auto t0 = Clock::now();
      ModelOverrides o;
      o.arch = options.arch;
      o.num_classes = options.num_classes;
      o.min_size = options.min_size;
      o.max_size = options.max_size;
      o.box_score_thresh = options.score_thresh;
      o.box_detections_per_img = options.max_detections;
      auto m = std::make_shared<MaskRCNN>(load_model(options.weights, o));
      m->to(device);
      std::vector<std::string> names = options.class_names.empty() ? m->class_names() : options.class_names;
      // Warm-up: the first pass builds oneDNN's primitives and grows the
      // heap (seconds on a CPU). Ready means the first request does not pay
      // for it. A textured image, so that detections reach the mask head.
      const int64_t side = m->config().min_size;
      const at::Tensor warm = (at::arange(3 * side * side, at::kLong) * int64_t{2654435761})
                                  .remainder(256)
                                  .to(at::kByte)
                                  .view({3, side, side});
      m->predict({warm});
      const std::string info = describe_model(*m, names, options);
      {
        std::lock_guard<std::mutex> lock(model_mutex);
        model = m;
        class_names = std::move(names);
        model_json = info;
      }
      ready.store(true);
      std::fprintf(stderr, "maskrcnn serve: model %s loaded and warmed up in %.1f s\n", options.weights.c_str(),
                   ms_since(t0) / 1000.0);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(model_mutex);
      load_error = describe_exception(e);
      std::fprintf(stderr, "maskrcnn serve: error: %s\n", load_error.c_str());
    }
  });
}

std::vector<Detections> Server::Impl::run_batch(const std::vector<at::Tensor>& images) {
  static thread_local const bool threads_set = (at::init_num_threads(), true);
  (void)threads_set;
  if (options.before_batch) options.before_batch(images.size());
  std::shared_ptr<const MaskRCNN> m;
  {
    std::lock_guard<std::mutex> lock(model_mutex);
    m = model;
  }
  if (!m) throw Error("the model is not loaded");
  // Only images of one size share a forward pass. The model pads a batch to
  // its largest image, and the padding changes the feature maps near a
  // smaller image's edges and the anchors it gets: its detections would
  // depend on what else came in, and differ from `maskrcnn predict`'s.
  std::vector<Detections> out(images.size());
  std::vector<bool> done(images.size(), false);
  for (size_t i = 0; i < images.size(); ++i) {
    if (done[i]) continue;
    std::vector<size_t> group;
    std::vector<at::Tensor> batch;
    for (size_t j = i; j < images.size(); ++j) {
      if (!done[j] && images[j].sizes() == images[i].sizes()) {
        group.push_back(j);
        batch.push_back(images[j]);
        done[j] = true;
      }
    }
    std::vector<Detections> dets = m->predict(batch);
    if (dets.size() != batch.size()) throw Error("the model answered " + std::to_string(dets.size()) + " of " +
                                                 std::to_string(batch.size()) + " images");
    for (size_t k = 0; k < group.size(); ++k) out[group[k]] = std::move(dets[k]);
  }
  return out;
}

void Server::Impl::install_routes() {
  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    const std::string_view page = index_html();
    res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
  });
  http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, nlohmann::json{{"status", "ok"}});
  });
  http.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    // Draining: a load balancer should stop sending here.
    if (draining.load()) return send_json(res, 503, nlohmann::json{{"status", "draining"}});
    if (ready.load()) return send_json(res, 200, nlohmann::json{{"status", "ready"}});
    std::lock_guard<std::mutex> lock(model_mutex);
    if (!load_error.empty()) return send_json(res, 503, nlohmann::json{{"status", "failed"}, {"error", load_error}});
    send_json(res, 503, nlohmann::json{{"status", "loading"}});
  });
  http.Get("/v1/model", [this](const httplib::Request&, httplib::Response& res) {
    if (!ready.load()) return send_error(res, 503, "the model is not loaded yet");
    std::lock_guard<std::mutex> lock(model_mutex);
    res.set_content(model_json, "application/json");
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    Gauges g;
    g.queue_length = queue->queued();
    g.running_images = queue->running();
    g.ready = ready.load();
    res.set_content(metrics.prometheus_text(g), "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Post("/v1/predict", httplib::Server::HandlerWithContentReader(
                               [this](const httplib::Request& req, httplib::Response& res,
                                      const httplib::ContentReader& reader) { handle_predict(req, res, reader); }));
  http.Post("/v1/explain", httplib::Server::HandlerWithContentReader(
                               [this](const httplib::Request& req, httplib::Response& res,
                                      const httplib::ContentReader& reader) { handle_explain(req, res, reader); }));
  // Called for every answer with status >= 400: ours carry their JSON body
  // already; httplib's own (404, a malformed request) get one here.
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return HandlerResponse::Unhandled;
        const std::string what = res.status == 404 ? "no such route: " + req.method + " " + req.path
                                 : res.status == 413 ? "request body too large"
                                                     : "HTTP " + std::to_string(res.status);
        send_error(res, res.status, what);
        return HandlerResponse::Handled;
      }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = describe_exception(e);
    } catch (...) {
    }
    send_error(res, 500, what);
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics.count_request(route_of(req.path), res.status);
    if (res.status >= 500 && res.status != 503)
      std::fprintf(stderr, "maskrcnn serve: %s %s: %d %s\n", req.method.c_str(), req.path.c_str(), res.status,
                   res.body.c_str());
  });
}

void Server::Impl::handle_predict(const httplib::Request& req, httplib::Response& res,
                                  const httplib::ContentReader& reader) {
  const auto t0 = Clock::now();
  // Decided when the request arrived: one that came before a drain began is
  // answered, even if its body is still being received.
  const bool arrived_draining = draining.load();
  // The body is read whatever the answer will be: bytes left unread would be
  // taken for the next request on this keep-alive connection.
  Upload up;
  const bool body_ok = read_upload(req, res, reader, options.max_body_bytes, up);
  if (!body_ok) {
    res.set_header("Connection", "close");
    if (up.too_large)
      send_error(res, 413, "request body larger than --max-body-mb (" + std::to_string(options.max_body_bytes) +
                               " bytes)");
    else
      send_error(res, 400, "could not read the request body (connection closed or timed out, or a malformed "
                           "multipart form)");
  } else if (arrived_draining) {
    res.set_header("Retry-After", "5");
    send_error(res, 503, "the server is shutting down");
  } else {
    answer_predict(req, res, up);
  }
  metrics.observe_predict_seconds(ms_since(t0) / 1000.0);
}

void Server::Impl::answer_predict(const httplib::Request& req, httplib::Response& res, const Upload& up) {
  const auto t0 = Clock::now();
  if (!ready.load()) {
    std::lock_guard<std::mutex> lock(model_mutex);
    res.set_header("Retry-After", "5");
    return send_error(res, 503, load_error.empty() ? "the model is loading" : "the model failed to load: " + load_error);
  }
  PredictParams params;
  try {
    params = parse_predict_params(req.params, PredictParams{options.score_thresh, options.mask_thresh,
                                                            options.max_detections});
  } catch (const Error& e) {
    return send_error(res, 400, e.what());
  }
  // The images: the body itself, or the multipart parts named "image".
  std::vector<const Upload::Part*> parts;
  for (const auto& p : up.parts)
    if (!up.multipart || p.name == "image") parts.push_back(&p);
  if (up.multipart && parts.empty()) return send_error(res, 400, "multipart form without a part named \"image\"");
  if (!up.multipart && parts[0]->bytes.empty())
    return send_error(res, 400, "empty request body: send a JPEG, PNG or BMP image as the body, or as multipart "
                                "parts named \"image\"");
  std::vector<at::Tensor> images;
  ImageReadOptions read_options;
  read_options.max_pixels = options.max_pixels;
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto& p = *parts[i];
    const std::string name = !p.filename.empty() ? p.filename
                             : parts.size() > 1  ? "image " + std::to_string(i + 1)
                                                 : std::string("image");
    try {
      images.push_back(decode_image(reinterpret_cast<const uint8_t*>(p.bytes.data()), p.bytes.size(), name,
                                    read_options));
    } catch (const std::exception& e) {
      return send_error(res, 400, describe_exception(e));
    }
  }
  const double decode_ms = ms_since(t0);

  const size_t count = images.size();
  auto submission = queue->submit(std::move(images), Clock::now() + seconds(options.request_timeout_s));
  switch (submission.admission) {
    case Admission::Accepted: break;
    case Admission::QueueFull:
      res.set_header("Retry-After", "1");
      return send_error(res, 503, "the queue is full (--max-queue " + std::to_string(options.max_queue) +
                                      " images); try again shortly");
    case Admission::TooMany:
      return send_error(res, 413, std::to_string(count) + " images in one request; the queue holds at most " +
                                      std::to_string(options.max_queue));
    case Admission::Closed:
      res.set_header("Retry-After", "5");
      return send_error(res, 503, "the server is shutting down");
  }
  const std::vector<ImageResult> results = queue->wait(submission.ticket);

  double queue_ms = 0, inference_ms = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const ImageResult& r = results[i];
    queue_ms = std::max(queue_ms, r.queue_ms);
    inference_ms = std::max(inference_ms, r.inference_ms);
    const std::string which = results.size() > 1 ? "image " + std::to_string(i + 1) + ": " : "";
    if (r.status == ImageStatus::TimedOut)
      return send_error(res, 504, which + r.error + ", past --request-timeout-s " +
                                      number(options.request_timeout_s) + " s");
    if (r.status == ImageStatus::Rejected) {
      res.set_header("Retry-After", "5");
      return send_error(res, 503, which + r.error);
    }
    if (r.status != ImageStatus::Done) return send_error(res, 500, which + "the model failed: " + r.error);
  }

  const auto t_encode = Clock::now();
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(model_mutex);
    names = class_names;
  }
  nlohmann::json out_images = nlohmann::json::array();
  try {
    for (const auto& r : results) {
      const Detections dets = select_detections(r.detections, params.score_thresh, params.max_detections);
      out_images.push_back(image_json(dets, names, params.mask_thresh));
    }
  } catch (const std::exception& e) {
    return send_error(res, 500, "could not encode the detections: " + describe_exception(e));
  }
  const double encode_ms = ms_since(t_encode);
  nlohmann::json body;
  body["model"] = std::filesystem::path(options.weights).filename().string();
  body["images"] = std::move(out_images);
  body["timing_ms"] = {{"decode", round_ms(decode_ms)}, {"queue", round_ms(queue_ms)},
                       {"inference", round_ms(inference_ms)}, {"encode", round_ms(encode_ms)},
                       {"total", round_ms(ms_since(t0))}};
  send_json(res, 200, body);
}

// POST /v1/explain: one image -> the explain report (text/html). It runs on
// the request's thread beside the batcher, one at a time.
void Server::Impl::handle_explain(const httplib::Request& req, httplib::Response& res,
                                  const httplib::ContentReader& reader) {
  Upload up;
  if (!read_upload(req, res, reader, options.max_body_bytes, up)) {
    res.set_header("Connection", "close");
    return send_error(res, up.too_large ? 413 : 400, up.too_large ? "request body larger than --max-body-mb"
                                                                   : "could not read the request body");
  }
  std::shared_ptr<const MaskRCNN> m;
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(model_mutex);
    m = ready.load() ? model : nullptr;
    names = class_names;
  }
  if (!m || draining.load()) {
    res.set_header("Retry-After", "5");
    return send_error(res, 503, draining.load() ? "the server is shutting down" : "the model is loading");
  }
  const Upload::Part* part = nullptr;
  for (const auto& p : up.parts)
    if (!part && (!up.multipart || p.name == "image")) part = &p;
  if (!part || part->bytes.empty()) return send_error(res, 400, "send one JPEG, PNG or BMP image to explain");
  const std::string name = part->filename.empty() ? "image" : part->filename;
  at::Tensor rgb;
  try {
    ImageReadOptions read_options;
    read_options.max_pixels = options.max_pixels;
    rgb = decode_image(reinterpret_cast<const uint8_t*>(part->bytes.data()), part->bytes.size(), name, read_options);
  } catch (const std::exception& e) {
    return send_error(res, 400, describe_exception(e));
  }
  std::unique_lock<std::mutex> one_at_a_time(explain_mutex, std::try_to_lock);
  if (!one_at_a_time.owns_lock()) {
    res.set_header("Retry-After", "5");
    return send_error(res, 503, "another explain is running; try again shortly");
  }
  static thread_local const bool threads_set = (at::init_num_threads(), true);
  (void)threads_set;
  ForwardTrace trace;
  m->predict_traced(rgb, trace);
  ExplainOptions eo;
  eo.title = name;
  res.set_content(render_explain_report(trace, rgb, names, eo), "text/html; charset=utf-8");
}

bool Server::Impl::drain() {
  std::lock_guard<std::mutex> lock(drain_mutex);
  if (drained) return drained_cleanly;
  drained = true;
  draining.store(true);
  const auto start = Clock::now();
  const auto deadline = start + seconds(options.drain_s);
  bool clean = true;
  if (listener.joinable()) {
    // No new connections. The requests in progress finish: their images stay
    // queued and the batcher answers them. listen_after_bind returns when
    // every connection's thread is done.
    http.stop();
    // Keep the last part of the drain time (up to 2 s) to answer what is
    // still queued 503 rather than drop the connections.
    const auto reject_at = deadline - std::min<Clock::duration>(std::chrono::seconds(2), (deadline - start) / 4);
    if (listener_finished.wait_until(reject_at) != std::future_status::ready) {
      if (queue) queue->reject_queued("the server is shutting down");
      clean = listener_finished.wait_until(deadline) == std::future_status::ready;
    }
    if (clean) listener.join();
  }
  if (queue) queue->close();
  drained_cleanly = clean;
  return clean;
}

Server::Server(ServeOptions options) {
  // Before the server's threads exist: the batcher must share malloc's main
  // arena, where freed feature maps are reused (cpu_settings.h).
  tune_allocator_for_inference();
  impl_ = std::make_unique<Impl>(std::move(options));
}

Server::~Server() {
  impl_->drain();
  if (impl_->listener.joinable()) impl_->listener.join();  // a drain that ran out of time
  impl_->queue.reset();  // joins the batcher; it uses the model below
  if (impl_->loader.joinable()) impl_->loader.join();
}

void Server::start() { impl_->start(); }
int Server::port() const { return impl_->port; }

std::string Server::url() const {
  const std::string& h = impl_->options.host;
  return "http://" + (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" + std::to_string(impl_->port);
}

bool Server::ready() const { return impl_->ready.load(); }

std::string Server::load_error() const {
  std::lock_guard<std::mutex> lock(impl_->model_mutex);
  return impl_->load_error;
}

size_t Server::queued_images() const { return impl_->queue ? impl_->queue->queued() : 0; }

bool Server::drain() { return impl_->drain(); }

}  // namespace maskrcnn::serve
