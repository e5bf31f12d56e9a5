#include "serve/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace maskrcnn::serve {
namespace {

// Latency of a predict request: a warm CPU model answers a photo in ~1 s,
// a small model or a GPU in milliseconds; the queue can add up to a minute.
const std::vector<double> kSecondsBuckets{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                          1, 2.5, 5, 10, 30, 60};
const std::vector<double> kBatchBuckets{1, 2, 4, 8, 16, 32, 64};

void header(std::string& out, const std::string& name, const std::string& type, const std::string& help) {
  out += "# HELP " + name + " " + help + "\n";
  out += "# TYPE " + name + " " + type + "\n";
}

void sample(std::string& out, const std::string& name, double value) {
  out += name + " " + prometheus_number(value) + "\n";
}

}  // namespace

std::string prometheus_number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // The shortest %g that reads back exactly: 0.005, not 0.0050000000000000001.
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value) break;
  }
  return buf;
}

std::string prometheus_label(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {
  std::sort(bounds_.begin(), bounds_.end());
}

void Histogram::observe(double value) {
  // Prometheus buckets are "less than or equal": value v falls into le >= v.
  const size_t k = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  ++counts_[k];
  sum_ += value;
  ++count_;
}

void Histogram::write(std::string& out, const std::string& name) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + prometheus_number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_.back();
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  out += name + "_sum " + prometheus_number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : predict_seconds_(kSecondsBuckets), batch_images_(kBatchBuckets), batch_seconds_(kSecondsBuckets) {}

void Metrics::count_request(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
}

void Metrics::observe_predict_seconds(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  predict_seconds_.observe(seconds);
}

void Metrics::observe_batch(size_t images, double seconds, bool ok) {
  std::lock_guard<std::mutex> lock(mutex_);
  batch_images_.observe(static_cast<double>(images));
  batch_seconds_.observe(seconds);
  (ok ? images_processed_ : images_failed_) += images;
}

std::string Metrics::prometheus_text(const Gauges& gauges) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  out.reserve(4096);
  header(out, "maskrcnn_http_requests_total", "counter", "HTTP requests answered, by route and status code.");
  for (const auto& [key, count] : requests_) {
    out += "maskrcnn_http_requests_total{route=\"" + prometheus_label(key.first) + "\",code=\"" +
           std::to_string(key.second) + "\"} " + std::to_string(count) + "\n";
  }
  header(out, "maskrcnn_predict_request_duration_seconds", "histogram",
         "Wall time of POST /v1/predict requests, body read to answer sent.");
  predict_seconds_.write(out, "maskrcnn_predict_request_duration_seconds");
  header(out, "maskrcnn_queue_length", "gauge", "Images waiting in the queue for the model.");
  sample(out, "maskrcnn_queue_length", static_cast<double>(gauges.queue_length));
  header(out, "maskrcnn_running_images", "gauge", "Images in the model call under way.");
  sample(out, "maskrcnn_running_images", static_cast<double>(gauges.running_images));
  header(out, "maskrcnn_ready", "gauge", "1 once the model is loaded and warmed up.");
  sample(out, "maskrcnn_ready", gauges.ready ? 1.0 : 0.0);
  header(out, "maskrcnn_batch_size", "histogram", "Images per model call.");
  batch_images_.write(out, "maskrcnn_batch_size");
  header(out, "maskrcnn_batch_duration_seconds", "histogram", "Wall time of each model call.");
  batch_seconds_.write(out, "maskrcnn_batch_duration_seconds");
  header(out, "maskrcnn_images_processed_total", "counter", "Images the model answered.");
  sample(out, "maskrcnn_images_processed_total", static_cast<double>(images_processed_));
  header(out, "maskrcnn_images_failed_total", "counter", "Images in model calls that threw (a failed batch is retried image by image).");
  sample(out, "maskrcnn_images_failed_total", static_cast<double>(images_failed_));
  return out;
}

}  // namespace maskrcnn::serve
