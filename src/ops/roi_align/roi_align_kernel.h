// Device kernels behind ops::roi_align. One implementation per device; the
// dispatcher in roi_align.cpp picks by input.device().
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace maskrcnn::ops::detail {

at::Tensor roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois,
                                 double spatial_scale, int64_t pooled_height,
                                 int64_t pooled_width, int64_t sampling_ratio, bool aligned);

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_height,
                                  int64_t pooled_width, int64_t batch_size, int64_t channels,
                                  int64_t height, int64_t width, int64_t sampling_ratio,
                                  bool aligned);

// MultiScaleRoIAlign's forward in one pass for CPU inference: RoI k pooled
// from levels[k] of `features` (float maps, one per level, with scales[l]:
// channels-last, or oneDNN's blocked nChw16c as 5-D [N, C/16, H, W, 16]) straight into row k of the [K, C, ph, pw] result, the same
// arithmetic as roi_align_forward_cpu. Saves the per-level gathers, the
// zero-filled result and its scatter, and writes each RoI's bins through a
// small transpose instead of one strided store per channel and bin.
at::Tensor roi_align_levels_forward_cpu(const std::vector<at::Tensor>& features, const at::Tensor& rois,
                                        const at::Tensor& levels, const std::vector<double>& scales,
                                        int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                        bool aligned);

#ifdef MASKRCNN_WITH_CUDA
at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_height,
                                  int64_t pooled_width, int64_t sampling_ratio, bool aligned);
at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_height,
                                   int64_t pooled_width, int64_t batch_size, int64_t channels,
                                   int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned);
#endif

}  // namespace maskrcnn::ops::detail
