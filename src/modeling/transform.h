// torchvision GeneralizedRCNNTransform: normalise, resize (min/max size), and
// batch into one zero-padded tensor whose sides are multiples of 32.
#pragma once
#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

#include "maskrcnn/config.h"
#include "maskrcnn/types.h"

namespace maskrcnn::modeling {

struct ImageBatch {
  at::Tensor tensors;                                    // [N, 3, H_pad, W_pad]
  std::vector<std::pair<int64_t, int64_t>> image_sizes;  // (h, w) after resize
};

class Transform {
 public:
  explicit Transform(const MaskRCNNConfig& cfg) : cfg_(cfg) {}
  // images: float [3, H, W] in [0, 1].
  ImageBatch operator()(const std::vector<at::Tensor>& images) const;
  // Training: also resizes each target's boxes (scaled) and masks (nearest),
  // in place, as torchvision's transform does.
  ImageBatch operator()(const std::vector<at::Tensor>& images,
                        std::vector<TrainingTarget>& targets) const;
  // The size torchvision resizes an (h, w) image to.
  std::pair<int64_t, int64_t> resized_size(int64_t h, int64_t w) const;
  at::Tensor normalize(const at::Tensor& image) const;
  at::Tensor resize(const at::Tensor& image) const;

 private:
  MaskRCNNConfig cfg_;
};

// boxes [N, 4] from an image of size `from` (h, w) to one of size `to`.
at::Tensor resize_boxes(const at::Tensor& boxes, std::pair<int64_t, int64_t> from,
                        std::pair<int64_t, int64_t> to);

}  // namespace maskrcnn::modeling
