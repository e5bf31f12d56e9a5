// Detection ops with torchvision's semantics (torchvision.ops): RoIAlign, NMS,
// batched NMS and box utilities. Every op follows its input's device; the CPU
// kernels are multithreaded with at::parallel_for.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace maskrcnn::ops {

// torchvision.ops.roi_align. input: [N, C, H, W]; rois: [K, 5] (batch index, x1, y1, x2, y2).
// Returns [K, C, pooled_height, pooled_width]. Differentiable w.r.t. input.
at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                     bool aligned);

// RoIAlign over several feature levels (MultiScaleRoIAlign's pooling): RoI k
// is pooled from features[levels[k]] with scales[levels[k]]. Maps may be
// NCHW, channels-last or blocked [N, C/16, H, W, 16]. Returns
// [K, C, output_size, output_size], row k for RoI k. CPU float maps without
// gradients take one pass over the RoIs; otherwise roi_align per level.
at::Tensor multi_level_roi_align(const std::vector<at::Tensor>& features, const at::Tensor& rois,
                                 const at::Tensor& levels, const std::vector<double>& scales,
                                 int64_t output_size, int64_t sampling_ratio, bool aligned);

// torchvision.ops.nms: indices of kept boxes, by decreasing score (stable for ties).
// Suppresses a box when its IoU with a kept, higher-scoring box is > iou_threshold.
at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold);

// torchvision.ops.batched_nms: NMS independently per value of `idxs`.
at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold);

// torchvision.ops.box_area / box_iou / clip_boxes_to_image / remove_small_boxes.
at::Tensor box_area(const at::Tensor& boxes);
at::Tensor box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2);
at::Tensor clip_boxes_to_image(const at::Tensor& boxes, int64_t height, int64_t width);
at::Tensor remove_small_boxes(const at::Tensor& boxes, double min_size);

}  // namespace maskrcnn::ops
