#include "modeling/generalized_rcnn.h"

#include <ATen/ATen.h>

#include "backend/cpu/inference_conv.h"
#include "common/stage_profile.h"
#include "ops/map_layout.h"

namespace maskrcnn::modeling {

GeneralizedRCNNImpl::GeneralizedRCNNImpl(const MaskRCNNConfig& cfg)
    : cfg_(cfg), transform_(cfg) {
  validate_config(cfg, "model config");
  const NormSpec body_norm{cfg.norm, cfg.backbone_norm_eps};
  const auto fpn_norm = cfg.heads_have_norm() ? std::optional<Norm>(cfg.heads_norm()) : std::nullopt;
  backbone = register_module("backbone", BackboneWithFPN(cfg.backbone_depth, body_norm, fpn_norm, cfg.fpn_channels));
  rpn = register_module("rpn", RegionProposalNetwork(cfg));
  roi_heads = register_module("roi_heads", RoIHeads(cfg));
  backbone->body->freeze(cfg.trainable_backbone_layers);
}

LossTerms GeneralizedRCNNImpl::forward_train(const std::vector<at::Tensor>& images,
                                             std::vector<TrainingTarget> targets) {
  bool batch_statistics = false;
  for (auto& m : modules())
    if (auto* bn = dynamic_cast<NormLayer*>(m.get())) batch_statistics |= bn->batch_statistics() && bn->is_training();
  cpu::DirectTrainingConvs exact(batch_statistics);  // why: inference_conv.h
  ImageBatch batch;
  {
    common::ScopedStage stage("transform");
    batch = transform_(images, targets);
  }
  auto features = backbone->forward(batch.tensors);
  auto proposals = rpn->forward(batch, features, &targets);
  common::ScopedStage stage("roi_heads.train");
  LossTerms losses = roi_heads->forward_train(features, proposals.boxes, batch.image_sizes, targets);
  for (auto& l : proposals.losses) losses.push_back(l);
  return losses;
}

namespace {

// The transform's numbers and the padded batch, for a trace.
void trace_transform(ForwardTrace& t, const MaskRCNNConfig& cfg, const ImageBatch& batch,
                     std::pair<int64_t, int64_t> original) {
  t.original_height = original.first;
  t.original_width = original.second;
  t.resized_height = batch.image_sizes[0].first;
  t.resized_width = batch.image_sizes[0].second;
  t.scale = static_cast<double>(t.resized_height) / static_cast<double>(original.first);
  t.image_mean.assign(cfg.image_mean.begin(), cfg.image_mean.end());
  t.image_std.assign(cfg.image_std.begin(), cfg.image_std.end());
  t.batch = batch.tensors[0].detach().to(at::kCPU, at::kFloat).contiguous();
}

std::vector<TraceFeatureMap> trace_maps(const std::vector<at::Tensor>& maps, const char* prefix,
                                        int first_level) {
  std::vector<TraceFeatureMap> out;
  for (size_t l = 0; l < maps.size(); ++l) {
    TraceFeatureMap m;
    const int level = first_level + static_cast<int>(l);
    m.name = prefix + std::to_string(level);
    m.stride = int64_t{1} << level;
    m.map = ops::to_4d(maps[l])[0].detach().to(at::kCPU, at::kFloat).contiguous();
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace

std::vector<Detections> GeneralizedRCNNImpl::forward(const std::vector<at::Tensor>& images,
                                                     ForwardTrace* trace) {
  TORCH_CHECK(!trace || images.size() == 1, "a forward trace records one image");
  std::vector<std::pair<int64_t, int64_t>> original_sizes;
  for (auto& im : images) original_sizes.emplace_back(im.size(-2), im.size(-1));
  ImageBatch batch;
  {
    common::ScopedStage stage("transform");
    batch = transform_(images);
  }
  std::vector<at::Tensor> body_maps;
  auto features = backbone->features(batch.tensors, trace ? &body_maps : nullptr);  // blocked where oneDNN computed them
  if (trace) {
    trace_transform(*trace, cfg_, batch, original_sizes[0]);
    trace->body = trace_maps(body_maps, "C", 2);
    trace->fpn = trace_maps(features, "P", 2);
    body_maps.clear();
  }
  auto proposals = rpn->forward(batch, features, nullptr, trace);
  auto dets = roi_heads->forward(features, proposals.boxes, batch.image_sizes, trace);
  common::ScopedStage stage("paste");
  std::vector<Detections> out;
  for (size_t i = 0; i < dets.size(); ++i)
    out.push_back(postprocess_detections(dets[i], batch.image_sizes[i], original_sizes[i]));
  return out;
}

Detections postprocess_detections(const RoIDetections& d, std::pair<int64_t, int64_t> resized,
                                  std::pair<int64_t, int64_t> original) {
  Detections out;
  out.image_height = original.first;
  out.image_width = original.second;
  out.boxes = resize_boxes(d.boxes, resized, original);
  out.scores = d.scores;
  out.labels = d.labels;
  out.masks = paste_masks(d.mask_probs, out.boxes, original.first, original.second);
  return out;
}

std::vector<InstanceMask> paste_masks(const at::Tensor& mask_probs, const at::Tensor& boxes,
                                      int64_t im_h, int64_t im_w) {
  std::vector<InstanceMask> out;
  const int64_t n = boxes.size(0);
  if (n == 0) return out;
  // expand_masks / expand_boxes: pad by one pixel and grow the box to match.
  const int64_t m = mask_probs.size(-1);
  const double scale = static_cast<double>(m + 2) / m;
  auto padded = at::constant_pad_nd(mask_probs, {1, 1, 1, 1}, 0);
  auto w_half = (boxes.select(1, 2) - boxes.select(1, 0)) * 0.5;
  auto h_half = (boxes.select(1, 3) - boxes.select(1, 1)) * 0.5;
  auto x_c = (boxes.select(1, 2) + boxes.select(1, 0)) * 0.5;
  auto y_c = (boxes.select(1, 3) + boxes.select(1, 1)) * 0.5;
  w_half = w_half * scale;
  h_half = h_half * scale;
  auto expanded = at::stack({x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half}, 1)
                      .to(at::kLong)
                      .cpu();
  auto acc = expanded.accessor<int64_t, 2>();
  out.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bx0 = acc[i][0], by0 = acc[i][1], bx2 = acc[i][2], by3 = acc[i][3];
    const int64_t w = std::max<int64_t>(bx2 - bx0 + 1, 1);
    const int64_t h = std::max<int64_t>(by3 - by0 + 1, 1);
    const int64_t x0 = std::max<int64_t>(bx0, 0), x1 = std::min<int64_t>(bx2 + 1, im_w);
    const int64_t y0 = std::max<int64_t>(by0, 0), y1 = std::min<int64_t>(by3 + 1, im_h);
    InstanceMask im;
    im.x0 = x0;
    im.y0 = y0;
    if (x1 <= x0 || y1 <= y0) {
      im.probs = at::zeros({std::max<int64_t>(y1 - y0, 0), std::max<int64_t>(x1 - x0, 0)},
                           mask_probs.options());
    } else {
      auto resized = at::upsample_bilinear2d(padded[i].unsqueeze(0), {h, w}, false,
                                             c10::nullopt, c10::nullopt)[0][0];
      im.probs = resized.slice(0, y0 - by0, y1 - by0).slice(1, x0 - bx0, x1 - bx0).contiguous();
    }
    out.push_back(std::move(im));
  }
  return out;
}

}  // namespace maskrcnn::modeling
