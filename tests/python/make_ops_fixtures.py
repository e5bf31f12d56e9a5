#!/usr/bin/python3
"""Fixtures for tests/ops: reference outputs of the real torchvision.ops
(Debian python3-torchvision) on seeded random inputs, for stage-level parity of
maskrcnn::ops (roi_align forward + backward, nms, batched_nms, box utilities).

Writes into --out (each a torch.save'd plain dict of tensors, read in C++ with
maskrcnn::load_state_dict):
  roi_align.pth  per case "<case>.<field>":
                   input [N,C,H,W], rois [K,5], weights (same shape as out),
                   params float64 [spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned]
                   out, grad (d/d input of (out * weights).sum()),
                   bad_rois [B,5] (optional): RoIs torchvision raises on (see roi_align_cases)
  nms.pth        per case: boxes, scores, params float64 [iou_threshold], keep
  batched_nms.pth per case: boxes, scores, idxs, params float64 [iou_threshold], keep
  boxes.pth      per case: box_iou (a, b, iou), box_area (boxes, area),
                 clip (boxes, params [h, w], out), small (boxes, params [min_size], keep)

Everything is deterministic (fixed seeds) and runs in a few seconds.
"""
import argparse
import itertools
import os

import torch
import torchvision
from torchvision import ops

torch.set_num_threads(1)


