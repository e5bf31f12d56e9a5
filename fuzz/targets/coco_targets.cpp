#include <cstdlib>
#include <string_view>

#include "maskrcnn/coco.h"
#include "maskrcnn/error.h"
#include "maskrcnn/rle.h"
#include "targets/fuzz_targets.h"

namespace maskrcnn::fuzz {
namespace {

std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// What evaluation does with each mask: rasterise, measure, compare.
void use_masks(const CocoDataset& gt, const std::vector<CocoAnnotation>& anns) {
  std::vector<Rle> masks;
  for (const auto& ann : anns) {
    const CocoImage* img = gt.find_image(ann.image_id);
    if (img == nullptr) continue;
    try {
      Rle r = annotation_to_rle(ann, *img);
      if (!r.counts.empty() && rle_total(r) != uint64_t(r.h) * r.w) std::abort();  // counts must cover the image
      if (rle_area(r) > uint64_t(r.h) * r.w) std::abort();
      (void)rle_to_bbox(r);
      masks.push_back(std::move(r));
    } catch (const Error&) {
    }
    if (masks.size() >= 16) break;
  }
  if (!masks.empty()) (void)rle_iou(masks, masks, std::vector<uint8_t>(masks.size(), 0));
}

const CocoDataset& small_ground_truth() {
  static const CocoDataset gt = parse_coco_instances(R"({
    "images": [{"id": 1, "width": 64, "height": 48, "file_name": "a.jpg"},
               {"id": 7, "width": 5, "height": 300, "file_name": "b.png"}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 20], "area": 600,
                     "iscrowd": 0, "segmentation": [[1, 2, 31, 2, 31, 22, 1, 22]]}]})",
                                                     "<fuzz gt>");
  return gt;
}

}  // namespace

void coco_annotations(const uint8_t* data, size_t size) {
  try {
    CocoDataset gt = parse_coco_instances(as_text(data, size), "<fuzz>");
    for (const auto& ann : gt.annotations)
      if (gt.find_image(ann.image_id) == nullptr) std::abort();  // the parser promises this
    use_masks(gt, gt.annotations);
  } catch (const Error&) {
  }
}

void coco_results(const uint8_t* data, size_t size) {
  const CocoDataset& gt = small_ground_truth();
  try {
    auto dets = parse_coco_results(as_text(data, size), gt, "<fuzz>");
    use_masks(gt, dets);
  } catch (const Error&) {
  }
}

}  // namespace maskrcnn::fuzz
