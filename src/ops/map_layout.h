// Memory layouts of the feature maps that pass between convolutions at CPU
// inference. oneDNN's convolution kernels read and write channel blocks of 16
// (nChw16c); handing them NCHW costs a reorder of the input and of the output
// at every layer, ~10% of the model's time. So the backbone, FPN and RPN head
// keep their maps blocked between layers, held in a 5-D tensor
// [N, C/16, H, W, 16], and leave them as 4-D tensors (NCHW or channels-last)
// where other code reads them. Only the inference fast path of cpu::InferenceConv
// makes blocked maps; training, CUDA and builds without oneDNN never see one.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace maskrcnn::ops {

enum class MapLayout { NCHW, ChannelsLast, Blocked16 };

// Blocked16 for a 5-D [N, C/16, H, W, 16] tensor; ChannelsLast for a 4-D
// tensor stored channels-last (and not also contiguous); NCHW otherwise.
MapLayout layout_of(const at::Tensor& x);
bool is_blocked(const at::Tensor& x);
// {N, C, H, W} of a map in any layout.
int64_t map_channels(const at::Tensor& x);
std::pair<int64_t, int64_t> map_size(const at::Tensor& x);  // {H, W}
// Whether `x` is the only handle on its memory (no other tensor, view or
// caller holds it), so that overwriting it cannot be seen elsewhere.
bool sole_owner(const at::Tensor& x);
// A 4-D tensor of the map's values: blocked maps converted to `layout`
// (NCHW or ChannelsLast), 4-D ones returned as they are.
at::Tensor to_4d(const at::Tensor& x, MapLayout layout = MapLayout::NCHW);
// The map in `layout` (a copy unless it already is; Blocked16 needs C % 16 == 0).
at::Tensor to_layout(const at::Tensor& x, MapLayout layout);

// torchvision's F.max_pool2d and F.interpolate(mode="nearest") on a map in
// any layout, the result in the same layout. A blocked map is a channels-last
// map of N*C/16 images of 16 channels, which LibTorch's kernels take as is.
at::Tensor max_pool2d_any(const at::Tensor& x, int64_t kernel, int64_t stride, int64_t padding);
at::Tensor upsample_nearest_any(const at::Tensor& x, int64_t height, int64_t width);

}  // namespace maskrcnn::ops
