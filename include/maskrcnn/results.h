// COCO results files (the list format pycocotools' loadRes reads) from
// Detections: bbox [x, y, w, h] and compressed-RLE segmentation.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "maskrcnn/types.h"

namespace maskrcnn {

class CocoResultsWriter {
 public:
  CocoResultsWriter();
  ~CocoResultsWriter();
  // category_names: label -> name for "category_name" (omitted when empty).
  void set_category_names(std::vector<std::string> names);
  // Adds one record per detection. The mask is RLE-encoded at
  // probs >= mask_threshold; label is written as category_id.
  void add(int64_t image_id, const std::string& file_name, const Detections& dets,
           double mask_threshold = 0.5);
  size_t size() const;
  std::string to_string() const;
  // Atomic write (temporary + rename).
  void write(const std::string& path) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace maskrcnn
