#!/usr/bin/env bash
# The main job on the embedded defaults: install, build, then the PAE on Fashion-MNIST:
#   1. pae-train: conv AE, latent 32              -> runs/quickstart
#   2. pae-flow:  neural spline flow on its latents -> runs/quickstart/flow_nsf
#   3. pae-flow sample / interpolate: PAE samples, decoded N(0, I) codes, an interpolation
# About 15 minutes on 2 cores. Each step resumes or is skipped when its output exists.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
run=${RUN_DIR:-runs/quickstart}
flow=$run/flow_nsf
if [ -f "$run/summary.json" ]; then
  echo "quickstart: $run already trained"
else
  resume=()
  [ -f "$run/checkpoints/last.pt" ] && resume=(--resume)
  build/pae-train --config configs/fmnist_ae.yml --run-dir "$run" "${resume[@]}"
fi
if [ -f "$flow/summary.json" ]; then
  echo "quickstart: $flow already fitted"
else
  resume=()
  [ -f "$flow/checkpoints/last.pt" ] && resume=(--resume)
  build/pae-flow --config configs/fmnist_nsf.yml --ae-run "$run" --run-dir "$flow" "${resume[@]}"
fi
build/pae-flow sample --ae-run "$run" --flow "$flow" --n 64 --temperature 1.0
build/pae-flow interpolate --ae-run "$run" --flow "$flow" --a 0 --b 1 --steps 10
echo "quickstart: AE in $run (recon.png, samples.png, metrics.jsonl, latents/);"
echo "            flow in $flow (summary.json, log_prob/, samples_T1.png vs samples_T1_prior.png, interpolation_0_1.png)"
