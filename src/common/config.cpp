// MaskRCNNConfig's names for architectures and backbones.
#include "maskrcnn/config.h"

#include "maskrcnn/error.h"

namespace maskrcnn {

std::string MaskRCNNConfig::arch_name() const {
  return arch == Arch::V2 ? "maskrcnn_resnet50_fpn_v2" : "maskrcnn_resnet50_fpn";
}

Arch parse_arch(const std::string& name) {
  if (name == "maskrcnn_resnet50_fpn" || name == "v1") return Arch::V1;
  if (name == "maskrcnn_resnet50_fpn_v2" || name == "v2") return Arch::V2;
  throw Error("unknown architecture '" + name +
              "' (expected maskrcnn_resnet50_fpn or maskrcnn_resnet50_fpn_v2)");
}

int parse_backbone(const std::string& name) {
  for (int depth : {18, 34, 50, 101})
    if (name == "resnet" + std::to_string(depth)) return depth;
  throw Error("unknown backbone '" + name + "' (expected resnet18, resnet34, resnet50 or resnet101)");
}

Norm parse_norm(const std::string& name) {
  if (name == "frozen-bn" || name == "frozen") return Norm::FrozenBatchNorm;
  if (name == "bn") return Norm::BatchNorm;
  if (name == "gn") return Norm::GroupNorm;
  throw Error("unknown norm '" + name + "' (expected frozen-bn, bn or gn)");
}

std::string norm_name(Norm norm) {
  switch (norm) {
    case Norm::FrozenBatchNorm: return "frozen-bn";
    case Norm::BatchNorm: return "bn";
    case Norm::GroupNorm: return "gn";
  }
  return "?";
}

void validate_config(const MaskRCNNConfig& c, const std::string& source) {
  const auto fail = [&](const std::string& what) { throw Error(source + ": " + what); };
  if (c.fpn_channels < 1) fail("FPN channels must be >= 1");
  if (c.heads_have_norm() && c.heads_norm() == Norm::GroupNorm && c.fpn_channels % 32 != 0)
    fail("with GroupNorm (32 groups) the FPN channels must be a multiple of 32, not " +
         std::to_string(c.fpn_channels));
  if (c.representation_size < 1) fail("representation size must be >= 1");
  if (c.box_head_conv_layers < 0) fail("box head conv layers must be >= 0");
  if (c.mask_head_layers < 1) fail("mask head layers must be >= 1");
  if (c.mask_head_channels < 1) fail("mask head channels must be >= 1");
  if (c.heads_have_norm() && c.heads_norm() == Norm::GroupNorm && c.mask_head_channels % 32 != 0)
    fail("with GroupNorm (32 groups) the mask head channels must be a multiple of 32, not " +
         std::to_string(c.mask_head_channels));
  if (c.anchor_sizes.size() != 5) fail("need 5 anchor sizes (one per FPN level P2..P6)");
  for (double a : c.anchor_sizes)
    if (!(a > 0)) fail("anchor sizes must be > 0");
}

}  // namespace maskrcnn
