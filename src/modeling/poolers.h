// torchvision MultiScaleRoIAlign: assigns each box to an FPN level (LevelMapper,
// canonical scale 224 at level 4) and RoIAligns it there.
#pragma once
#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

namespace maskrcnn::modeling {

class MultiScaleRoIAlign {
 public:
  MultiScaleRoIAlign(int64_t output_size, int64_t sampling_ratio)
      : output_size_(output_size), sampling_ratio_(sampling_ratio) {}
  // features: FPN levels "0".."3" (the "pool" level is not used);
  // boxes: per image [K_i, 4]; image_sizes: (h, w) after resize.
  at::Tensor operator()(const std::vector<at::Tensor>& features,
                        const std::vector<at::Tensor>& boxes,
                        const std::vector<std::pair<int64_t, int64_t>>& image_sizes) const;

 private:
  int64_t output_size_, sampling_ratio_;
};

// [sum K_i, 5] rois (batch index, x1, y1, x2, y2).
at::Tensor boxes_to_rois(const std::vector<at::Tensor>& boxes);

}  // namespace maskrcnn::modeling
