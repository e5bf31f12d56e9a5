#!/usr/bin/env bash
# `maskrcnn serve` under load, on loopback, side by side with `maskrcnn bench`
# and `maskrcnn predict` on the same weights, photos and thread count.
#   THREADS      model threads (default 2)
#   REQUESTS     requests per concurrency level and round (default 24)
#   ROUNDS       rounds over the levels (default 2); `maskrcnn bench` and
#                `maskrcnn predict` run before and after each level
#   LEVELS       concurrency levels (default "1 4 16")
#   MAX_SECONDS  cap on each level's time (default 300)
#   SOAK         requests of the RSS soak (default 500; 0 skips it), at
#                concurrency 4 on a server with --min-size 320 --max-size 533
#                (a quarter of the pixels: 500 requests in minutes)
#   WEIGHTS      default: the seeded COCO-shaped v1 checkpoint of compare_torchvision.sh
#   SERVE_FLAGS  more flags for `maskrcnn serve` (e.g. "--max-batch 1")
# Prints a table: images/s, latency p50/p95/p99, status counts, peak RSS; then
# the targets' ratios. Every request goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
REQUESTS=${REQUESTS:-24}
ROUNDS=${ROUNDS:-2}
LEVELS=${LEVELS:-"1 4 16"}
MAX_SECONDS=${MAX_SECONDS:-300}
SOAK=${SOAK:-500}
BIN=${BIN:-build/tools/maskrcnn}
IMAGES_DIR=${IMAGES_DIR:-../shared/images}
images=("$IMAGES_DIR"/street_cars.jpg "$IMAGES_DIR"/cyclists_crowd.jpg "$IMAGES_DIR"/stop_sign.jpg
        "$IMAGES_DIR"/mountain_bus.jpg "$IMAGES_DIR"/dog_bicycle.jpg)
WEIGHTS=${WEIGHTS:-build/bench_v1_coco.pth}
if [ ! -f "$WEIGHTS" ]; then /usr/bin/python3 bench/torchvision_infer.py make-weights "$WEIGHTS"; fi
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# The baselines, run between the load levels (the machine drifts 10-20% over
# minutes): bench's per-image time, and predict's (after a warm-up image).
baselines() {
  "$BIN" bench --weights "$WEIGHTS" --threads "$THREADS" --reps 1 --warmup 1 --output-json "$work/b.json" \
    "${images[@]}" >/dev/null 2>&1
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ms_per_image"])' "$work/b.json" >>"$work/bench_ms"
  "$BIN" predict --threads "$THREADS" --weights "$WEIGHTS" "${images[0]}" "${images[@]}" 2>&1 >/dev/null |
    sed -n 's/^\[[0-9]*\/[0-9]*\] .*: [0-9]* detections (\([0-9.]*\) s)$/\1/p' | tail -n +2 |
    python3 -c 'import statistics, sys; print(1000 * statistics.mean(float(x) for x in sys.stdin))' >>"$work/predict_ms"
}

# start_server LOG [flags...]: sets server_pid and url once /readyz answers 200.
start_server() { local log=$1; shift
  "$BIN" serve --weights "$WEIGHTS" --threads "$THREADS" --port 0 "$@" >"$work/out" 2>"$log" &
  server_pid=$!
  for _ in $(seq 600); do
    url=$(sed -n 's/^serving on //p' "$work/out")
    if [ -n "$url" ] && /usr/bin/python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/readyz", timeout=5)' "$url" 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "serve_load: the server did not become ready; its log:" >&2; cat "$log" >&2; exit 1
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || { echo "serve exited $?" >&2; exit 1; }; server_pid=""; }

start_server "$work/serve.log" ${SERVE_FLAGS:-}
# Warm-up: each photo once (first-touch allocations, oneDNN primitives).
/usr/bin/python3 bench/serve_load.py "$url" "$server_pid" --concurrency 1 --requests "${#images[@]}" \
  --max-seconds 300 "${images[@]}" >/dev/null
baselines
for round in $(seq "$ROUNDS"); do
  for c in $LEVELS; do
    /usr/bin/python3 bench/serve_load.py "$url" "$server_pid" --concurrency "$c" --requests "$REQUESTS" \
      --max-seconds "$MAX_SECONDS" "${images[@]}" >>"$work/levels.jsonl"
    baselines
  done
