// torchvision RegionProposalNetwork + RPNHead ("rpn.head.*" keys).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

#include <utility>
#include <vector>

#include "maskrcnn/config.h"
#include "modeling/anchor_generator.h"
#include "modeling/box_coder.h"
#include "modeling/layers.h"

namespace maskrcnn::modeling {

class RPNHeadImpl : public torch::nn::Module {
 public:
  RPNHeadImpl(int64_t in_channels, int64_t num_anchors, int conv_depth);
  // Per level: objectness [N, A, H, W] and deltas [N, A*4, H, W].
  std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> forward(
      const std::vector<at::Tensor>& features);

  torch::nn::Sequential conv{nullptr};
  torch::nn::Conv2d cls_logits{nullptr}, bbox_pred{nullptr};
};
TORCH_MODULE(RPNHead);

struct RPNOutput {
  std::vector<at::Tensor> boxes;  // per image [K, 4], in the resized image's pixels
  std::vector<at::Tensor> scores;
};

struct ImageBatch;  // transform.h

class RegionProposalNetworkImpl : public torch::nn::Module {
 public:
  explicit RegionProposalNetworkImpl(const MaskRCNNConfig& cfg);
  RPNOutput forward(const ImageBatch& images, const std::vector<at::Tensor>& features);

  RPNHead head{nullptr};

 private:
  std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> filter_proposals(
      const at::Tensor& proposals, const at::Tensor& objectness,
      const std::vector<std::pair<int64_t, int64_t>>& image_sizes,
      const std::vector<int64_t>& num_anchors_per_level) const;

  MaskRCNNConfig cfg_;
  AnchorGenerator anchor_generator_;
  BoxCoder box_coder_{{1.0, 1.0, 1.0, 1.0}};
};
TORCH_MODULE(RegionProposalNetwork);

}  // namespace maskrcnn::modeling
