// torchvision RegionProposalNetwork + RPNHead ("rpn.head.*" keys).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "maskrcnn/config.h"
#include "maskrcnn/trace.h"
#include "maskrcnn/types.h"
#include "modeling/anchor_generator.h"
#include "modeling/box_coder.h"
#include "modeling/layers.h"
#include "modeling/matcher.h"

namespace maskrcnn::modeling {

class RPNHeadImpl : public torch::nn::Module {
 public:
  RPNHeadImpl(int64_t in_channels, int64_t num_anchors, int conv_depth);
  ~RPNHeadImpl() override;
  // Per level: objectness [N, A, H, W] and deltas [N, A*4, H, W].
  std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> forward(
      const std::vector<at::Tensor>& features);

  torch::nn::Sequential conv{nullptr};
  torch::nn::Conv2d cls_logits{nullptr}, bbox_pred{nullptr};

 private:
  // Inference on a blocked map: cls_logits and bbox_pred as one convolution
  // of 16 outputs (A + 4A, zero-padded), whose one channel block is written
  // [H, W, 16]: the map is read once and needs no reorder. The weights are
  // copied from the two modules when they change (not a registered module).
  std::pair<at::Tensor, at::Tensor> predict_merged(const at::Tensor& t);
  bool predictors_need_grad() const;
  std::unique_ptr<cpu::InferenceConv> cls_logits_run_, bbox_pred_run_;  // the two apart (other paths)
  std::unique_ptr<cpu::InferenceConv> merged_run_;
  torch::nn::Conv2d merged_{nullptr};
  std::vector<int64_t> merged_key_;  // the two modules' parameters it was copied from
  std::mutex merged_mutex_;          // predict() may run on several threads
};
TORCH_MODULE(RPNHead);

struct RPNOutput {
  std::vector<at::Tensor> boxes;  // per image [K, 4], in the resized image's pixels
  std::vector<at::Tensor> scores;
  LossTerms losses;  // training: loss_objectness, loss_rpn_box_reg
};

struct ImageBatch;  // transform.h

class RegionProposalNetworkImpl : public torch::nn::Module {
 public:
  explicit RegionProposalNetworkImpl(const MaskRCNNConfig& cfg);
  // targets (training only): boxes in the resized image's pixels.
  // trace (inference, one image): anchors, objectness, proposals before and after NMS.
  RPNOutput forward(const ImageBatch& images, const std::vector<at::Tensor>& features,
                    const std::vector<TrainingTarget>* targets = nullptr,
                    ForwardTrace* trace = nullptr);

  RPNHead head{nullptr};

 private:
  std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> filter_proposals(
      const at::Tensor& proposals, const at::Tensor& objectness,
      const std::vector<std::pair<int64_t, int64_t>>& image_sizes,
      const std::vector<int64_t>& num_anchors_per_level, TraceRPN* trace) const;
  void trace_anchors(ForwardTrace& trace, const ImageBatch& images,
                     const std::vector<at::Tensor>& objectness) const;

  // Per image: labels (1 object, 0 background, -1 ignored) and matched gt boxes.
  std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> assign_targets_to_anchors(
      const at::Tensor& anchors, const std::vector<TrainingTarget>& targets) const;
  LossTerms compute_loss(const at::Tensor& objectness, const at::Tensor& pred_bbox_deltas,
                         const std::vector<at::Tensor>& labels,
                         const std::vector<at::Tensor>& regression_targets,
                         const std::vector<TrainingTarget>& targets) const;

  MaskRCNNConfig cfg_;
  Matcher proposal_matcher_;
  BalancedPositiveNegativeSampler fg_bg_sampler_;
  AnchorGenerator anchor_generator_;
  BoxCoder box_coder_{{1.0, 1.0, 1.0, 1.0}};
};
TORCH_MODULE(RegionProposalNetwork);

}  // namespace maskrcnn::modeling
