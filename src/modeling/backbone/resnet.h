// torchvision.models.resnet body (no avgpool/fc), as used by resnet_fpn_backbone:
// returns the outputs of layer1..layer4. Module names match torchvision's.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

#include <memory>
#include <vector>

#include "modeling/layers.h"

namespace maskrcnn::modeling {

struct NormSpec {
  Norm kind = Norm::FrozenBatchNorm;
  double eps = 0.0;  // batch norms'
};

// Bottleneck (ResNet-50/101, stride on the 3x3 conv) or BasicBlock (ResNet-18/34).
class ResNetBlockImpl : public torch::nn::Module {
 public:
  ResNetBlockImpl(bool bottleneck, int64_t inplanes, int64_t planes, int64_t stride,
                  bool downsample, NormSpec norm);
  ~ResNetBlockImpl() override;
  // At CPU inference under bf16 precision the output is a bf16 map (what
  // the next convolutions read; see resnet.cpp).
  at::Tensor forward(const at::Tensor& x);
  // forward(x) where the caller gives x up: where nothing else holds it, its
  // memory may take the block's output (the residual add accumulates there).
  at::Tensor forward_consuming(at::Tensor x);

 private:
  at::Tensor run(const at::Tensor& x, bool x_writable);
  bool bottleneck_;
  std::unique_ptr<cpu::InferenceConv> run1_, run2_, run3_, run_downsample_;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  std::shared_ptr<NormLayer> bn1, bn2, bn3;
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(ResNetBlock);

class ResNetBodyImpl : public torch::nn::Module {
 public:
  ResNetBodyImpl(int depth, NormSpec norm);
  // Outputs of layer1..layer4 ("0".."3" in torchvision's IntermediateLayerGetter).
  std::vector<at::Tensor> forward(const at::Tensor& x);  // layer1..4 outputs, NCHW float
  // The same maps, blocked where oneDNN computed them (feature_layout.h), in
  // bf16 where it computed them in bf16 (for the FPN's lateral convolutions).
  std::vector<at::Tensor> features(const at::Tensor& x);
  // Channels of layer1..layer4's outputs.
  std::vector<int64_t> out_channels() const { return out_channels_; }
  // Freezes conv1 and the first (5 - trainable_layers) of layer1..layer4, like
  // torchvision's _resnet_fpn_extractor.
  void freeze(int trainable_layers);
  ~ResNetBodyImpl() override;

 private:
  std::unique_ptr<cpu::InferenceConv> run_stem_;
  torch::nn::Conv2d conv1{nullptr};
  std::shared_ptr<NormLayer> bn1;
  std::vector<torch::nn::Sequential> layers_;
  std::vector<int64_t> out_channels_;
};
TORCH_MODULE(ResNetBody);

}  // namespace maskrcnn::modeling
