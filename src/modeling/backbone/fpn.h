// torchvision.ops.FeaturePyramidNetwork with LastLevelMaxPool, and the
// BackboneWithFPN wrapper ("body" + "fpn") of resnet_fpn_backbone.
#pragma once
#include <torch/nn/module.h>

#include <optional>
#include <vector>

#include "modeling/backbone/resnet.h"
#include "modeling/layers.h"

namespace maskrcnn::modeling {

class FeaturePyramidNetworkImpl : public torch::nn::Module {
 public:
  // norm: v2 builds the FPN with a norm layer (BatchNorm2d in torchvision's
  // build; convs without bias); nullopt: none (v1).
  FeaturePyramidNetworkImpl(const std::vector<int64_t>& in_channels, int64_t out_channels,
                            std::optional<Norm> norm, double norm_eps);
  // Returns the levels "0".."3" and "pool" (stride 4..64), 4-D channels-last.
  std::vector<at::Tensor> forward(const std::vector<at::Tensor>& x);
  // The same maps, blocked where oneDNN computed them (feature_layout.h).
  std::vector<at::Tensor> features(const std::vector<at::Tensor>& x);

 private:
  torch::nn::ModuleList inner_blocks, layer_blocks;
  std::vector<ConvNormAct> inner_, layer_;
};
TORCH_MODULE(FeaturePyramidNetwork);

class BackboneWithFPNImpl : public torch::nn::Module {
 public:
  BackboneWithFPNImpl(int depth, NormSpec body_norm, std::optional<Norm> fpn_norm,
                      int64_t out_channels = 256);
  std::vector<at::Tensor> forward(const at::Tensor& images);  // 4-D, as FeaturePyramidNetwork's
  // The same maps, blocked where oneDNN computed them: what the RPN head's
  // convolution and RoIAlign read without a copy. body_out: where given,
  // also the body's C2..C5 (ForwardTrace).
  std::vector<at::Tensor> features(const at::Tensor& images,
                                   std::vector<at::Tensor>* body_out = nullptr);
  int64_t out_channels() const { return out_channels_; }
  ResNetBody body{nullptr};
  FeaturePyramidNetwork fpn{nullptr};

 private:
  int64_t out_channels_;
};
TORCH_MODULE(BackboneWithFPN);

}  // namespace maskrcnn::modeling
