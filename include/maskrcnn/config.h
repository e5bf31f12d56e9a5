// MaskRCNNConfig: every knob of the model, with torchvision's names and defaults
// (torchvision.models.detection.MaskRCNN / FasterRCNN keyword arguments).
#pragma once
#include <string>
#include <vector>

#include "maskrcnn/types.h"

namespace maskrcnn {

enum class Arch { V1, V2 };  // maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2

// The backbone's normalisation layers (torchvision's norm_layer):
//   FrozenBatchNorm  FrozenBatchNorm2d, buffers only (pretrained backbones)
//   BatchNorm        BatchNorm2d, batch statistics in training
//   GroupNorm        GroupNorm(32 groups): per image, so any batch size, and
//                    data parallel training equals one large batch. Also the
//                    norm of the FPN and the heads where the arch has them (v2).
enum class Norm { FrozenBatchNorm, BatchNorm, GroupNorm };

struct MaskRCNNConfig {
  Arch arch = Arch::V1;
  int num_classes = 91;       // including background (label 0)
  int backbone_depth = 50;    // 18, 34, 50, 101
  Norm norm = Norm::FrozenBatchNorm;  // the backbone's (see Norm)
  // torchvision's COCO v1 model uses FrozenBatchNorm2d with eps 0.0
  // (overwrite_eps); BatchNorm2d and freshly built FrozenBatchNorm2d use 1e-5.
  double backbone_norm_eps = 0.0;
  int trainable_backbone_layers = 3;

  // GeneralizedRCNNTransform
  int min_size = 800;
  int max_size = 1333;
  std::vector<float> image_mean{0.485f, 0.456f, 0.406f};
  std::vector<float> image_std{0.229f, 0.224f, 0.225f};
  int size_divisible = 32;

  // AnchorGenerator: one size per FPN level P2..P6, three aspect ratios.
  // torchvision's defaults suit COCO-sized images; smaller images want
  // smaller anchors. Not in the state dict: the sidecar carries them.
  std::vector<double> anchor_sizes{32, 64, 128, 256, 512};

  // RPN
  int rpn_pre_nms_top_n_train = 2000;
  int rpn_pre_nms_top_n_test = 1000;
  int rpn_post_nms_top_n_train = 2000;
  int rpn_post_nms_top_n_test = 1000;
  double rpn_nms_thresh = 0.7;
  double rpn_fg_iou_thresh = 0.7;
  double rpn_bg_iou_thresh = 0.3;
  int rpn_batch_size_per_image = 256;
  double rpn_positive_fraction = 0.5;
  double rpn_score_thresh = 0.0;
  double rpn_min_size = 1e-3;

  // RoI heads
  double box_score_thresh = 0.05;
  double box_nms_thresh = 0.5;
  int box_detections_per_img = 100;
  double box_fg_iou_thresh = 0.5;
  double box_bg_iou_thresh = 0.5;
  int box_batch_size_per_image = 512;
  double box_positive_fraction = 0.25;

  // Head sizes (torchvision's defaults; all in the state dict's shapes).
  int fpn_channels = 256;           // BackboneWithFPN's out_channels: P2..P6, the RPN head, the heads' inputs
  int representation_size = 1024;  // the box head's fc width (TwoMLPHead / FastRCNNConvFCHead)
  int box_head_conv_layers = 4;    // v2: FastRCNNConvFCHead's 3x3 convs (fpn_channels wide)
  int mask_head_layers = 4;        // MaskRCNNHeads' 3x3 convs
  int mask_head_channels = 256;    // their width, and MaskRCNNPredictor's dim_reduced

  // Derived from arch, kept explicit for readability at the use sites.
  int rpn_conv_depth() const { return arch == Arch::V2 ? 2 : 1; }
  // The norm of the FPN and the heads: v2 has one (BatchNorm2d in
  // torchvision's build, GroupNorm with a GroupNorm backbone), v1 none.
  bool heads_have_norm() const { return arch == Arch::V2; }
  Norm heads_norm() const { return norm == Norm::GroupNorm ? Norm::GroupNorm : Norm::BatchNorm; }

  // torchvision's builder name for the arch ("maskrcnn_resnet50_fpn[_v2]").
  std::string arch_name() const;
};

// Parses "maskrcnn_resnet50_fpn" / "maskrcnn_resnet50_fpn_v2" (also "v1"/"v2").
// Throws maskrcnn::Error on anything else.
Arch parse_arch(const std::string& name);
// "resnet18" / "resnet34" / "resnet50" / "resnet101" -> the depth. Throws
// maskrcnn::Error naming the value on anything else.
int parse_backbone(const std::string& name);
// "frozen-bn" / "bn" / "gn" <-> Norm. parse_norm throws maskrcnn::Error naming
// the value on anything else.
Norm parse_norm(const std::string& name);
std::string norm_name(Norm norm);
// Checks sizes a config cannot work with (head widths, anchor sizes, GroupNorm
// channel counts); throws maskrcnn::Error naming `source` and the field.
void validate_config(const MaskRCNNConfig& cfg, const std::string& source);

// The config a torchvision state dict implies: v1 or v2, backbone depth and
// class count from its keys and shapes (torchvision's older key names too).
// Throws maskrcnn::Error naming `source` when it is no Mask R-CNN.
MaskRCNNConfig infer_config(const StateDict& state, const std::string& source);

}  // namespace maskrcnn
