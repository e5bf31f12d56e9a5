// `maskrcnn serve`: an HTTP model server (src/serve). Flags -> ServeOptions ->
// run_server; the model flags and their defaults are `predict`'s.
#include <memory>

#include "commands.h"
#include "maskrcnn/maskrcnn.h"
#include "serve/server.h"

namespace maskrcnn::cli {
namespace {

struct ServeArgs {
  ModelFlags model;  // as `predict` takes it
  double score_thresh = 0.05;
  double mask_thresh = 0.5;
  int64_t max_pixels = 40'000'000;
  int max_detections = 100;
  // HTTP and batching.
  std::string host = "127.0.0.1";
  int port = 8080;
  int http_threads = 16;
  int max_batch = 4;
  double max_delay_ms = 5;
  int max_queue = 64;
  double max_body_mb = 32;
  double request_timeout_s = 60;
  double drain_s = 30;
};

serve::ServeOptions to_options(const ServeArgs& a) {
  serve::ServeOptions o;
  o.weights = model_weights_path(a.model);
  ModelOverrides overrides;
  apply_model_flags(a.model, overrides);
  o.arch = overrides.arch;
  o.num_classes = overrides.num_classes;
  o.min_size = overrides.min_size;
  o.max_size = overrides.max_size;
  if (!a.model.labels_file.empty()) o.class_names = read_labels(a.model.labels_file);
  o.score_thresh = a.score_thresh;
  o.mask_thresh = a.mask_thresh;
  o.max_detections = a.max_detections;
  o.max_pixels = a.max_pixels;
  o.device = a.model.device;
  o.threads = a.model.threads;
  o.host = a.host;
  o.port = a.port;
  o.http_threads = a.http_threads;
  o.max_batch = a.max_batch;
  o.max_delay_ms = a.max_delay_ms;
  o.max_queue = a.max_queue;
  if (!(a.max_body_mb > 0 && a.max_body_mb < 1e6)) throw Error("--max-body-mb must be positive");
  o.max_body_bytes = static_cast<size_t>(a.max_body_mb * (1 << 20));
  o.request_timeout_s = a.request_timeout_s;
  o.drain_s = a.drain_s;
  return o;
}

void add_model_options(CLI::App* cmd, const std::shared_ptr<ServeArgs>& args) {
  add_model_flags(cmd, args->model, "the sidecar's, or COCO names for 91 classes");
  cmd->add_option("--score-thresh", args->score_thresh,
                  "Minimum detection score; requests may ask for a higher one (?score_thresh=)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--mask-thresh", args->mask_thresh,
                  "Mask probability threshold; requests may ask for another (?mask_thresh=)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--max-pixels", args->max_pixels, "Refuse larger images (400), from their header")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-detections", args->max_detections,
                  "At most this many detections per image; requests may ask for fewer (?max_detections=)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

void add_http_options(CLI::App* cmd, const std::shared_ptr<ServeArgs>& args) {
  cmd->add_option("--host", args->host, "Address to listen on (0.0.0.0: every interface)")->capture_default_str();
  cmd->add_option("--port", args->port, "Port; 0 picks a free one (printed on the first line)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--http-threads", args->http_threads, "Connections served at once")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-batch", args->max_batch, "Images per model call at most (same-sized images share one)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-delay-ms", args->max_delay_ms, "Longest wait for more images to fill a batch")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--max-queue", args->max_queue, "Images waiting for the model at most; beyond: 503")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-body-mb", args->max_body_mb, "Largest request body (MB); beyond: 413")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--request-timeout-s", args->request_timeout_s, "Longest wait in the queue; beyond: 504")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--drain-s", args->drain_s,
                  "On SIGTERM/SIGINT: stop accepting, answer what is queued, exit within this many seconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand(
      "serve", "Serve the model over HTTP: POST /v1/predict, GET / (web page), /healthz, /readyz, /v1/model, /metrics");
  add_model_options(cmd, args);
  add_http_options(cmd, args);
  cmd->callback([args] {
    serve::ServeOptions options = to_options(*args);  // a missing file fails before anything starts
    apply_conv_options(args->model.conv);
    int rc = serve::run_server(options);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace maskrcnn::cli
