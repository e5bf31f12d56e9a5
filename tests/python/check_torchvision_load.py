#!/usr/bin/python3
"""Strictly loads a maskrcnn-cpp state dict into torchvision's Mask R-CNN.

usage: check_torchvision_load.py WEIGHTS.pth BACKBONE NUM_CLASSES frozen|bn [v1|v2]
Prints "ok" and exits 0 when torchvision's load_state_dict(strict=True) accepts it.
"""
import sys

import torch
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

path, backbone, num_classes, norm = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
arch = sys.argv[5] if len(sys.argv) > 5 else "v1"
state = torch.load(path, weights_only=False)
if arch == "v2":
    model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=num_classes)
else:
    norm_layer = FrozenBatchNorm2d if norm == "frozen" else torch.nn.BatchNorm2d
    model = MaskRCNN(resnet_fpn_backbone(backbone_name=backbone, weights=None, norm_layer=norm_layer,
                                         trainable_layers=5), num_classes=num_classes)
model.load_state_dict(state, strict=True)
model.eval()
with torch.no_grad():
    out = model([torch.rand(3, 96, 96)])[0]
print("ok", len(state), "tensors,", len(out["boxes"]), "detections")
