#!/usr/bin/python3
"""Reference outputs of the real torchvision Mask R-CNN for the parity tests.

Writes into --out:
  v1_bn.pth     maskrcnn_resnet50_fpn, BatchNorm2d backbone, zip format
  v1_coco.pth   built as torchvision builds its COCO model (FrozenBatchNorm2d with
                eps 0.0), saved in the legacy (pre-1.6) format with 2019 key names
  v2.pth        maskrcnn_resnet50_fpn_v2 with 7 classes, zip format
  images/*.png  the test images (real photos decoded by torchvision, so both sides
                see identical pixels, and synthetic ones of odd sizes)
  ref/*.pt      torchvision's outputs (boxes, scores, labels, packed binary masks,
                and for some cases FPN features and RPN proposals)
  manifest.json the cases

Weights are random but seeded, with realistic spreads: BN statistics are
randomised, and RPN and classifier logits are scaled so that scores are not tied.
"""
import argparse
import collections
import copy
import json
import os

import numpy as np
import torch
import torchvision
from torchvision.models.detection import mask_rcnn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import misc as misc_nn_ops
from torchvision.models.detection._utils import overwrite_eps


def randomize(model, seed, cls_scale):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.GroupNorm):
                c = m.weight.shape[0]
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            if isinstance(m, (torch.nn.BatchNorm2d, misc_nn_ops.FrozenBatchNorm2d)):
                c = m.weight.shape[0]
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        head = model.rpn.head
        for conv in head.conv.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.normal_(0, 0.03, generator=g)
        head.cls_logits.weight.normal_(0, 0.3, generator=g)
        head.cls_logits.bias.normal_(0, 0.5, generator=g)
        head.bbox_pred.weight.normal_(0, 0.02, generator=g)
    calibrate_classifier(model, g, cls_scale)
    return model


def calibrate_classifier(model, g, target_std):
    """Random box features are nearly the same for every RoI, so raw logits act
    like one big class bias (one label, tied scores). Remove the common part and
    scale the rest to `target_std` across RoIs: varied labels, spread scores."""
    feats = {}
    hook = model.roi_heads.box_head.register_forward_hook(lambda m, i, o: feats.__setitem__("x", o))
    model.eval()
    saved = model.transform.min_size, model.transform.max_size
    model.transform.min_size, model.transform.max_size = (320,), 512
    with torch.no_grad():
        model([synthetic_image(240, 320, 7).float() / 255.0])
    model.transform.min_size, model.transform.max_size = saved
    hook.remove()
    x = feats["x"]
    pred = model.roi_heads.box_predictor.cls_score
    with torch.no_grad():
        xc = x - x.mean(0, keepdim=True)
        std = (xc @ pred.weight.t()).std(0).mean()
        pred.weight.mul_(target_std / std)
        pred.bias.copy_(-(x.mean(0) @ pred.weight.t()) + torch.randn(pred.bias.shape, generator=g) * 0.3)
        pred.bias[0] += 1.0  # background


# The "gn" model: what `maskrcnn train --norm gn` builds, made of torchvision's
# own parts (GroupNorm(32) in ResNet-18, FPN and heads, a 128-wide FPN, lighter
# heads, small anchors). Its sidecar (gn.json) carries the anchors, which no state dict holds.
GN = dict(num_classes=5, fpn_channels=128, anchors=[16.0, 32.0, 64.0, 128.0, 256.0], box_convs=2, representation=512,
          mask_layers=2, mask_channels=128, min_size=320, max_size=512)


def build_gn():
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, RPNHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

    def gn(c):
        return torch.nn.GroupNorm(32, c)
    c = GN
    f = c["fpn_channels"]
    backbone = _resnet_fpn_extractor(torchvision.models.resnet18(norm_layer=gn), 5, norm_layer=gn)
    # torchvision 0.14's extractor fixes out_channels at 256: the same FPN, narrower.
    backbone.fpn = FeaturePyramidNetwork([64, 128, 256, 512], f, extra_blocks=LastLevelMaxPool(), norm_layer=gn)
    backbone.out_channels = f
    return mask_rcnn.MaskRCNN(
        backbone, num_classes=None, min_size=c["min_size"], max_size=c["max_size"],
        rpn_anchor_generator=AnchorGenerator(tuple((a,) for a in c["anchors"]), ((0.5, 1.0, 2.0),) * 5),
        rpn_head=RPNHead(f, 3, conv_depth=2),
        box_head=FastRCNNConvFCHead((f, 7, 7), [f] * c["box_convs"], [c["representation"]], norm_layer=gn),
        box_predictor=FastRCNNPredictor(c["representation"], c["num_classes"]),
        mask_head=MaskRCNNHeads(f, [c["mask_channels"]] * c["mask_layers"], 1, norm_layer=gn),
        mask_predictor=MaskRCNNPredictor(c["mask_channels"], c["mask_channels"], c["num_classes"]))


def gn_sidecar():
    c = GN
    return {"format": "maskrcnn-cpp model info 1", "arch": "maskrcnn_resnet50_fpn_v2", "backbone": "resnet18",
            "num_classes": c["num_classes"], "min_size": c["min_size"], "max_size": c["max_size"],
            "norm": "gn", "anchor_sizes": c["anchors"]}


def build(kind):
    torch.manual_seed({"v1_bn": 1, "v1_coco": 2, "v2": 3, "gn": 4}[kind])
    if kind == "gn":
        return randomize(build_gn(), 14, 2.0)
    if kind == "v1_bn":
        m = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        return randomize(m, 11, 2.5)
    if kind == "v1_coco":
        backbone = torchvision.models.resnet50(norm_layer=misc_nn_ops.FrozenBatchNorm2d)
        backbone = _resnet_fpn_extractor(backbone, 3)
        m = mask_rcnn.MaskRCNN(backbone, num_classes=91)
        overwrite_eps(m, 0.0)
        return randomize(m, 12, 2.5)
    m = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None,
                                                            num_classes=7)
    return randomize(m, 13, 2.0)


