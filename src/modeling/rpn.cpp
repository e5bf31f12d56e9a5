#include "modeling/rpn.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/nn/init.h>

#include "maskrcnn/ops.h"
#include "backend/cpu/inference_conv.h"
#include "common/stage_profile.h"
#include "modeling/transform.h"

namespace maskrcnn::modeling {
namespace {

// [N, A*C, H, W] -> [N, H*W*A, C], torchvision's permute_and_flatten.
at::Tensor permute_and_flatten(const at::Tensor& layer, int64_t n, int64_t a, int64_t c,
                               int64_t h, int64_t w) {
  return layer.view({n, -1, c, h, w}).permute({0, 3, 4, 1, 2}).reshape({n, -1, c});
}

}  // namespace

RPNHeadImpl::RPNHeadImpl(int64_t in_channels, int64_t num_anchors, int conv_depth)
    // f32 even with --precision bf16: the objectness scores pick the
    // proposals, and these layers are <1% of the head's arithmetic.
    : cls_logits_run_(std::make_unique<cpu::InferenceConv>(false)),
      bbox_pred_run_(std::make_unique<cpu::InferenceConv>(false)),
      merged_run_(std::make_unique<cpu::InferenceConv>(false)) {
  conv = register_module("conv", torch::nn::Sequential());
  for (int i = 0; i < conv_depth; ++i) {
    ConvNormAct c(ConvNormActImpl::Options{in_channels, in_channels, 3});
    // Blocked, for a next 3x3 and for the merged 1x1 predictors alike.
    c->set_output_layout(ops::MapLayout::Blocked16);
    conv->push_back(c);
  }
  cls_logits = register_module(
      "cls_logits", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, num_anchors, 1)));
  bbox_pred = register_module(
      "bbox_pred", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, num_anchors * 4, 1)));
  torch::NoGradGuard ng;
  for (auto& p : named_parameters()) {
    if (p.value().dim() == 4) torch::nn::init::normal_(p.value(), 0, 0.01);
    else p.value().zero_();
  }
}

RPNHeadImpl::~RPNHeadImpl() = default;

std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> RPNHeadImpl::forward(
    const std::vector<at::Tensor>& features) {
  std::vector<at::Tensor> logits, bbox_reg;
  for (auto& f : features) {
    auto t = conv->forward(f);
    // Blocked maps come from the CPU inference fast path only; the merged
    // copy of the predictors is not theirs, so not where they need gradients.
    if (ops::is_blocked(t) && cls_logits->weight.size(0) * 5 <= 16 && !predictors_need_grad()) {
      auto [l, b] = predict_merged(t);
      logits.push_back(std::move(l));
      bbox_reg.push_back(std::move(b));
      continue;
    }
    logits.push_back((*cls_logits_run_)(*cls_logits, nullptr, t, /*relu=*/false));
    bbox_reg.push_back((*bbox_pred_run_)(*bbox_pred, nullptr, t, /*relu=*/false));
  }
  return {logits, bbox_reg};
}

bool RPNHeadImpl::predictors_need_grad() const {
  if (!at::GradMode::is_enabled()) return false;
  for (const auto* p : {&cls_logits->weight, &cls_logits->bias, &bbox_pred->weight, &bbox_pred->bias})
    if (p->defined() && p->requires_grad()) return true;
  return false;
}

