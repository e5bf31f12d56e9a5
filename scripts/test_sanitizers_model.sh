#!/usr/bin/env bash
# The suites above the kernels under ASan + UBSan: parity runs of whole
# models, the builder, the CLI's predict / eval / train / distributed runs,
# data loading, the engine (trainer, SGD, gradient averaging), the fuzz
# corpus. Under ASan every large tensor allocation is a fresh mmap with its
# shadow poisoned, so these run 4-5x slower than in scripts/test.sh (most of
# the 39 min the whole suite took under ASan); CI runs
# scripts/test_sanitizers.sh, whose suites cover the code at the bottom that
# handles its own memory. Same variables as scripts/test_sanitizers.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SANITIZE_SUITES=${SANITIZE_SUITES:-"modeling cli data engine fuzz"} exec bash scripts/test_sanitizers.sh "$@"
