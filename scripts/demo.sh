#!/usr/bin/env bash
# The main job, offline from a fresh machine: make a synthetic shapes data set,
# train a small Mask R-CNN (ResNet-18-FPN, GroupNorm, from scratch) on it
# within a time budget, segment held-out images into annotated PNGs and print
# their COCO AP.
#   MINUTES     training time budget (default 10); the lr schedule is laid over it
#   ITERATIONS  cap on the training iterations (default: none, the budget decides)
#   OUT         output folder (default demo_output)
# The torchvision-checkpoint job on real photos is scripts/segment_photos.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
OUT=${OUT:-demo_output}
MINUTES=${MINUTES:-10}
BIN=./build/tools/maskrcnn
rm -rf "$OUT"
"$BIN" make-shapes --output "$OUT/shapes/train" --images 400 --size 128 --seed 1
"$BIN" make-shapes --output "$OUT/shapes/val" --images 50 --size 128 --seed 2
# The from-scratch recipe (the defaults without --weights) with a narrower FPN and lighter heads
# and fewer RoIs, which suit 128-pixel images of a few objects: more
# iterations a minute.
"$BIN" train --train-annotations "$OUT/shapes/train/annotations.json" \
  --train-images "$OUT/shapes/train/images" --backbone resnet18 --min-size 128 --max-size 128 \
  --representation-size 256 --box-head-convs 0 --mask-head-layers 2 --mask-head-channels 128 \
  --rois-per-image 64 --proposals-per-image 300 --fpn-channels 128 ${LR:+--lr "$LR"} \
  ${ITERATIONS:+--iterations "$ITERATIONS"} --max-minutes "$MINUTES" --output-dir "$OUT/run"
"$BIN" predict --weights "$OUT/run/model_final.pth" --score-thresh 0.5 \
  --output-dir "$OUT/predictions" --output-json "$OUT/predictions/results.json" \
  "$OUT"/shapes/val/images/00000[0-7].png 2>/dev/null
"$BIN" eval --annotations "$OUT/shapes/val/annotations.json" --weights "$OUT/run/model_final.pth" \
  --images "$OUT/shapes/val/images" --output-json "$OUT/stats.json"
echo "demo: weights in $OUT/run/, annotated held-out images in $OUT/predictions/, AP in $OUT/stats.json"
