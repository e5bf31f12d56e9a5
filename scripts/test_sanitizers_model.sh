#!/usr/bin/env bash
# The model-level suites under ASan + UBSan: parity runs of whole models, the
# CLI's predict / eval / train / distributed runs, the builder. Under ASan
# every large tensor allocation is a fresh mmap with its shadow poisoned, so
# these run 4-5x slower than in scripts/test.sh (~35 min on 2 cores); CI runs
# scripts/test_sanitizers.sh, whose suites cover the code that handles its own
# memory. Same variables as scripts/test_sanitizers.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SANITIZE_SUITES=${SANITIZE_SUITES:-"modeling cli"} exec bash scripts/test_sanitizers.sh "$@"
