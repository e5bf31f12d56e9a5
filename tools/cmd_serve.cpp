// `maskrcnn serve`: an HTTP model server (src/serve). Flags -> ServeOptions ->
// run_server; the model flags and their defaults are `predict`'s.
#include <filesystem>
#include <memory>

#include "commands.h"
#include "maskrcnn/maskrcnn.h"
#include "serve/server.h"

namespace maskrcnn::cli {
namespace {

struct ServeArgs {
  // The model, as `predict` takes it.
  std::string weights;
  std::string arch;
  int num_classes = 0;
  std::string labels_file;
  double score_thresh = 0.05;
  double mask_thresh = 0.5;
  int min_size = 800;
  int max_size = 1333;
  bool min_size_given = false, max_size_given = false;
  int threads = 0;
  int64_t max_pixels = 40'000'000;
  int max_detections = 100;
  ConvFlags conv;
  std::string device = "cpu";
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
  o.weights = a.weights.empty() ? default_weights_path() : a.weights;
  if (!std::filesystem::exists(o.weights)) throw Error(missing_weights_message(o.weights));
  if (!a.arch.empty()) o.arch = parse_arch(a.arch);
  if (a.num_classes > 0) o.num_classes = a.num_classes;
  if (a.min_size_given) o.min_size = a.min_size;
  if (a.max_size_given) o.max_size = a.max_size;
  if (!a.labels_file.empty()) o.class_names = read_labels(a.labels_file);
  o.score_thresh = a.score_thresh;
  o.mask_thresh = a.mask_thresh;
  o.max_detections = a.max_detections;
  o.max_pixels = a.max_pixels;
  o.device = a.device;
  o.threads = a.threads;
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
  cmd->add_option("--weights", args->weights,
                  "Checkpoint (.pth); default: torchvision's cache, " + default_weights_path());
  cmd->add_option("--arch", args->arch,
                  "maskrcnn_resnet50_fpn | maskrcnn_resnet50_fpn_v2 (default: from the checkpoint)");
  cmd->add_option("--num-classes", args->num_classes,
                  "Classes incl. background (default: from the checkpoint)");
  cmd->add_option("--labels", args->labels_file,
                  "Text file, one class name per line, line i = label i (default: the sidecar's, or COCO names "
                  "for 91 classes)");
  cmd->add_option("--score-thresh", args->score_thresh,
                  "Minimum detection score; requests may ask for a higher one (?score_thresh=)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--mask-thresh", args->mask_thresh,
                  "Mask probability threshold; requests may ask for another (?mask_thresh=)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option_function<int>("--min-size", [args](int v) { args->min_size = v; args->min_size_given = true; },
                                "Resize: shorter side (default: 800, or the weights' .json)")
      ->type_name("INT");
  cmd->add_option_function<int>("--max-size", [args](int v) { args->max_size = v; args->max_size_given = true; },
                                "Resize: longer side at most (default: 1333, or the weights' .json)")
      ->type_name("INT");
  cmd->add_option("--threads", args->threads, "CPU threads of the model (default: all cores)");
  cmd->add_option("--max-pixels", args->max_pixels, "Refuse larger images (400), from their header")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-detections", args->max_detections,
                  "At most this many detections per image; requests may ask for fewer (?max_detections=)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_conv_options(cmd, args->conv);
  add_device_option(cmd, args->device);
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
    apply_conv_options(args->conv);
    int rc = serve::run_server(options);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace maskrcnn::cli
