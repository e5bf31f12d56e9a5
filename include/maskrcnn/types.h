// The ground types that every layer passes around: a state dict, one
// image's detections, one image's training target, the training losses.
// Nothing here depends on the model; modeling, I/O and the engine all use it.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace maskrcnn {

// An ordered state dict: (key, tensor), in file order (torchvision's names).
using StateDict = std::vector<std::pair<std::string, at::Tensor>>;

// One instance's mask, pasted into the image exactly as torchvision's
// paste_masks_in_image does, stored only where it can be non-zero: the
// probabilities of image pixels [y0, y0 + h) x [x0, x0 + w).
struct InstanceMask {
  int64_t x0 = 0, y0 = 0;
  at::Tensor probs;  // float [h, w] (h or w may be 0 for boxes outside the image)
};

// Detections for one image, in its original pixel coordinates. Its tensors
// live on the model's device (see MaskRCNN::to).
struct Detections {
  int64_t image_height = 0, image_width = 0;
  at::Tensor boxes;   // float [N, 4] x1, y1, x2, y2
  at::Tensor scores;  // float [N], descending
  at::Tensor labels;  // int64 [N]; for COCO models the COCO category id
  std::vector<InstanceMask> masks;

  int64_t size() const { return boxes.defined() ? boxes.size(0) : 0; }
  // Full-image probabilities [H, W] (torchvision's masks[i, 0]).
  at::Tensor mask_probs(int64_t i) const;
  // Full-image binary mask [H, W] uint8: probs >= threshold.
  at::Tensor binary_mask(int64_t i, double threshold = 0.5) const;
};

// One image's ground truth for training, in that image's own pixels.
struct TrainingTarget {
  at::Tensor boxes;   // float [N, 4] x1, y1, x2, y2 with x2 > x1 and y2 > y1
  at::Tensor labels;  // int64 [N], in 1 .. num_classes - 1
  at::Tensor masks;   // uint8 [N, H, W], 1 inside the object
  // Seeds this image's RPN and RoI sampling: runs are reproducible and do not
  // depend on which process or batch slot the image lands in.
  uint64_t sampling_seed = 0;
};

// Training losses under torchvision's names and in its order: loss_classifier,
// loss_box_reg, loss_mask, loss_objectness, loss_rpn_box_reg.
using LossTerms = std::vector<std::pair<std::string, at::Tensor>>;

}  // namespace maskrcnn
