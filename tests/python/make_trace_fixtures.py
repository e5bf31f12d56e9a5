#!/usr/bin/python3
"""torchvision's intermediates of one Mask R-CNN forward pass, for the parity
test of MaskRCNN::predict_traced (tests/modeling/test_trace_parity.cpp).

Writes into --out:
  model.pth      maskrcnn_resnet50_fpn (v1, BatchNorm2d backbone) with 11 classes,
                 seeded random weights made realistic as make_parity_fixtures.py
                 does (randomize: BN statistics, RPN logit spreads, a calibrated
                 box classifier), zip format
  image.png      the photo, decoded by torchvision (both sides see identical pixels)
  ref.pt         a flat dict name -> tensor (torch.save, zip format), below
  manifest.json  the files and the settings the C++ side must apply through
                 ModelOverrides (min_size, max_size, box_score_thresh), and the
                 sizes of the partial tensors (body_channels, pooled_rows)

ref.pt, for the one image (boxes in the resized image's pixels unless noted):
  image_size       int64 [2]  original H, W
  resized_size     int64 [2]  images.image_sizes[0]
  batch            [3, Hp, Wp] normalised, padded batch (images.tensors[0])
  body_C2..C5      [min(C, body_channels), H, W] backbone.body outputs "0".."3",
                   the first body_channels channels only (C2 alone is 9 MB)
  fpn_P2..P6       [256, H, W] backbone outputs "0".."3", "pool"
  cell_anchors_P2..P6  [A, 4] rpn.anchor_generator.cell_anchors
  objectness_P2..P6    [A, H, W] rpn.head logits
  rpn_pre_nms_top_n    int64 [5] candidates kept by score per level
  rpn_counts       int64 [3] after_top_n, NMS input count M, after NMS (before post-NMS top-n)
  pre_nms_boxes    [M, 4]  RegionProposalNetwork.filter_proposals up to (not
  pre_nms_scores   [M]     including) batched_nms: per-level top-n, clip,
  pre_nms_levels   int64 [M]  remove_small_boxes, score threshold
  proposals        [R, 4]  the RPN's output (post NMS, post top-n)
  proposal_scores  [R]
  class_probs      [R, C]  softmax of roi_heads.box_predictor's class_logits
  refined_boxes    [R, C, 4] box_coder.decode + clip_boxes_to_image
  box_counts       int64 [5] candidates, above_score, not_small, after_nms, kept
  source_proposal  int64 [N] per detection, its proposal's index
  box_pooled       [K, 256, 7, 7]   box_roi_pool rows of the first K detections' proposals
  mask_boxes       [N, 4]  roi_heads' boxes (resized pixels)
  mask_pooled      [K, 256, 14, 14] mask_roi_pool of the first K detections
  mask_class_probs [N, C, 28, 28]   sigmoid of roi_heads.mask_predictor's logits
  boxes, scores, labels  the model's output (boxes in original pixels)
where K = min(N, pooled_rows).

The script re-derives the RPN candidates and the box head's counts with
torchvision's own functions and the model's own attributes, and checks that
finishing the computation (NMS, top-n) gives exactly what torchvision's model
returned.
"""
import argparse
import json
import os
import sys
import time

import torch
import torchvision
from torchvision.ops import boxes as box_ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_parity_fixtures import randomize  # noqa: E402

IMAGE = "person_dog_horse"  # 640 x 424: resized 320 x 483 (x and y ratios differ slightly)
NUM_CLASSES = 11
MIN_SIZE, MAX_SIZE = 320, 512
BOX_SCORE_THRESH = 0.05
BODY_CHANNELS = 128
POOLED_ROWS = 10
FPN_NAMES = ["0", "1", "2", "3", "pool"]


def build():
    torch.manual_seed(21)
    m = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
        min_size=MIN_SIZE, max_size=MAX_SIZE, box_score_thresh=BOX_SCORE_THRESH)
    return randomize(m, 31, 2.5).eval()


