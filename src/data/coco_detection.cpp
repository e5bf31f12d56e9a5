// COCO instances -> training samples (torchvision's ConvertCocoPolysToMask).
#include "data/coco_detection.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "maskrcnn/error.h"
#include "maskrcnn/image.h"
#include "maskrcnn/rle.h"

namespace maskrcnn::data {
namespace {

// Category ids become class labels directly; a table of names is built from
// them, so absurd ids are refused rather than allocating gigabytes.
constexpr int64_t kMaxCategoryId = 100000;

std::string size_text(int64_t w, int64_t h) { return std::to_string(w) + "x" + std::to_string(h); }

}  // namespace

CocoDetectionDataset::CocoDetectionDataset(const std::string& annotations_json,
                                           const std::string& images_dir)
    : coco_(load_coco_instances(annotations_json)), images_dir_(images_dir) {
  order_.resize(coco_.images.size());
  std::iota(order_.begin(), order_.end(), size_t{0});
  std::sort(order_.begin(), order_.end(),
            [&](size_t a, size_t b) { return coco_.images[a].id < coco_.images[b].id; });
  std::vector<size_t> sample_of(coco_.images.size());
  for (size_t s = 0; s < order_.size(); ++s) sample_of[order_[s]] = s;

  annotations_of_.resize(order_.size());
  for (size_t i = 0; i < coco_.annotations.size(); ++i)
    // load_coco_instances has checked that every image_id exists.
    annotations_of_[sample_of[coco_.image_index.at(coco_.annotations[i].image_id)]].push_back(i);

  for (size_t i = 0; i < coco_.categories.size(); ++i) {
    const int64_t id = coco_.categories[i].id;
    const std::string where = coco_.source + ": categories[" + std::to_string(i) + "] (id " +
                              std::to_string(id) + "): ";
    // Label 0 is the background class of Mask R-CNN.
    if (id < 1) throw Error(where + "category ids must be >= 1 (label 0 is the background)");
    if (id > kMaxCategoryId)
      throw Error(where + "category id above " + std::to_string(kMaxCategoryId) + " (ids are class labels)");
    max_category_id_ = std::max(max_category_id_, id);
  }
}

const CocoImage& CocoDetectionDataset::image_info(size_t index) const {
  if (index >= order_.size())
    throw Error(coco_.source + ": sample " + std::to_string(index) + " out of range (" +
                std::to_string(order_.size()) + " images)");
  return coco_.images[order_[index]];
}

std::string CocoDetectionDataset::image_path(size_t index) const {
  return (std::filesystem::path(images_dir_) / image_info(index).file_name).string();
}

std::vector<std::string> CocoDetectionDataset::category_names() const {
  std::vector<std::string> names(static_cast<size_t>(max_category_id_) + 1);
  names[0] = "__background__";
  for (const auto& c : coco_.categories) names[static_cast<size_t>(c.id)] = c.name;
  return names;
}

TrainingSample CocoDetectionDataset::get(size_t index, bool hflip) const {
  const CocoImage& info = image_info(index);
  const std::string path = image_path(index);
  at::Tensor rgb = read_image(path);
  const int64_t h = rgb.size(1), w = rgb.size(2);
  // A file without width/height (both 0) takes the image's; otherwise the
  // annotations were made for another image and must not be used.
  if ((info.width > 0 || info.height > 0) && (w != info.width || h != info.height))
    throw Error(path + ": image is " + size_text(w, h) + " but " + coco_.source + " says " +
                size_text(info.width, info.height) + " (image id " + std::to_string(info.id) + ")");
  CocoImage sized = info;
  sized.width = static_cast<int32_t>(w);
  sized.height = static_cast<int32_t>(h);

  std::vector<float> boxes;
  std::vector<int64_t> labels;
  std::vector<Rle> rles;
  for (size_t ai : annotations_of_[index]) {
    const CocoAnnotation& a = coco_.annotations[ai];
    if (a.iscrowd) continue;
    auto where = [&] {
      return coco_.source + ": annotation id " + std::to_string(a.id) + " (image " + info.file_name + ")";
    };
    Rle rle;
    bool have_rle = false;
    auto mask = [&]() -> const Rle& {
      if (!have_rle) {
        have_rle = true;
        try {
          rle = annotation_to_rle(a, sized);
        } catch (const Error& e) {
          throw Error(where() + ": " + e.what());
        }
        if (rle.h != static_cast<uint32_t>(h) || rle.w != static_cast<uint32_t>(w))
          throw Error(where() + ": mask is " + size_text(rle.w, rle.h) + ", image is " + size_text(w, h));
      }
      return rle;
    };
    // float32 throughout, like torchvision's as_tensor(bbox) + boxes[:, 2:] += boxes[:, :2].
    const BBox b = a.has_bbox ? a.bbox : rle_to_bbox(mask());
    float x1 = static_cast<float>(b[0]), y1 = static_cast<float>(b[1]);
    float x2 = x1 + static_cast<float>(b[2]), y2 = y1 + static_cast<float>(b[3]);
    x1 = std::clamp(x1, 0.0f, float(w));
    x2 = std::clamp(x2, 0.0f, float(w));
    y1 = std::clamp(y1, 0.0f, float(h));
    y2 = std::clamp(y2, 0.0f, float(h));
    if (!(x2 > x1 && y2 > y1)) continue;  // also drops NaN boxes
    mask();
    if (hflip) {
      const float fx1 = float(w) - x2, fx2 = float(w) - x1;  // torchvision: width - boxes[:, [2, 0]]
      x1 = fx1;
      x2 = fx2;
    }
    boxes.insert(boxes.end(), {x1, y1, x2, y2});
    labels.push_back(a.category_id);
    rles.push_back(std::move(rle));
  }

  const int64_t n = static_cast<int64_t>(labels.size());
  TrainingSample s;
  s.image_id = info.id;
  s.file_name = info.file_name;
  s.target.boxes = at::empty({n, 4}, at::kFloat);
  s.target.labels = at::empty({n}, at::kLong);
  if (n > 0) {
    std::memcpy(s.target.boxes.data_ptr<float>(), boxes.data(), boxes.size() * sizeof(float));
    std::memcpy(s.target.labels.data_ptr<int64_t>(), labels.data(), labels.size() * sizeof(int64_t));
  }
  s.target.masks = at::empty({n, h, w}, at::kByte);
  for (int64_t i = 0; i < n; ++i) {
    try {
      rle_decode(rles[i], s.target.masks.data_ptr<uint8_t>() + i * h * w);
    } catch (const Error& e) {
      throw Error(coco_.source + ": image " + info.file_name + ": " + e.what());
    }
  }
  if (hflip) {
    rgb = rgb.flip({2});
    s.target.masks = s.target.masks.flip({2});
  }
  s.image = to_float_image(rgb);
  return s;
}

}  // namespace maskrcnn::data
