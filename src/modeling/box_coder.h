// torchvision.models.detection._utils.BoxCoder: (dx, dy, dw, dh) <-> boxes.
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <cmath>

namespace maskrcnn::modeling {

class BoxCoder {
 public:
  explicit BoxCoder(std::array<double, 4> weights,
                    double bbox_xform_clip = std::log(1000.0 / 16))
      : weights_(weights), clip_(bbox_xform_clip) {}
  // rel_codes [N, K*4] relative to boxes [N, 4] -> [N, K, 4].
  at::Tensor decode(const at::Tensor& rel_codes, const at::Tensor& boxes) const;
  // Regression targets of reference_boxes [N, 4] w.r.t. proposals [N, 4].
  at::Tensor encode(const at::Tensor& reference_boxes, const at::Tensor& proposals) const;

 private:
  std::array<double, 4> weights_;
  double clip_;
};

}  // namespace maskrcnn::modeling
