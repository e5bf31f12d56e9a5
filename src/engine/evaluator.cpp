#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>

#include "engine/progress.h"
#include "maskrcnn/coco.h"
#include "maskrcnn/error.h"
#include "maskrcnn/evaluator.h"
#include "maskrcnn/image.h"
#include "maskrcnn/results.h"

namespace maskrcnn {

DatasetInferenceReport run_model_on_coco(const MaskRCNN& model, const std::string& annotations,
                                         const std::string& images_dir,
                                         const std::string& results_path,
                                         const DatasetInferenceOptions& options) {
  if (!std::filesystem::is_directory(images_dir))
    throw Error(images_dir + ": not a directory of images");
  const CocoDataset gt = load_coco_instances(annotations);
  DatasetInferenceReport report;
  const auto t0 = std::chrono::steady_clock::now();
  CocoResultsWriter writer;
  const size_t shards = static_cast<size_t>(std::max(1, options.num_shards));
  const size_t mine = (gt.images.size() + shards - 1 - static_cast<size_t>(options.shard)) / shards;
  engine::ProgressBar bar("eval", mine, options.progress);
  for (size_t i = static_cast<size_t>(options.shard); i < gt.images.size(); i += shards) {
    const auto& img = gt.images[i];
    const std::string path = (std::filesystem::path(images_dir) / img.file_name).string();
    try {
      auto rgb = read_image(path);
      if (rgb.size(1) != img.height || rgb.size(2) != img.width)
        throw Error(path + ": image is " + std::to_string(rgb.size(2)) + "x" +
                    std::to_string(rgb.size(1)) + " but " + annotations + " says " +
                    std::to_string(img.width) + "x" + std::to_string(img.height));
      auto dets = model.predict({rgb}).at(0);
      report.detections += dets.size();
      writer.add(img.id, img.file_name, dets, options.mask_threshold);
    } catch (const Error& e) {
      report.failures.push_back(e.what());
    }
    ++report.images;
    bar.update(report.images, std::to_string(report.detections) + " detections");
  }
  bar.finish(std::to_string(report.detections) + " detections");
  writer.write(results_path);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace maskrcnn
