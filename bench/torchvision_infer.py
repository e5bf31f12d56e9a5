#!/usr/bin/python3
"""torchvision side of bench/compare_torchvision.sh.

  make-weights OUT.pth        a seeded checkpoint built exactly like torchvision's COCO
                              v1 model (FrozenBatchNorm2d eps 0, legacy format, 2019 keys)
  time WEIGHTS REPS IMAGE...  per-image seconds (read + model), after one warm-up;
                              env THREADS (2), MIN_SIZE (800), MAX_SIZE (1333)
  make-large SRC OUT H W      SRC resized to H x W (bilinear), written as PNG
"""
import os
import statistics
import sys
import time

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
import make_parity_fixtures as fx  # noqa: E402


def coco_v1_model():
    from torchvision.models.detection import mask_rcnn
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import misc
    backbone = _resnet_fpn_extractor(torchvision.models.resnet50(norm_layer=misc.FrozenBatchNorm2d), 3)
    m = mask_rcnn.MaskRCNN(backbone, num_classes=91)
    fx.overwrite_eps(m, 0.0)
    return m


def main():
    if sys.argv[1] == "make-large":
        src, out, h, w = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        x = torchvision.io.read_image(src, torchvision.io.ImageReadMode.RGB).float().unsqueeze(0)
        y = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        torchvision.io.write_png(y.squeeze(0).round().clamp(0, 255).to(torch.uint8), out)
        return
    if sys.argv[1] == "make-weights":
        m = fx.build("v1_coco")
        torch.save(fx.old_key_names(m.state_dict()), sys.argv[2], _use_new_zipfile_serialization=False)
        return
    weights, reps, images = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    model = coco_v1_model()
    model.load_state_dict(torch.load(weights, weights_only=False))
    model.eval()
    model.transform.min_size = (int(os.environ.get("MIN_SIZE", "800")),)
    model.transform.max_size = int(os.environ.get("MAX_SIZE", "1333"))

    def once(path):
        t0 = time.perf_counter()
        x = torchvision.io.read_image(path, torchvision.io.ImageReadMode.RGB).float() / 255
        with torch.no_grad():
            out = model([x])[0]
        return time.perf_counter() - t0, len(out["scores"])

    once(images[0])  # warm-up
    for path in images:
        times, n = [], 0
        for _ in range(reps):
            t, n = once(path)
            times.append(t)
        print("%s\t%.3f\t%d" % (os.path.basename(path), statistics.median(times), n), flush=True)


if __name__ == "__main__":
    main()
