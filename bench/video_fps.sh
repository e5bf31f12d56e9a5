#!/usr/bin/env bash
# Frames per second of `maskrcnn predict` on a 640x360 video (a pan across a
# photo), at --min-size 360 and at the default size, f32 and bf16, with the
# annotated video and JSON Lines written; torchvision's model on the same
# frames (PNG, f32) in the same run for the ratio.
#   THREADS (2)  FRAMES per run (24)  TV_FRAMES torchvision's frames (8)
#   WEIGHTS      default: the seeded COCO-shaped v1 checkpoint of compare_torchvision.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
FRAMES=${FRAMES:-24}
TV_FRAMES=${TV_FRAMES:-8}
BIN=${BIN:-build/tools/maskrcnn}
PHOTO=${PHOTO:-../shared/images/street_cars.jpg}
WEIGHTS=${WEIGHTS:-build/bench_v1_coco.pth}
if [ ! -f "$WEIGHTS" ]; then /usr/bin/python3 bench/torchvision_infer.py make-weights "$WEIGHTS"; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/png"
build/bench/make_pan_video "$PHOTO" "$work/pan.mp4" 640 360 "$FRAMES" 30 "$work/png" "$TV_FRAMES"

# ours MIN MAX PRECISION: frames/s from the progress bar's last line (the time
# from the first frame's read to the last frame's outputs; the model loads before).
ours() {
  "$BIN" predict --threads "$THREADS" --weights "$WEIGHTS" --min-size "$1" --max-size "$2" --precision "$3" \
    --output-video "$work/out.mp4" --output-json "$work/out.jsonl" "$work/pan.mp4" 2>&1 >/dev/null |
    tr '\r' '\n' | sed -n 's/.* \([0-9.]*\) frames\/s.*/\1/p' | tail -1
}
theirs() {
  THREADS=$THREADS MIN_SIZE=$1 MAX_SIZE=$2 /usr/bin/python3 bench/torchvision_infer.py time "$WEIGHTS" 1 \
    "$work"/png/frame*.png | python3 -c 'import statistics, sys; print("%.3f" % (1 / statistics.median(float(l.split()[1]) for l in sys.stdin)))'
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), threads=$THREADS"
echo "video: 640x360, $FRAMES frames; weights: $WEIGHTS"
printf '| input size | maskrcnn f32 fps | maskrcnn bf16 fps | torchvision f32 fps | f32 speed-up |\n|---|---|---|---|---|\n'
for size in "360 640" "800 1333"; do
  set -- $size
  f32=$(ours "$1" "$2" f32)
  bf16=$(ours "$1" "$2" bf16)
  tv=$(theirs "$1" "$2")
  printf '| --min-size %s | %s | %s | %s | %.2fx |\n' "$1" "$f32" "$bf16" "$tv" "$(python3 -c "print($f32 / $tv)")"
done
