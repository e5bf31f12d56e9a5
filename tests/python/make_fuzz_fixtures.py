#!/usr/bin/python3
"""Seed corpora for the fuzz targets (fuzz/targets), one folder a target:
small valid inputs written by the real torch.save and torchvision.io, plus
hand-written COCO files, RLE strings and polygons, and a few broken variants.
tests/fuzz replays them; scripts/fuzz.sh starts libFuzzer from them.

Writes --out/<target>/<name>. Seeded: the same files every run.
"""
import argparse
import collections
import io
import json
import os
import struct

import torch
import torchvision.io


def rle_string(counts):
    """pycocotools' maskApi rleToString: LEB128-like, deltas two places back."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def checkpoints(out):
    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(4, 3, 3, 3, generator=g)
    sd["conv.bias"] = torch.randn(4, generator=g)
    sd["bn.running_mean"] = torch.zeros(4)
    sd["bn.num_batches_tracked"] = torch.tensor(3)
    sd["half"] = torch.randn(5, generator=g).half()
    sd["mask"] = torch.tensor([True, False])
    base = torch.arange(12.0)
    sd["view"] = base[2:8].view(2, 3)
    sd["strided"] = base.view(3, 4).t()
    sd._metadata = collections.OrderedDict({"": {"version": 1}, "conv": {"version": 2}})
    training = {"model": sd, "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}},
                                           "param_groups": [{"lr": 0.02, "params": [0]}]},
                "iteration": 7, "args": ["--lr", 0.02, None, True, (1, 2)]}
    for name, obj in [("state_dict", sd), ("plain_dict", dict(sd)), ("training", training),
                      ("empty", collections.OrderedDict())]:
        for legacy in (False, True):
            buf = io.BytesIO()
            torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
            data = buf.getvalue()
            write(out, f"{name}{'_legacy' if legacy else ''}.pth", data)
    buf = io.BytesIO()
    torch.save(sd, buf, pickle_protocol=4)
    write(out, "protocol4.pth", buf.getvalue())
    write(out, "truncated.pth", buf.getvalue()[: len(buf.getvalue()) // 2])


def coco(out_gt, out_dt):
    h, w = 40, 60
    counts = [130, 10, 30, 10, 30, 12, h * w - 222]
    gt = {
        "info": {"description": "fuzz seed"},
        "images": [{"id": 1, "width": w, "height": h, "file_name": "a.jpg"},
                   {"id": 2, "width": 8, "height": 8, "file_name": "b.jpg"}],
        "categories": [{"id": 1, "name": "cat", "supercategory": "animal"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 20, 10], "area": 200, "iscrowd": 0,
             "segmentation": [[2, 3, 22, 3, 22, 13, 2, 13], [30, 5, 40, 5, 35, 15]]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [3, 2, 4, 6], "area": 42, "iscrowd": 1,
             "segmentation": {"size": [h, w], "counts": counts}},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 8, 8], "area": 64, "iscrowd": 0,
             "segmentation": {"size": [8, 8], "counts": rle_string([0, 64])}},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0,
             "segmentation": [[1, 1, 3, 3]], "ignore": 1},
        ],
    }
    write(out_gt, "instances.json", json.dumps(gt))
    write(out_gt, "minimal.json", json.dumps({"images": [], "categories": [], "annotations": []}))
    write(out_gt, "truncated.json", json.dumps(gt)[:200])
    dt = [
        {"image_id": 1, "category_id": 1, "bbox": [2.5, 3, 19, 10], "score": 0.9,
         "segmentation": {"size": [48, 64], "counts": rle_string([70, 20, 28, 20, 48 * 64 - 138])}},
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.25,
         "segmentation": [[0, 0, 5, 0, 5, 5]]},
        {"image_id": 7, "category_id": 1, "bbox": [1, 1, 3, 200], "score": 1e-3},
    ]
    write(out_dt, "results.json", json.dumps(dt))
    write(out_dt, "bbox_only.json", json.dumps([{k: v for k, v in d.items() if k != "segmentation"} for d in dt]))
    write(out_dt, "empty.json", "[]")


def rle(out):
    for i, (h, w, counts) in enumerate([(4, 5, [3, 4, 5, 8]), (10, 10, [0, 100]), (8, 3, [24]),
                                        (16, 16, [10, 1, 20, 2, 30, 3, 40, 4, 106])]):
        write(out, f"string{i}", bytes([0, h, w]) + rle_string(counts).encode())
    polys = [[1.0, 1.0, 10.0, 1.0, 10.0, 8.0, 1.0, 8.0], [0.5, 0.5, 30.2, 4.7, 12.0, 25.0],
             [2.0, 2.0, 6.0, 6.0], [-5.0, 3.0, 40.0, 3.0, 20.0, 50.0, 3.0, 3.0]]
    for i, p in enumerate(polys):
        write(out, f"polygon{i}", bytes([1, 32, 24]) + struct.pack(f"<{len(p)}d", *p))
        write(out, f"polygons{i}", bytes([2, 32, 24]) + struct.pack(f"<{len(p)}d", *p))


def images(out):
    g = torch.Generator().manual_seed(1)
    rgb = torch.randint(0, 256, (3, 12, 16), dtype=torch.uint8, generator=g)
    gray = torch.randint(0, 256, (1, 9, 7), dtype=torch.uint8, generator=g)
    jpeg = bytes(torchvision.io.encode_jpeg(rgb, quality=80).numpy())
    write(out, "rgb.jpg", jpeg)
    write(out, "gray.jpg", bytes(torchvision.io.encode_jpeg(gray).numpy()))
    write(out, "rgb.png", bytes(torchvision.io.encode_png(rgb).numpy()))
    write(out, "gray.png", bytes(torchvision.io.encode_png(gray).numpy()))
    write(out, "truncated.jpg", jpeg[: len(jpeg) // 2])
    # A 2x2 24-bit BMP, written by hand (OpenCV decodes it too).
    row = bytes([0, 0, 255, 0, 255, 0]) + b"\0\0"
    pixels = row * 2
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, 2, 2, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    write(out, "tiny.bmp", header + info + pixels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", default="")
    a = ap.parse_args()
    checkpoints(os.path.join(a.out, "checkpoint"))
    coco(os.path.join(a.out, "coco_annotations"), os.path.join(a.out, "coco_results"))
    rle(os.path.join(a.out, "rle"))
    images(os.path.join(a.out, "image"))


if __name__ == "__main__":
    main()
