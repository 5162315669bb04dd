#!/usr/bin/env bash
# Installs everything pae needs from Debian's packages. Idempotent; run as root or with sudo.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config ccache clang-format
          libtorch-dev libgloo-dev libopenblas0-pthread libcli11-dev libyaml-cpp-dev libspdlog-dev
          libstb-dev libgtest-dev zlib1g-dev nlohmann-json3-dev dataset-fashion-mnist)
# scripts/fuzz.sh needs clang with libFuzzer and LLVM's OpenMP: `scripts/setup.sh --fuzz`.
if [ "${1:-}" = "--fuzz" ]; then packages+=(clang libclang-rt-dev libomp-dev); fi
# bench/compare.sh compares with the same models in Debian's PyTorch; perf samples where the time
# goes (bench/README.md): `scripts/setup.sh --bench`.
if [ "${1:-}" = "--bench" ]; then packages+=(python3-torch linux-perf); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
# LibTorch uses whichever libblas.so.3 is selected: make sure it is OpenBLAS, not the reference
# BLAS that is ~30x slower.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
case "$blas" in
  *openblas*) ;;
  *) echo "setup: warning: libblas.so.3 -> $blas is not OpenBLAS; select it with" \
          "'update-alternatives --config libblas.so.3-x86_64-linux-gnu'" >&2 ;;
esac
