#!/usr/bin/env bash
# Serve the model that scripts/demo.sh trained (demo_output/run/model_final.pth,
# with its sidecar) over HTTP on 127.0.0.1:8080: open http://127.0.0.1:8080/
# and drop one of demo_output/shapes/val/images/*.png on the page.
#   OUT      the demo's output folder (default demo_output)
#   WEIGHTS  weights to serve (default $OUT/run/model_final.pth)
#   HOST, PORT (default 127.0.0.1, 8080), SCORE_THRESH (default 0.05)
#   other flags pass through: bash scripts/serve_demo.sh --max-batch 8
# Ctrl-C (SIGINT) drains and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo_output}
WEIGHTS=${WEIGHTS:-$OUT/run/model_final.pth}
if [ ! -f "$WEIGHTS" ]; then
  echo "serve_demo: no weights at $WEIGHTS: run 'bash scripts/demo.sh' first (or set WEIGHTS)" >&2
  exit 1
fi
bash scripts/build.sh >/dev/null
# Detections down to 0.05 reach the page, whose score slider (0.5 at first,
# the threshold scripts/demo.sh predicts with) filters them without a new request.
exec ./build/tools/maskrcnn serve --weights "$WEIGHTS" --host "${HOST:-127.0.0.1}" --port "${PORT:-8080}" \
  --score-thresh "${SCORE_THRESH:-0.05}" "$@"
