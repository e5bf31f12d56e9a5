#include "modeling/backbone/fpn.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>

#include "common/stage_profile.h"

namespace maskrcnn::modeling {

FeaturePyramidNetworkImpl::FeaturePyramidNetworkImpl(const std::vector<int64_t>& in_channels,
                                                     int64_t out_channels, std::optional<Norm> norm,
                                                     double norm_eps) {
  inner_blocks = register_module("inner_blocks", torch::nn::ModuleList());
  layer_blocks = register_module("layer_blocks", torch::nn::ModuleList());
  for (int64_t c : in_channels) {
    ConvNormActImpl::Options inner{c, out_channels, 1, 1, 0};
    inner.norm = norm.has_value();
    inner.norm_kind = norm.value_or(Norm::BatchNorm);
    inner.norm_eps = norm_eps;
    inner.relu = false;
    ConvNormActImpl::Options layer{out_channels, out_channels, 3, 1, 1};
    layer.norm = norm.has_value();
    layer.norm_kind = norm.value_or(Norm::BatchNorm);
    layer.norm_eps = norm_eps;
    layer.relu = false;
    inner_.push_back(ConvNormAct(inner));
    layer_.push_back(ConvNormAct(layer));
    // Where oneDNN runs them, every map stays blocked: the laterals for the
    // next convolution, the outputs for the RPN head's convolution (Winograd
    // reads only blocked maps) and for RoIAlign, which reads them as they are.
    // (Channels-last outputs cost a reorder out of and back into blocked at
    // each level, and 2 x 62 MB of buffers at the largest.)
    inner_.back()->set_output_layout(ops::MapLayout::Blocked16);
    layer_.back()->set_output_layout(ops::MapLayout::Blocked16);
    inner_blocks->push_back(inner_.back());
    layer_blocks->push_back(layer_.back());
  }
  // torchvision: kaiming_uniform_(a=1) weights, zero bias.
  torch::NoGradGuard ng;
  for (auto& p : named_parameters()) {
    if (p.value().dim() == 4) torch::nn::init::kaiming_uniform_(p.value(), 1);
    else if (p.key().find(".0.bias") != std::string::npos) p.value().zero_();
  }
}

namespace {
// The public forward()s hand out 4-D channels-last maps, as before blocked ones.
std::vector<at::Tensor> channels_last_4d(std::vector<at::Tensor> maps) {
  for (auto& m : maps) m = ops::to_4d(m, ops::MapLayout::ChannelsLast);
  return maps;
}
}  // namespace

std::vector<at::Tensor> FeaturePyramidNetworkImpl::forward(const std::vector<at::Tensor>& x) {
  return channels_last_4d(features(x));
}

std::vector<at::Tensor> FeaturePyramidNetworkImpl::features(const std::vector<at::Tensor>& x) {
  const size_t n = x.size();
  std::vector<at::Tensor> results(n);
  auto last_inner = inner_[n - 1]->forward(x[n - 1]);
  results[n - 1] = layer_[n - 1]->forward(last_inner);
  for (int64_t idx = static_cast<int64_t>(n) - 2; idx >= 0; --idx) {
    // inner_lateral + top_down, the add fused into the lateral convolution
    // (one pass less over the largest maps; a + b == b + a in floating point)
    // and accumulated in top_down's memory, which nothing else reads.
    const auto [h, w] = ops::map_size(x[idx]);
    auto top_down = ops::upsample_nearest_any(last_inner, h, w);
    last_inner = inner_[idx]->forward_add(x[idx], top_down, ops::sole_owner(top_down));
    results[idx] = layer_[idx]->forward(last_inner);
  }
  // LastLevelMaxPool: F.max_pool2d(x, kernel 1, stride 2, padding 0).
  results.push_back(ops::max_pool2d_any(results.back(), 1, 2, 0));
  return results;
}

BackboneWithFPNImpl::BackboneWithFPNImpl(int depth, NormSpec body_norm, std::optional<Norm> fpn_norm,
                                         int64_t out_channels)
    : out_channels_(out_channels) {
  body = register_module("body", ResNetBody(depth, body_norm));
  auto c = body->out_channels();
  fpn = register_module("fpn", FeaturePyramidNetwork(c, out_channels, fpn_norm, 1e-5));
}

std::vector<at::Tensor> BackboneWithFPNImpl::forward(const at::Tensor& images) {
  return channels_last_4d(features(images));
}

std::vector<at::Tensor> BackboneWithFPNImpl::features(const at::Tensor& images,
                                                      std::vector<at::Tensor>* body_out) {
  std::vector<at::Tensor> stages;
  {
    common::ScopedStage stage("backbone.body");
    stages = body->features(images);
  }
  if (body_out) *body_out = stages;  // the FPN may overwrite maps only it holds
  common::ScopedStage stage("backbone.fpn");
  return fpn->features(stages);
}

}  // namespace maskrcnn::modeling
