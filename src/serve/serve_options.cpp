// ServeOptions' checks, and the model's description under those options.
#include <nlohmann/json.hpp>

#include <filesystem>

#include "maskrcnn/cpu_settings.h"
#include "maskrcnn/error.h"
#include "maskrcnn/model.h"
#include "serve/server.h"

namespace maskrcnn::serve {

void check_serve_options(const ServeOptions& o) {
  const auto fail = [](const std::string& what) { throw Error(what); };
  if (o.weights.empty()) fail("no weights given");
  if (o.port < 0 || o.port > 65535) fail("--port must be 0..65535");
  if (o.http_threads < 1) fail("--http-threads must be at least 1");
  if (o.max_batch < 1) fail("--max-batch must be at least 1");
  if (o.max_queue < 1) fail("--max-queue must be at least 1");
  if (!(o.max_delay_ms >= 0 && o.max_delay_ms <= 60e3)) fail("--max-delay-ms must be 0..60000");
  if (o.max_body_bytes < 1) fail("--max-body-mb must be positive");
  if (!(o.request_timeout_s > 0 && o.request_timeout_s <= 86400)) fail("--request-timeout-s must be in (0, 86400]");
  if (!(o.drain_s >= 0 && o.drain_s <= 86400)) fail("--drain-s must be 0..86400");
  if (!(o.score_thresh >= 0 && o.score_thresh <= 1)) fail("--score-thresh must be 0..1");
  if (!(o.mask_thresh >= 0 && o.mask_thresh <= 1)) fail("--mask-thresh must be 0..1");
  if (o.max_detections < 1) fail("--max-detections must be at least 1");
  if (o.max_pixels < 1) fail("--max-pixels must be at least 1");
  if (o.keep_alive_s < 0 || o.read_timeout_s < 1) fail("bad keep-alive or read timeout");
}

std::string describe_model(const MaskRCNN& m, const std::vector<std::string>& names, const ServeOptions& options) {
  const MaskRCNNConfig& c = m.config();
  const bool cpu = m.device().is_cpu();
  nlohmann::json j;
  j["model"] = std::filesystem::path(options.weights).filename().string();
  j["weights"] = options.weights;
  j["architecture"] = c.arch_name();
  j["backbone"] = "resnet" + std::to_string(c.backbone_depth);
  j["norm"] = norm_name(c.norm);
  j["num_classes"] = c.num_classes;
  j["classes"] = names;
  j["min_size"] = c.min_size;
  j["max_size"] = c.max_size;
  j["device"] = m.device().str();
  // Winograd and bf16 are CPU settings; a GPU runs LibTorch's f32 (cuDNN).
  j["precision"] = cpu && inference_precision() == Precision::BF16 ? "bf16" : "f32";
  j["conv"] = !cpu ? "cudnn" : conv_algorithm() == ConvAlgorithm::Winograd ? "winograd" : "direct";
  j["score_thresh"] = options.score_thresh;
  j["mask_thresh"] = options.mask_thresh;
  j["max_detections"] = options.max_detections;
  j["max_pixels"] = options.max_pixels;
  j["max_batch"] = options.max_batch;
  j["max_delay_ms"] = options.max_delay_ms;
  j["max_queue"] = options.max_queue;
  j["max_body_bytes"] = options.max_body_bytes;
  return j.dump();
}

}  // namespace maskrcnn::serve
