#!/usr/bin/env bash
# Unpacks the libraries pae builds with (besides LibTorch) from Debian's packages into a prefix,
# for a machine that has a compiler, CMake and a pip-installed PyTorch but no package manager or
# no root (a GPU machine here, a cluster node): run it on a Debian 12 machine, copy the folder
# over, and build with scripts/build_gpu.sh. The prefix holds no LibTorch (the wheel's stays the
# one used); CMake puts the prefix's headers (fmt for spdlog, nlohmann) before LibTorch's for pae's
# own code. The data the GPU check trains on (Fashion-MNIST, and the MNIST test set where
# ../shared/datasets has it) is copied to PREFIX/datasets (PAE_DATA_DIR there).
#   scripts/gpu_deps.sh [PREFIX]      (default .deps; git ignores it)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$(realpath -m "${1:-.deps}")
packages=(libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libcli11-dev
          libgtest-dev libstb-dev libstb0 nlohmann-json3-dev zlib1g-dev zlib1g)
debs=$(mktemp -d)
trap 'rm -rf "$debs"' EXIT
(cd "$debs" && apt-get download "${packages[@]}" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
n=$(ls "$debs"/*.deb 2>/dev/null | wc -l)
[ "$n" -eq "${#packages[@]}" ] || { echo "gpu_deps: got $n of ${#packages[@]} packages (apt-get download failed?)" >&2; exit 1; }
rm -rf "$prefix"
mkdir -p "$prefix"
for deb in "$debs"/*.deb; do dpkg -x "$deb" "$prefix"; done
# Absolute symlinks (libz.so -> /lib/...) would point out of the prefix: make them relative.
find "$prefix" -type l -lname '/*' | while read -r link; do
  target=$(readlink "$link")
  ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$prefix$target")" "$link"
done
mkdir -p "$prefix/datasets"
cp -r /usr/share/datasets/fashion-mnist "$prefix/datasets/"
[ -d ../shared/datasets/mnist ] && cp -r ../shared/datasets/mnist "$prefix/datasets/"
du -sh "$prefix" | awk '{print "gpu_deps: " $1 " in " $2 "; configure with -DPAE_DEPS_PREFIX=" $2 "/usr"}'
