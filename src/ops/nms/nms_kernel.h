#pragma once
#include <ATen/core/Tensor.h>

namespace maskrcnn::ops::detail {
at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold);
#ifdef MASKRCNN_WITH_CUDA
at::Tensor nms_cuda(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold);
#endif
}  // namespace maskrcnn::ops::detail
