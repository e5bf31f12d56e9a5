#!/usr/bin/env bash
# Segment the shared photos with torchvision's COCO checkpoint
# (from torchvision's own cache) and write annotated PNGs + a COCO results file.
#   WEIGHTS  checkpoint (default: $TORCH_HOME/hub/checkpoints/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth)
#   IMAGES   folder of photos (default: ../shared/images)
#   OUT      output folder (default: demo_output)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
IMAGES=${IMAGES:-../shared/images}
OUT=${OUT:-demo_output}
args=()
[ -n "${WEIGHTS:-}" ] && args+=(--weights "$WEIGHTS")
shopt -s nullglob
files=("$IMAGES"/*.jpg "$IMAGES"/*.jpeg "$IMAGES"/*.png)
if [ ${#files[@]} -eq 0 ]; then echo "demo: no images in $IMAGES" >&2; exit 1; fi
./build/tools/maskrcnn predict "${args[@]}" --output-dir "$OUT" --output-json "$OUT/results.json" "${files[@]}"
echo "demo: annotated images and results.json in $OUT/"
