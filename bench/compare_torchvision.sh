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

rss_dir=$(mktemp -d)
trap 'rm -rf "$rss_dir"' EXIT
# Peak RSS of each run (KB) through GNU time, when installed.
timed() { local name=$1; shift
  if [ -x /usr/bin/time ]; then /usr/bin/time -o "$rss_dir/$name" -f %M "$@"; else "$@"; fi; }
tv=$(THREADS=$THREADS timed tv /usr/bin/python3 bench/torchvision_infer.py time "$WEIGHTS" "$REPS" "${images[@]}")
# torchvision again with the malloc settings `maskrcnn` applies to itself
# (tune_allocator_for_inference): glibc otherwise unmaps every freed feature map
# and re-faults it, which slows both stacks ~3x. The fair ratio uses this one.
tvm=$(MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 THREADS=$THREADS \
  timed tvm /usr/bin/python3 bench/torchvision_infer.py time "$WEIGHTS" "$REPS" "${images[@]}")

# Ours: the image list once for warm-up, then REPS times; per-image median.
# Once with LibTorch's direct convolutions, once with the default (Winograd).
list=("${images[0]}")
for _ in $(seq "$REPS"); do list+=("${images[@]}"); done
ours_run() { local conv=$1 precision=${2:-f32}
  timed "ours_$conv$precision" "$BIN" predict --threads "$THREADS" --conv "$conv" --precision "$precision" \
    --weights "$WEIGHTS" "${list[@]}" 2>&1 >/dev/null |
    sed -n 's/^\[[0-9]*\/[0-9]*\] \(.*\): \([0-9]*\) detections (\([0-9.]*\) s)$/\1\t\3\t\2/p' | tail -n +2; }
ours_direct=$(ours_run direct)
ours=$(ours_run winograd)
ours_bf16=$(ours_run winograd bf16)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), threads=$THREADS, reps=$REPS"
echo "tv = torchvision as installed; tv_malloc = torchvision with maskrcnn's malloc settings (the fair baseline)"
echo "direct = maskrcnn --conv direct; maskrcnn = the default (--conv winograd); bf16 = --precision bf16"
echo "ratios are tv / maskrcnn; ratio_m = tv_malloc / maskrcnn; bf16_m = tv_malloc / bf16"
printf "%-22s %9s %10s %9s %9s %9s %8s %8s %8s %6s %6s\n" image tv tv_malloc direct maskrcnn bf16 ratio ratio_m bf16_m dets_tv dets_us
python3 - "$tv" "$tvm" "$ours_direct" "$ours" "$rss_dir" "$ours_bf16" <<'PY'
import os, statistics, sys
def table(text):
    out = {}
    for line in text.splitlines():
        name, t, n = line.split("\t"); out[name] = (float(t), int(n))
    return out
tv, tvm = table(sys.argv[1]), table(sys.argv[2])
def ours_table(text):
    out = {}
    for line in text.splitlines():
        path, t, n = line.split("\t"); out.setdefault(os.path.basename(path), []).append((float(t), int(n)))
    return out
direct, ours, bf16 = ours_table(sys.argv[3]), ours_table(sys.argv[4]), ours_table(sys.argv[6])
tot_tv = tot_tvm = tot_dir = tot_us = tot_bf = 0
for name, (t, n) in tv.items():
    u = statistics.median(x[0] for x in ours[name]); d = ours[name][0][1]
    dr = statistics.median(x[0] for x in direct[name])
    bf = statistics.median(x[0] for x in bf16[name])
    m = tvm[name][0]
    tot_tv += t; tot_tvm += m; tot_dir += dr; tot_us += u; tot_bf += bf
    print("%-22s %8.3fs %9.3fs %8.3fs %8.3fs %8.3fs %7.2fx %7.2fx %7.2fx %6d %6d" %
          (name, t, m, dr, u, bf, t / u, m / u, m / bf, n, d))
k = len(tv)
print("%-22s %8.3fs %9.3fs %8.3fs %8.3fs %8.3fs %7.2fx %7.2fx %7.2fx" % ("mean per image", tot_tv / k, tot_tvm / k,
      tot_dir / k, tot_us / k, tot_bf / k, tot_tv / tot_us, tot_tvm / tot_us, tot_tvm / tot_bf))
rss = {}
for key in ("tv", "tvm", "ours_directf32", "ours_winogradf32", "ours_winogradbf16"):
    try:
        rss[key] = int(open(os.path.join(sys.argv[5], key)).read().split()[-1]) / 1024
    except (OSError, ValueError, IndexError):
        rss[key] = float("nan")
print("%-22s %8.0fM %9.0fM %8.0fM %8.0fM %8.0fM" % ("peak RSS", rss["tv"], rss["tvm"], rss["ours_directf32"],
      rss["ours_winogradf32"], rss["ours_winogradbf16"]))
PY

# Peak memory on one large photo (1800x1200, 100 detections): torchvision
# pastes every mask at full image size (100 x 1800 x 1200 floats = 864 MB);
# maskrcnn keeps each mask inside its box.
if [ "${LARGE:-1}" != 0 ]; then
  large=$(mktemp --suffix=.png)
  /usr/bin/python3 bench/torchvision_infer.py make-large "${images[0]}" "$large" 1200 1800
  big_tv=$(THREADS=$THREADS timed big_tv /usr/bin/python3 bench/torchvision_infer.py time "$WEIGHTS" 1 "$large")
  big_tvm=$(MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 THREADS=$THREADS \
    timed big_tvm /usr/bin/python3 bench/torchvision_infer.py time "$WEIGHTS" 1 "$large")
  big_us=$(timed big_us "$BIN" predict --threads "$THREADS" --weights "$WEIGHTS" "$large" "$large" 2>&1 >/dev/null |
    sed -n 's/^\[2\/2\] .*: \([0-9]*\) detections (\([0-9.]*\) s)$/\2\t\1/p')
  rm -f "$large"
  python3 - "$rss_dir" "$big_tv" "$big_tvm" "$big_us" <<'PY'
import os, sys
def rss(key):
    try:
        return int(open(os.path.join(sys.argv[1], key)).read().split()[-1]) / 1024
    except (OSError, ValueError, IndexError):
        return float("nan")
tv, tvm, us = (x.split("\t") for x in sys.argv[2:5])
print("1800x1200 photo (%s detections; second run of ours): time tv %ss, tv_malloc %ss, maskrcnn %ss; "
      "peak RSS tv %.0fM, tv_malloc %.0fM, maskrcnn %.0fM" %
      (us[1], tv[1], tvm[1], us[0], rss("big_tv"), rss("big_tvm"), rss("big_us")))
PY
fi