def rpn_candidates(rpn, proposals, objectness, image_shapes, num_anchors_per_level):
    """RegionProposalNetwork.filter_proposals (torchvision 0.14) for image 0, up
    to the input of batched_nms; also its NMS keep (unsliced)."""
    num_images = proposals.shape[0]
    objectness = objectness.detach().reshape(num_images, -1)
    levels = torch.cat([torch.full((n,), idx, dtype=torch.int64)
                        for idx, n in enumerate(num_anchors_per_level)], 0)
    levels = levels.reshape(1, -1).expand_as(objectness)
    top_n_idx = rpn._get_top_n_idx(objectness, num_anchors_per_level)
    batch_idx = torch.arange(num_images)[:, None]
    objectness = objectness[batch_idx, top_n_idx]
    levels = levels[batch_idx, top_n_idx]
    proposals = proposals[batch_idx, top_n_idx]
    prob = torch.sigmoid(objectness)
    boxes, scores, lvl = proposals[0], prob[0], levels[0]
    boxes = box_ops.clip_boxes_to_image(boxes, image_shapes[0])
    keep = box_ops.remove_small_boxes(boxes, rpn.min_size)
    boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
    keep = torch.where(scores >= rpn.score_thresh)[0]
    boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
    nms_keep = box_ops.batched_nms(boxes, scores, lvl, rpn.nms_thresh)
    return {
        "pre_nms_top_n": [min(rpn.pre_nms_top_n(), n) for n in num_anchors_per_level],
        "after_top_n": top_n_idx.shape[1],
        "boxes": boxes, "scores": scores, "levels": lvl, "nms_keep": nms_keep,
    }


def box_postprocess(rh, class_logits, box_regression, proposals, image_shape):
    """RoIHeads.postprocess_detections (torchvision 0.14) for one image, keeping
    the count after each step and the (proposal, class) each detection came from."""
    num_classes = class_logits.shape[-1]
    pred_boxes = rh.box_coder.decode(box_regression, [proposals])
    pred_scores = torch.nn.functional.softmax(class_logits, -1)
    boxes = box_ops.clip_boxes_to_image(pred_boxes, image_shape)
    refined = boxes
    labels = torch.arange(num_classes).view(1, -1).expand_as(pred_scores)
    boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), pred_scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
    cand = torch.arange(scores.numel())
    counts = [scores.numel()]
    inds = torch.where(scores > rh.score_thresh)[0]
    boxes, scores, labels, cand = boxes[inds], scores[inds], labels[inds], cand[inds]
    counts.append(inds.numel())
    keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
    boxes, scores, labels, cand = boxes[keep], scores[keep], labels[keep], cand[keep]
    counts.append(keep.numel())
    keep = box_ops.batched_nms(boxes, scores, labels, rh.nms_thresh)
    counts.append(keep.numel())
    keep = keep[: rh.detections_per_img]
    counts.append(keep.numel())
    return {
        "class_probs": pred_scores, "refined_boxes": refined, "counts": counts,
        "boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep],
        "source_proposal": torch.div(cand[keep], num_classes - 1, rounding_mode="floor"),
    }


