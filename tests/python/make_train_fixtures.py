#!/usr/bin/python3
"""Reference training losses and gradients of the real torchvision Mask R-CNN.

Writes into --out, for each case:
  <case>.pth          the initial state_dict (zip format); BN running stats are
                      not those a training forward would leave behind
  <case>__inputs.pt   dict: image{k} float [3,H,W] in [0,1], boxes{k} float [N,4]
                      xyxy, labels{k} int64 [N], masks{k} uint8 [N,H,W]
  <case>__losses.pt   dict: the 5 loss terms exactly as torchvision returns them
                      in train mode (0-dim float32)
  <case>__grads.pt    dict: param name -> gradient of the sum of the 5 losses
and manifest.json describing the cases.

Cases:
  v1_frozen  MaskRCNN over _resnet_fpn_extractor(resnet50(FrozenBatchNorm2d), 3),
             5 classes (the fine-tuning setup; FrozenBatchNorm2d eps 1e-5)
  v2_bn      maskrcnn_resnet50_fpn_v2, 4 classes, trainable_backbone_layers=5,
             BatchNorm2d everywhere (batch statistics in train mode)

Inputs are synthetic: a smooth random background with 2-4 filled shapes
(rectangle, ellipse, triangle) per image. A shape's box is its mask's tight box
in pixel-edge convention: x1 = min col, y1 = min row, x2 = max col + 1,
y2 = max row + 1.

Determinism. Train mode draws random numbers in two places:
  * GeneralizedRCNNTransform.torch_choice(min_size) picks a training size; with a
    single min_size it always picks index 0 (it still consumes RNG state).
  * _utils.BalancedPositiveNegativeSampler (RPN and RoI heads) takes
    num_pos = min(#pos, int(B * frac)) and num_neg = min(#neg, B - num_pos)
    elements through torch.randperm. With B = 10**7 both minima are the counts
    themselves (#pos, #neg << 10**7 * min(frac, 1 - frac)), so every positive
    and every negative is selected; the permutation only orders indices that are
    written into a 0/1 mask, and RPN / RoI heads then read the selection with
    torch.where (ascending order), so the sampled set and its order do not
    depend on randperm.
Weights are seeded and randomised as in make_parity_fixtures.py (BN statistics,
RPN logit spreads), and the box classifier is recalibrated on training-mode box
features, so losses are non-trivial. To keep the run short the RPN keeps 300
proposals per image after NMS in training (rpn_post_nms_top_n_train; recorded). The script checks
determinism by running each case twice under different torch.manual_seed and
asserting identical losses and gradients.
"""
import argparse
import json
import os
import sys
import time

import torch
import torchvision
from torchvision.models.detection import mask_rcnn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import misc as misc_nn_ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_parity_fixtures import randomize  # noqa: E402

MIN_SIZE, MAX_SIZE = 320, 512
SAMPLER_BATCH = 10 ** 7
RPN_PRE_NMS_TRAIN, RPN_POST_NMS_TRAIN = 2000, 300  # fewer RoIs: keeps the run short
LOSSES = ["loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"]
GRADS = [
    "rpn.head.cls_logits.weight",
    "rpn.head.bbox_pred.bias",
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.mask_predictor.mask_fcn_logits.weight",
    "roi_heads.mask_head.0.0.weight",
    "backbone.fpn.layer_blocks.0.0.weight",
    "backbone.body.layer4.2.conv3.weight",
    "backbone.body.layer2.0.conv1.weight",
]
CASES = {
    "v1_frozen": dict(arch="maskrcnn_resnet50_fpn", num_classes=5, frozen_batch_norm=True,
                      trainable_backbone_layers=3, seed=21, images=[(180, 240), (200, 150)]),
    "v2_bn": dict(arch="maskrcnn_resnet50_fpn_v2", num_classes=4, frozen_batch_norm=False,
                  trainable_backbone_layers=5, seed=22, images=[(200, 150), (180, 240)]),
    # The demo's from-scratch setup: ResNet-18 (BasicBlock) with BatchNorm2d.
    "r18_bn": dict(arch="maskrcnn_resnet50_fpn", num_classes=4, frozen_batch_norm=False,
                   trainable_backbone_layers=5, seed=23, images=[(160, 200), (190, 170)],
                   backbone_depth=18),
}


def grads_of(cfg):
    if cfg.get("backbone_depth", 50) == 50:
        return GRADS
    return [g.replace("layer4.2.conv3", "layer4.1.conv2") for g in GRADS] + ["backbone.body.conv1.weight"]


