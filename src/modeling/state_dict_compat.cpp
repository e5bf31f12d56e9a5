// Checkpoint compatibility: torchvision's older key names, DDP "module."
// prefixes, and inferring the architecture from keys and shapes.
#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>

#include "maskrcnn/error.h"
#include "maskrcnn/config.h"
#include "modeling/state_dict_compat.h"

namespace maskrcnn {
namespace {

bool has_key(const std::map<std::string, at::Tensor>& m, const std::string& k) {
  return m.count(k) > 0;
}

// Layers "<prefix>0.0.weight", "<prefix>1.0.weight", ... present.
int count_conv_layers(const std::map<std::string, at::Tensor>& keys, const std::string& prefix) {
  int n = 0;
  while (has_key(keys, prefix + std::to_string(n) + ".0.weight")) ++n;
  return n;
}

// The head sizes from the shapes: box head width and convs, mask head depth and width.
void infer_head_sizes(const std::map<std::string, at::Tensor>& keys, MaskRCNNConfig& cfg) {
  const std::string box = "roi_heads.box_head.", mask = "roi_heads.mask_head.";
  const std::string fpn = "backbone.fpn.layer_blocks.0.0.weight";
  if (has_key(keys, fpn)) cfg.fpn_channels = static_cast<int>(keys.at(fpn).size(0));
  if (cfg.arch == Arch::V2) {
    cfg.box_head_conv_layers = count_conv_layers(keys, box);
    const std::string fc = box + std::to_string(cfg.box_head_conv_layers + 1) + ".weight";
    if (has_key(keys, fc)) cfg.representation_size = static_cast<int>(keys.at(fc).size(0));
  } else if (has_key(keys, box + "fc7.weight")) {
    cfg.representation_size = static_cast<int>(keys.at(box + "fc7.weight").size(0));
  }
  cfg.mask_head_layers = std::max(1, count_conv_layers(keys, mask));
  if (has_key(keys, mask + "0.0.weight"))
    cfg.mask_head_channels = static_cast<int>(keys.at(mask + "0.0.weight").size(0));
}

}  // namespace

namespace modeling {

std::map<std::string, at::Tensor> normalize_keys(const StateDict& state) {
  bool all_module = !state.empty();
  for (auto& kv : state)
    if (kv.first.rfind("module.", 0) != 0) all_module = false;
  // Key renames that torchvision's _load_from_state_dict hooks perform for
  // version-1 state dicts (the 2019 COCO checkpoint uses these names).
  static const std::regex fpn_old(R"(^(backbone\.fpn\.(inner|layer)_blocks\.\d+)\.(weight|bias)$)");
  static const std::regex rpn_old(R"(^(rpn\.head\.conv)\.(weight|bias)$)");
  static const std::regex mask_old(R"(^(roi_heads\.mask_head)\.mask_fcn(\d+)\.(weight|bias)$)");
  std::map<std::string, at::Tensor> out;
  std::smatch m;
  for (auto& kv : state) {
    std::string key = all_module ? kv.first.substr(7) : kv.first;
    if (std::regex_match(key, m, fpn_old)) {
      key = m[1].str() + ".0." + m[3].str();
    } else if (std::regex_match(key, m, rpn_old)) {
      key = m[1].str() + ".0.0." + m[2].str();
    } else if (std::regex_match(key, m, mask_old)) {
      key = m[1].str() + "." + std::to_string(std::stoi(m[2].str()) - 1) + ".0." + m[3].str();
    }
    out[key] = kv.second;
  }
  return out;
}

}  // namespace modeling

MaskRCNNConfig infer_config(const StateDict& state, const std::string& source) {
  auto keys = modeling::normalize_keys(state);
  MaskRCNNConfig cfg;
  const std::string cls = "roi_heads.box_predictor.cls_score.weight";
  if (!has_key(keys, cls) || !has_key(keys, "backbone.body.conv1.weight"))
    throw Error(source + ": not a Mask R-CNN checkpoint (no '" +
                (has_key(keys, cls) ? std::string("backbone.body.conv1.weight") : cls) + "' key)");
  if (!has_key(keys, "roi_heads.mask_predictor.mask_fcn_logits.weight"))
    throw Error(source + ": not a Mask R-CNN checkpoint (no mask predictor; a Faster R-CNN?)");
  cfg.num_classes = static_cast<int>(keys[cls].size(0));
  const bool v2 = has_key(keys, "roi_heads.box_head.0.0.weight") ||
                  has_key(keys, "rpn.head.conv.1.0.weight");
  cfg.arch = v2 ? Arch::V2 : Arch::V1;
  // Depth: block counts of layer1/layer3 and the block type.
  std::set<int> l1, l3;
  static const std::regex block(R"(^backbone\.body\.layer([13])\.(\d+)\.)");
  std::smatch m;
  for (auto& kv : keys)
    if (std::regex_search(kv.first, m, block))
      (m[1].str() == "1" ? l1 : l3).insert(std::stoi(m[2].str()));
  const bool bottleneck = has_key(keys, "backbone.body.layer1.0.conv3.weight");
  if (bottleneck) cfg.backbone_depth = l3.size() >= 23 ? 101 : 50;
  else cfg.backbone_depth = l1.size() == 2 ? 18 : 34;
  // Norm: GroupNorm has no running statistics, FrozenBatchNorm2d no
  // num_batches_tracked. The COCO v1 weights need eps 0 (torchvision's
  // overwrite_eps); BatchNorm2d 1e-5.
  if (!has_key(keys, "backbone.body.bn1.running_mean")) cfg.norm = Norm::GroupNorm;
  else if (has_key(keys, "backbone.body.bn1.num_batches_tracked")) cfg.norm = Norm::BatchNorm;
  else cfg.norm = Norm::FrozenBatchNorm;
  cfg.backbone_norm_eps = cfg.norm == Norm::FrozenBatchNorm ? 0.0 : 1e-5;
  infer_head_sizes(keys, cfg);
  return cfg;
}

}  // namespace maskrcnn
