#!/usr/bin/env bash
# The main job, offline from a fresh machine: make a synthetic shapes data set,
# train a small Mask R-CNN (ResNet-18-FPN) on it for a few minutes, segment
# held-out images into annotated PNGs and print their COCO AP.
#   MINUTES     training time cap (default 12)
#   ITERATIONS  training iterations (default 600; the lr schedule spans them)
#   OUT         output folder (default demo_output)
# The torchvision-checkpoint job on real photos is scripts/segment_photos.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
OUT=${OUT:-demo_output}
MINUTES=${MINUTES:-12}
ITERATIONS=${ITERATIONS:-600}
BIN=./build/tools/maskrcnn
rm -rf "$OUT"
"$BIN" make-shapes --output "$OUT/shapes/train" --images 400 --size 128 --seed 1
"$BIN" make-shapes --output "$OUT/shapes/val" --images 50 --size 128 --seed 2
"$BIN" train --train-annotations "$OUT/shapes/train/annotations.json" \
  --train-images "$OUT/shapes/train/images" --backbone resnet18 \
  --min-size "${MIN_SIZE:-128}" --max-size "${MIN_SIZE:-128}" --rois-per-image 64 --proposals-per-image 300 \
  --lr "${LR:-0.02}" --clip-grad-norm 5 --warmup-iters 50 --iterations "$ITERATIONS" \
  --max-minutes "$MINUTES" --output-dir "$OUT/run"
"$BIN" predict --weights "$OUT/run/model_final.pth" --score-thresh 0.5 \
  --output-dir "$OUT/predictions" --output-json "$OUT/predictions/results.json" \
  "$OUT"/shapes/val/images/00000[0-7].png 2>/dev/null
"$BIN" eval --annotations "$OUT/shapes/val/annotations.json" --weights "$OUT/run/model_final.pth" \
  --images "$OUT/shapes/val/images" --output-json "$OUT/stats.json"
echo "demo: weights in $OUT/run/, annotated held-out images in $OUT/predictions/, AP in $OUT/stats.json"
