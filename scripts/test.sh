#!/usr/bin/env bash
# The test command: installs dependencies, builds, runs every test with ctest.
# Parity fixtures are generated at test time with Debian's python3-torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd "${BUILD_DIR:-build}"
# Fixtures first: tests found by gtest_discover_tests (PRE_TEST) do not pull
# in their FIXTURES_REQUIRED setup by themselves.
ctest --output-on-failure -R '^fixture\.'
ctest --output-on-failure -j "${TEST_JOBS:-1}" -E '^fixture\.' "$@"
