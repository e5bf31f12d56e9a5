// A tiny random Mask R-CNN for tests that need a model but not its accuracy:
// ResNet-18, small heads, 96-128 px inputs (a forward pass takes tens of ms).
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "maskrcnn/maskrcnn.h"

namespace maskrcnn::testing {

// A random Mask R-CNN (torchvision's initialisation, seeded) saved as
// DIR/tiny.pth + DIR/tiny.json. Its class scores are all near 1/4, so every
// image gets plenty of detections above 0.05, each with a mask.
inline std::string write_tiny_model(const std::string& dir) {
  at::manual_seed(7);
  MaskRCNNConfig cfg;
  cfg.backbone_depth = 18;
  cfg.num_classes = 4;
  cfg.min_size = 96;
  cfg.max_size = 128;
  cfg.representation_size = 64;
  cfg.mask_head_layers = 1;
  cfg.mask_head_channels = 32;
  MaskRCNN model(cfg, {"__background__", "circle", "square", "triangle"});
  const std::string path = dir + "/tiny.pth";
  save_state_dict(model.state_dict(), path);
  ModelInfo info;
  info.config = model.config();
  info.class_names = model.class_names();
  write_model_info(path, info);
  return path;
}

}  // namespace maskrcnn::testing
