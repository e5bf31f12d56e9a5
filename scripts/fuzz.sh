#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) into build-fuzz/ and runs
# each for FUZZ_SECONDS (default 60) from its seed corpus. Any crash, sanitizer
# report, leak, timeout (> 10 s an input) or out-of-memory (> 2 GB) fails the
# run; the input is saved as build-fuzz/artifacts/<target>-crash-*. Reproduce one
# with `build-fuzz/fuzz/fuzz_<target> <file>`; once fixed, copy it into
# fuzz/regressions/<target>/ so the ordinary suite replays it.
#   FUZZ_SECONDS, FUZZ_TARGETS (default: all five), FUZZ_SEED (default 1: CI runs
#   the same mutations each time), FUZZ_BUILD_DIR, JOBS
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
ROOT=$PWD
DIR=${FUZZ_BUILD_DIR:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-"checkpoint coco_annotations coco_results rle image"}

GEN=()
command -v ninja >/dev/null && [ ! -f "$DIR/CMakeCache.txt" ] && GEN=(-G Ninja)
CC=clang CXX=clang++ cmake -S . -B "$DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DMASKRCNN_BUILD_FUZZERS=ON \
  -DMASKRCNN_SANITIZE="address;undefined" -DMASKRCNN_USE_PCH=OFF -DMASKRCNN_BUILD_TESTS=OFF \
  -DMASKRCNN_BUILD_TOOLS=OFF -DMASKRCNN_BUILD_BENCH=OFF -DMASKRCNN_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$DIR" --target fuzzers -j "${JOBS:-$(nproc)}"

SEEDS=$ROOT/$DIR/seeds
if [ ! -d "$SEEDS/checkpoint" ]; then
  /usr/bin/python3 tests/python/make_fuzz_fixtures.py --out "$SEEDS"
fi
mkdir -p "$DIR/artifacts"
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
status=0
for t in $TARGETS; do
  corpus=$ROOT/$DIR/corpus/$t
  mkdir -p "$corpus"
  extra=()
  [ -d "fuzz/regressions/$t" ] && extra=("$ROOT/fuzz/regressions/$t")
  echo "fuzz: $t for ${SECONDS_EACH}s"
  if ! "$DIR/fuzz/fuzz_$t" "$corpus" "$SEEDS/$t" "${extra[@]}" -max_total_time="$SECONDS_EACH" \
      -seed="${FUZZ_SEED:-1}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="$ROOT/$DIR/artifacts/$t-" >"$DIR/artifacts/$t.log" 2>&1; then
    echo "fuzz: $t FAILED; log $DIR/artifacts/$t.log:" >&2
    grep -E "ERROR|SUMMARY|runtime error|Test unit written|==[0-9]+==" "$DIR/artifacts/$t.log" | head -20 >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|cov:" "$DIR/artifacts/$t.log" | tail -3
  fi
done
exit $status
