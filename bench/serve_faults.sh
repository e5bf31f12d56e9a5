#!/usr/bin/env bash
# Page faults and CPU time of `maskrcnn serve` over 10 requests at
# concurrency 1, after 5 warm-up requests (from /proc/PID/stat: minor faults,
# user and system ticks). Env passes through, e.g. MALLOC_ARENA_MAX=1.
#   WEIGHTS, THREADS (default 2), as in serve_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/tools/maskrcnn}
WEIGHTS=${WEIGHTS:-build/bench_v1_coco.pth}
if [ ! -f "$WEIGHTS" ]; then /usr/bin/python3 bench/torchvision_infer.py make-weights "$WEIGHTS"; fi
IMAGES_DIR=${IMAGES_DIR:-../shared/images}
images=("$IMAGES_DIR"/street_cars.jpg "$IMAGES_DIR"/cyclists_crowd.jpg "$IMAGES_DIR"/stop_sign.jpg
        "$IMAGES_DIR"/mountain_bus.jpg "$IMAGES_DIR"/dog_bicycle.jpg)
out=$(mktemp)
"$BIN" serve --weights "$WEIGHTS" --threads "${THREADS:-2}" --port 0 >"$out" 2>/dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null; rm -f "$out"' EXIT
url=""
for _ in $(seq 600); do
  url=$(sed -n 's/^serving on //p' "$out")
  if [ -n "$url" ] && /usr/bin/python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/readyz", timeout=5)' "$url" 2>/dev/null; then break; fi
  sleep 0.5
done
/usr/bin/python3 bench/serve_load.py "$url" "$pid" --concurrency 1 --requests 5 --max-seconds 300 "${images[@]}" >/dev/null
read -r f0 u0 s0 < <(awk '{print $10, $14, $15}' "/proc/$pid/stat")
/usr/bin/python3 bench/serve_load.py "$url" "$pid" --concurrency 1 --requests 10 --max-seconds 300 "${images[@]}" |
  /usr/bin/python3 -c 'import json, sys; r = json.load(sys.stdin); print("mean %.1f ms a request; server: %s" % (r["mean_ms"], r["server_ms"]))'
read -r f1 u1 s1 < <(awk '{print $10, $14, $15}' "/proc/$pid/stat")
echo "over 10 requests: $((f1 - f0)) minor page faults, $((u1 - u0)) user and $((s1 - s0)) system ticks"
kill -TERM "$pid"; wait "$pid"
trap 'rm -f "$out"' EXIT
