// A 3x3 stride-1 convolution for training on oneDNN's Winograd F(4x4, 3x3):
// forward, backward-data and backward-weights, as one autograd function.
// LibTorch's convolution (forward and backward) is oneDNN's direct algorithm;
// Winograd does ~2.5x fewer multiplies on these layers, which hold most of
// Mask R-CNN's training FLOPs (layer2-4 of the backbone, FPN outputs, the RPN
// head and the mask head).
//
// Only compiled with MASKRCNN_HAVE_DNNL. Primitives are built once per shape
// and thread count (kept in a small LRU); the weights change every step, so
// they are reordered (transformed) on each call, as LibTorch does.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>

namespace maskrcnn::ops {

// x [N, IC, H, W], weight [OC, IC, 3, 3], bias [OC] (defined), all float on
// the CPU; padding on both axes, stride 1, dilation 1, one group. Gradients
// flow to whichever of the three require them. Returns an undefined tensor
// where oneDNN has no Winograd for this shape or CPU (call at::conv2d then).
// Winograd's scratchpad (the transformed tiles) grows with the batch: ~600 MB
// for 2 images on the FPN's largest level. Where it would pass
// `scratchpad_budget` bytes (0: no limit), each pass runs over groups of
// images that fit, one image at the least; the weight gradient is summed over
// the groups. `runs`, if given, receives the number of groups.
at::Tensor winograd_conv2d_train(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 int64_t padding, std::size_t scratchpad_budget = 0, int64_t* runs = nullptr);

}  // namespace maskrcnn::ops
