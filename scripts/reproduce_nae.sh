#!/usr/bin/env bash
# The normalized auto-encoder on Fashion-MNIST (configs/fmnist_nae.yml, latent 32), timed end to
# end, then OoD AUROC against MNIST test, constant, constant-gray and uniform noise of
#   its energy after phase 2 | the same network after phase 1 (checkpoint phase_ae: its
#   reconstruction error) | the PAE's log p(z) at latent 32 from scripts/reproduce_fmnist.sh.
# Writes $OUT/results.md (default OUT=runs/reproduce_nae); steps whose outputs exist are skipped.
#   THREADS=1 scripts/reproduce_nae.sh [extra pae-train arguments, e.g. --set model.nae_epochs=2]
# The PAE column reads ${PAE_REPRODUCTION:-runs/reproduce_fmnist}/ae32/nsf/ood/ood.md (n/a without it).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/reproduce_nae}
pae_dir=${PAE_REPRODUCTION:-runs/reproduce_fmnist}
threads=${THREADS:-1}
[ -x build/pae-eval ] || scripts/build.sh
mkdir -p "$out"
ood_sets=noise,constant,constant-gray
for d in "${PAE_DATA_DIR:-data}/mnist" data/mnist /usr/share/datasets/mnist; do
  compgen -G "$d/t10k-images*" > /dev/null && ood_sets=mnist:test,noise,constant,constant-gray
done
run=$out/nae
if [ ! -f "$run/summary.json" ]; then
  start=$(date +%s)
  build/pae-train --config configs/fmnist_nae.yml --run-dir "$run" --force --set train.threads="$threads" \
    --set train.blas_threads=1 "$@"
  echo $(( $(date +%s) - start )) > "$out/train_seconds"
fi
[ -f "$run/ood/ood.json" ] || build/pae-eval ood --ae-run "$run" --ood $ood_sets --scores energy --force
[ -f "$run/checkpoint_phase_ae/ood/ood.json" ] || build/pae-eval ood --ae-run "$run" --checkpoint phase_ae \
  --ood $ood_sets --scores energy --force

auroc() {  # auroc OOD_MD SET SCORE: the table cell (n/a when absent)
  [ -f "$1" ] || { echo n/a; return; }
  awk -F'|' -v set="$2" -v score="$3" '
    NR == 1 { for (i = 3; i < NF; i++) { h = $i; gsub(/ /, "", h); if (h == score) col = i } }
    { s = $2; gsub(/ /, "", s) } s == set && col { v = $col; gsub(/ /, "", v); print v; found = 1 }
    END { if (!found) print "n/a" }' "$1"
}
phase() {  # phase RUN NAME: epochs the phase ran (from metrics.jsonl)
  grep -c "\"phase\": \"$2\"" "$1/metrics.jsonl" || true
}
{
  echo "# NAE on Fashion-MNIST: OoD AUROC"
  echo
  echo "configs/fmnist_nae.yml${*:+ $*}: phase 1 ran $(phase "$run" ae) epochs, phase 2 $(phase "$run" nae) epochs;"
  echo "training took $(cat "$out/train_seconds" 2>/dev/null || echo '?') s (pae-train, ${threads} thread(s))."
  echo "In-distribution: Fashion-MNIST test (10,000 images); higher score = more anomalous."
  echo
  echo "| OoD set | NAE energy (phase 2) | same network after phase 1 (recon error) | PAE log p(z), latent 32 |"
  echo "| --- | --- | --- | --- |"
  for set in ${ood_sets//,/ }; do
    echo "| $set | $(auroc "$run/ood/ood.md" "$set" energy) | $(auroc "$run/checkpoint_phase_ae/ood/ood.md" "$set" energy) |" \
      "$(auroc "$pae_dir/ae32/nsf/ood/ood.md" "$set" neg_log_p_z) |"
  done
  echo
  echo "Negative samples: $run/negatives/; metrics: $run/metrics.jsonl."
} > "$out/results.md"
cat "$out/results.md"
