// POST /v1/predict without the HTTP: the query parameters a request may set,
// the detections it asked for, and the JSON of one image, written by the same
// CocoResultsWriter that `maskrcnn predict --output-json` uses, so that the
// server and the command give the same numbers and the same RLE strings.
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "maskrcnn/types.h"

namespace maskrcnn::serve {

// The thresholds of one request. The server's own (its command-line flags)
// are the loosest a request can get: the model was built with them, so
// detections below --score-thresh or past --max-detections were never made.
struct PredictParams {
  double score_thresh = 0.05;
  double mask_thresh = 0.5;
  int max_detections = 100;
};

// Reads score_thresh, mask_thresh and max_detections from the query over the
// server's values. Throws maskrcnn::Error naming the parameter and what is
// wrong (not a number, out of range, given twice, unknown): the 400 answer.
PredictParams parse_predict_params(const std::multimap<std::string, std::string>& query,
                                   const PredictParams& server);

// The leading detections with score > score_thresh, at most max_detections:
// what the model would have kept with those thresholds (its detections come
// sorted by descending score, and the score cut, NMS and the top-k it applies
// all keep a prefix of that order). The score comparison is done in float, as
// the model's own is.
Detections select_detections(const Detections& dets, double score_thresh, int max_detections);

// {"width", "height", "detections": [{"category_id", "category_name", "score",
// "bbox": [x, y, w, h], "segmentation": {"size": [h, w], "counts": RLE}}]}:
// the records `maskrcnn predict --output-json` writes for this image, without
// its "file_name" and "image_id".
nlohmann::json image_json(const Detections& dets, const std::vector<std::string>& category_names,
                          double mask_thresh);

}  // namespace maskrcnn::serve
