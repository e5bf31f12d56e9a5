#!/usr/bin/env python3
"""torchvision side of bench/compare_torchvision_cuda.sh: inference time on the
GPU for WEIGHTS (a v1 COCO-layout checkpoint) on IMAGE.pt's "image".

  torchvision_cuda_infer.py WEIGHTS.pth IMAGE.pt REPS   ->  median ms, min ms, detections
"""
import statistics
import sys
import time

import torch

from torchvision_infer import coco_v1_model


def main():
    weights, image_path, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = coco_v1_model()
    model.load_state_dict(torch.load(weights, weights_only=False))
    model.eval().cuda()
    x = torch.load(image_path, weights_only=False)["image"].float().div(255).cuda()

    def once():
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model([x])[0]
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1000, len(out["scores"])

    for _ in range(3):
        once()
    runs = [once() for _ in range(reps)]
    ms = sorted(t for t, _ in runs)
    print("%.2f\t%.2f\t%d" % (statistics.median(ms), ms[0], runs[-1][1]))


if __name__ == "__main__":
    main()
