// `maskrcnn explain`: one self-contained HTML page that shows every stage of
// Mask R-CNN on one photo, drawn from the numbers of its own forward pass
// (MaskRCNN::predict_traced, maskrcnn/trace.h).
//
//   auto model = maskrcnn::load_model("model_final.pth");
//   auto rgb = maskrcnn::read_image("street.jpg");
//   std::string html = maskrcnn::explain_html(model, rgb, {});
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "maskrcnn/model.h"
#include "maskrcnn/trace.h"

namespace maskrcnn {

struct ExplainOptions {
  int detections = 3;          // detections followed through the box and mask heads
  int proposals_drawn = 40;    // RPN boxes drawn before and after NMS
  double mask_threshold = 0.5;
  int max_side = 900;          // longest side of the photo's pictures, in pixels
  std::string title;           // shown at the top, e.g. the photo's file name
};

// Runs one traced forward pass on `rgb_u8` (uint8 [3, H, W]) and renders it.
std::string explain_html(const MaskRCNN& model, const at::Tensor& rgb_u8,
                         const ExplainOptions& options = {});
// Renders a trace already recorded for `rgb_u8`.
std::string render_explain_report(const ForwardTrace& trace, const at::Tensor& rgb_u8,
                                  const std::vector<std::string>& class_names,
                                  const ExplainOptions& options = {});

}  // namespace maskrcnn
