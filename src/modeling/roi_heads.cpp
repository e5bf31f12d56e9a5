#include "modeling/roi_heads.h"

#include <ATen/ATen.h>

#include "maskrcnn/ops.h"
#include "common/stage_profile.h"
#include "ops/map_layout.h"

namespace maskrcnn::modeling {

RoIHeadsImpl::RoIHeadsImpl(const MaskRCNNConfig& cfg)
    : cfg_(cfg),
      proposal_matcher_(cfg.box_fg_iou_thresh, cfg.box_bg_iou_thresh, /*allow_low_quality=*/false),
      fg_bg_sampler_(cfg.box_batch_size_per_image, cfg.box_positive_fraction) {
  const bool v2 = cfg.arch == Arch::V2;
  const auto heads_norm = cfg.heads_have_norm() ? std::optional<Norm>(cfg.heads_norm()) : std::nullopt;
  box_head = register_module("box_head", BoxHead(cfg.fpn_channels, 7, cfg.representation_size, /*conv_fc=*/v2,
                                                 cfg.box_head_conv_layers, cfg.heads_norm()));
  box_predictor = register_module("box_predictor", FastRCNNPredictor(cfg.representation_size, cfg.num_classes));
  mask_head = register_module("mask_head", MaskHead(cfg.fpn_channels, cfg.mask_head_layers, cfg.mask_head_channels, heads_norm));
  mask_predictor = register_module(
      "mask_predictor", MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels, cfg.num_classes));
}

void RoIHeadsImpl::reset_predictors(int64_t num_classes) {
  cfg_.num_classes = static_cast<int>(num_classes);
  box_predictor = replace_module("box_predictor", FastRCNNPredictor(cfg_.representation_size, num_classes));
  mask_predictor = replace_module(
      "mask_predictor", MaskRCNNPredictor(cfg_.mask_head_channels, cfg_.mask_head_channels, num_classes));
}

