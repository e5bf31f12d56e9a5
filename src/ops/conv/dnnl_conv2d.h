// A 2-D convolution for inference that calls oneDNN directly (the library
// LibTorch links on Debian), so that it can use algorithms LibTorch does not
// ask for: Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions (~2.5x fewer
// multiplies) and bf16 compute. Built once per input shape: the primitive and
// the weights, reordered (for Winograd: pre-transformed) once, are kept.
// Bias, ReLU and a residual add are fused into the primitive.
//
// Only compiled with MASKRCNN_HAVE_DNNL. forward() is thread-safe: buffers
// are allocated per call from LibTorch's allocator, the scratchpad is per thread.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ops/map_layout.h"

namespace maskrcnn::ops {

struct DnnlConvOptions {
  int64_t stride = 1, padding = 0, dilation = 1;
  bool winograd = false;  // else direct
  bool bf16 = false;      // bf16 src and weights, f32 accumulation and output
  // With bf16: the output stored in bf16 (rounded to nearest even, as the
  // next bf16 convolution would round an f32 one), for maps only bf16
  // convolutions read. With a residual, the sum is accumulated in f32 and
  // rounded into the bf16 output (a float residual is rounded to bf16 first).
  bool bf16_output = false;
  bool relu = false;      // fused, after the residual add
  bool residual = false;  // forward() adds a residual of the output's shape
  // Winograd's scratchpad holds every tile transformed: ~280 MB for a
  // 256-channel 200x304 map (the largest FPN level of an 800x1216 image).
  // Above this many bytes the convolution runs in parts (groups of images,
  // then bands of output rows, each with the input rows it needs) whose
  // scratchpads fit; 0 never splits. 320 MB runs every level of an image
  // resized to torchvision's default 800-1333 pixels whole (310 MB at
  // 800x1344): against 2 bands of 100 rows (192 MB) ~20 ms a
  // photo faster for the FPN and RPN head, whose band copies it saves, for
  // ~130 MB more peak RSS (still ~200 MB under torchvision's).
  size_t scratchpad_budget = size_t{320} << 20;
};

class DnnlConv2d {
 public:
  // weight [OC, IC, KH, KW] and bias [OC] (may be undefined), float, CPU.
  // in_shape {N, IC, H, W}. Throws std::runtime_error where oneDNN has no
  // implementation (e.g. Winograd on a CPU without AVX-512).
  // `same_weights`: convolutions built from the same weight and bias for
  // other input shapes; the reordered (for Winograd: transformed) weights of
  // the first with the same layout are shared, which saves ~10 ms a layer
  // per new image size and a copy of the weights.
  DnnlConv2d(const at::Tensor& weight, const at::Tensor& bias, std::array<int64_t, 4> in_shape,
             const DnnlConvOptions& options, const std::vector<const DnnlConv2d*>& same_weights = {});
  ~DnnlConv2d();
  DnnlConv2d(const DnnlConv2d&) = delete;
  DnnlConv2d& operator=(const DnnlConv2d&) = delete;

  // x: a float map of in_shape (or bf16 with options.bf16), residual: a
  // float or bf16 one of the output's shape (only with options.residual), each in any
  // MapLayout (a 5-D [N, C/16, H, W, 16] tensor is Blocked16, a channels-last
  // 4-D one ChannelsLast). Returns a float map (bf16 with options.bf16_output) in
  // `out_layout` (NCHW where Blocked16 is asked for fewer than a multiple of
  // 16 output channels). A map in the primitive's own layout (Blocked16 for
  // most) is read and written in place, without a reorder.
  // residual_writable: nothing reads the residual afterwards, so where it is
  // a map of the output's type in out_layout the sum is accumulated in its memory and it is
  // returned, instead of first copying it into a new output (~500 MB of
  // copies a photo in ResNet-50-FPN, ~30 ms).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& residual = {},
                     MapLayout out_layout = MapLayout::NCHW, bool residual_writable = false) const;
  // oneDNN's name for the implementation it chose, e.g. "jit_wino_4x3:avx512_core".
  const std::string& implementation() const;
  // How many parts forward() runs (1 unless split for the scratchpad budget),
  // and the largest part's scratchpad in bytes.
  size_t parts() const;
  size_t scratchpad_bytes() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace maskrcnn::ops
