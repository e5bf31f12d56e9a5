// Running a model over a COCO data set's images to produce a results file.
#pragma once
#include <string>
#include <vector>

#include "maskrcnn/model.h"

namespace maskrcnn {

struct DatasetInferenceOptions {
  double mask_threshold = 0.5;
  bool progress = true;  // progress bar on stderr
  // Only images i with i % num_shards == shard (data-parallel evaluation:
  // each process takes a shard, the results files are merged after).
  int shard = 0, num_shards = 1;
};

struct DatasetInferenceReport {
  size_t images = 0;                  // images processed
  size_t detections = 0;
  std::vector<std::string> failures;  // one-line errors of images that could not be read
  double seconds = 0;
};

// For every image of `annotations` (COCO instances JSON), reads
// images_dir/file_name, runs the model and writes a COCO results file
// (image_id from the annotations) to results_path, atomically. Unreadable
// images are reported and skipped; the rest are still evaluated.
DatasetInferenceReport run_model_on_coco(const MaskRCNN& model, const std::string& annotations,
                                         const std::string& images_dir,
                                         const std::string& results_path,
                                         const DatasetInferenceOptions& options = {});

}  // namespace maskrcnn