done
stop_server
if [ "$SOAK" -gt 0 ]; then
  start_server "$work/soak.log" --min-size 320 --max-size 533
  /usr/bin/python3 bench/serve_load.py "$url" "$server_pid" --concurrency 4 --requests "$SOAK" \
    --max-seconds 3600 --rss-after 50 "${images[@]}" >"$work/soak.json"
  stop_server
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), threads=$THREADS"
python3 - "$work" <<'PY'
import json, os, statistics, sys
work = sys.argv[1]
bench_ms = [float(x) for x in open(os.path.join(work, "bench_ms"))]
predict_ms = [float(x) for x in open(os.path.join(work, "predict_ms"))]
print("maskrcnn bench: median %.1f ms per image over %d runs; predict: median %.1f ms per image (mean over the "
      "photos) over %d runs" % (statistics.median(bench_ms), len(bench_ms), statistics.median(predict_ms),
                                len(predict_ms)))
print("%-12s %8s %9s %9s %9s %9s %9s %6s %6s %6s %5s %9s %9s %9s" % ("concurrency", "requests", "images/s",
      "mean ms", "p50 ms", "p95 ms", "p99 ms", "200", "503", "other", "lost", "peak RSS", "/ bench", "/ predict"))
runs = [json.loads(l) for l in open(os.path.join(work, "levels.jsonl"))]
levels = []
for k, r in enumerate(runs):  # baseline k ran before run k, baseline k+1 after it
    r["bench_ms"] = (bench_ms[k] + bench_ms[k + 1]) / 2
    r["predict_ms"] = (predict_ms[k] + predict_ms[k + 1]) / 2
for c in sorted({r["concurrency"] for r in runs}):
    rs = [r for r in runs if r["concurrency"] == c]
    m = lambda key: statistics.median(r[key] for r in rs)
    row = {"concurrency": c, "requests": sum(r["requests"] for r in rs), "images_per_s": m("images_per_s"),
           "mean_ms": m("mean_ms"), "p50_ms": m("p50_ms"), "p95_ms": m("p95_ms"), "p99_ms": m("p99_ms"),
           "status_200": sum(r["status_200"] for r in rs), "status_503": sum(r["status_503"] for r in rs),
           "status_other": sum(r["status_other"] for r in rs), "lost": sum(r["lost"] for r in rs),
           "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
           "vs_bench": statistics.median(r["images_per_s"] * r["bench_ms"] / 1000 for r in rs),
           "vs_predict": statistics.median(r["mean_ms"] / r["predict_ms"] for r in rs),
           "server_ms": {k: statistics.median(r["server_ms"][k] for r in rs) for k in rs[0]["server_ms"]}}
    levels.append(row)
    print("%-12d %8d %9.3f %9.1f %9.1f %9.1f %9.1f %6d %6d %6d %5d %8.0fM %9.3f %9.3f" % (c, row["requests"],
          row["images_per_s"], row["mean_ms"], row["p50_ms"], row["p95_ms"], row["p99_ms"], row["status_200"],
          row["status_503"], row["status_other"], row["lost"], row["peak_rss_mb"], row["vs_bench"],
          row["vs_predict"]))
top = max(levels, key=lambda r: r["concurrency"])
one = min(levels, key=lambda r: r["concurrency"])
print("throughput at concurrency %d / bench's images/s (the bench runs around it): %.3f (target >= 0.95)"
      % (top["concurrency"], top["vs_bench"]))
# The photos differ in size: the mean over them compares like with like.
print("mean latency at concurrency %d / predict's mean per image (the runs around it): %.3f (target <= 1.05)"
      % (one["concurrency"], one["vs_predict"]))
bad = sum(r["status_other"] + r["lost"] for r in levels)
print("responses other than 200/503, and lost requests: %d (target 0)" % bad)
soak = os.path.join(work, "soak.json")
if os.path.exists(soak):
    s = json.load(open(soak))
    growth = s["rss_end_mb"] / s["rss_after_mb"] - 1
    print("soak (--min-size 320): %d requests at concurrency 4, %.2f images/s, 200: %d, other: %d, lost: %d; "
          "RSS after 50: %.0f MB, at the end: %.0f MB (%+.1f%%, target <= 5%%)" % (s["requests"], s["images_per_s"],
          s["status_200"], s["status_other"], s["lost"], s["rss_after_mb"], s["rss_end_mb"], 100 * growth))
PY
