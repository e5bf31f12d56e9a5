#!/usr/bin/env bash
# Inference time per image, torchvision 0.14 (Debian python3-torchvision) vs
# `maskrcnn predict`, side by side in one run: same checkpoint, same photos,
# same thread count. Prints per-image medians and the ratio.
#   THREADS (default 2), ROUNDS (default 3; REPS is an older name for it),
#   WEIGHTS (default: a seeded checkpoint built like torchvision's COCO v1
#   model; real COCO weights give the same compute)
#
# The runs are interleaved: each round times torchvision with maskrcnn's
# malloc settings, then maskrcnn (--conv direct, the default, --precision
# bf16), each over the photos once after a warm-up, and every figure is the
# median over the rounds. This machine's speed drifts by 10-20% over minutes,
# and timing one stack after the other put that drift into the ratio.
# torchvision as installed (~10 s a photo) runs once, before the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-${REPS:-3}}
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
tv=$(THREADS=$THREADS timed tv /usr/bin/python3 bench/torchvision_infer.py time "$WEIGHTS" 1 "${images[@]}")

# Ours: the first photo once for warm-up, then each photo once.
list=("${images[0]}" "${images[@]}")
ours_run() { local name=$1 conv=$2 precision=$3
  timed "$name" "$BIN" predict --threads "$THREADS" --conv "$conv" --precision "$precision" \
    --weights "$WEIGHTS" "${list[@]}" 2>&1 >/dev/null |
    sed -n 's/^\[[0-9]*\/[0-9]*\] \(.*\): \([0-9]*\) detections (\([0-9.]*\) s)$/\1\t\3\t\2/p' | tail -n +2 |
    sed 's|^.*/||'; }
tvm="" ours_direct="" ours="" ours_bf16=""
for round in $(seq "$ROUNDS"); do
  # torchvision with the malloc settings `maskrcnn` applies to itself
  # (tune_allocator_for_inference): glibc otherwise unmaps every freed feature
  # map and re-faults it, which slows both stacks ~3x. The fair ratio uses this one.
  tvm+=$(MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 THREADS=$THREADS \
    timed "tvm.$round" /usr/bin/python3 bench/torchvision_infer.py time "$WEIGHTS" 1 "${images[@]}")$'\n'
  ours_direct+=$(ours_run "ours_directf32.$round" direct f32)$'\n'
  ours+=$(ours_run "ours_winogradf32.$round" winograd f32)$'\n'
  ours_bf16+=$(ours_run "ours_winogradbf16.$round" winograd bf16)$'\n'
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), threads=$THREADS, rounds=$ROUNDS (interleaved)"
echo "tv = torchvision as installed; tv_malloc = torchvision with maskrcnn's malloc settings (the fair baseline)"
echo "direct = maskrcnn --conv direct; maskrcnn = the default (--conv winograd); bf16 = --precision bf16"
echo "ratios are tv / maskrcnn; ratio_m = tv_malloc / maskrcnn; bf16_m = tv_malloc / bf16"
printf "%-22s %9s %10s %9s %9s %9s %8s %8s %8s %6s %6s\n" image tv tv_malloc direct maskrcnn bf16 ratio ratio_m bf16_m dets_tv dets_us
python3 - "$tv" "$tvm" "$ours_direct" "$ours" "$rss_dir" "$ours_bf16" <<'PY'
import glob, os, statistics, sys
def runs(text):  # image -> [(seconds, detections)], one per round
    out = {}
    for line in text.splitlines():
        if line.strip():
            name, t, n = line.split("\t"); out.setdefault(name, []).append((float(t), int(n)))
    return out
def med(rows): return statistics.median(x[0] for x in rows)
tv, tvm = runs(sys.argv[1]), runs(sys.argv[2])
direct, ours, bf16 = runs(sys.argv[3]), runs(sys.argv[4]), runs(sys.argv[6])
tot_tv = tot_tvm = tot_dir = tot_us = tot_bf = 0
for name, rows in tv.items():
    t, n = rows[0]
    u, d = med(ours[name]), ours[name][0][1]
    dr, bf, m = med(direct[name]), med(bf16[name]), med(tvm[name])
    tot_tv += t; tot_tvm += m; tot_dir += dr; tot_us += u; tot_bf += bf
    print("%-22s %8.3fs %9.3fs %8.3fs %8.3fs %8.3fs %7.2fx %7.2fx %7.2fx %6d %6d" %
          (name, t, m, dr, u, bf, t / u, m / u, m / bf, n, d))
k = len(tv)
print("%-22s %8.3fs %9.3fs %8.3fs %8.3fs %8.3fs %7.2fx %7.2fx %7.2fx" % ("mean per image", tot_tv / k, tot_tvm / k,
      tot_dir / k, tot_us / k, tot_bf / k, tot_tv / tot_us, tot_tvm / tot_us, tot_tvm / tot_bf))
def peak(key):  # the largest over the rounds, MB
    vals = []
    for path in glob.glob(os.path.join(sys.argv[5], key)) + glob.glob(os.path.join(sys.argv[5], key + ".*")):
        try:
            vals.append(int(open(path).read().split()[-1]) / 1024)
        except (OSError, ValueError, IndexError):
            pass
    return max(vals) if vals else float("nan")
print("%-22s %8.0fM %9.0fM %8.0fM %8.0fM %8.0fM" % ("peak RSS", peak("tv"), peak("tvm"), peak("ours_directf32"),
      peak("ours_winogradf32"), peak("ours_winogradbf16")))
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
