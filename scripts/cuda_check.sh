#!/usr/bin/env bash
# The CUDA path on a machine with a GPU and PyTorch (pip's, with CUDA) but none
# of our other dependencies: builds the LibTorch-only libraries with the CUDA
# kernels (MASKRCNN_CORE_ONLY + MASKRCNN_WITH_CUDA) against that PyTorch's
# LibTorch, then runs their tests: tests/cuda (kernels against the CPU ones,
# inference against torchvision on the same GPU, a training step against the
# CPU), tests/ops and tests/io/checkpoint.
#
#   scripts/cuda_check.sh [build dir] [log dir]
# Env: PYTHON (default python3), CUDA_ARCHS (default native). GoogleTest comes
# from the system, else from a copy of its sources in .gtest/ (git-ignored).
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-/tmp/maskrcnn-cuda-build}
logs=${2:-$build/logs}
py=${PYTHON:-python3}
mkdir -p "$logs"
export PATH=/usr/local/cuda/bin:$PATH
nvidia-smi -L || true
"$py" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
extra=()
[ -d "$src/.gtest" ] && extra+=(-DMASKRCNN_GTEST_SOURCE_DIR="$src/.gtest")
if ! cmake -S "$src" -B "$build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" -DMASKRCNN_CORE_ONLY=ON \
    -DMASKRCNN_WITH_CUDA=ON -DMASKRCNN_PYTHON="$(command -v "$py")" \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-native}" "${extra[@]}" >"$logs/configure.log" 2>&1; then
  tail -40 "$logs/configure.log"
  exit 1
fi
start=$(date +%s)
ninja -C "$build" -k 0 >"$logs/build.log" 2>&1
build_rc=$?
echo "build: exit $build_rc after $(($(date +%s) - start)) s"
grep -E -A3 "error|FAILED" "$logs/build.log" | head -60
(cd "$build" && ctest -j4 -V --timeout 900) >"$logs/ctest.log" 2>&1
test_rc=$?
grep -E "\[cuda|Test +#|tests passed|FAILED|Failure|Expected|Which is|actual" "$logs/ctest.log" | grep -v "^[0-9]*: Test command" | tail -80
exit $((build_rc || test_rc))
