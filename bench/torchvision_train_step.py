#!/usr/bin/python3
"""torchvision side of bench/compare_train_iteration.sh.

  make-batch OUT.pt IMAGE...   a training batch: the photos (float [3,H,W]) with
                               seeded boxes, labels and box-shaped masks
  time WEIGHTS BATCH.pt REPS   median seconds of one SGD iteration (forward with
                               losses, backward, step), after one warm-up
The model is torchvision's COCO v1 layout fine-tuned as its tutorial does:
FrozenBatchNorm2d backbone, 3 trainable stages, default sampling sizes.
"""
import os
import statistics
import sys
import time

import torch
import torchvision

sys.path.insert(0, os.path.dirname(__file__))
from torchvision_infer import coco_v1_model  # noqa: E402


def make_batch(out, images):
    g = torch.Generator().manual_seed(0)
    batch = {}
    for k, path in enumerate(images):
        x = torchvision.io.read_image(path, torchvision.io.ImageReadMode.RGB).float() / 255
        h, w = x.shape[-2:]
        n = 6
        x1 = torch.rand(n, generator=g) * w * 0.6
        y1 = torch.rand(n, generator=g) * h * 0.6
        bw = (torch.rand(n, generator=g) * 0.3 + 0.05) * w
        bh = (torch.rand(n, generator=g) * 0.3 + 0.05) * h
        boxes = torch.stack([x1, y1, x1 + bw, y1 + bh], 1).floor()
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        for i, b in enumerate(boxes.long().tolist()):
            masks[i, b[1]:b[3], b[0]:b[2]] = 1
        batch["image%d" % k] = x
        batch["boxes%d" % k] = boxes
        batch["labels%d" % k] = torch.randint(1, 91, (n,), generator=g)
        batch["masks%d" % k] = masks
    torch.save(batch, out)


def time_steps(weights, batch_path, reps):
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    torch.manual_seed(0)
    model = coco_v1_model()
    model.load_state_dict(torch.load(weights, weights_only=False))
    model.train()
    batch = torch.load(batch_path, weights_only=False)
    n = len([k for k in batch if k.startswith("image")])
    images = [batch["image%d" % k] for k in range(n)]
    targets = [{"boxes": batch["boxes%d" % k], "labels": batch["labels%d" % k],
                "masks": batch["masks%d" % k]} for k in range(n)]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.001, momentum=0.9, weight_decay=1e-4)
    times = []
    for r in range(reps + 1):
        t0 = time.perf_counter()
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if r > 0:
            times.append(time.perf_counter() - t0)
    print("%.3f" % statistics.median(times))


if __name__ == "__main__":
    if sys.argv[1] == "make-batch":
        make_batch(sys.argv[2], sys.argv[3:])
    else:
        time_steps(sys.argv[2], sys.argv[3], int(sys.argv[4]))
