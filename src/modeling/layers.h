// Small building blocks with torchvision's parameter names, so that
// named_parameters()/named_buffers() produce torchvision's state_dict keys.
#pragma once
#include <memory>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "backend/cpu/conv_norm.h"
#include "ops/map_layout.h"

namespace maskrcnn::cpu {
class InferenceConv;
}

namespace maskrcnn::modeling {

// BatchNorm2d or FrozenBatchNorm2d (buffers only, no num_batches_tracked).
class BatchNorm2dImpl : public torch::nn::Module, public cpu::ConvNorm {
 public:
  BatchNorm2dImpl(int64_t channels, bool frozen, double eps);
  at::Tensor forward(const at::Tensor& x) { return normalize(x); }
  at::Tensor normalize(const at::Tensor& x) const override;
  bool frozen() const override { return frozen_; }
  bool batch_statistics() const override { return !frozen_ && is_training(); }
  double eps() const { return eps_; }
  // Per-channel (scale, shift) such that forward(x) == x * scale + shift in eval.
  std::pair<at::Tensor, at::Tensor> affine() const override;
  std::vector<at::Tensor> state() const override {
    return {weight, bias, running_mean, running_var, num_batches_tracked};
  }

  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  bool frozen_;
  double eps_;
  double momentum_ = 0.1;
};
TORCH_MODULE(BatchNorm2d);

// torchvision.ops.Conv2dNormActivation: "0" conv, "1" norm (optional), ReLU (optional).
class ConvNormActImpl : public torch::nn::Module {
 public:
  struct Options {
    int64_t in, out, kernel = 3, stride = 1, padding = -1, dilation = 1;
    bool norm = false;       // BatchNorm2d after the conv (then the conv has no bias)
    bool frozen_norm = false;
    double norm_eps = 1e-5;
    bool relu = true;
  };
  explicit ConvNormActImpl(const Options& o);
  ~ConvNormActImpl() override;
  at::Tensor forward(const at::Tensor& x);
  // relu?(norm(conv(x)) + residual), the add fused where oneDNN runs it.
  // residual_writable: nothing reads the residual afterwards (its memory may
  // take the output).
  at::Tensor forward_add(const at::Tensor& x, const at::Tensor& residual, bool residual_writable = false);
  // The layout of the output where oneDNN computes it (NCHW by default;
  // a layer whose readers all take other layouts asks for those).
  void set_output_layout(ops::MapLayout layout) { layout_ = layout; }
  // Only other ConvNormActs read the output: under bf16 precision it may be
  // stored in bf16 (cpu::InferenceConv's only_convs_read).
  void set_only_convs_read(bool only) { only_convs_read_ = only; }

  torch::nn::Conv2d conv{nullptr};
  BatchNorm2d norm{nullptr};

 private:
  bool relu_;
  ops::MapLayout layout_ = ops::MapLayout::NCHW;
  bool only_convs_read_ = false;
  std::unique_ptr<cpu::InferenceConv> run_;  // batch norm folded, Winograd (inference_conv.h)
};
TORCH_MODULE(ConvNormAct);

// Kaiming-normal (fan_out, relu) weights and zero bias, as torchvision's heads init.
void init_kaiming_fan_out(torch::nn::Module& m);

}  // namespace maskrcnn::modeling
