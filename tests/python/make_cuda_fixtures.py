#!/usr/bin/env python3
"""Reference outputs of the real torchvision Mask R-CNN on a CUDA GPU, for the
CUDA tests (tests/cuda). Needs torch with CUDA and a GPU.

Writes into --out:
  v1_coco.pth, v2.pth  the seeded random checkpoints of make_parity_fixtures.py
  ref/*.pt             per case: the input image (uint8 [3, H, W]) and
                       torchvision's outputs computed on the GPU (boxes, scores,
                       labels, packed binary masks)
  manifest.json        the cases
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_parity_fixtures import build, pack_masks, synthetic_image  # noqa: E402

CASES = {"v1_coco": [(480, 640), (123, 457)], "v2": [(600, 400)]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", default="")  # unused: every image is synthetic
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("make_cuda_fixtures.py: torch sees no CUDA device")
    # fp32 means fp32: no TF32 in convolutions or matrix products (the test
    # turns it off on our side too).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(os.path.join(args.out, "ref"), exist_ok=True)
    manifest = {"cases": []}
    for kind, sizes in CASES.items():
        model = build(kind).eval()  # seeded on the CPU, as for the CPU parity fixtures
        torch.save(model.state_dict(), os.path.join(args.out, kind + ".pth"))
        model = model.cuda()
        for h, w in sizes:
            img = synthetic_image(h, w, h * 1000 + w)
            with torch.no_grad():
                out = model([img.float().cuda() / 255.0])[0]
            out = {k: v.cpu() for k, v in out.items()}
            ref = {"image": img, "boxes": out["boxes"], "scores": out["scores"],
                   "labels": out["labels"], "masks_packed": pack_masks(out["masks"])}
            name = "%s__%dx%d.pt" % (kind, h, w)
            torch.save(ref, os.path.join(args.out, "ref", name))
            print("%s %dx%d: %d detections on %s" % (kind, h, w, out["scores"].numel(),
                                                     torch.cuda.get_device_name()), flush=True)
            manifest["cases"].append({"model": kind, "weights": kind + ".pth", "ref": "ref/" + name})
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