def capture(model, x):
    cap = {}
    hooks = []

    def keep(name, fn=lambda o: o):
        return lambda m, i, o: cap.__setitem__(name, fn(o))
    hooks.append(model.transform.register_forward_hook(keep("images", lambda o: o[0])))
    hooks.append(model.backbone.body.register_forward_hook(keep("body")))
    hooks.append(model.backbone.register_forward_hook(keep("fpn")))
    hooks.append(model.rpn.head.register_forward_hook(keep("rpn_head")))
    hooks.append(model.roi_heads.box_roi_pool.register_forward_hook(keep("box_pooled")))
    hooks.append(model.roi_heads.box_predictor.register_forward_hook(keep("box_predictor")))
    hooks.append(model.roi_heads.mask_roi_pool.register_forward_hook(keep("mask_pooled")))
    hooks.append(model.roi_heads.mask_predictor.register_forward_hook(keep("mask_logits")))
    # A copy: transform.postprocess replaces the dict's boxes with original-pixel ones.
    hooks.append(model.roi_heads.register_forward_hook(keep("roi_heads", lambda o: dict(o[0][0]))))
    rpn, rh = model.rpn, model.roi_heads
    filter_proposals, postprocess = rpn.filter_proposals, rh.postprocess_detections

    def filter_spy(*args):
        cap["filter_args"] = args
        out = filter_proposals(*args)
        cap["filter_out"] = out
        return out

    def postprocess_spy(*args):
        cap["postprocess_args"] = args
        return postprocess(*args)
    rpn.filter_proposals, rh.postprocess_detections = filter_spy, postprocess_spy
    try:
        with torch.no_grad():
            cap["out"] = model([x])[0]
    finally:
        del rpn.filter_proposals, rh.postprocess_detections
        for h in hooks:
            h.remove()
    return cap


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", required=True)
    args = ap.parse_args()
    t0 = time.time()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    img = torchvision.io.read_image(os.path.join(args.shared, "images", IMAGE + ".jpg"),
                                    torchvision.io.ImageReadMode.RGB)
    torchvision.io.write_png(img, os.path.join(args.out, "image.png"))
    model = build()
    torch.save(model.state_dict(), os.path.join(args.out, "model.pth"))

    cap = capture(model, img.float() / 255.0)
    rpn, rh = model.rpn, model.roi_heads
    images = cap["images"]
    resized = images.image_sizes[0]
    out, roi = cap["out"], cap["roi_heads"]

    # RPN: the NMS input, re-derived; NMS + top-n must give torchvision's proposals.
    cand = rpn_candidates(rpn, *cap["filter_args"])
    boxes_out, scores_out = cap["filter_out"]
    final = cand["nms_keep"][: rpn.post_nms_top_n()]
    assert torch.equal(cand["boxes"][final], boxes_out[0]), "RPN candidates do not reproduce torchvision's"
    assert torch.equal(cand["scores"][final], scores_out[0])

    # Box head: counts and source proposals, re-derived; must give torchvision's detections.
    class_logits, box_regression, proposals, image_shapes = cap["postprocess_args"]
    assert len(proposals) == 1 and torch.equal(proposals[0], boxes_out[0])
    post = box_postprocess(rh, class_logits, box_regression, proposals[0], image_shapes[0])
    for k in ("boxes", "scores", "labels"):
        assert torch.equal(post[k], roi[k]), "box postprocess does not reproduce torchvision's " + k
    logits, _ = cap["box_predictor"]
    assert torch.equal(torch.nn.functional.softmax(logits, -1), post["class_probs"])

    n = roi["boxes"].shape[0]
    k_rows = min(n, POOLED_ROWS)
    src = post["source_proposal"]
    ref = {
        "image_size": torch.tensor(list(img.shape[-2:])),
        "resized_size": torch.tensor(list(resized)),
        "batch": images.tensors[0],
        "rpn_pre_nms_top_n": torch.tensor(cand["pre_nms_top_n"]),
        "rpn_counts": torch.tensor([cand["after_top_n"], cand["boxes"].shape[0], cand["nms_keep"].numel()]),
        "pre_nms_boxes": cand["boxes"], "pre_nms_scores": cand["scores"], "pre_nms_levels": cand["levels"],
        "proposals": boxes_out[0], "proposal_scores": scores_out[0],
        "class_probs": post["class_probs"], "refined_boxes": post["refined_boxes"],
        "box_counts": torch.tensor(post["counts"]),
        "source_proposal": src,
        "box_pooled": cap["box_pooled"][src[:k_rows]],
        "mask_boxes": roi["boxes"],
        "mask_pooled": cap["mask_pooled"][:k_rows],
        "mask_class_probs": cap["mask_logits"].sigmoid(),
        "boxes": out["boxes"], "scores": out["scores"], "labels": out["labels"],
    }
    for l, key in enumerate(["0", "1", "2", "3"]):
        ref["body_C%d" % (l + 2)] = cap["body"][key][0, :BODY_CHANNELS]
    objectness = cap["rpn_head"][0]
    for l, key in enumerate(FPN_NAMES):
        ref["fpn_P%d" % (l + 2)] = cap["fpn"][key][0]
        ref["objectness_P%d" % (l + 2)] = objectness[l][0]
        ref["cell_anchors_P%d" % (l + 2)] = rpn.anchor_generator.cell_anchors[l]
    # Own storage each (a slice would save its whole base), contiguous.
    ref = {k: v.detach().clone().contiguous() for k, v in ref.items()}
    torch.save(ref, os.path.join(args.out, "ref.pt"))

    manifest = {
        "weights": "model.pth", "image": "image.png", "ref": "ref.pt", "source_image": IMAGE + ".jpg",
        "num_classes": NUM_CLASSES, "min_size": MIN_SIZE, "max_size": MAX_SIZE,
        "box_score_thresh": BOX_SCORE_THRESH, "box_nms_thresh": rh.nms_thresh,
        "box_detections_per_img": rh.detections_per_img,
        "rpn_pre_nms_top_n": rpn.pre_nms_top_n(), "rpn_post_nms_top_n": rpn.post_nms_top_n(),
        "rpn_nms_thresh": rpn.nms_thresh,
        "body_channels": BODY_CHANNELS, "pooled_rows": POOLED_ROWS,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print("trace: image %s %dx%d -> %dx%d, %d RPN candidates, %d proposals, %d detections "
          "(scores %.3f..%.3f, %d labels), counts %s; %.1f MB in %.1f s" % (
              IMAGE, img.shape[1], img.shape[2], resized[0], resized[1], cand["boxes"].shape[0],
              boxes_out[0].shape[0], n, out["scores"].min() if n else 0, out["scores"].max() if n else 0,
              len(set(out["labels"].tolist())), post["counts"], size / 1e6, time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
