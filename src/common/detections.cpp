// Detections' full-image masks from the pasted boxes they keep.
#include <ATen/ATen.h>

#include "maskrcnn/types.h"

namespace maskrcnn {

at::Tensor Detections::mask_probs(int64_t i) const {
  const auto& m = masks.at(i);
  auto full = at::zeros({image_height, image_width}, m.probs.options());
  if (m.probs.numel() > 0)
    full.slice(0, m.y0, m.y0 + m.probs.size(0)).slice(1, m.x0, m.x0 + m.probs.size(1)).copy_(m.probs);
  return full;
}

at::Tensor Detections::binary_mask(int64_t i, double threshold) const {
  return mask_probs(i).ge(threshold).to(at::kByte);
}

}  // namespace maskrcnn
