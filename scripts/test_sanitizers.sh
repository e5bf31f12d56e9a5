#!/usr/bin/env bash
# Test suites under AddressSanitizer + UndefinedBehaviorSanitizer.
# Builds into build-asan/ (gcc, -O1 -g1, -fsanitize=address,undefined), reuses
# the reference fixtures of the main build when they exist (scripts/test.sh
# makes them), runs ctest, then fails if any sanitizer wrote a report,
# including reports from `maskrcnn` processes that CLI tests start (their exit
# codes alone could be mistaken for an expected failure).
#
#   SANITIZE_SUITES  test folders to run (default: the suites of the code that
#                    handles its own memory at the bottom of the stack: checkpoint
#                    and COCO parsing, RLE, COCOeval, the kernels, the CPU backend's
#                    oneDNN buffers; the fuzz stage covers the parsers and image
#                    decoding again). scripts/test_sanitizers_model.sh runs the
#                    suites above them (model, CLI, data, engine); `all` every one.
#   ASAN_BUILD_DIR (default build-asan), BUILD_DIR (main build, default build), JOBS
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
ROOT=$PWD
ASAN_DIR=${ASAN_BUILD_DIR:-build-asan}
MAIN_FIXTURES=$ROOT/${BUILD_DIR:-build}/fixtures
JOBS=${JOBS:-$(nproc)}
SUITES=${SANITIZE_SUITES:-"io/checkpoint io/coco evaluation ops common backend/cpu"}

FIXTURE_ARGS=()
if [ -d "$MAIN_FIXTURES" ]; then FIXTURE_ARGS=(-DMASKRCNN_FIXTURES_DIR="$MAIN_FIXTURES"); fi
GEN=()
command -v ninja >/dev/null && [ ! -f "$ASAN_DIR/CMakeCache.txt" ] && GEN=(-G Ninja)
cmake -S . -B "$ASAN_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DMASKRCNN_SANITIZE="address;undefined" \
  -DMASKRCNN_BUILD_BENCH=OFF -DMASKRCNN_BUILD_EXAMPLES=OFF "${FIXTURE_ARGS[@]}"

# The test executables of the chosen folders (tests/<folder>/test_x.cpp is
# target <folder with _>_test_x, its tests named "<folder with _>.Suite.Test").
targets=() prefixes=()
if [ "$SUITES" = all ]; then
  cmake --build "$ASAN_DIR" -j "$JOBS"
  regex='.'
else
  for s in $SUITES; do
    p=${s//\//_}
    prefixes+=("$p")
    for f in tests/"$s"/test_*.cpp; do targets+=("${p}_$(basename "$f" .cpp)"); done
  done
  cmake --build "$ASAN_DIR" -j "$JOBS" --target "${targets[@]}"
  regex="^($(IFS='|'; echo "${prefixes[*]}"))\\."
fi

LOGS=$ROOT/$ASAN_DIR/sanitizer-reports
rm -rf "$LOGS" && mkdir -p "$LOGS"
SUPP=$ROOT/scripts/sanitizers
export ASAN_OPTIONS="log_path=$LOGS/asan:detect_leaks=1:strict_string_checks=1:check_initialization_order=1"
export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="log_path=$LOGS/ubsan:print_stacktrace=1:halt_on_error=1:suppressions=$SUPP/ubsan.supp"

cd "$ASAN_DIR"
if [ ${#FIXTURE_ARGS[@]} -eq 0 ]; then ctest --output-on-failure -R '^fixture\.'; fi
status=0
# Tests use 2 threads each: one test per 2 cores.
JOBS_TESTS=${TEST_JOBS:-$(( $(nproc) / 2 > 1 ? $(nproc) / 2 : 1 ))}
ctest --output-on-failure -j "$JOBS_TESTS" -R "$regex" -E '^fixture\.' "$@" || status=$?
if compgen -G "$LOGS/*" >/dev/null; then
  echo "test_sanitizers: sanitizer reports:" >&2
  for f in "$LOGS"/*; do echo "== $f" >&2; head -60 "$f" >&2; done
  status=1
fi
[ $status -eq 0 ] && echo "test_sanitizers: all tests passed under ASan + UBSan, no reports"
exit $status
