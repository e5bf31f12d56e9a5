// What one forward pass computed at each stage of Mask R-CNN, for one image:
// the intermediates `maskrcnn explain` draws. Recorded by the same forward
// pass that predicts (MaskRCNN::predict_traced), so they are the numbers
// predict computes, not a re-run of the pipeline.
//
//   maskrcnn::ForwardTrace trace;
//   auto dets = model.predict_traced(rgb, trace);
//   trace.fpn[0].map;          // P2, float [256, H/4, W/4]
//   trace.rpn.proposals;       // the box head's input, [R, 4] in resized pixels
//   trace.box.class_probs;     // [R, num_classes] softmax over each proposal
//
// Boxes are in the resized image's pixels unless a field says otherwise (to
// the original's: x * original_width / resized_width, y likewise with the
// heights, as torchvision rescales them). Tensors are on the CPU.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "maskrcnn/profile.h"
#include "maskrcnn/types.h"

namespace maskrcnn {

struct TraceFeatureMap {
  std::string name;  // "C2".."C5", "P2".."P6"
  int64_t stride = 0;  // 2^level
  at::Tensor map;    // float [channels, H, W], H and W of the padded batch / stride
};

struct TraceAnchorLevel {
  std::string feature;       // "P2".."P6"
  int64_t stride = 0;        // torchvision's: padded height / grid height (integer division)
  int64_t height = 0, width = 0;  // the feature map's cells
  at::Tensor cell_anchors;   // [A, 4] centred on (0, 0): one per (size, ratio)
  std::vector<double> sizes, aspect_ratios;  // one size per level; ratios height / width
  int64_t count() const { return height * width * cell_anchors.size(0); }
};

struct TraceRPN {
  std::vector<at::Tensor> objectness;  // per level: logits [A, H, W]
  std::vector<int64_t> pre_nms_top_n;  // per level: candidates kept by score
  int64_t after_top_n = 0;             // all levels, before clipping
  // Candidates after top-n per level, clipping, dropping small and
  // low-score boxes: NMS's input (per level, as torchvision's batched NMS).
  at::Tensor pre_nms_boxes;   // [M, 4]
  at::Tensor pre_nms_scores;  // [M] sigmoid(objectness)
  at::Tensor pre_nms_levels;  // [M] int64, 0 = P2
  at::Tensor proposals;       // [R, 4] after NMS and post-NMS top-n
  at::Tensor proposal_scores; // [R]
  int64_t after_nms = 0;      // before the post-NMS top-n cut
};

struct TraceBoxHead {
  at::Tensor class_probs;      // [R, num_classes] softmax, per proposal
  at::Tensor refined_boxes;    // [R, num_classes, 4] decoded and clipped (background's included)
  // Counts of (proposal, class) candidates: all non-background, above the
  // score threshold, not tiny, after class-wise NMS, after the top-k cut.
  int64_t candidates = 0, above_score = 0, not_small = 0, after_nms = 0, kept = 0;
  double score_thresh = 0, nms_thresh = 0;
  // Per detection (in output order): the proposal it was refined from.
  at::Tensor source_proposal;  // [N] int64 index into TraceRPN::proposals
  at::Tensor box_pooled;       // [N, channels, 7, 7] RoIAlign of the source proposal
};

struct TraceMaskHead {
  at::Tensor boxes;         // [N, 4] the detections, in resized pixels
  at::Tensor mask_pooled;   // [N, channels, 14, 14] RoIAlign of each detection box
  // [N, num_classes, 28, 28] sigmoid of every class's map. predict computes
  // the label's map alone (MaskRCNNPredictor::forward_selected): equal to
  // [i, label_i] up to float rounding (~1e-6).
  at::Tensor class_probs;
};

struct ForwardTrace {
  // Transform
  int64_t original_height = 0, original_width = 0;
  int64_t resized_height = 0, resized_width = 0;
  double scale = 1;                     // resized / original height
  std::vector<double> image_mean, image_std;
  at::Tensor batch;                     // [3, H_pad, W_pad], normalised and padded
  // Backbone + FPN
  std::vector<TraceFeatureMap> body;    // C2..C5
  std::vector<TraceFeatureMap> fpn;     // P2..P6
  std::vector<TraceAnchorLevel> anchors;
  TraceRPN rpn;
  TraceBoxHead box;
  TraceMaskHead mask;
  Detections detections;                // what predict returns
  std::vector<StageTime> stage_times;   // StageProfiler's, this pass
};

}  // namespace maskrcnn
