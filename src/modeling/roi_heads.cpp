#include "modeling/roi_heads.h"

#include <ATen/ATen.h>

#include "maskrcnn/ops.h"

namespace maskrcnn::modeling {

RoIHeadsImpl::RoIHeadsImpl(const MaskRCNNConfig& cfg) : cfg_(cfg) {
  const bool v2 = cfg.arch == Arch::V2;
  box_head = register_module("box_head", BoxHead(256, 7, 1024, /*conv_fc=*/v2));
  box_predictor = register_module("box_predictor", FastRCNNPredictor(1024, cfg.num_classes));
  mask_head = register_module("mask_head", MaskHead(256, /*batch_norm=*/v2));
  mask_predictor = register_module("mask_predictor", MaskRCNNPredictor(256, 256, cfg.num_classes));
}

void RoIHeadsImpl::reset_predictors(int64_t num_classes) {
  cfg_.num_classes = static_cast<int>(num_classes);
  box_predictor = replace_module("box_predictor", FastRCNNPredictor(1024, num_classes));
  mask_predictor =
      replace_module("mask_predictor", MaskRCNNPredictor(256, 256, num_classes));
}

std::vector<RoIDetections> RoIHeadsImpl::postprocess_detections(
    const at::Tensor& class_logits, const at::Tensor& box_regression,
    const std::vector<at::Tensor>& proposals,
    const std::vector<std::pair<int64_t, int64_t>>& image_sizes) const {
  const int64_t num_classes = class_logits.size(-1);
  auto pred_boxes = box_coder_.decode(box_regression, at::cat(proposals, 0));
  auto pred_scores = at::softmax(class_logits, -1);
  std::vector<RoIDetections> out;
  int64_t offset = 0;
  for (size_t i = 0; i < proposals.size(); ++i) {
    const int64_t n = proposals[i].size(0);
    auto boxes = ops::clip_boxes_to_image(pred_boxes.slice(0, offset, offset + n),
                                          image_sizes[i].first, image_sizes[i].second);
    auto scores = pred_scores.slice(0, offset, offset + n);
    offset += n;
    auto labels = at::arange(num_classes, at::TensorOptions(at::kLong).device(scores.device()))
                      .view({1, -1})
                      .expand_as(scores);
    // Drop the background column, then treat each (box, class) as an instance.
    boxes = boxes.slice(1, 1).reshape({-1, 4});
    scores = scores.slice(1, 1).reshape(-1);
    labels = labels.slice(1, 1).reshape(-1);
    auto inds = at::where(scores > cfg_.box_score_thresh)[0];
    boxes = boxes.index_select(0, inds);
    scores = scores.index_select(0, inds);
    labels = labels.index_select(0, inds);
    auto keep = ops::remove_small_boxes(boxes, 1e-2);
    boxes = boxes.index_select(0, keep);
    scores = scores.index_select(0, keep);
    labels = labels.index_select(0, keep);
    keep = ops::batched_nms(boxes, scores, labels, cfg_.box_nms_thresh);
    keep = keep.slice(0, 0, cfg_.box_detections_per_img);
    RoIDetections d;
    d.boxes = boxes.index_select(0, keep);
    d.scores = scores.index_select(0, keep);
    d.labels = labels.index_select(0, keep);
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<RoIDetections> RoIHeadsImpl::forward(
    const std::vector<at::Tensor>& features, const std::vector<at::Tensor>& proposals,
    const std::vector<std::pair<int64_t, int64_t>>& image_sizes) {
  auto box_features = box_roi_pool_(features, proposals, image_sizes);
  box_features = box_head->forward(box_features);
  auto [class_logits, box_regression] = box_predictor->forward(box_features);
  auto result = postprocess_detections(class_logits, box_regression, proposals, image_sizes);

  std::vector<at::Tensor> mask_boxes;
  for (auto& r : result) mask_boxes.push_back(r.boxes);
  auto mask_features = mask_roi_pool_(features, mask_boxes, image_sizes);
  auto mask_logits = mask_predictor->forward(mask_head->forward(mask_features));
  // maskrcnn_inference: sigmoid of the predicted label's channel.
  std::vector<at::Tensor> labels;
  for (auto& r : result) labels.push_back(r.labels);
  auto all_labels = at::cat(labels);
  auto index = at::arange(mask_logits.size(0), all_labels.options());
  auto probs = mask_logits.index({index, all_labels}).unsqueeze(1).sigmoid();
  int64_t offset = 0;
  for (auto& r : result) {
    const int64_t n = r.boxes.size(0);
    r.mask_probs = probs.slice(0, offset, offset + n);
    offset += n;
  }
  return result;
}

}  // namespace maskrcnn::modeling
