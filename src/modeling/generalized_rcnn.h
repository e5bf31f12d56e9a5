// GeneralizedRCNN for Mask R-CNN: transform -> backbone -> rpn -> roi_heads ->
// postprocess. Children are named as torchvision's, so named_parameters()
// yields torchvision's state_dict keys.
#pragma once
#include <torch/nn/module.h>

#include <vector>

#include "maskrcnn/config.h"
#include "maskrcnn/trace.h"
#include "maskrcnn/types.h"
#include "modeling/backbone/fpn.h"
#include "modeling/roi_heads.h"
#include "modeling/rpn.h"
#include "modeling/transform.h"

namespace maskrcnn::modeling {

class GeneralizedRCNNImpl : public torch::nn::Module {
 public:
  explicit GeneralizedRCNNImpl(const MaskRCNNConfig& cfg);
  // trace: where given (one image), what each stage computed (maskrcnn/trace.h).
  std::vector<Detections> forward(const std::vector<at::Tensor>& images,
                                  ForwardTrace* trace = nullptr);
  // Training mode: the losses of torchvision's model(images, targets).
  LossTerms forward_train(const std::vector<at::Tensor>& images,
                          std::vector<TrainingTarget> targets);

  const MaskRCNNConfig& config() const { return cfg_; }
  const Transform& transform() const { return transform_; }

  BackboneWithFPN backbone{nullptr};
  RegionProposalNetwork rpn{nullptr};
  RoIHeads roi_heads{nullptr};

 private:
  MaskRCNNConfig cfg_;
  Transform transform_;
};
TORCH_MODULE(GeneralizedRCNN);

// transform.postprocess + paste_masks_in_image for one image.
Detections postprocess_detections(const RoIDetections& d, std::pair<int64_t, int64_t> resized,
                                  std::pair<int64_t, int64_t> original);

// paste_masks_in_image (padding 1) restricted to where each mask can be non-zero.
std::vector<InstanceMask> paste_masks(const at::Tensor& mask_probs, const at::Tensor& boxes,
                                      int64_t image_height, int64_t image_width);

}  // namespace maskrcnn::modeling
