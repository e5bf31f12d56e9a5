#include "modeling/box_coder.h"

#include <ATen/ATen.h>

namespace maskrcnn::modeling {

at::Tensor BoxCoder::decode(const at::Tensor& rel_codes_in, const at::Tensor& boxes_in) const {
  const int64_t n = boxes_in.size(0);
  auto rel_codes = rel_codes_in.reshape({n, -1});
  auto boxes = boxes_in.to(rel_codes.scalar_type());
  auto widths = boxes.select(1, 2) - boxes.select(1, 0);
  auto heights = boxes.select(1, 3) - boxes.select(1, 1);
  auto ctr_x = boxes.select(1, 0) + 0.5 * widths;
  auto ctr_y = boxes.select(1, 1) + 0.5 * heights;
  const int64_t k = rel_codes.size(1);
  auto dx = rel_codes.slice(1, 0, k, 4) / weights_[0];
  auto dy = rel_codes.slice(1, 1, k, 4) / weights_[1];
  auto dw = (rel_codes.slice(1, 2, k, 4) / weights_[2]).clamp_max(clip_);
  auto dh = (rel_codes.slice(1, 3, k, 4) / weights_[3]).clamp_max(clip_);
  auto pred_ctr_x = dx * widths.unsqueeze(1) + ctr_x.unsqueeze(1);
  auto pred_ctr_y = dy * heights.unsqueeze(1) + ctr_y.unsqueeze(1);
  auto pred_w = at::exp(dw) * widths.unsqueeze(1);
  auto pred_h = at::exp(dh) * heights.unsqueeze(1);
  auto c_to_c_h = 0.5 * pred_h;
  auto c_to_c_w = 0.5 * pred_w;
  auto out = at::stack({pred_ctr_x - c_to_c_w, pred_ctr_y - c_to_c_h, pred_ctr_x + c_to_c_w,
                        pred_ctr_y + c_to_c_h},
                       2);
  return out.reshape({n, -1, 4});
}

at::Tensor BoxCoder::encode(const at::Tensor& reference_boxes, const at::Tensor& proposals) const {
  const double wx = weights_[0], wy = weights_[1], ww = weights_[2], wh = weights_[3];
  auto px1 = proposals.select(1, 0), py1 = proposals.select(1, 1);
  auto px2 = proposals.select(1, 2), py2 = proposals.select(1, 3);
  auto gx1 = reference_boxes.select(1, 0), gy1 = reference_boxes.select(1, 1);
  auto gx2 = reference_boxes.select(1, 2), gy2 = reference_boxes.select(1, 3);
  auto ex_widths = px2 - px1;
  auto ex_heights = py2 - py1;
  auto ex_ctr_x = px1 + 0.5 * ex_widths;
  auto ex_ctr_y = py1 + 0.5 * ex_heights;
  auto gt_widths = gx2 - gx1;
  auto gt_heights = gy2 - gy1;
  auto gt_ctr_x = gx1 + 0.5 * gt_widths;
  auto gt_ctr_y = gy1 + 0.5 * gt_heights;
  auto tdx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths;
  auto tdy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights;
  auto tdw = ww * at::log(gt_widths / ex_widths);
  auto tdh = wh * at::log(gt_heights / ex_heights);
  return at::stack({tdx, tdy, tdw, tdh}, 1);
}

}  // namespace maskrcnn::modeling