def rand_boxes(g, n, img_h, img_w, dtype):
    """Boxes (x1, y1, x2, y2) in image coordinates, many of them pathological."""
    boxes = []
    kinds = ["normal", "normal", "normal", "zero_w", "zero_h", "point", "neg_w", "neg_h",
             "neg_both", "outside", "partial", "huge", "tiny", "last_row", "last_col",
             "corner", "full"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        u = torch.rand(8, generator=g, dtype=torch.float64).tolist()
        x1, y1 = u[0] * img_w, u[1] * img_h
        w, h = u[2] * img_w * 0.6 + 1e-3, u[3] * img_h * 0.6 + 1e-3
        if kind == "zero_w":
            w = 0.0
        elif kind == "zero_h":
            h = 0.0
        elif kind == "point":
            w = h = 0.0
        elif kind == "neg_w":
            w = -(u[4] * img_w * 0.5 + 0.1)
        elif kind == "neg_h":
            h = -(u[4] * img_h * 0.5 + 0.1)
        elif kind == "neg_both":
            w = -(u[4] * img_w * 0.3 + 0.1)
            h = -(u[5] * img_h * 0.3 + 0.1)
        elif kind == "outside":  # entirely off the map, on either side
            if u[4] < 0.5:
                x1, y1 = img_w * (1.2 + u[5]), img_h * (1.1 + u[6])
            else:
                x1, y1 = -img_w * (0.5 + u[5]) - w, -img_h * (0.3 + u[6]) - h
        elif kind == "partial":  # straddles an edge
            x1 = img_w * (0.8 + 0.3 * u[4]) if u[5] < 0.5 else -w * 0.5
            y1 = img_h * (0.8 + 0.3 * u[6]) if u[7] < 0.5 else -h * 0.5
        elif kind == "huge":
            x1, y1 = -img_w * (1 + u[4]), -img_h * (1 + u[5])
            w, h = img_w * (3 + 2 * u[6]), img_h * (3 + 2 * u[7])
        elif kind == "tiny":
            w, h = u[4] * 1e-2, u[5] * 1e-2
        elif kind == "last_row":
            y1, h = img_h - u[4] * 2.0, u[5] * 3.0
        elif kind == "last_col":
            x1, w = img_w - u[4] * 2.0, u[5] * 3.0
        elif kind == "corner":
            x1, y1, w, h = img_w - 1.0, img_h - 1.0, 1.0, 1.0
        elif kind == "full":
            x1, y1, w, h = 0.0, 0.0, float(img_w), float(img_h)
        batch = float(i % 2)
        boxes.append([batch, x1, y1, x1 + w, y1 + h])
    return torch.tensor(boxes, dtype=dtype)


def roi_align_cases(out):
    g = torch.Generator().manual_seed(20240501)
    shapes = [(2, 3, 13, 17), (2, 2, 24, 19), (2, 2, 1, 9), (2, 1, 8, 1)]
    scales = [1.0, 0.25, 1.0 / 32]
    ratios = [2, 0, -1, 1]
    sizes = [(7, 7), (14, 14), (3, 5)]
    data = {}
    n_err = 0
    for ci, (dtype, scale, sr, aligned, size) in enumerate(
            itertools.product([torch.float32, torch.float64], scales, ratios, [False, True], sizes)):
        shape = shapes[ci % len(shapes)]
        x = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
        img_h, img_w = shape[2] / scale, shape[3] / scale
        rois = rand_boxes(g, 34, img_h, img_w, dtype)
        key = f"c{ci:03d}"
        # torchvision cannot size its sample buffer when an aligned RoI of negative
        # extent makes exactly one adaptive grid dimension negative: it raises
        # (std::length_error). Such RoIs go to "<case>.bad_rois" (each must raise on its
        # own); the rest are compared.
        bad = []
        if aligned and sr <= 0:
            for r in range(rois.shape[0]):
                try:
                    ops.roi_align(x, rois[r:r + 1], size, scale, sr, aligned)
                except (RuntimeError, ValueError):
                    bad.append(r)
        if bad:
            n_err += len(bad)
            keep = [r for r in range(rois.shape[0]) if r not in bad]
            data[f"{key}.bad_rois"] = rois[bad]
            rois = rois[keep]
        w = torch.randn(rois.shape[0], shape[1], size[0], size[1], generator=g,
                        dtype=torch.float64).to(dtype)
        data[f"{key}.input"] = x
        data[f"{key}.rois"] = rois
        data[f"{key}.weights"] = w
        xi = x.clone().requires_grad_(True)
        y = ops.roi_align(xi, rois, size, scale, sr, aligned)
        (grad,) = torch.autograd.grad((y * w).sum(), xi)
        data[f"{key}.out"] = y.detach()
        data[f"{key}.grad"] = grad
        data[f"{key}.params"] = torch.tensor(
            [scale, size[0], size[1], sr, float(aligned)], dtype=torch.float64)
    torch.save(data, os.path.join(out, "roi_align.pth"))
    return len([k for k in data if k.endswith(".params")]), n_err


def clustered_boxes(g, n, centers, spread, dtype):
    c = torch.rand(centers, 4, generator=g, dtype=torch.float64)
    c[:, :2] *= 200
    c[:, 2:] = c[:, :2] + 20 + 60 * c[:, 2:]
    pick = torch.randint(0, centers, (n,), generator=g)
    jitter = torch.randn(n, 4, generator=g, dtype=torch.float64) * spread
    b = c[pick] + jitter
    b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2] + 0.5)
    return b.to(dtype)


