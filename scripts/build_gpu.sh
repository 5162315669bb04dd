#!/usr/bin/env bash
# Builds pae against a pip-installed PyTorch (its LibTorch, CUDA and C++ ABI, from
# torch.utils.cmake_prefix_path) with the other libraries from a prefix made by
# scripts/gpu_deps.sh, into ${BUILD_DIR:-build-gpu}. For a GPU machine or a cluster node without
# root. Run the programs with the prefix's libraries on the loader's path:
#   export LD_LIBRARY_PATH=PREFIX/usr/lib/x86_64-linux-gnu:PREFIX/lib/x86_64-linux-gnu
#   scripts/build_gpu.sh [PREFIX] [CMAKE ARGS...]      (PREFIX default .deps)
set -euo pipefail
cd "$(dirname "$0")/.."
deps=$(realpath "${1:-.deps}")
shift || true
[ -d "$deps/usr/include/yaml-cpp" ] || { echo "build_gpu: $deps has no libraries; run scripts/gpu_deps.sh on a Debian 12 machine and copy its folder here" >&2; exit 2; }
python=${PYTHON:-python3}
torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)') ||
  { echo "build_gpu: $python cannot import torch" >&2; exit 2; }
# Hopper (sm_90) unless told otherwise; pae has no kernels of its own, LibTorch's CMake asks for it.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S . -B "${BUILD_DIR:-build-gpu}" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix" -DPAE_DEPS_PREFIX="$deps/usr" "$@"
cmake --build "${BUILD_DIR:-build-gpu}" -j "${JOBS:-$(nproc)}"
