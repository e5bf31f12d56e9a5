#!/usr/bin/python3
"""COCO-format instance segmentation sets that `maskrcnn make-shapes` does not make.

make-shapes draws circles, squares and triangles on noisy gradients. These
variants draw other shapes, at other image sizes, on other backgrounds, so a
training recipe can be checked on data it was not tuned on (bench/train_variants.sh).

  synthetic_variants.py --list
  synthetic_variants.py --recommended-size --variant NAME
  synthetic_variants.py --variant NAME --output DIR [--images N] [--seed S]

writes DIR/images/000000.png ... and DIR/annotations.json (COCO instances:
uncompressed RLE masks in COCO's column-major order, category ids from 1).
A mask is the object's visible pixels: later objects hide earlier ones, and
objects left with fewer than MIN_VISIBLE pixels are not annotated. Classes
differ by shape only; every object gets its own random colour. Image k depends
only on (variant, seed, k). Needs numpy and PIL only (Debian's python3).
"""
import argparse
import json
import os
import sys
import zlib

import numpy as np
from PIL import Image, ImageDraw

MIN_VISIBLE = 30  # fewer visible pixels: not annotated (and a shape this small is not drawn)


# ---------------------------------------------------------------- RLE

def rle_encode(mask):
    """COCO uncompressed RLE of a boolean HxW mask: column-major, zeros first."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=np.uint8).T.ravel()  # Fortran order
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def rle_decode(rle):
    h, w = rle["size"]
    vals = np.zeros(len(rle["counts"]), dtype=np.uint8)
    vals[1::2] = 1
    flat = np.repeat(vals, rle["counts"])
    if flat.size != h * w:
        raise ValueError("RLE counts sum to %d, not %d" % (flat.size, h * w))
    return flat.reshape(w, h).T.astype(bool)


def mask_bbox(mask):
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


# ---------------------------------------------------------------- geometry

class Grid:
    """Pixel-centre coordinates of an H x W image."""

    def __init__(self, h, w):
        self.h, self.w = h, w
        self.y, self.x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5

    def local(self, cx, cy, theta):
        """Coordinates in a frame centred at (cx, cy), rotated by theta."""
        c, s = np.cos(theta), np.sin(theta)
        dx, dy = self.x - cx, self.y - cy
        return c * dx + s * dy, -s * dx + c * dy


def polygon_mask(grid, pts, cx, cy, theta, scale):
    """Polygon given in local unit coordinates, scaled, rotated, moved to (cx, cy)."""
    pts = np.asarray(pts, dtype=np.float64) * scale
    c, s = np.cos(theta), np.sin(theta)
    xs = cx + c * pts[:, 0] - s * pts[:, 1]
    ys = cy + s * pts[:, 0] + c * pts[:, 1]
    img = Image.new("L", (grid.w, grid.h), 0)
    ImageDraw.Draw(img).polygon([(float(a), float(b)) for a, b in zip(xs, ys)], fill=1)
    return np.asarray(img, dtype=bool)


def regular_polygon(n, phase=0.0):
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], 1)


def star_polygon(points, inner):
    a = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


# Each shape: f(rng, grid, cx, cy, size) -> boolean mask, size = the extent in pixels.

def shape_ellipse(rng, g, cx, cy, size):
    a = size / 2
    b = a * rng.uniform(0.45, 0.85)
    u, v = g.local(cx, cy, rng.uniform(0, np.pi))
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def shape_ring(rng, g, cx, cy, size):
    a = size / 2
    b = a * rng.uniform(0.6, 1.0)
    k = rng.uniform(0.45, 0.68)  # hole / outer
    u, v = g.local(cx, cy, rng.uniform(0, np.pi))
    r = (u / a) ** 2 + (v / b) ** 2
    return (r <= 1) & (r >= k * k)


def shape_cross(rng, g, cx, cy, size):
    t = rng.uniform(0.16, 0.3)  # half arm thickness / half length
    pts = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t),
           (-1, -t), (-t, -t)]
    return polygon_mask(g, pts, cx, cy, rng.uniform(0, np.pi / 2), size / 2)


def shape_pentagon(rng, g, cx, cy, size):
    return polygon_mask(g, regular_polygon(5), cx, cy, rng.uniform(0, 2 * np.pi), size / 2)


def shape_star(rng, g, cx, cy, size):
    return polygon_mask(g, star_polygon(5, rng.uniform(0.38, 0.5)), cx, cy, rng.uniform(0, 2 * np.pi),
                        size / 2)


def shape_diamond(rng, g, cx, cy, size):
    r = rng.uniform(0.45, 0.7)  # width / height
    pts = [(0, -1), (r, 0), (0, 1), (-r, 0)]
    return polygon_mask(g, pts, cx, cy, rng.uniform(-0.35, 0.35), size / 2)


def shape_rounded_rect(rng, g, cx, cy, size):
    hw = size / 2
    hh = hw * rng.uniform(0.45, 0.9)
    r = min(hw, hh) * rng.uniform(0.25, 0.6)
    u, v = g.local(cx, cy, rng.uniform(0, np.pi))
    qx = np.abs(u) - (hw - r)
    qy = np.abs(v) - (hh - r)
    d = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - r
    return d <= 0


def shape_hexagon(rng, g, cx, cy, size):
    pts = regular_polygon(6) * np.array([1.0, rng.uniform(0.8, 1.0)])
    return polygon_mask(g, pts, cx, cy, rng.uniform(0, np.pi), size / 2)


def shape_half_disc(rng, g, cx, cy, size):
    r = size / 2
    u, v = g.local(cx, cy, rng.uniform(0, 2 * np.pi))
    v = v + 0.21 * r  # (cx, cy) between the flat side and the centroid
    return (u * u + v * v <= r * r) & (v <= 0)


def shape_l(rng, g, cx, cy, size):
    t = rng.uniform(0.3, 0.48)
    sy = rng.uniform(0.7, 1.0)
    pts = np.array([(0, 0), (1, 0), (1, t), (t, t), (t, 1), (0, 1)], dtype=np.float64)
    pts = (pts - 0.5) * 2 * np.array([1.0, sy])
    if rng.random() < 0.5:
        pts[:, 0] = -pts[:, 0]  # mirrored L
    return polygon_mask(g, pts, cx, cy, rng.uniform(0, 2 * np.pi), size / 2)


def shape_crescent(rng, g, cx, cy, size):
    r = size / 2
    theta = rng.uniform(0, 2 * np.pi)
    u, v = g.local(cx, cy, theta)
    r2 = r * rng.uniform(0.75, 0.95)
    d = r * rng.uniform(0.35, 0.6)
    return (u * u + v * v <= r * r) & ((u - d) ** 2 + v * v > r2 * r2)


def shape_arrow(rng, g, cx, cy, size):
    t = rng.uniform(0.13, 0.25)  # half shaft thickness
    hh = rng.uniform(0.45, 0.65)  # half head width
    base = rng.uniform(0.05, 0.3)  # where the head starts
    pts = [(-1, -t), (base, -t), (base, -hh), (1, 0), (base, hh), (base, t), (-1, t)]
    return polygon_mask(g, pts, cx, cy, rng.uniform(0, 2 * np.pi), size / 2)


def shape_heart(rng, g, cx, cy, size):
    s = size / 2.4
    u, v = g.local(cx, cy, rng.uniform(-0.6, 0.6))
    u, v = u / s, -v / s + 0.12  # y up, centre the extent
    return (u * u + v * v - 1) ** 3 - u * u * v ** 3 <= 0


# ---------------------------------------------------------------- colours and backgrounds

def random_colour(rng):
    return rng.uniform(0, 255, 3)


def smooth_noise(rng, h, w, cells, amplitude):
    """Low-frequency colour noise: a cells x cells grid upsampled bicubically."""
    small = rng.normal(0, 1, (cells, cells, 3))
    out = np.empty((h, w, 3), np.float32)
    for c in range(3):
        im = Image.fromarray(small[:, :, c].astype(np.float32), mode="F")
        out[:, :, c] = np.asarray(im.resize((w, h), Image.BICUBIC))
    return out * amplitude


def bg_flat(rng, g):
    return np.broadcast_to(random_colour(rng), (g.h, g.w, 3)).astype(np.float32)


def bg_noisy(rng, g):
    return bg_flat(rng, g) + rng.normal(0, rng.uniform(10, 35), (g.h, g.w, 3))


def bg_gradient(rng, g):
    a, b = random_colour(rng), random_colour(rng)
    u, _ = g.local(g.w / 2, g.h / 2, rng.uniform(0, 2 * np.pi))
    t = np.clip(u / np.hypot(g.w, g.h) + 0.5, 0, 1)[:, :, None]
    return a + (b - a) * t


def bg_stripes(rng, g):
    a, b = random_colour(rng), random_colour(rng)
    u, _ = g.local(0, 0, rng.uniform(0, np.pi))
    period = rng.uniform(5, 22)
    if rng.random() < 0.5:  # hard stripes
        t = ((u / period + rng.random()) % 1.0 < rng.uniform(0.3, 0.7)).astype(np.float32)
    else:  # sinusoidal
        t = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
    return a + (b - a) * t[:, :, None]


def bg_checker(rng, g):
    a, b = random_colour(rng), random_colour(rng)
    u, v = g.local(rng.uniform(0, 20), rng.uniform(0, 20), rng.uniform(0, np.pi / 2))
    cell = rng.uniform(5, 20)
    t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    return a + (b - a) * t[:, :, None]


def bg_cloud(rng, g):
    base = random_colour(rng)
    return base + smooth_noise(rng, g.h, g.w, int(rng.integers(3, 9)), rng.uniform(25, 60)) + \
        rng.normal(0, rng.uniform(4, 15), (g.h, g.w, 3))


def fill_flat(rng, g, mask, under):
    """A random colour that stands out from what lies under the mask, plus some pixel noise."""
    colour = contrasting_colour(rng, under)
    return colour + rng.normal(0, rng.uniform(0, 12), (g.h, g.w, 3))


def fill_gradient(rng, g, mask, under):
    """A linear or radial gradient between two random colours across the object."""
    a, b = contrasting_colour(rng, under), contrasting_colour(rng, under)
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    extent = max(xs.max() - xs.min(), ys.max() - ys.min(), 1) + 1
    if rng.random() < 0.6:
        u, _ = g.local(cx, cy, rng.uniform(0, 2 * np.pi))
        t = np.clip(u / extent + 0.5, 0, 1)
    else:
        t = np.clip(np.hypot(g.x - cx, g.y - cy) / (0.6 * extent), 0, 1)
    return a + (b - a) * t[:, :, None] + rng.normal(0, 4, (g.h, g.w, 3))


def contrasting_colour(rng, under):
    """Random colour, redrawn (a few times) while it is close to most pixels under the object."""
    best, best_d = None, -1.0
    for _ in range(8):
        c = random_colour(rng)
        d = float(np.percentile(np.linalg.norm(under - c, axis=1), 25)) if len(under) else 255.0
        if d > 70:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


# ---------------------------------------------------------------- variants

class Variant:
    def __init__(self, name, classes, size, objects, extent, backgrounds, fill, recommended, about,
                 pile=0.0):
        self.name = name
        self.classes = classes  # [(name, shape function)], category ids 1..
        self.size = size  # (h, w) or a function rng -> (h, w)
        self.objects = objects  # (min, max) objects drawn
        self.extent = extent  # function (rng, h, w) -> object extent in pixels
        self.backgrounds = backgrounds
        self.fill = fill
        self.recommended = recommended  # --min-size/--max-size to train at
        self.about = about
        self.pile = pile  # probability that an object is centred near the previous one (overlap)


def mixed_size(rng):
    return int(rng.integers(96, 257)), int(rng.integers(96, 257))


VARIANTS = [
    Variant("ellipses-textured",
            [("ellipse", shape_ellipse), ("ring", shape_ring), ("cross", shape_cross)],
            (160, 160), (1, 5), lambda rng, h, w: rng.uniform(22, 70),
            [bg_stripes, bg_checker, bg_cloud, bg_noisy], fill_flat, 160,
            "160x160, ellipses / rings / crosses on stripes, checkerboards or noise", pile=0.25),
    Variant("polygons-96",
            [("pentagon", shape_pentagon), ("star", shape_star), ("diamond", shape_diamond)],
            (96, 96), (1, 4), lambda rng, h, w: rng.uniform(8, 30),
            [bg_flat, bg_noisy], fill_flat, 96,
            "96x96, small pentagons / stars / diamonds (8-30 px) on flat or noisy backgrounds"),
    Variant("blobs-256",
            [("rounded-rectangle", shape_rounded_rect), ("hexagon", shape_hexagon),
             ("half-disc", shape_half_disc), ("l-shape", shape_l)],
            (256, 256), (2, 6), lambda rng, h, w: rng.uniform(20, 120),
            [bg_gradient, bg_cloud], fill_gradient, 256,
            "256x256, rounded rectangles / hexagons / half discs / L shapes, 20-120 px, "
            "gradient-filled, heavy overlap", pile=0.6),
    Variant("mixed-sizes",
            [("crescent", shape_crescent), ("arrow", shape_arrow), ("heart", shape_heart)],
            mixed_size, (1, 5), lambda rng, h, w: rng.uniform(0.12, 0.5) * min(h, w),
            [bg_flat, bg_noisy, bg_gradient, bg_stripes, bg_cloud], fill_flat, 128,
            "96-256 x 96-256 (per image, not square), crescents / arrows / hearts"),
]
BY_NAME = {v.name: v for v in VARIANTS}


def render(variant, seed, index):
    """Image k of (variant, seed): (HxWx3 uint8, [(category_id, visible mask)], hidden count)."""
    rng = np.random.default_rng([zlib.crc32(variant.name.encode()), seed, index])
    h, w = variant.size(rng) if callable(variant.size) else variant.size
    g = Grid(h, w)
    for _attempt in range(20):  # until at least one object is annotated
        image = variant.backgrounds[rng.integers(len(variant.backgrounds))](rng, g)
        owner = np.full((h, w), -1, np.int32)
        drawn, centres = [], []
        n = int(rng.integers(variant.objects[0], variant.objects[1] + 1))
        for _ in range(n):
            cat = int(rng.integers(len(variant.classes)))
            for _ in range(10):  # a shape too small (or mostly outside) is drawn again
                size = variant.extent(rng, h, w)
                lo = 0.2 * size  # the centre is inside: at most ~30% of the shape is cut off
                cx, cy = rng.uniform(lo, w - lo), rng.uniform(lo, h - lo)
                if centres and rng.random() < variant.pile:
                    px, py = centres[-1]
                    cx = min(max(px + rng.normal(0, 0.35 * size), lo), w - lo)
                    cy = min(max(py + rng.normal(0, 0.35 * size), lo), h - lo)
                mask = variant.classes[cat][1](rng, g, cx, cy, size)
                if mask.sum() >= 2 * MIN_VISIBLE:
                    break
            else:
                continue
            fill = variant.fill(rng, g, mask, image[mask])
            image = np.where(mask[:, :, None], fill, image)
            owner[mask] = len(drawn)
            drawn.append(cat + 1)
            centres.append((cx, cy))
        objects, hidden = [], 0
        for k, cat in enumerate(drawn):
            visible = owner == k
            if visible.sum() >= MIN_VISIBLE:
                objects.append((cat, visible))
            else:
                hidden += 1
        if objects:
            break
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects, hidden


def write_dataset(variant, out_dir, num_images, seed):
    images_dir = os.path.join(out_dir, "images")
    os.makedirs(images_dir, exist_ok=True)
    images, annotations = [], []
    per_cat = {i + 1: 0 for i in range(len(variant.classes))}
    hidden_total = 0
    for k in range(num_images):
        rgb, objects, hidden = render(variant, seed, k)
        name = "%06d.png" % k
        Image.fromarray(rgb, "RGB").save(os.path.join(images_dir, name))
        image_id = k + 1
        images.append({"id": image_id, "file_name": name, "width": int(rgb.shape[1]),
                       "height": int(rgb.shape[0])})
        for cat, mask in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                                "bbox": mask_bbox(mask), "area": int(mask.sum()), "iscrowd": 0,
                                "segmentation": rle_encode(mask)})
            per_cat[cat] += 1
        hidden_total += hidden
    doc = {"info": {"description": "maskrcnn-cpp bench/synthetic_variants.py: " + variant.about,
                    "variant": variant.name, "seed": seed},
           "images": images,
           "categories": [{"id": i + 1, "name": n, "supercategory": "shape"}
                          for i, (n, _) in enumerate(variant.classes)],
           "annotations": annotations}
    path = os.path.join(out_dir, "annotations.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, path)
    counts = ", ".join("%s %d" % (variant.classes[c - 1][0], per_cat[c]) for c in per_cat)
    print("synthetic_variants: %s: %d images, %d objects (%s; %d hidden by others) -> %s"
          % (variant.name, num_images, len(annotations), counts, hidden_total, path))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--list", action="store_true", help="print the variant names, one a line")
    p.add_argument("--recommended-size", action="store_true",
                   help="print the --min-size/--max-size to train the variant at")
    p.add_argument("--variant", choices=[v.name for v in VARIANTS])
    p.add_argument("--output", metavar="DIR", help="gets images/ and annotations.json")
    p.add_argument("--images", type=int, default=100, metavar="N")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    a = p.parse_args()
    if a.list:
        for v in VARIANTS:
            print(v.name)
        return 0
    if not a.variant:
        p.error("--variant is required (see --list)")
    v = BY_NAME[a.variant]
    if a.recommended_size:
        print(v.recommended)
        return 0
    if not a.output:
        p.error("--output is required")
    if a.images < 1 or a.seed < 0:
        p.error("--images must be >= 1 and --seed >= 0")
    write_dataset(v, a.output, a.images, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
