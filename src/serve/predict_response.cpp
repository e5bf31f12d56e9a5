#include "serve/predict_response.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <limits>
#include <set>

#include "maskrcnn/error.h"
#include "maskrcnn/results.h"

namespace maskrcnn::serve {
namespace {

const char* const kKnownParams = "score_thresh, mask_thresh, max_detections";

// 0.05, not std::to_string's 0.050000.
std::string number(double v) { return nlohmann::json(v).dump(); }

double parse_fraction(const std::string& name, const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(begin, &end);
  if (text.empty() || end != begin + text.size() || errno == ERANGE || !std::isfinite(v))
    throw Error(name + ": expected a number, got '" + text + "'");
  if (v < 0 || v > 1) throw Error(name + ": must be between 0 and 1, got " + text);
  return v;
}

int parse_count(const std::string& name, const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(begin, &end, 10);
  if (text.empty() || end != begin + text.size() || errno == ERANGE)
    throw Error(name + ": expected a whole number, got '" + text + "'");
  if (v < 1 || v > std::numeric_limits<int>::max()) throw Error(name + ": must be at least 1, got " + text);
  return static_cast<int>(v);
}

}  // namespace

PredictParams parse_predict_params(const std::multimap<std::string, std::string>& query,
                                   const PredictParams& server) {
  PredictParams p = server;
  std::set<std::string> seen;
  for (const auto& [name, value] : query) {
    if (!seen.insert(name).second) throw Error(name + ": given more than once");
    if (name == "score_thresh") {
      p.score_thresh = parse_fraction(name, value);
      if (p.score_thresh < server.score_thresh)
        throw Error("score_thresh " + value + " is below the server's --score-thresh " +
                    number(server.score_thresh) + ": lower scores are not computed");
    } else if (name == "mask_thresh") {
      p.mask_thresh = parse_fraction(name, value);
    } else if (name == "max_detections") {
      p.max_detections = parse_count(name, value);
      if (p.max_detections > server.max_detections)
        throw Error("max_detections " + value + " is above the server's --max-detections " +
                    std::to_string(server.max_detections));
    } else {
      throw Error("unknown query parameter '" + name + "' (expected " + kKnownParams + ")");
    }
  }
  return p;
}

Detections select_detections(const Detections& dets, double score_thresh, int max_detections) {
  const int64_t n = dets.size();
  if (n == 0) return dets;
  c10::InferenceMode guard;  // the model's outputs are inference tensors
  const at::Tensor scores = dets.scores.to(at::kFloat).cpu().contiguous();
  const float* s = scores.data_ptr<float>();
  // The model compares its float scores with the threshold as a float too.
  const float thresh = static_cast<float>(score_thresh);
  const int64_t limit = std::min<int64_t>(n, std::max(0, max_detections));
  int64_t k = 0;
  while (k < limit && s[k] > thresh) ++k;
  if (k == n) return dets;
  Detections out;
  out.image_height = dets.image_height;
  out.image_width = dets.image_width;
  out.boxes = dets.boxes.narrow(0, 0, k);
  out.scores = dets.scores.narrow(0, 0, k);
  out.labels = dets.labels.narrow(0, 0, k);
  const size_t kept = std::min(static_cast<size_t>(k), dets.masks.size());
  out.masks.assign(dets.masks.begin(), dets.masks.begin() + static_cast<std::ptrdiff_t>(kept));
  return out;
}

nlohmann::json image_json(const Detections& dets, const std::vector<std::string>& category_names,
                          double mask_thresh) {
  // The records `maskrcnn predict --output-json` writes, read back: one
  // encoder for both, so the numbers and RLE strings cannot drift apart.
  CocoResultsWriter writer;
  writer.set_category_names(category_names);
  writer.add(0, "", dets, mask_thresh);
  nlohmann::json records = nlohmann::json::parse(writer.to_string());
  for (auto& r : records) {
    r.erase("image_id");
    r.erase("file_name");
  }
  nlohmann::json image = nlohmann::json::object();
  image["width"] = dets.image_width;
  image["height"] = dets.image_height;
  image["detections"] = std::move(records);
  return image;
}

}  // namespace maskrcnn::serve
