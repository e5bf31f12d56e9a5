// Convolution + batch norm + residual add + ReLU, the unit the backbone, FPN,
// RPN and mask head are made of, with an inference fast path:
//   * batch norm in eval mode (FrozenBatchNorm2d, or BatchNorm2d not training)
//     is folded into the convolution's weights and bias, once per weight
//     version, instead of a pass over every output;
//   * with oneDNN, every convolution with the same stride, padding and
//     dilation on both axes runs a oneDNN primitive built once per input
//     shape, the weights reordered once and the bias, residual add and ReLU
//     fused: Winograd F(4x4, 3x3) for 3x3 stride-1 layers when
//     conv_algorithm() is Winograd, the direct algorithm for the rest (what
//     LibTorch's CPU convolution runs too, reordering the weights per call);
//     LibTorch's convolution without oneDNN or where oneDNN lacks a kernel;
//   * with inference_precision() bf16, every convolution runs oneDNN's bf16
//     kernels (bf16 inputs and weights, f32 accumulation and outputs), but
//     3x3 stride-1 layers on float maps of 100x100 or more, where f32
//     Winograd is faster (and exact to f32).
// With gradients enabled (training) it computes relu(bn(conv(x)) + residual)
// in the autograd graph: frozen batch norm folded into the weights there, and
// 3x3 stride-1 layers on oneDNN's Winograd forward and backward
// (ops/conv/dnnl_winograd_train.h) unless a DirectTrainingConvs is alive;
// batch norm with batch statistics runs as the module does.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/modules/conv.h>

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "backend/cpu/conv_norm.h"
#include "ops/map_layout.h"

namespace maskrcnn::ops {
class DnnlConv2d;
}

namespace maskrcnn::cpu {


// While alive on this thread, training convolutions stay on LibTorch's direct
// algorithm (as torchvision computes them) instead of oneDNN's Winograd.
// forward_train holds one when the model has batch norm with batch statistics:
// its backward subtracts the batch mean of the gradient, cancelling most of
// it, so Winograd's ~1e-6 rounding grows to ~2e-3 in the deep gradients
// (torchvision itself moves ~1e-2 there between 1 and 2 threads).
class DirectTrainingConvs {
 public:
  DirectTrainingConvs(bool active = true);
  ~DirectTrainingConvs();
  DirectTrainingConvs(const DirectTrainingConvs&) = delete;
  DirectTrainingConvs& operator=(const DirectTrainingConvs&) = delete;

 private:
  bool previous_;
};

// Appends what identifies a parameter's current values to `key`: its
// tensor, its storage and its version (bumped by every in-place change:
// load_state_dict, an optimizer step). Undefined tensors add a fixed entry.
// Cached derivatives of the weights (folded, packed) are remade when it changes.
void add_parameter_key(std::vector<int64_t>& key, const at::Tensor& t);

class InferenceConv {
 public:
  // allow_bf16: false keeps f32 arithmetic whatever inference_precision() is.
  explicit InferenceConv(bool allow_bf16 = true);
  ~InferenceConv();
  InferenceConv(const InferenceConv&) = delete;
  InferenceConv& operator=(const InferenceConv&) = delete;

  // relu(bn(conv(x)) + residual); bn and residual optional. x and residual
  // in any ops::MapLayout; the result in `out` where oneDNN computes it
  // (blocked only for a multiple of 16 channels), else NCHW.
  // only_convs_read: the result goes to other InferenceConvs only, as their
  // input or residual. Under bf16 precision, where this convolution computes
  // in bf16, it is then stored in bf16: what the next bf16 convolution would
  // round it to anyway, in half the bytes, with no f32 -> bf16 reorder before
  // that convolution. As a residual it is then added in its rounded value (a
  // ResNet block's skip path: one more rounding than torchvision's f32 sum).
  // A convolution with gradients reads a bf16 map as float.
  // residual_writable: the caller gives the residual up (nothing reads it
  // afterwards): the output may be accumulated in its memory.
  at::Tensor operator()(const torch::nn::Conv2dImpl& conv, const ConvNorm* bn,
                        const at::Tensor& x, bool relu, const at::Tensor& residual = {},
                        ops::MapLayout out = ops::MapLayout::NCHW, bool only_convs_read = false,
                        bool residual_writable = false);
  // How many calls oneDNN served (Winograd, or bf16); the rest ran LibTorch's convolution.
  int64_t onednn_calls() const { return onednn_calls_; }
  // How many oneDNN primitive runs those took (more than the calls where a
  // convolution ran in parts for winograd_scratchpad_budget()).
  int64_t onednn_parts() const { return onednn_parts_; }

 private:
  struct Primitive;
  at::Tensor compute(const torch::nn::Conv2dImpl& conv, const ConvNorm* bn, const at::Tensor& x,
                     bool relu, const at::Tensor& residual, ops::MapLayout out, bool only_convs_read,
                     bool residual_writable);
  // Drops the cached derivatives when a parameter's version moved.
  void refresh(const torch::nn::Conv2dImpl& conv, const ConvNorm* bn);
  // The folded (weight, bias) for the current parameter versions. Not kept
  // once a oneDNN primitive holds them packed: the body's folded copies are
  // ~90 MB that a photo's peak RSS does not need.
  std::pair<at::Tensor, at::Tensor> folded(const torch::nn::Conv2dImpl& conv, const ConvNorm* bn);
  std::shared_ptr<const ops::DnnlConv2d> primitive(const torch::nn::Conv2dImpl& conv, const ConvNorm* bn,
                                                   const at::Tensor& x, bool relu, bool residual, bool bf16,
                                                   bool winograd, bool bf16_output);

  bool allow_bf16_;
  std::mutex mutex_;
  std::vector<int64_t> folded_key_;
  at::Tensor weight_, bias_;
  std::list<Primitive> primitives_;  // most recently used first
  std::atomic<int64_t> onednn_calls_{0}, onednn_parts_{0};
};

}  // namespace maskrcnn::cpu
