#!/usr/bin/env bash
# Configures and builds pae into ${BUILD_DIR:-build} (Release, Ninja when present, ccache).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
gen=()
if command -v ninja >/dev/null && [ ! -f "$build/Makefile" ]; then gen=(-G Ninja); fi
cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} "$@"
cmake --build "$build" -j "${JOBS:-$(nproc)}"
