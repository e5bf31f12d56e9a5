// torchvision RoIHeads for Mask R-CNN ("roi_heads.*" keys): box branch,
// post-processing (score threshold, class-wise NMS, top-k) and mask branch.
#pragma once
#include <torch/nn/module.h>

#include <utility>
#include <vector>

#include "maskrcnn/config.h"
#include "maskrcnn/trace.h"
#include "maskrcnn/types.h"
#include "modeling/box_coder.h"
#include "modeling/heads.h"
#include "modeling/matcher.h"
#include "modeling/poolers.h"

namespace maskrcnn::modeling {

struct RoIDetections {   // one image, in the resized image's pixels
  at::Tensor boxes;      // [N, 4]
  at::Tensor scores;     // [N]
  at::Tensor labels;     // [N] int64
  at::Tensor mask_probs; // [N, 1, 28, 28], the label's channel after sigmoid
};

class RoIHeadsImpl : public torch::nn::Module {
 public:
  explicit RoIHeadsImpl(const MaskRCNNConfig& cfg);
  std::vector<RoIDetections> forward(const std::vector<at::Tensor>& features,
                                     const std::vector<at::Tensor>& proposals,
                                     const std::vector<std::pair<int64_t, int64_t>>& image_sizes,
                                     ForwardTrace* trace = nullptr);

  // Training: loss_classifier, loss_box_reg, loss_mask. Targets are in the
  // resized image's pixels; proposals are the RPN's (detached).
  LossTerms forward_train(const std::vector<at::Tensor>& features,
                          const std::vector<at::Tensor>& proposals,
                          const std::vector<std::pair<int64_t, int64_t>>& image_sizes,
                          const std::vector<TrainingTarget>& targets);

  BoxHead box_head{nullptr};
  FastRCNNPredictor box_predictor{nullptr};
  MaskHead mask_head{nullptr};
  MaskRCNNPredictor mask_predictor{nullptr};
  // Replaces the predictors with freshly initialised ones for `num_classes`
  // (fine-tuning on another label set, as torchvision's tutorial does).
  void reset_predictors(int64_t num_classes);

 private:
  std::vector<RoIDetections> postprocess_detections(
      const at::Tensor& class_logits, const at::Tensor& box_regression,
      const std::vector<at::Tensor>& proposals,
      const std::vector<std::pair<int64_t, int64_t>>& image_sizes, TraceBoxHead* trace) const;

  struct TrainingSamples {
    std::vector<at::Tensor> proposals, matched_idxs, labels, regression_targets;
  };
  TrainingSamples select_training_samples(const std::vector<at::Tensor>& proposals,
                                          const std::vector<TrainingTarget>& targets) const;

  MaskRCNNConfig cfg_;
  Matcher proposal_matcher_;
  BalancedPositiveNegativeSampler fg_bg_sampler_;
  MultiScaleRoIAlign box_roi_pool_{7, 2};
  MultiScaleRoIAlign mask_roi_pool_{14, 2};
  BoxCoder box_coder_{{10.0, 10.0, 5.0, 5.0}};
};
TORCH_MODULE(RoIHeads);

}  // namespace maskrcnn::modeling
