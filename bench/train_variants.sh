#!/usr/bin/env bash
# Is the default training recipe tuned to `maskrcnn make-shapes`? Train on
# synthetic sets from another generator (bench/synthetic_variants.py: other
# shapes, sizes, backgrounds) for a few time budgets, exactly as a new user
# would: `maskrcnn train --backbone resnet18 --min-size S --max-size S
# --max-minutes M` and no other training flags, then `maskrcnn eval` on a
# held-out set of the same variant. Prints a Markdown table of bbox/segm AP
# (percent) and writes it to OUT/table.md. Needs a build first
# (bash scripts/build.sh) and Debian's /usr/bin/python3 (numpy, PIL).
#   VARIANTS      variants to run (default: all, synthetic_variants.py --list)
#   MINUTES       training budgets in minutes, --max-minutes (default "5 15")
#   TRAIN_IMAGES  training images per variant (default 600, seed 1)
#   VAL_IMAGES    held-out images per variant (default 100, seed 2)
#   THREADS       --threads of train and eval (default 2)
#   TRAIN_FLAGS   extra `maskrcnn train` flags (default: none; the defaults are the recipe under test)
#   OUT           output folder (default bench_output/variants): OUT/VARIANT/{train,val} data
#                 (made once, kept while TRAIN_IMAGES/VAL_IMAGES stay the same),
#                 OUT/VARIANT/run-Mmin/ (train.log, metrics.jsonl, model_final.pth, eval.log, stats.json;
#                 checkpoint.pth is deleted)
#   BIN           the maskrcnn binary (default build/tools/maskrcnn)
# S is the variant's --recommended-size (its image side; 128 for mixed-sizes).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/tools/maskrcnn}
GEN=(/usr/bin/python3 bench/synthetic_variants.py)
VARIANTS=${VARIANTS:-$("${GEN[@]}" --list | tr '\n' ' ')}
MINUTES=${MINUTES:-5 15}
TRAIN_IMAGES=${TRAIN_IMAGES:-600}
VAL_IMAGES=${VAL_IMAGES:-100}
THREADS=${THREADS:-2}
OUT=${OUT:-bench_output/variants}
read -ra extra <<< "${TRAIN_FLAGS:-}"
if [ ! -x "$BIN" ]; then echo "train_variants: no $BIN; build first: bash scripts/build.sh" >&2; exit 1; fi

# One table row from a finished run: variant, S, minutes, run dir, train annotations.
row() {
  /usr/bin/python3 - "$@" <<'EOF'
import json, os, re, sys
variant, size, minutes, run, train_json = sys.argv[1:]
dims = {(i["width"], i["height"]) for i in json.load(open(train_json))["images"]}
ws, hs = {w for w, _ in dims}, {h for _, h in dims}
if len(dims) == 1 and ws == hs:
    shown = str(ws.pop())
else:
    lo, hi = min(ws | hs), max(ws | hs)
    shown = "%d-%d (varies)" % (lo, hi) if lo != hi else "%dx%d" % (min(ws), min(hs))
if shown != size:
    shown += ", trained at %s" % size
# Iterations done: metrics.jsonl's last line with one. A --max-minutes stop
# between two of its lines (every 20 iterations) leaves it behind the count
# train prints at the end ("trained iterations 0-N in ..."), so take the larger.
done = -1
metrics = os.path.join(run, "metrics.jsonl")
if os.path.exists(metrics):
    for line in open(metrics):
        if line.strip():
            done = json.loads(line).get("iteration", done)
log = os.path.join(run, "train.log")
if os.path.exists(log):
    for m in re.finditer(r"trained iterations \d+-(\d+) ", open(log, errors="replace").read()):
        done = max(done, int(m.group(1)))
iterations = str(done) if done >= 0 else "?"
stats = json.load(open(os.path.join(run, "stats.json")))
def ap(kind, key):  # COCO's 0-1 to percent; -1 (nothing to evaluate) as n/a
    v = stats.get(kind, {}).get(key, -1)
    return "n/a" if v < 0 else "%.1f" % (100 * v)
print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (variant, shown, minutes, iterations, ap("bbox", "AP"),
      ap("bbox", "AP50"), ap("segm", "AP"), ap("segm", "AP50")))
EOF
}

rows=()
for v in $VARIANTS; do
  size=$("${GEN[@]}" --recommended-size --variant "$v")
  data="$OUT/$v"
  stamp="train $TRAIN_IMAGES seed 1, val $VAL_IMAGES seed 2"
  if [ "$(cat "$data/made" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$data/train" "$data/val" "$data/made"
    "${GEN[@]}" --variant "$v" --output "$data/train" --images "$TRAIN_IMAGES" --seed 1
    "${GEN[@]}" --variant "$v" --output "$data/val" --images "$VAL_IMAGES" --seed 2
    echo "$stamp" > "$data/made"
  fi
  for m in $MINUTES; do
    run="$data/run-${m}min"
    rm -rf "$run"
    mkdir -p "$run"
    echo "train_variants: $v, ${size}px, $m min -> $run"
    if ! "$BIN" train --train-annotations "$data/train/annotations.json" --train-images "$data/train/images" \
         --backbone resnet18 --min-size "$size" --max-size "$size" --max-minutes "$m" \
         --threads "$THREADS" --output-dir "$run" ${extra[@]+"${extra[@]}"} > "$run/train.log" 2>&1; then
      tail -n 20 "$run/train.log" >&2; exit 1
    fi
    rm -f "$run/checkpoint.pth"  # the resume checkpoint (weights + momentum, ~2x model_final.pth)
    if ! "$BIN" eval --annotations "$data/val/annotations.json" --images "$data/val/images" \
         --weights "$run/model_final.pth" --output-json "$run/stats.json" --threads "$THREADS" \
         > "$run/eval.log" 2>&1; then
      tail -n 20 "$run/eval.log" >&2; exit 1
    fi
    rows+=("$(row "$v" "$size" "$m" "$run" "$data/train/annotations.json")")
    echo "${rows[-1]}"
  done
done

{
  echo "Recipe: \`maskrcnn train --backbone resnet18 --min-size S --max-size S --max-minutes M${TRAIN_FLAGS:+ $TRAIN_FLAGS}\`," \
       "--threads $THREADS on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'));" \
       "$TRAIN_IMAGES training / $VAL_IMAGES held-out images per variant; AP in percent on the held-out images."
  echo
  echo "| variant | image size | minutes | iterations | bbox AP | bbox AP50 | segm AP | segm AP50 |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} > "$OUT/table.md"
echo
cat "$OUT/table.md"
