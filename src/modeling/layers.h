// Small building blocks with torchvision's parameter names, so that
// named_parameters()/named_buffers() produce torchvision's state_dict keys.
#pragma once
#include <memory>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "backend/cpu/conv_norm.h"
#include "maskrcnn/config.h"
#include "ops/map_layout.h"

namespace maskrcnn::cpu {
class InferenceConv;
}

namespace maskrcnn::modeling {

class BatchNormSync;

// A normalisation layer after a convolution: what ConvNormAct, the ResNet
// blocks and InferenceConv (through cpu::ConvNorm) hold.
class NormLayer : public torch::nn::Module, public cpu::ConvNorm {
 public:
  at::Tensor forward(const at::Tensor& x) { return normalize(x); }
};

// BatchNorm2d or FrozenBatchNorm2d (buffers only, no num_batches_tracked).
class BatchNorm2dImpl : public NormLayer {
 public:
  BatchNorm2dImpl(int64_t channels, bool frozen, double eps);
  at::Tensor normalize(const at::Tensor& x) const override;
  bool frozen() const override { return frozen_; }
  bool batch_statistics() const override { return !frozen_ && is_training(); }
  double eps() const { return eps_; }
  // Per-channel (scale, shift) such that forward(x) == x * scale + shift in eval.
  std::pair<at::Tensor, at::Tensor> affine() const override;
  std::vector<at::Tensor> state() const override {
    return {weight, bias, running_mean, running_var, num_batches_tracked};
  }
  // Training statistics over every process of a data-parallel run
  // (sync_batch_norm.h); null: this process's batch only.
  void set_sync(std::shared_ptr<BatchNormSync> sync) { sync_ = std::move(sync); }

  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  std::shared_ptr<BatchNormSync> sync_;
  bool frozen_;
  double eps_;
  double momentum_ = 0.1;
};
TORCH_MODULE(BatchNorm2d);

// torch.nn.GroupNorm(32, channels): statistics over each image's channel
// groups, in training and inference alike, so it never folds into the
// convolution (batch_statistics() is always true). Parameters weight, bias.
class GroupNormImpl : public NormLayer {
 public:
  static constexpr int64_t kGroups = 32;  // detectron2's and He et al.'s default
  explicit GroupNormImpl(int64_t channels, double eps = 1e-5);
  at::Tensor normalize(const at::Tensor& x) const override;
  bool frozen() const override { return false; }
  bool batch_statistics() const override { return true; }
  std::pair<at::Tensor, at::Tensor> affine() const override;  // throws: per-image statistics
  std::vector<at::Tensor> state() const override { return {weight, bias}; }

  at::Tensor weight, bias;

 private:
  double eps_;
};
TORCH_MODULE(GroupNorm);

// The norm layer of `kind` for `channels` (eps: batch norms' epsilon).
std::shared_ptr<NormLayer> make_norm(Norm kind, int64_t channels, double eps);

// torchvision.ops.Conv2dNormActivation: "0" conv, "1" norm (optional), ReLU (optional).
class ConvNormActImpl : public torch::nn::Module {
 public:
  struct Options {
    int64_t in, out, kernel = 3, stride = 1, padding = -1, dilation = 1;
    bool norm = false;  // a norm layer after the conv (then the conv has no bias)
    Norm norm_kind = Norm::BatchNorm;
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
  std::shared_ptr<NormLayer> norm;

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
