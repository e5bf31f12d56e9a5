// A COCO instances file + its images as Mask R-CNN training samples, the
// C++ counterpart of torchvision's references/detection CocoDetection with
// ConvertCocoPolysToMask (and RandomHorizontalFlip as an option of get()).
//
// Per image: crowd annotations are skipped; boxes are the JSON's [x, y, w, h]
// turned into [x1, y1, x2, y2] (float32, as torchvision computes them) and
// clamped to the image; annotations whose clamped box is empty (x2 <= x1 or
// y2 <= y1) are dropped; masks come from polygons or RLE exactly as
// pycocotools rasterises them; labels are the category ids. An annotation
// without "bbox" gets its mask's box (torchvision would fail on it).
//
// Samples are indexed in increasing image id order (torchvision sorts the ids).
// get() is const and thread-safe: loader threads call it concurrently.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "maskrcnn/coco.h"
#include "maskrcnn/types.h"

namespace maskrcnn::data {

// The model's ground truth type (maskrcnn/types.h): boxes float32 [N, 4]
// x1 y1 x2 y2 in pixels, labels int64 [N] (category ids), masks uint8
// [N, H, W] 0/1, and sampling_seed, which get() leaves 0 and TrainLoader sets
// per (iteration, image) so that RPN/RoI sampling is reproducible too.
using TrainingTarget = maskrcnn::TrainingTarget;

struct TrainingSample {
  int64_t image_id = 0;
  std::string file_name;
  at::Tensor image;  // float32 [3, H, W], RGB in [0, 1]
  TrainingTarget target;
};

class CocoDetectionDataset {
 public:
  // Reads the annotations now (maskrcnn::Error if the file is bad); images are
  // read by get(). images_dir + "/" + file_name locates an image.
  CocoDetectionDataset(const std::string& annotations_json, const std::string& images_dir);

  size_t size() const { return order_.size(); }

  // Sample `index` (0 <= index < size()), horizontally flipped if hflip.
  // Throws maskrcnn::Error naming the file if the image is missing or
  // unreadable, or if its size is not the JSON's, and naming the annotation if
  // its segmentation cannot be used.
  TrainingSample get(size_t index, bool hflip = false) const;

  // The JSON's record of sample `index`.
  const CocoImage& image_info(size_t index) const;
  std::string image_path(size_t index) const;

  const CocoDataset& coco() const { return coco_; }
  // Largest category id (0 without categories): the model needs
  // num_classes = max_category_id() + 1.
  int64_t max_category_id() const { return max_category_id_; }
  // index = category id; "" for ids without a category; [0] = "__background__".
  std::vector<std::string> category_names() const;

 private:
  CocoDataset coco_;
  std::string images_dir_;
  std::vector<size_t> order_;                        // sample -> index in coco_.images
  std::vector<std::vector<size_t>> annotations_of_;  // sample -> indices in coco_.annotations
  int64_t max_category_id_ = 0;
};

}  // namespace maskrcnn::data
