#!/usr/bin/env bash
# Inference time per image, torchvision 0.14 (Debian python3-torchvision) vs
# `maskrcnn predict`, side by side in one run: same checkpoint, same photos,
# same thread count. Prints per-image medians and the ratio.
#   THREADS (default 2), REPS (default 3), WEIGHTS (default: a seeded checkpoint
#   built like torchvision's COCO v1 model; real COCO weights give the same compute)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
REPS=${REPS:-3}
BIN=${BIN:-build/tools/maskrcnn}
IMAGES_DIR=${IMAGES_DIR:-../shared/images}
images=("$IMAGES_DIR"/street_cars.jpg "$IMAGES_DIR"/cyclists_crowd.jpg "$IMAGES_DIR"/stop_sign.jpg
        "$IMAGES_DIR"/mountain_bus.jpg "$IMAGES_DIR"/dog_bicycle.jpg)
WEIGHTS=${WEIGHTS:-build/bench_v1_coco.pth}
if [ ! -f "$WEIGHTS" ]; then /usr/bin/python3 bench/torchvision_infer.py make-weights "$WEIGHTS"; fi
export OMP_NUM_THREADS=$THREADS

tv=$(THREADS=$THREADS /usr/bin/python3 bench/torchvision_infer.py time "$WEIGHTS" "$REPS" "${images[@]}")

# Ours: the image list once for warm-up, then REPS times; per-image median.
list=("${images[0]}")
for _ in $(seq "$REPS"); do list+=("${images[@]}"); done
ours=$("$BIN" predict --threads "$THREADS" --weights "$WEIGHTS" "${list[@]}" 2>&1 >/dev/null |
  sed -n 's/^\[[0-9]*\/[0-9]*\] \(.*\): \([0-9]*\) detections (\([0-9.]*\) s)$/\1\t\3\t\2/p' | tail -n +2)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), threads=$THREADS, reps=$REPS"
printf "%-22s %10s %10s %8s %6s %6s\n" image torchvision maskrcnn ratio dets_tv dets_ours
python3 - "$tv" "$ours" <<'PY'
import os, statistics, sys
tv = {}
for line in sys.argv[1].splitlines():
    name, t, n = line.split("\t"); tv[name] = (float(t), int(n))
ours = {}
for line in sys.argv[2].splitlines():
    path, t, n = line.split("\t"); ours.setdefault(os.path.basename(path), []).append((float(t), int(n)))
tot_tv = tot_us = 0
for name, (t, n) in tv.items():
    u = statistics.median(x[0] for x in ours[name]); d = ours[name][0][1]
    tot_tv += t; tot_us += u
    print("%-22s %9.3fs %9.3fs %7.2fx %6d %6d" % (name, t, u, t / u, n, d))
print("%-22s %9.3fs %9.3fs %7.2fx" % ("mean per image", tot_tv / len(tv), tot_us / len(tv), tot_tv / tot_us))
PY