def nms_cases(out):
    g = torch.Generator().manual_seed(777)
    data = {}

    def add(name, boxes, scores, thr):
        data[f"{name}.boxes"] = boxes
        data[f"{name}.scores"] = scores
        data[f"{name}.params"] = torch.tensor([thr], dtype=torch.float64)
        data[f"{name}.keep"] = ops.nms(boxes, scores, thr)

    for dtype in (torch.float32, torch.float64):
        dn = "f32" if dtype == torch.float32 else "f64"
        for thr in (0.3, 0.5, 0.7):
            t = int(thr * 10)
            b = clustered_boxes(g, 400, 12, 6.0, dtype)
            add(f"random_{dn}_t{t}", b, torch.rand(400, generator=g, dtype=torch.float64).to(dtype), thr)
            # exact ties: few distinct score values, order among equals must be stable
            b = clustered_boxes(g, 300, 8, 8.0, dtype)
            s = (torch.randint(0, 5, (300,), generator=g).to(torch.float64) / 4).to(dtype)
            add(f"ties_{dn}_t{t}", b, s, thr)
            # all scores equal
            b = clustered_boxes(g, 120, 5, 10.0, dtype)
            add(f"allties_{dn}_t{t}", b, torch.full((120,), 0.5, dtype=dtype), thr)
            add(f"empty_{dn}_t{t}", torch.zeros(0, 4, dtype=dtype), torch.zeros(0, dtype=dtype), thr)
            add(f"single_{dn}_t{t}", torch.tensor([[1.0, 2.0, 10.0, 12.0]], dtype=dtype),
                torch.tensor([0.3], dtype=dtype), thr)
            ident = torch.tensor([[5.0, 5.0, 25.0, 30.0]], dtype=dtype).repeat(10, 1)
            add(f"identical_{dn}_t{t}", ident, torch.full((10,), 0.9, dtype=dtype), thr)
            add(f"identical_scored_{dn}_t{t}", ident,
                torch.rand(10, generator=g, dtype=torch.float64).to(dtype), thr)
            # zero-area boxes (IoU 0/0 = NaN never suppresses) mixed with normal ones
            z = clustered_boxes(g, 60, 3, 4.0, dtype)
            z[::3, 2] = z[::3, 0]
            z[1::5] = z[0]
            z[1::5, 2:] = z[1::5, :2]
            add(f"degenerate_{dn}_t{t}", z,
                (torch.randint(0, 3, (60,), generator=g).to(torch.float64) / 2).to(dtype), thr)
            # IoU exactly at the threshold: 0.5 IoU pairs must not be suppressed at 0.5
            add(f"at_threshold_{dn}_t{t}",
                torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 3], [0, 0, 10, 7]], dtype=dtype),
                torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=dtype), thr)
    torch.save(data, os.path.join(out, "nms.pth"))
    n = len([k for k in data if k.endswith(".keep")])

    bdata = {}

    def badd(name, boxes, scores, idxs, thr):
        bdata[f"{name}.boxes"] = boxes
        bdata[f"{name}.scores"] = scores
        bdata[f"{name}.idxs"] = idxs
        bdata[f"{name}.params"] = torch.tensor([thr], dtype=torch.float64)
        bdata[f"{name}.keep"] = ops.batched_nms(boxes, scores, idxs, thr)

    for dtype in (torch.float32, torch.float64):
        dn = "f32" if dtype == torch.float32 else "f64"
        for thr in (0.3, 0.5, 0.7):
            t = int(thr * 10)
            # <= 1000 boxes (numel <= 4000): coordinate-offset trick; > 1000: per-class loop
            for n_boxes, classes in ((500, 7), (1000, 10), (1001, 10), (2500, 25)):
                b = clustered_boxes(g, n_boxes, 30, 6.0, dtype)
                idxs = torch.randint(0, classes, (n_boxes,), generator=g)
                s = torch.rand(n_boxes, generator=g, dtype=torch.float64).to(dtype)
                badd(f"n{n_boxes}_{dn}_t{t}", b, s, idxs, thr)
                s = (torch.randint(0, 6, (n_boxes,), generator=g).to(torch.float64) / 5).to(dtype)
                badd(f"n{n_boxes}_ties_{dn}_t{t}", b, s, idxs, thr)
            badd(f"empty_{dn}_t{t}", torch.zeros(0, 4, dtype=dtype), torch.zeros(0, dtype=dtype),
                 torch.zeros(0, dtype=torch.int64), thr)
            badd(f"single_{dn}_t{t}", torch.tensor([[1.0, 2.0, 10.0, 12.0]], dtype=dtype),
                 torch.tensor([0.3], dtype=dtype), torch.tensor([4]), thr)
            ident = torch.tensor([[5.0, 5.0, 25.0, 30.0]], dtype=dtype).repeat(12, 1)
            badd(f"identical_{dn}_t{t}", ident, torch.full((12,), 0.9, dtype=dtype),
                 torch.arange(12) % 3, thr)
    torch.save(bdata, os.path.join(out, "batched_nms.pth"))
    return n, len([k for k in bdata if k.endswith(".keep")])