# The layers `--precision bf16` keeps in f32: the RPN head's 1x1 predictors
# and the box predictor (they pick the proposals and the detections).
BF16_KEPT_F32 = {"rpn.head.cls_logits", "rpn.head.bbox_pred",
                 "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred"}


def bf16_rounded(model):
    """A copy of `model` whose convolutions and linear layers (but those of
    BF16_KEPT_F32) read bf16-rounded inputs and weights and accumulate in f32,
    the arithmetic of `--precision bf16`. Its outputs against the f32 model's
    measure how far bf16 rounding alone moves this model's detections: the
    parity test holds ours to that, not to a number of our own."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, mod in m.named_modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)) and \
                    name not in BF16_KEPT_F32:
                mod.weight.copy_(mod.weight.bfloat16().float())
                mod.register_forward_pre_hook(lambda _, inp: tuple(t.bfloat16().float() for t in inp))
    return m.eval()


def old_key_names(sd):
    """torchvision's 2019 names (what its version-1 load hooks rename)."""
    out = collections.OrderedDict()
    for k, v in sd.items():
        parts = k.split(".")
        if k.startswith("backbone.fpn.") and parts[2] in ("inner_blocks", "layer_blocks") and parts[4] in ("weight", "bias"):
            k = ".".join(parts[:4] + parts[5:])
        elif k.startswith("rpn.head.conv.0.0."):
            k = "rpn.head.conv." + parts[-1]
        elif k.startswith("roi_heads.mask_head.") and parts[3] == "0":
            k = "roi_heads.mask_head.mask_fcn%d.%s" % (int(parts[2]) + 1, parts[-1])
        out[k] = v
    return out


def synthetic_image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=g)
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0]
    img = img + 0.1 * torch.rand(3, h, w, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def pack_masks(masks):
    binary = (masks[:, 0] >= 0.5).numpy().astype(np.uint8)
    n = binary.shape[0]
    return torch.from_numpy(np.packbits(binary.reshape(n, -1), axis=1).copy())


CASES = {
    "v1_coco": ["street_cars", "dog_bicycle", "giraffe_zebra", "person_dog_horse",
                "syn_123x457", "syn_301x77", "syn_64x1000"],
    "v1_bn": ["cyclists_crowd", "stop_sign", "syn_200x200"],
    "v2": ["mountain_bus", "groceries_car", "syn_97x333"],
    "gn": ["street_cars", "syn_200x200"],
}
STAGE_IMAGES = {"street_cars", "syn_123x457", "cyclists_crowd", "mountain_bus", "syn_200x200"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--only", default=None, help="comma-separated model kinds")
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "ref"), exist_ok=True)
    manifest = {"cases": []}
    images = {}
    for kind, names in CASES.items():
        for name in names:
            if name in images:
                continue
            if name.startswith("syn_"):
                h, w = map(int, name[4:].split("x"))
                img = synthetic_image(h, w, h * 1000 + w)
            else:
                img = torchvision.io.read_image(os.path.join(args.shared, "images", name + ".jpg"),
                                                torchvision.io.ImageReadMode.RGB)
            torchvision.io.write_png(img, os.path.join(args.out, "images", name + ".png"))
            images[name] = img
    kinds = args.only.split(",") if args.only else list(CASES)
    for kind in kinds:
        model = build(kind).eval()
        path = os.path.join(args.out, kind + ".pth")
        if kind == "v1_coco":
            torch.save(old_key_names(model.state_dict()), path, _use_new_zipfile_serialization=False)
        else:
            torch.save(model.state_dict(), path)
        if kind == "gn":
            with open(os.path.join(args.out, "gn.json"), "w") as f:
                json.dump(gn_sidecar(), f, indent=1)
        rounded = bf16_rounded(model) if kind == "v1_coco" else None
        captured = {}
        model.backbone.register_forward_hook(lambda m, i, o: captured.__setitem__("features", o))
        model.rpn.register_forward_hook(lambda m, i, o: captured.__setitem__("proposals", o[0]))
        for name in CASES[kind]:
            x = images[name].float() / 255.0
            with torch.no_grad():
                out = model([x])[0]
            ref = {
                "boxes": out["boxes"], "scores": out["scores"], "labels": out["labels"],
                "masks_packed": pack_masks(out["masks"]),
                "image_size": torch.tensor(list(x.shape[-2:])),
            }
            if rounded is not None and not name.startswith("syn_"):
                with torch.no_grad():
                    out16 = rounded([x])[0]
                ref["bf16_rounded_boxes"], ref["bf16_rounded_labels"] = out16["boxes"], out16["labels"]
            if name in STAGE_IMAGES:
                for k, v in captured["features"].items():
                    ref["feature_" + k] = v
                ref["proposals"] = captured["proposals"][0]
            ref_path = os.path.join(args.out, "ref", "%s__%s.pt" % (kind, name))
            torch.save(ref, ref_path)
            n = out["scores"].numel()
            print("%s %s: %d detections, scores %.3f..%.3f, %d labels" % (
                kind, name, n, out["scores"].min() if n else 0, out["scores"].max() if n else 0,
                len(set(out["labels"].tolist()))), flush=True)
            manifest["cases"].append({"model": kind, "weights": kind + ".pth",
                                      "image": "images/%s.png" % name, "ref": os.path.relpath(ref_path, args.out),
                                      "stages": name in STAGE_IMAGES})
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
