#!/usr/bin/env bash
# Inference on a CUDA GPU, ours against torchvision: the same seeded v1 COCO
# weights and images (the CUDA test fixtures), the same GPU, one run.
# Needs the build of scripts/cuda_check.sh (which makes the fixtures).
#
#   bench/compare_torchvision_cuda.sh [build dir] [reps]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-/tmp/maskrcnn-cuda-build}
reps=${2:-20}
py=${PYTHON:-python3}
fx=$build/fixtures/cuda
"$py" -c 'import torch; print("GPU:", torch.cuda.get_device_name(), "| torch", torch.__version__)'
printf "%-22s %12s %12s %8s %8s\n" image "torchvision" "ours" "ratio" "dets"
for ref in "$fx"/ref/v1_coco__*.pt; do
  tv=$(cd "$here" && "$py" torchvision_cuda_infer.py "$fx/v1_coco.pth" "$ref" "$reps")
  ours=$("$build/bench/gpu/cuda_predict_bench" "$fx/v1_coco.pth" "$ref" "$reps")
  tv_ms=$(cut -f1 <<<"$tv"); ours_ms=$(cut -f1 <<<"$ours")
  printf "%-22s %9s ms %9s ms %7.2fx %4s/%s\n" "$(basename "$ref" .pt)" "$tv_ms" "$ours_ms" \
    "$(awk -v a="$tv_ms" -v b="$ours_ms" 'BEGIN{print a/b}')" "$(cut -f3 <<<"$ours")" "$(cut -f3 <<<"$tv")"
done
echo "(median of $reps calls each after 3 warm-ups, device synchronised per call; TF32 as each library defaults)"