def box_cases(out):
    g = torch.Generator().manual_seed(4242)
    data = {}

    def mixed_boxes(n, dtype):
        b = clustered_boxes(g, n, 6, 15.0, torch.float64)
        b[::7, 2] = b[::7, 0]          # zero width
        b[3::11, 3] = b[3::11, 1] - 4  # negative height
        b[5::13] -= 250                # negative coordinates
        return b.to(dtype) if dtype.is_floating_point else b.round().to(dtype)

    for dtype in (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.int16):
        dn = str(dtype).replace("torch.", "")
        a, b = mixed_boxes(37, dtype), mixed_boxes(23, dtype)
        data[f"iou_{dn}.a"] = a
        data[f"iou_{dn}.b"] = b
        data[f"iou_{dn}.iou"] = ops.box_iou(a, b)
        data[f"area_{dn}.boxes"] = a
        data[f"area_{dn}.area"] = ops.box_area(a)
    # identical and disjoint boxes
    a = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 40], [0, 0, 0, 0]], dtype=torch.float32)
    data["iou_special.a"] = a
    data["iou_special.b"] = a.clone()
    data["iou_special.iou"] = ops.box_iou(a, a)

    for dtype in (torch.float32, torch.float64, torch.int64):
        dn = str(dtype).replace("torch.", "")
        for hi, (h, w) in enumerate(((480, 640), (37, 1), (0, 0))):
            bx = mixed_boxes(50, torch.float64) * 3 - 100
            bx = bx.to(dtype) if dtype.is_floating_point else bx.round().to(dtype)
            data[f"clip_{dn}_{hi}.boxes"] = bx
            data[f"clip_{dn}_{hi}.params"] = torch.tensor([h, w], dtype=torch.float64)
            data[f"clip_{dn}_{hi}.out"] = ops.clip_boxes_to_image(bx, (h, w))
    b3 = mixed_boxes(24, torch.float32).reshape(2, 12, 4) * 4 - 100
    data["clip_3d.boxes"] = b3
    data["clip_3d.params"] = torch.tensor([300, 500], dtype=torch.float64)
    data["clip_3d.out"] = ops.clip_boxes_to_image(b3, (300, 500))

    for dtype in (torch.float32, torch.float64):
        dn = str(dtype).replace("torch.", "")
        bx = mixed_boxes(80, dtype)
        # widths/heights exactly at the limits
        bx[0] = torch.tensor([0, 0, 1, 1], dtype=dtype)
        bx[1] = torch.tensor([0, 0, 1e-3, 5], dtype=dtype)
        bx[2] = torch.tensor([2, 2, 7.5, 7.5], dtype=dtype)
        for mi, m in enumerate((0.0, 1e-3, 1.0, 5.5, 30.0)):
            data[f"small_{dn}_{mi}.boxes"] = bx
            data[f"small_{dn}_{mi}.params"] = torch.tensor([m], dtype=torch.float64)
            data[f"small_{dn}_{mi}.keep"] = ops.remove_small_boxes(bx, m)
    torch.save(data, os.path.join(out, "boxes.pth"))
    return len(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", default=None)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    n_roi, n_err = roi_align_cases(args.out)
    n_nms, n_bnms = nms_cases(args.out)
    n_box = box_cases(args.out)
    with open(os.path.join(args.out, "versions.txt"), "w") as f:
        f.write(f"torch {torch.__version__}\ntorchvision {torchvision.__version__}\n")
    print(f"ops fixtures in {args.out}: roi_align {n_roi} cases ({n_err} RoIs raise in torchvision), "
          f"nms {n_nms}, batched_nms {n_bnms}, boxes {n_box} tensors "
          f"(torch {torch.__version__}, torchvision {torchvision.__version__})")


if __name__ == "__main__":
    main()