std::pair<at::Tensor, at::Tensor> RPNHeadImpl::predict_merged(const at::Tensor& t) {
  const int64_t a = cls_logits->weight.size(0), c = cls_logits->weight.size(1);
  std::vector<int64_t> key;
  for (const auto* p : {&cls_logits->weight, &cls_logits->bias, &bbox_pred->weight, &bbox_pred->bias})
    cpu::add_parameter_key(key, *p);
  std::unique_lock<std::mutex> lock(merged_mutex_);
  if (!merged_ || key != merged_key_) {
    c10::InferenceMode off(false);  // plain tensors: cpu::InferenceConv folds and versions them as the modules'
    torch::NoGradGuard ng;
    if (!merged_) merged_ = torch::nn::Conv2d(torch::nn::Conv2dOptions(c, 16, 1));
    merged_->weight.zero_();
    merged_->bias.zero_();
    merged_->weight.slice(0, 0, a).copy_(cls_logits->weight.detach());
    merged_->weight.slice(0, a, 5 * a).copy_(bbox_pred->weight.detach());
    merged_->bias.slice(0, 0, a).copy_(cls_logits->bias.detach());
    merged_->bias.slice(0, a, 5 * a).copy_(bbox_pred->bias.detach());
    merged_key_ = std::move(key);
  }
  const torch::nn::Conv2d merged = merged_;  // cpu::InferenceConv locks on its own
  lock.unlock();
  // [N, 1, H, W, 16]: per pixel the A logits, then the A x 4 deltas, as
  // torchvision's [N, A, H, W] and [N, A*4, H, W] hold them by channel.
  auto y = (*merged_run_)(*merged, nullptr, t, /*relu=*/false, {}, ops::MapLayout::Blocked16);
  if (y.dim() == 4) return {y.slice(1, 0, a), y.slice(1, a, 5 * a)};  // not oneDNN's: [N, 16, H, W]
  y = y.select(1, 0);
  return {y.slice(3, 0, a).permute({0, 3, 1, 2}), y.slice(3, a, 5 * a).permute({0, 3, 1, 2})};
}

RegionProposalNetworkImpl::RegionProposalNetworkImpl(const MaskRCNNConfig& cfg)
    : cfg_(cfg),
      proposal_matcher_(cfg.rpn_fg_iou_thresh, cfg.rpn_bg_iou_thresh, /*allow_low_quality=*/true),
      fg_bg_sampler_(cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction),
      anchor_generator_(cfg.anchor_sizes) {
  head = register_module("head", RPNHead(cfg.fpn_channels, anchor_generator_.num_anchors_per_location(),
                                         cfg.rpn_conv_depth()));
}

std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>>
RegionProposalNetworkImpl::filter_proposals(
    const at::Tensor& proposals, const at::Tensor& objectness_in,
    const std::vector<std::pair<int64_t, int64_t>>& image_sizes,
    const std::vector<int64_t>& num_anchors_per_level, TraceRPN* trace) const {
  const int64_t num_images = proposals.size(0);
  const auto device = proposals.device();
  auto objectness = objectness_in.detach().reshape({num_images, -1});
  const int64_t pre_nms_top_n = is_training() ? cfg_.rpn_pre_nms_top_n_train
                                              : cfg_.rpn_pre_nms_top_n_test;
  const int64_t post_nms_top_n = is_training() ? cfg_.rpn_post_nms_top_n_train
                                               : cfg_.rpn_post_nms_top_n_test;
  // Top-n per level, before NMS.
  std::vector<at::Tensor> levels, top_idx;
  int64_t offset = 0;
  for (size_t l = 0; l < num_anchors_per_level.size(); ++l) {
    const int64_t n = num_anchors_per_level[l];
    levels.push_back(at::full({n}, static_cast<int64_t>(l), at::TensorOptions(at::kLong).device(device)));
    auto ob = objectness.slice(1, offset, offset + n);
    auto k = std::min<int64_t>(pre_nms_top_n, n);
    if (trace) trace->pre_nms_top_n.push_back(k);
    top_idx.push_back(std::get<1>(ob.topk(k, 1)) + offset);
    offset += n;
  }
  auto top_n_idx = at::cat(top_idx, 1);
  auto lvl_all = at::cat(levels).reshape({1, -1}).expand_as(objectness);
  auto batch_idx = at::arange(num_images, at::TensorOptions(at::kLong).device(device)).unsqueeze(1);
  auto ob_sel = objectness.index({batch_idx, top_n_idx});
  auto lvl_sel = lvl_all.index({batch_idx, top_n_idx});
  auto prop_sel = proposals.index({batch_idx, top_n_idx});
  auto prob = at::sigmoid(ob_sel);

  std::vector<at::Tensor> final_boxes, final_scores;
  for (int64_t i = 0; i < num_images; ++i) {
    auto boxes = ops::clip_boxes_to_image(prop_sel[i], image_sizes[i].first, image_sizes[i].second);
    auto scores = prob[i];
    auto lvl = lvl_sel[i];
    auto keep = ops::remove_small_boxes(boxes, cfg_.rpn_min_size);
    boxes = boxes.index_select(0, keep);
    scores = scores.index_select(0, keep);
    lvl = lvl.index_select(0, keep);
    keep = at::where(scores >= cfg_.rpn_score_thresh)[0];
    boxes = boxes.index_select(0, keep);
    scores = scores.index_select(0, keep);
    lvl = lvl.index_select(0, keep);
    keep = ops::batched_nms(boxes, scores, lvl, cfg_.rpn_nms_thresh);
    if (trace && i == 0) {
      trace->after_top_n = top_n_idx.size(1);
      trace->pre_nms_boxes = boxes.cpu();
      trace->pre_nms_scores = scores.cpu();
      trace->pre_nms_levels = lvl.cpu();
      trace->after_nms = keep.size(0);
    }
    keep = keep.slice(0, 0, post_nms_top_n);
    final_boxes.push_back(boxes.index_select(0, keep));
    final_scores.push_back(scores.index_select(0, keep));
  }
  return {final_boxes, final_scores};
}

