// ops::nms and ops::batched_nms (torchvision.ops.boxes semantics).
#include <ATen/ATen.h>

#include "maskrcnn/ops.h"
#include "ops/nms/nms_kernel.h"

namespace maskrcnn::ops {

at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "nms: boxes must be [N, 4], got ",
              boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0),
              "nms: scores must be [N] matching boxes");
  auto b = boxes.detach();
  auto s = scores.detach();
#ifdef MASKRCNN_WITH_CUDA
  if (b.is_cuda()) return detail::nms_cuda(b, s, iou_threshold);
#endif
  if (!b.is_cpu()) {  // no kernel for this device: compute on the CPU, answer on the device
    return detail::nms_cpu(b.cpu(), s.cpu(), iou_threshold).to(boxes.device());
  }
  return detail::nms_cpu(b, s, iou_threshold);
}

at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold) {
  if (boxes.numel() == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  // torchvision switches strategy at this size; both give the same set, and
  // following it keeps the order of tied scores identical too.
  const int64_t vanilla_above = boxes.is_cpu() ? 4000 : 20000;
  if (boxes.numel() > vanilla_above) {
    auto keep_mask = at::zeros_like(scores, scores.options().dtype(at::kBool));
    auto classes = std::get<0>(at::_unique(idxs, /*sorted=*/true));
    for (int64_t k = 0; k < classes.size(0); ++k) {
      auto curr = at::where(idxs == classes[k])[0];
      auto curr_keep = nms(boxes.index_select(0, curr), scores.index_select(0, curr), iou_threshold);
      keep_mask.index_put_({curr.index_select(0, curr_keep)}, true);
    }
    auto keep = at::where(keep_mask)[0];
    auto order = std::get<1>(scores.index_select(0, keep).sort(/*dim=*/0, /*descending=*/true));
    return keep.index_select(0, order);
  }
  auto max_coordinate = boxes.max();
  auto offsets = idxs.to(boxes.scalar_type()) * (max_coordinate + 1);
  auto boxes_for_nms = boxes + offsets.unsqueeze(1);
  return nms(boxes_for_nms, scores, iou_threshold);
}

}  // namespace maskrcnn::ops