def build(name, cfg):
    torch.manual_seed(cfg["seed"])
    kw = dict(min_size=MIN_SIZE, max_size=MAX_SIZE, rpn_pre_nms_top_n_train=RPN_PRE_NMS_TRAIN,
              rpn_post_nms_top_n_train=RPN_POST_NMS_TRAIN)
    if name == "r18_bn":
        body = torchvision.models.resnet18(norm_layer=torch.nn.BatchNorm2d)
        backbone = _resnet_fpn_extractor(body, cfg["trainable_backbone_layers"])
        m = mask_rcnn.MaskRCNN(backbone, num_classes=cfg["num_classes"], **kw)
    elif name == "v1_frozen":
        body = torchvision.models.resnet50(norm_layer=misc_nn_ops.FrozenBatchNorm2d)
        backbone = _resnet_fpn_extractor(body, cfg["trainable_backbone_layers"])
        m = mask_rcnn.MaskRCNN(backbone, num_classes=cfg["num_classes"], **kw)
    else:
        m = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, num_classes=cfg["num_classes"],
            trainable_backbone_layers=cfg["trainable_backbone_layers"], **kw)
    randomize(m, cfg["seed"] + 100, 2.0)  # BN stats, RPN logits; classifier calibrated in eval mode
    m.rpn.fg_bg_sampler.batch_size_per_image = SAMPLER_BATCH
    m.roi_heads.fg_bg_sampler.batch_size_per_image = SAMPLER_BATCH
    norms = [mod for mod in m.backbone.body.modules()
             if isinstance(mod, (torch.nn.BatchNorm2d, misc_nn_ops.FrozenBatchNorm2d))]
    assert norms and all(isinstance(n, misc_nn_ops.FrozenBatchNorm2d) == cfg["frozen_batch_norm"]
                         for n in norms)
    eps = {float(n.eps) for n in norms}
    assert len(eps) == 1
    cfg["backbone_norm_eps"] = eps.pop()
    return m


def calibrate_train(model, images, targets, seed, target_std=2.0):
    """make_parity_fixtures.calibrate_classifier, but on the box features of a
    training forward (BatchNorm2d heads use batch statistics there, so the
    eval-mode calibration can leave huge logits). Buffers are restored after."""
    g = torch.Generator().manual_seed(seed)
    bufs = {k: v.clone() for k, v in model.named_buffers()}
    feats = {}
    hook = model.roi_heads.box_head.register_forward_hook(lambda m, i, o: feats.__setitem__("x", o))
    model.train()
    with torch.no_grad():
        model(images, targets)
        for k, v in model.named_buffers():
            v.copy_(bufs[k])
    hook.remove()
    x, pred = feats["x"], model.roi_heads.box_predictor.cls_score
    with torch.no_grad():
        std = ((x - x.mean(0, keepdim=True)) @ pred.weight.t()).std(0).mean()
        pred.weight.mul_(target_std / std)
        pred.bias.copy_(-(x.mean(0) @ pred.weight.t()) + torch.randn(pred.bias.shape, generator=g) * 0.3)
        pred.bias[0] += 1.0  # background