std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>>
RegionProposalNetworkImpl::assign_targets_to_anchors(
    const at::Tensor& anchors, const std::vector<TrainingTarget>& targets) const {
  std::vector<at::Tensor> labels, matched_gt_boxes;
  for (const auto& t : targets) {
    if (t.boxes.numel() == 0) {
      matched_gt_boxes.push_back(at::zeros(anchors.sizes(), anchors.options().dtype(at::kFloat)));
      labels.push_back(at::zeros({anchors.size(0)}, anchors.options().dtype(at::kFloat)));
      continue;
    }
    auto matched_idxs = proposal_matcher_(ops::box_iou(t.boxes, anchors));
    matched_gt_boxes.push_back(t.boxes.index_select(0, matched_idxs.clamp_min(0)));
    auto l = (matched_idxs >= 0).to(at::kFloat);
    l.masked_fill_(matched_idxs == Matcher::kBelowLowThreshold, 0.0);
    l.masked_fill_(matched_idxs == Matcher::kBetweenThresholds, -1.0);
    labels.push_back(l);
  }
  return {labels, matched_gt_boxes};
}

LossTerms RegionProposalNetworkImpl::compute_loss(
    const at::Tensor& objectness, const at::Tensor& pred_bbox_deltas,
    const std::vector<at::Tensor>& labels, const std::vector<at::Tensor>& regression_targets,
    const std::vector<TrainingTarget>& targets) const {
  std::vector<uint64_t> seeds;
  for (auto& t : targets) seeds.push_back(t.sampling_seed);
  auto [pos_masks, neg_masks] = fg_bg_sampler_(labels, seeds);
  auto sampled_pos = at::where(at::cat(pos_masks, 0))[0];
  auto sampled_neg = at::where(at::cat(neg_masks, 0))[0];
  auto sampled = at::cat({sampled_pos, sampled_neg}, 0);
  auto flat_objectness = objectness.flatten();
  auto all_labels = at::cat(labels, 0);
  auto all_targets = at::cat(regression_targets, 0);
  auto box_loss = at::smooth_l1_loss(pred_bbox_deltas.index_select(0, sampled_pos),
                                     all_targets.index_select(0, sampled_pos),
                                     at::Reduction::Sum, 1.0 / 9) /
                  static_cast<double>(sampled.numel());
  auto objectness_loss = at::binary_cross_entropy_with_logits(
      flat_objectness.index_select(0, sampled), all_labels.index_select(0, sampled));
  return {{"loss_objectness", objectness_loss}, {"loss_rpn_box_reg", box_loss}};
}

