#!/usr/bin/python3
"""Strictly loads a maskrcnn-cpp state dict into torchvision's Mask R-CNN.

usage: check_torchvision_load.py WEIGHTS.pth
         builds the model its sidecar (WEIGHTS.json, written by `maskrcnn train`)
         describes, from torchvision's parts: norm layer (frozen-bn, bn, gn),
         arch, backbone, head sizes, anchors
       check_torchvision_load.py WEIGHTS.pth BACKBONE NUM_CLASSES frozen|bn [v1|v2]
         torchvision's own builders
Prints "ok" and exits 0 when torchvision's load_state_dict(strict=True) accepts it.
"""
import json
import os
import sys

import torch
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, RPNHead, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d


def norm_layer(name):
    if name == "gn":
        return lambda c: torch.nn.GroupNorm(32, c)
    return FrozenBatchNorm2d if name == "frozen-bn" else torch.nn.BatchNorm2d


def from_sidecar(path):
    """The model `maskrcnn train` describes in its sidecar, from torchvision's parts."""
    info = json.load(open(os.path.splitext(path)[0] + ".json"))
    v2 = info["arch"].endswith("_v2")
    norm = info.get("norm", "frozen-bn" if info.get("frozen_batch_norm", True) else "bn")
    body = getattr(resnet, info["backbone"])(norm_layer=norm_layer(norm))
    heads_norm = (norm_layer("gn") if norm == "gn" else torch.nn.BatchNorm2d) if v2 else None
    fpn = info.get("fpn_channels", 256)
    backbone = _resnet_fpn_extractor(body, info.get("trainable_backbone_layers", 5), norm_layer=heads_norm)
    if fpn != 256:  # torchvision 0.14's extractor fixes 256: its FPN rebuilt with the same parts
        in_channels = [backbone.body[f"layer{k}"][-1].conv1.in_channels for k in range(1, 5)]
        backbone.fpn = FeaturePyramidNetwork(in_channels, fpn, extra_blocks=LastLevelMaxPool(),
                                             norm_layer=heads_norm)
        backbone.out_channels = fpn
    rep = info.get("representation_size", 1024)
    mask_c, mask_l = info.get("mask_head_channels", 256), info.get("mask_head_layers", 4)
    if v2:
        box_head = FastRCNNConvFCHead((fpn, 7, 7), [fpn] * info.get("box_head_conv_layers", 4), [rep],
                                      norm_layer=heads_norm)
    else:
        box_head = TwoMLPHead(fpn * 7 * 7, rep)
    anchors = info.get("anchor_sizes", [32, 64, 128, 256, 512])
    n = info["num_classes"]
    return MaskRCNN(backbone, num_classes=None, min_size=info["min_size"], max_size=info["max_size"],
                    rpn_anchor_generator=AnchorGenerator(tuple((a,) for a in anchors), ((0.5, 1.0, 2.0),) * 5),
                    rpn_head=RPNHead(fpn, 3, conv_depth=2 if v2 else 1), box_head=box_head,
                    box_predictor=FastRCNNPredictor(rep, n),
                    mask_head=MaskRCNNHeads(fpn, [mask_c] * mask_l, 1, norm_layer=heads_norm),
                    mask_predictor=MaskRCNNPredictor(mask_c, mask_c, n))


path = sys.argv[1]
state = torch.load(path, weights_only=False)
if len(sys.argv) == 2:
    model = from_sidecar(path)
else:
    backbone, num_classes, norm = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    arch = sys.argv[5] if len(sys.argv) > 5 else "v1"
    if arch == "v2":
        model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=num_classes)
    else:
        model = MaskRCNN(resnet_fpn_backbone(backbone_name=backbone, weights=None,
                                             norm_layer=norm_layer("frozen-bn" if norm == "frozen" else norm),
                                             trainable_layers=5), num_classes=num_classes)
model.load_state_dict(state, strict=True)
model.eval()
with torch.no_grad():
    out = model([torch.rand(3, 96, 96)])[0]
print("ok", len(state), "tensors,", len(out["boxes"]), "detections")