def synthetic_sample(h, w, num_classes, seed):
    """Smooth background plus 2-4 filled shapes; returns image, boxes, labels, masks."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=g)
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0]
    ys = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    xs = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    n = int(torch.randint(2, 5, (1,), generator=g))
    masks, boxes, labels = [], [], []
    for i in range(n):
        while True:
            r = torch.rand(6, generator=g).tolist()
            bw, bh = (0.2 + 0.35 * r[0]) * w, (0.2 + 0.35 * r[1]) * h
            x0, y0 = r[2] * (w - bw), r[3] * (h - bh)
            kind = i % 3
            if kind == 0:  # rectangle
                m = (xs >= x0) & (xs < x0 + bw) & (ys >= y0) & (ys < y0 + bh)
            elif kind == 1:  # ellipse
                cx, cy = x0 + bw / 2, y0 + bh / 2
                m = ((xs + 0.5 - cx) / (bw / 2)) ** 2 + ((ys + 0.5 - cy) / (bh / 2)) ** 2 <= 1
            else:  # triangle: apex on top at a random x, base at the bottom
                ax = x0 + r[4] * bw
                t = (ys + 0.5 - y0) / bh
                m = (t >= 0) & (t <= 1) & (xs + 0.5 >= ax - t * (ax - x0)) & (xs + 0.5 <= ax + t * (x0 + bw - ax))
            # keep every object mostly visible: little overlap either way
            if m.sum() > 100 and all((p & m).sum() < 0.2 * min(p.sum(), m.sum()) for p in masks):
                break
        for prev in masks:  # later shapes are painted on top
            prev &= ~m
        masks.append(m)
        color = torch.rand(3, generator=g)
        img = torch.where(m[None], color[:, None, None] * 0.8 + 0.1 * torch.rand(3, h, w, generator=g), img)
        labels.append(int(torch.randint(1, num_classes, (1,), generator=g)))
    for m in masks:
        yy, xx = torch.where(m)
        boxes.append([float(xx.min()), float(yy.min()), float(xx.max() + 1), float(yy.max() + 1)])
    return (img.clamp(0, 1), torch.tensor(boxes, dtype=torch.float32),
            torch.tensor(labels, dtype=torch.int64), torch.stack(masks).to(torch.uint8))


def train_step(model, images, targets, seed, grads):
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    losses = model([i.clone() for i in images], [{k: v.clone() for k, v in t.items()} for t in targets])
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    return ({k: losses[k].detach().clone() for k in LOSSES},
            {k: params[k].grad.detach().clone() for k in grads})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", required=True, help="unused; accepted for symmetry")
    ap.add_argument("--only", default=None, help="comma-separated case names")
    args = ap.parse_args()
    # 2 threads, as the C++ test: with batch statistics, BN backward cancels
    # most of the gradient, and torchvision's own deep v2 gradients differ by
    # ~1e-2 between 1 and 2 threads. Same split, same sums: bit-equal here.
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    manifest = {"cases": []}
    names = args.only.split(",") if args.only else list(CASES)
    for name in names:
        t0 = time.time()
        cfg = dict(CASES[name])
        model = build(name, cfg)
        inputs, images, targets = {}, [], []
        for k, (h, w) in enumerate(cfg["images"]):
            img, boxes, labels, masks = synthetic_sample(h, w, cfg["num_classes"], cfg["seed"] * 100 + k)
            inputs.update({"image%d" % k: img, "boxes%d" % k: boxes, "labels%d" % k: labels, "masks%d" % k: masks})
            images.append(img)
            targets.append({"boxes": boxes, "labels": labels, "masks": masks})
        calibrate_train(model, images, targets, cfg["seed"] + 200)
        sd = model.state_dict()
        grad_names = grads_of(cfg)
        for k in grad_names:
            assert k in sd, k
        torch.save(sd, os.path.join(args.out, name + ".pth"))
        model.train()
        losses, grads = train_step(model, images, targets, 1, grad_names)
        losses2, grads2 = train_step(model, images, targets, 12345, grad_names)
        for k in LOSSES:
            assert torch.equal(losses[k], losses2[k]), (name, k, losses[k], losses2[k])
        for k in grad_names:
            assert torch.equal(grads[k], grads2[k]), (name, k)
        torch.save(inputs, os.path.join(args.out, name + "__inputs.pt"))
        torch.save(losses, os.path.join(args.out, name + "__losses.pt"))
        torch.save(grads, os.path.join(args.out, name + "__grads.pt"))
        print("%s (%.1fs): %s" % (name, time.time() - t0, ", ".join(
            "%s=%.6f" % (k, v.item()) for k, v in losses.items())), flush=True)
        for k, v in grads.items():
            print("  grad %-50s %-22s |g|=%.4e" % (k, tuple(v.shape), v.norm().item()), flush=True)
        rpn_s, roi_s = model.rpn.fg_bg_sampler, model.roi_heads.fg_bg_sampler
        manifest["cases"].append({
            "name": name, "arch": cfg["arch"], "num_classes": cfg["num_classes"],
            "frozen_batch_norm": cfg["frozen_batch_norm"], "backbone_norm_eps": cfg["backbone_norm_eps"],
            "trainable_backbone_layers": cfg["trainable_backbone_layers"],
            "min_size": MIN_SIZE, "max_size": MAX_SIZE,
            "rpn_batch_size_per_image": rpn_s.batch_size_per_image,
            "rpn_positive_fraction": rpn_s.positive_fraction,
            "box_batch_size_per_image": roi_s.batch_size_per_image,
            "box_positive_fraction": roi_s.positive_fraction,
            "rpn_pre_nms_top_n_train": model.rpn._pre_nms_top_n["training"],
            "rpn_post_nms_top_n_train": model.rpn._post_nms_top_n["training"],
            "num_images": len(images), "grads": grad_names,
            "backbone_depth": cfg.get("backbone_depth", 50),
        })
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
