#!/usr/bin/env bash
# The main job: install, build, then the PAE on Fashion-MNIST, short version
# (scripts/reproduce_fmnist.sh --quick), then PAE samples and an interpolation.
# About 10 minutes on 2 cores. Steps whose outputs exist are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
# The short reproduction: AE (latent 32 and 64, 2 epochs) -> NSF (5 epochs) -> OoD, recon,
# domain FID, with the paper's numbers beside ours in runs/reproduce_fmnist_quick/results.md.
scripts/reproduce_fmnist.sh --quick
run=runs/reproduce_fmnist_quick/ae32
flow=$run/nsf
build/pae-flow sample --ae-run "$run" --flow "$flow" --n 64 --temperature 1.0
build/pae-flow interpolate --ae-run "$run" --flow "$flow" --a 0 --b 1 --steps 10
echo "quickstart: results table in runs/reproduce_fmnist_quick/results.md; AE in $run (recon.png, latents/);"
echo "            flow in $flow (samples_T1.png vs samples_T1_prior.png, interpolation_0_1.png, ood/, fid_domain.json)"
