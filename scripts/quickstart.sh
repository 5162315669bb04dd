#!/usr/bin/env bash
# The main job on the embedded default: install, build, train the conv AE (latent 32) on
# Fashion-MNIST into runs/quickstart (checkpoints, metrics, pictures, latents).
# Extra arguments go to pae-train, e.g.  scripts/quickstart.sh --set train.epochs=2
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
run=${RUN_DIR:-runs/quickstart}
resume=()
[ -f "$run/checkpoints/last.pt" ] && resume=(--resume)
build/pae-train --config configs/fmnist_ae.yml --run-dir "$run" "${resume[@]}" "$@"
echo "quickstart: results in $run (recon.png, samples.png, metrics.jsonl, latents/)"
