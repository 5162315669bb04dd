#!/usr/bin/env bash
# The test command: install dependencies, build, run the whole ctest suite.
# Tests that need the MNIST test set read it through PAE_DATA_DIR (.ci/run sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "${JOBS:-$(nproc)}" --timeout 600
