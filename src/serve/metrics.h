// What `maskrcnn serve` counts, and GET /metrics: Prometheus's text exposition
// format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
// Thread-safe: every HTTP thread and the batcher report here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace maskrcnn::serve {

// A Prometheus histogram: cumulative buckets by upper bound, a sum and a count.
// Not thread-safe by itself (Metrics locks around it).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // ascending; +Inf is implied
  void observe(double value);
  // Appends NAME_bucket{le="..."} for every bound and +Inf, NAME_sum, NAME_count.
  void write(std::string& out, const std::string& name) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); the last one is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Values read at scrape time rather than counted.
struct Gauges {
  size_t queue_length = 0;    // images waiting for the model
  size_t running_images = 0;  // images in the model call under way
  bool ready = false;         // model loaded and warmed up
};

class Metrics {
 public:
  Metrics();
  // Every answered HTTP request. `route` is one of the server's routes or
  // "other" (never the raw path: a label per URL would grow without bound).
  void count_request(const std::string& route, int status);
  // Wall time of a POST /v1/predict, read to answered.
  void observe_predict_seconds(double seconds);
  // One model call of the batcher.
  void observe_batch(size_t images, double seconds, bool ok);
  std::string prometheus_text(const Gauges& gauges) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (route, status) -> count
  Histogram predict_seconds_;
  Histogram batch_images_;
  Histogram batch_seconds_;
  uint64_t images_processed_ = 0;
  uint64_t images_failed_ = 0;
};

// A sample value as Prometheus parses it: the shortest decimal that reads back
// as the same double, "+Inf", "-Inf" or "NaN".
std::string prometheus_number(double value);
// A label value with \, " and newline escaped.
std::string prometheus_label(const std::string& value);

}  // namespace maskrcnn::serve