std::vector<RoIDetections> RoIHeadsImpl::postprocess_detections(
    const at::Tensor& class_logits, const at::Tensor& box_regression,
    const std::vector<at::Tensor>& proposals,
    const std::vector<std::pair<int64_t, int64_t>>& image_sizes, TraceBoxHead* trace) const {
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
    // Where traced: which (proposal, class) candidate each row is.
    at::Tensor candidate;
    const bool tracing = trace && i == 0;
    if (tracing) {
      trace->class_probs = pred_scores.slice(0, offset - n, offset).cpu();
      trace->refined_boxes = ops::clip_boxes_to_image(pred_boxes.slice(0, offset - n, offset),
                                                      image_sizes[i].first, image_sizes[i].second).cpu();
      candidate = at::arange(scores.size(0), labels.options());
      trace->candidates = scores.size(0);
      trace->score_thresh = cfg_.box_score_thresh;
      trace->nms_thresh = cfg_.box_nms_thresh;
    }
    auto inds = at::where(scores > cfg_.box_score_thresh)[0];
    boxes = boxes.index_select(0, inds);
    scores = scores.index_select(0, inds);
    labels = labels.index_select(0, inds);
    if (tracing) {
      candidate = candidate.index_select(0, inds);
      trace->above_score = inds.size(0);
    }
    auto keep = ops::remove_small_boxes(boxes, 1e-2);
    boxes = boxes.index_select(0, keep);
    scores = scores.index_select(0, keep);
    labels = labels.index_select(0, keep);
    if (tracing) {
      candidate = candidate.index_select(0, keep);
      trace->not_small = keep.size(0);
    }
    keep = ops::batched_nms(boxes, scores, labels, cfg_.box_nms_thresh);
    if (tracing) trace->after_nms = keep.size(0);
    keep = keep.slice(0, 0, cfg_.box_detections_per_img);
    RoIDetections d;
    d.boxes = boxes.index_select(0, keep);
    d.scores = scores.index_select(0, keep);
    d.labels = labels.index_select(0, keep);
    if (tracing) {
      trace->kept = keep.size(0);
      trace->source_proposal = at::floor_divide(candidate.index_select(0, keep), num_classes - 1).cpu();
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<RoIDetections> RoIHeadsImpl::forward(
    const std::vector<at::Tensor>& features, const std::vector<at::Tensor>& proposals,
    const std::vector<std::pair<int64_t, int64_t>>& image_sizes, ForwardTrace* trace) {
  at::Tensor box_features, class_logits, box_regression, mask_features;
  std::vector<at::Tensor> pooled_levels(features.begin(), features.end());
  {
    common::ScopedStage stage("roi_heads.box_roi_align");
    // RoIAlign reads each bilinear tap as a vector of all channels from a
    // channels-last map (~5x faster on the CPU); box and mask pooling share
    // the one copy of the four pooled levels.
    if (!at::GradMode::is_enabled())
      for (size_t l = 0; l < pooled_levels.size() && l < 4; ++l)
        if (pooled_levels[l].is_cpu() && pooled_levels[l].dim() == 4)  // blocked maps are read as they are
          pooled_levels[l] = pooled_levels[l].contiguous(at::MemoryFormat::ChannelsLast);
    box_features = box_roi_pool_(pooled_levels, proposals, image_sizes);
  }
  {
    common::ScopedStage stage("roi_heads.box_head");
    std::tie(class_logits, box_regression) = box_predictor->forward(box_head->forward(box_features));
  }
  std::vector<RoIDetections> result;
  {
    common::ScopedStage stage("roi_heads.box_postprocess");
    result = postprocess_detections(class_logits, box_regression, proposals, image_sizes,
                                    trace ? &trace->box : nullptr);
  }
  if (trace)
    trace->box.box_pooled =
        ops::to_4d(box_features).index_select(0, trace->box.source_proposal.to(box_features.device())).cpu();
  {
    common::ScopedStage stage("roi_heads.mask_roi_align");
    std::vector<at::Tensor> mask_boxes;
    for (auto& r : result) mask_boxes.push_back(r.boxes);
    mask_features = mask_roi_pool_(pooled_levels, mask_boxes, image_sizes);
  }
  if (trace) {
    trace->mask.boxes = result.at(0).boxes.cpu();
    trace->mask.mask_pooled = ops::to_4d(mask_features).contiguous().cpu();
  }
  {
    common::ScopedStage stage("roi_heads.mask_head");
    mask_features = mask_head->forward(mask_features);
  }
  common::ScopedStage stage("roi_heads.mask_predictor");
  // maskrcnn_inference: sigmoid of the predicted label's channel (the only
  // one computed).
  std::vector<at::Tensor> labels;
  for (auto& r : result) labels.push_back(r.labels);
  auto probs = mask_predictor->forward_selected(mask_features, at::cat(labels)).sigmoid();
  if (trace)  // every class's map: the one kept is the predicted label's
    trace->mask.class_probs = mask_predictor->forward(mask_features).sigmoid().contiguous().cpu();
  int64_t offset = 0;
  for (auto& r : result) {
    const int64_t n = r.boxes.size(0);
    r.mask_probs = probs.slice(0, offset, offset + n);
    offset += n;
  }
  return result;
}

RoIHeadsImpl::TrainingSamples RoIHeadsImpl::select_training_samples(
    const std::vector<at::Tensor>& proposals_in, const std::vector<TrainingTarget>& targets) const {
  TrainingSamples out;
  std::vector<uint64_t> seeds;
  for (size_t i = 0; i < proposals_in.size(); ++i) {
    const auto& t = targets[i];
    // add_gt_proposals: the ground truth itself is always a candidate.
    auto proposals = at::cat({proposals_in[i], t.boxes.to(proposals_in[i].scalar_type())}, 0);
    at::Tensor matched, labels;
    if (t.boxes.numel() == 0) {
      matched = at::zeros({proposals.size(0)}, proposals.options().dtype(at::kLong));
      labels = at::zeros({proposals.size(0)}, proposals.options().dtype(at::kLong));
    } else {
      auto m = proposal_matcher_(ops::box_iou(t.boxes, proposals));
      matched = m.clamp_min(0);
      labels = t.labels.index_select(0, matched).to(at::kLong);
      labels.masked_fill_(m == Matcher::kBelowLowThreshold, 0);
      labels.masked_fill_(m == Matcher::kBetweenThresholds, -1);
    }
    out.proposals.push_back(proposals);
    out.matched_idxs.push_back(matched);
    out.labels.push_back(labels);
    // Distinct from the RPN's draw of the same image.
    seeds.push_back(t.sampling_seed ^ 0x9e3779b97f4a7c15ULL);
  }
  auto [pos, neg] = fg_bg_sampler_(out.labels, seeds);
  for (size_t i = 0; i < out.proposals.size(); ++i) {
    auto inds = at::where(pos[i] | neg[i])[0];
    out.proposals[i] = out.proposals[i].index_select(0, inds);
    out.labels[i] = out.labels[i].index_select(0, inds);
    out.matched_idxs[i] = out.matched_idxs[i].index_select(0, inds);
    auto gt = targets[i].boxes;
    if (gt.numel() == 0) gt = at::zeros({1, 4}, out.proposals[i].options());
    out.regression_targets.push_back(
        box_coder_.encode(gt.index_select(0, out.matched_idxs[i]), out.proposals[i]));
  }
  return out;
}

LossTerms RoIHeadsImpl::forward_train(const std::vector<at::Tensor>& features,
                                      const std::vector<at::Tensor>& proposals,
                                      const std::vector<std::pair<int64_t, int64_t>>& image_sizes,
                                      const std::vector<TrainingTarget>& targets) {
  auto s = select_training_samples(proposals, targets);
  auto box_features = box_head->forward(box_roi_pool_(features, s.proposals, image_sizes));
  auto [class_logits, box_regression] = box_predictor->forward(box_features);

  // fastrcnn_loss
  auto labels = at::cat(s.labels, 0);
  auto regression_targets = at::cat(s.regression_targets, 0);
  auto loss_classifier = at::cross_entropy_loss(class_logits, labels);
  auto pos = at::where(labels > 0)[0];
  auto labels_pos = labels.index_select(0, pos);
  const int64_t n = class_logits.size(0);
  auto box_reg = box_regression.reshape({n, box_regression.size(-1) / 4, 4});
  auto loss_box_reg = at::smooth_l1_loss(box_reg.index({pos, labels_pos}),
                                         regression_targets.index_select(0, pos),
                                         at::Reduction::Sum, 1.0 / 9) /
                      static_cast<double>(labels.numel());

  // Mask branch on the positive samples only.
  std::vector<at::Tensor> mask_proposals, pos_matched, mask_targets, mask_labels;
  for (size_t i = 0; i < s.proposals.size(); ++i) {
    auto p = at::where(s.labels[i] > 0)[0];
    mask_proposals.push_back(s.proposals[i].index_select(0, p));
    pos_matched.push_back(s.matched_idxs[i].index_select(0, p));
  }
  auto mask_features = mask_head->forward(mask_roi_pool_(features, mask_proposals, image_sizes));
  const int64_t m = 2 * mask_features.size(-1);
  for (size_t i = 0; i < s.proposals.size(); ++i) {
    const auto& t = targets[i];
    if (pos_matched[i].numel() == 0) continue;
    mask_labels.push_back(t.labels.index_select(0, pos_matched[i]));
    // project_masks_on_boxes: RoIAlign the matched gt mask into each box.
    auto rois = at::cat({pos_matched[i].to(mask_proposals[i].scalar_type()).unsqueeze(1),
                         mask_proposals[i]},
                        1);
    auto gt_masks = t.masks.unsqueeze(1).to(rois.scalar_type());
    mask_targets.push_back(ops::roi_align(gt_masks, rois, 1.0, m, m, -1, false).select(1, 0));
  }
  at::Tensor loss_mask;
  if (mask_targets.empty()) {
    // Zero, but joined to the mask branch's parameters so that every process
    // of a data-parallel run has their (zero) gradients.
    loss_mask = mask_predictor->forward(mask_features).sum() * 0;
  } else {
    // Only each RoI's ground-truth class enters the loss, so only its logits
    // are computed: the same values as torchvision's all-class logits indexed
    // by label, without the transposed convolution, whose backward in LibTorch
    // took most of a training step.
    auto mask_logits = mask_predictor->forward_selected(mask_features, at::cat(mask_labels, 0));
    loss_mask = at::binary_cross_entropy_with_logits(mask_logits.select(1, 0), at::cat(mask_targets, 0));
  }
  return {{"loss_classifier", loss_classifier},
          {"loss_box_reg", loss_box_reg},
          {"loss_mask", loss_mask}};
}

}  // namespace maskrcnn::modeling
