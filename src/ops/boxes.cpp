// Box utilities with torchvision.ops.boxes semantics.
#include <ATen/ATen.h>

#include "maskrcnn/ops.h"

namespace maskrcnn::ops {
namespace {

// torchvision.ops._utils._upcast: guards the products against overflow. float16/bfloat16
// become float32, integer types narrower than int32 (and uint8, bool) become int32.
at::Tensor upcast(const at::Tensor& t) {
  const auto st = t.scalar_type();
  if (t.is_floating_point())
    return st == at::kFloat || st == at::kDouble ? t : t.to(at::kFloat);
  return st == at::kInt || st == at::kLong ? t : t.to(at::kInt);
}

}  // namespace

at::Tensor box_area(const at::Tensor& boxes_) {
  auto boxes = upcast(boxes_);
  return (boxes.select(1, 2) - boxes.select(1, 0)) * (boxes.select(1, 3) - boxes.select(1, 1));
}

at::Tensor box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  auto area1 = box_area(boxes1);
  auto area2 = box_area(boxes2);
  auto lt = at::max(boxes1.slice(1, 0, 2).unsqueeze(1), boxes2.slice(1, 0, 2).unsqueeze(0));
  auto rb = at::min(boxes1.slice(1, 2, 4).unsqueeze(1), boxes2.slice(1, 2, 4).unsqueeze(0));
  auto wh = upcast(rb - lt).clamp_min(0);
  auto inter = wh.select(2, 0) * wh.select(2, 1);
  auto uni = area1.unsqueeze(1) + area2.unsqueeze(0) - inter;
  return inter / uni;
}

at::Tensor clip_boxes_to_image(const at::Tensor& boxes, int64_t height, int64_t width) {
  auto x = boxes.slice(-1, 0, boxes.size(-1), 2).clamp(0, width);
  auto y = boxes.slice(-1, 1, boxes.size(-1), 2).clamp(0, height);
  return at::stack({x, y}, boxes.dim()).reshape(boxes.sizes());
}

at::Tensor remove_small_boxes(const at::Tensor& boxes, double min_size) {
  auto ws = boxes.select(1, 2) - boxes.select(1, 0);
  auto hs = boxes.select(1, 3) - boxes.select(1, 1);
  auto keep = (ws >= min_size).logical_and(hs >= min_size);
  return at::where(keep)[0];
}

}  // namespace maskrcnn::ops
