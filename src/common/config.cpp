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

}  // namespace maskrcnn
