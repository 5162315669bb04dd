#!/usr/bin/env bash
# Fetches pytorch-fid's FID Inception weights, checks their hash and converts them to a file
# pae-eval reads: a plain dict name -> tensor saved with torch.save (zip format), which LibTorch's
# torch::pickle_load reads. Needs internet access and Python with torch (pae's programs never
# need Python); on a machine without them, run it elsewhere and copy the output file.
#   scripts/fetch_inception.sh [OUT]    (default data/inception/pt_inception-2015-12-05.pth)
# Then: pae-eval fid --extractor inception --inception-weights OUT ...
set -euo pipefail
url=https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
hash_prefix=6726825d  # torch.hub convention: the file name carries its SHA-256 prefix
out=${1:-data/inception/pt_inception-2015-12-05.pth}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$(dirname "$out")"
if command -v curl > /dev/null; then
  curl -fL --retry 3 -o "$tmp/weights.pth" "$url"
else
  wget -O "$tmp/weights.pth" "$url"
fi
got=$(sha256sum "$tmp/weights.pth" | cut -c1-8)
if [ "$got" != "$hash_prefix" ]; then
  echo "fetch_inception: SHA-256 of the download starts with $got, expected $hash_prefix (corrupt or changed file)" >&2
  exit 2
fi
python3 - "$tmp/weights.pth" "$tmp/converted.pth" <<'PY'
import sys
import torch
state = torch.load(sys.argv[1], map_location="cpu")
torch.save({k: v.contiguous() for k, v in state.items()}, sys.argv[2], _use_new_zipfile_serialization=True)
PY
mv "$tmp/converted.pth" "$out"
echo "fetch_inception: wrote $out"
