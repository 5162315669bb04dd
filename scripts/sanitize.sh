#!/usr/bin/env bash
# Builds pae with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan (the `asan`
# CMake preset's options) and runs the unit tests under them, timed.
#   scripts/sanitize.sh [ctest arguments, e.g. -R Config]
# LibTorch itself is not instrumented: the sanitizers check our code and what it hands LibTorch.
# Leak checking is off (LibTorch's and OpenMP's process-lifetime allocations are not leaks).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-asan} BUILD_TYPE=RelWithDebInfo scripts/build.sh -DPAE_SANITIZE=ON -DPAE_BUILD_BENCH=OFF
cd "${BUILD_DIR:-build-asan}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
start=$(date +%s)
ctest --output-on-failure -j "${JOBS:-$(nproc)}" --timeout 1200 "$@"
echo "sanitized test suite: $(($(date +%s) - start)) s"
