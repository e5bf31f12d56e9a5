#!/usr/bin/env bash
# cmake --install into a temporary prefix, then build examples/segment_image.cpp
# in a separate project with find_package(maskrcnn) and run it on a photo.
#   check_install.sh BUILD_DIR SOURCE_DIR WEIGHTS IMAGE
set -euo pipefail
build=$1 src=$2 weights=$3 image=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/maskrcnn/maskrcnn.h"
test -x "$work/prefix/bin/maskrcnn"
gen=()
if command -v ninja >/dev/null; then gen=(-G Ninja); fi
cmake -S "$src/tests/install/consumer" -B "$work/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DEXAMPLE_SOURCE="$src/examples/segment_image.cpp" >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" -j 2 >"$work/build.log" 2>&1 || { tail -50 "$work/build.log"; exit 1; }
"$work/build/segment_image" "$weights" "$image" "$work/out.png" >"$work/out.txt"
n=$(grep -c " box " "$work/out.txt" || true)
echo "installed library: $n detections"
test "$n" -gt 0
test -s "$work/out.png"
