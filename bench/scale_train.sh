#!/usr/bin/env bash
# Data-parallel scaling of `maskrcnn train` on this machine: images/s with 1
# process and with 2 processes (c10d/Gloo over loopback), 1 thread each, on a
# shapes data set with a ResNet-18 backbone. ITERS (default 30), SIZE (128).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/tools/maskrcnn}
ITERS=${ITERS:-30}
SIZE=${SIZE:-128}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$BIN" make-shapes --output "$W/data" --images 200 --size "$SIZE" --seed 1 >/dev/null
args=(train --train-annotations "$W/data/annotations.json" --train-images "$W/data/images"
      --backbone resnet18 --min-size "$SIZE" --max-size "$SIZE" --rois-per-image 128
      --proposals-per-image 300 --lr 0.01 --clip-grad-norm 5 --batch-size 1 --threads 1
      --iterations "$ITERS" --log-every "$ITERS" --checkpoint-every 0)
rate() {  # images/s from the last metrics line's time (training only, no start-up)
  python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][-1]; print('%.2f' % ($ITERS * $1 / r['time']))" "$2"
}
"$BIN" "${args[@]}" --output-dir "$W/one" >/dev/null 2>&1
"$BIN" "${args[@]}" --nproc 2 --output-dir "$W/two" >/dev/null 2>&1
one=$(rate 1 "$W/one/metrics.jsonl"); two=$(rate 2 "$W/two/metrics.jsonl")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); ${SIZE}px shapes, ResNet-18-FPN, batch 1 per process, 1 thread each, $ITERS iterations"
echo "1 process: $one images/s; 2 processes: $two images/s; speed-up $(python3 -c "print('%.2fx' % ($two / $one))")"