RPNOutput RegionProposalNetworkImpl::forward(const ImageBatch& images,
                                             const std::vector<at::Tensor>& features,
                                             const std::vector<TrainingTarget>* targets,
                                             ForwardTrace* trace) {
  std::vector<at::Tensor> objectness, deltas;
  {
    common::ScopedStage stage("rpn.head");
    std::tie(objectness, deltas) = head->forward(features);
  }
  common::ScopedStage stage("rpn.proposals");
  const int64_t num_images = images.tensors.size(0);
  auto anchors = anchor_generator_.anchors(images.tensors.size(-2), images.tensors.size(-1),
                                           features);
  std::vector<int64_t> num_anchors_per_level;
  std::vector<at::Tensor> cls_flat, reg_flat;
  for (size_t l = 0; l < objectness.size(); ++l) {
    const auto& o = objectness[l];
    const int64_t n = o.size(0), a = o.size(1), h = o.size(2), w = o.size(3);
    num_anchors_per_level.push_back(a * h * w);
    cls_flat.push_back(permute_and_flatten(o, n, a, 1, h, w));
    reg_flat.push_back(permute_and_flatten(deltas[l], n, a, 4, h, w));
  }
  auto box_cls = at::cat(cls_flat, 1).flatten(0, -2);
  auto box_regression = at::cat(reg_flat, 1).reshape({-1, 4});
  // Every image shares the same anchors: repeat them per image for decoding.
  auto all_anchors = anchors.repeat({num_images, 1});
  auto proposals = box_coder_.decode(box_regression.detach(), all_anchors).view({num_images, -1, 4});
  auto [boxes, scores] = filter_proposals(proposals, box_cls, images.image_sizes,
                                         num_anchors_per_level, trace ? &trace->rpn : nullptr);
  RPNOutput out{boxes, scores, {}};
  if (trace) {
    trace_anchors(*trace, images, objectness);
    trace->rpn.proposals = boxes.at(0).cpu();
    trace->rpn.proposal_scores = scores.at(0).cpu();
  }
  if (is_training()) {
    TORCH_CHECK(targets != nullptr, "RPN: training needs targets");
    auto [labels, matched_gt_boxes] = assign_targets_to_anchors(anchors, *targets);
    std::vector<at::Tensor> regression_targets;
    for (auto& m : matched_gt_boxes) regression_targets.push_back(box_coder_.encode(m, anchors));
    out.losses = compute_loss(box_cls, box_regression, labels, regression_targets, *targets);
  }
  return out;
}

void RegionProposalNetworkImpl::trace_anchors(ForwardTrace& trace, const ImageBatch& images,
                                              const std::vector<at::Tensor>& objectness) const {
  trace.anchors.clear();
  trace.rpn.objectness.clear();
  for (size_t l = 0; l < objectness.size(); ++l) {
    TraceAnchorLevel a;
    a.feature = "P" + std::to_string(l + 2);
    a.height = objectness[l].size(2);
    a.width = objectness[l].size(3);
    a.stride = images.tensors.size(-2) / a.height;
    a.sizes = {anchor_generator_.sizes().at(l)};
    a.aspect_ratios = anchor_generator_.aspect_ratios();
    a.cell_anchors = anchor_generator_.cell_anchors(a.sizes[0]);
    trace.anchors.push_back(std::move(a));
    trace.rpn.objectness.push_back(objectness[l][0].detach().to(at::kCPU, at::kFloat).contiguous());
  }
}

}  // namespace maskrcnn::modeling
