#!/usr/bin/env bash
# One training iteration (forward with losses, backward, SGD step), torchvision
# 0.14 vs maskrcnn-cpp, side by side: same seeded COCO-v1-style checkpoint,
# same batch (2 shared photos with seeded boxes/masks), same thread count.
#   THREADS (default 2), REPS (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
REPS=${REPS:-3}
BIN=${BIN:-build/bench/bench_train_step}
IMAGES_DIR=${IMAGES_DIR:-../shared/images}
WEIGHTS=${WEIGHTS:-build/bench_v1_coco.pth}
BATCH=${BATCH:-build/bench_train_batch.pt}
export OMP_NUM_THREADS=$THREADS
if [ ! -f "$WEIGHTS" ]; then /usr/bin/python3 bench/torchvision_infer.py make-weights "$WEIGHTS"; fi
if [ ! -f "$BATCH" ]; then
  /usr/bin/python3 bench/torchvision_train_step.py make-batch "$BATCH" \
    "$IMAGES_DIR"/street_cars.jpg "$IMAGES_DIR"/dog_bicycle.jpg
fi
rss_dir=$(mktemp -d)
trap 'rm -rf "$rss_dir"' EXIT
# Peak RSS of each run (KB) through GNU time, when installed.
measured() { local name=$1; shift
  if [ -x /usr/bin/time ]; then /usr/bin/time -o "$rss_dir/$name" -f %M "$@"; else "$@"; fi; }
peak_mb() { if [ -f "$rss_dir/$1" ]; then echo "$(( $(tail -1 "$rss_dir/$1") / 1024 )) MB"; else echo "?"; fi; }
tv=$(THREADS=$THREADS measured tv /usr/bin/python3 bench/torchvision_train_step.py time "$WEIGHTS" "$BATCH" "$REPS")
tvm=$(MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 THREADS=$THREADS \
  measured tvm /usr/bin/python3 bench/torchvision_train_step.py time "$WEIGHTS" "$BATCH" "$REPS")
ours=$(measured ours "$BIN" "$WEIGHTS" "$BATCH" "$REPS" "$THREADS")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), threads=$THREADS, reps=$REPS, batch 2"
echo "training iteration, median seconds: torchvision $tv, torchvision+malloc settings $tvm, maskrcnn $ours"
echo "peak RSS: torchvision $(peak_mb tv), torchvision+malloc settings $(peak_mb tvm), maskrcnn $(peak_mb ours)"
python3 -c "print('ratio vs torchvision: %.2fx; vs torchvision with the same malloc settings: %.2fx' % ($tv / $ours, $tvm / $ours))"
