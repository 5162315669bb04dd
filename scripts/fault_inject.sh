#!/usr/bin/env bash
# Fault injection: kills pae-train (AE and VAE) and pae-flow with SIGKILL at random moments of
# short runs, resumes after every kill, and checks that each finished run equals an uninterrupted
# one: latents byte for byte, every tensor of every checkpoint (weights, optimizer state, RNG,
# engine state; compared as the multiset of the archive's tensor blobs, whose order LibTorch does
# not fix) and metrics.jsonl value for value (timings aside). After
# every kill the run directory must resume (or, killed before its first checkpoint, restart).
#
#   scripts/fault_inject.sh [--kills N] [--quick] [--keep DIR]
#
# --kills N: kills per program (default 20); --quick: 3 (ctest runs this); --keep DIR: work there
# and keep it. PAE_BIN: the folder of the programs (default build/). Exit 0 when every run matches; the first mismatch is printed and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=20
work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --kills) kills=$2; shift 2 ;;
    --quick) kills=3; shift ;;
    --keep) work=$2; shift 2 ;;
    *) echo "fault_inject.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
bin=${PAE_BIN:-$(pwd)/build}  # where pae-train and pae-flow are (ctest sets it)
[ -x "$bin/pae-train" ] && [ -x "$bin/pae-flow" ] || scripts/build.sh
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"

# Short runs on synthetic data (no files needed), one thread: the same numbers every time.
cat > "$work/ae.yml" <<'EOF'
data: {name: noise, synthetic_size: 600, val_size: 100}
model: {type: ae, arch: mlp, hidden: [64], latent_dim: 4}
train: {epochs: 40, batch_size: 50, threads: 1, blas_threads: 1, num_samples: 8}
EOF
cat > "$work/vae.yml" <<'EOF'
data: {name: noise, synthetic_size: 600, val_size: 100}
model: {type: vae, arch: mlp, hidden: [64], latent_dim: 4, recon_loss: bernoulli}
train: {epochs: 40, batch_size: 50, threads: 1, blas_threads: 1, num_samples: 8}
EOF
cat > "$work/flow.yml" <<'EOF'
flow: {type: nsf, layers: 2, hidden: 16, bins: 4}
train: {epochs: 60, batch_size: 50, threads: 1, blas_threads: 1, patience: 4}
EOF

now() { date +%s.%N; }

# compare REF RUN: latents bytes, checkpoint tensors, metrics values without timings.
compare() {
  local ref=$1 run=$2 f
  for f in $(cd "$ref" && find latents log_prob -type f 2>/dev/null | sort); do
    cmp -s "$ref/$f" "$run/$f" || { echo "MISMATCH: $run/$f differs from the uninterrupted run's" >&2; return 1; }
  done
  python3 - "$ref" "$run" <<'EOF'
import json, os, sys, zipfile
ref, run = sys.argv[1], sys.argv[2]
def blobs(p):
    with zipfile.ZipFile(p) as z:
        return sorted(z.read(n) for n in z.namelist() if "/data/" in n)
for name in sorted(os.listdir(os.path.join(ref, "checkpoints"))):
    a, b = os.path.join(ref, "checkpoints", name), os.path.join(run, "checkpoints", name)
    if not os.path.exists(b) or blobs(a) != blobs(b):
        sys.exit("MISMATCH: %s holds other tensors than the uninterrupted run's" % b)
def load(p):
    rows = [json.loads(l) for l in open(p)]
    for r in rows:
        for k in ("seconds", "images_per_s", "samples_per_s"):
            r.pop(k, None)
    return rows
a, b = load(os.path.join(ref, "metrics.jsonl")), load(os.path.join(run, "metrics.jsonl"))
if a != b:
    sys.exit("MISMATCH: %s/metrics.jsonl has %d lines, the uninterrupted run %d, or their values differ" % (run, len(b), len(a)))
EOF
}

# killed NAME SECONDS CMD...: runs CMD (a pae program with --run-dir $work/NAME) until it has been
# killed $kills times at random moments in [0, SECONDS], resuming after each kill, then to the end.
killed() {
  local name=$1 span=$2
  shift 2
  local dir=$work/$name n=0 tries=0 mode delay
  rm -rf "$dir"
  while :; do
    if [ -f "$dir/checkpoints/last.pt" ]; then mode=--resume; else mode=--force; fi
    if [ "$n" -ge "$kills" ]; then
      "$@" --run-dir "$dir" $mode > "$dir.log" 2>&1 || { echo "FAILED to finish $name after $n kills:" >&2; tail -3 "$dir.log" >&2; return 1; }
      break
    fi
    delay=$(awk -v s="$span" -v r="$RANDOM" 'BEGIN { printf "%.3f", s * r / 32767 }')
    "$@" --run-dir "$dir" $mode > "$dir.log" 2>&1 &
    local pid=$!
    sleep "$delay"
    if kill -9 "$pid" 2> /dev/null; then
      wait "$pid" 2> /dev/null || true
      n=$((n + 1))
    else
      # It ended before the kill: it must have ended well; start over from scratch to use the kill.
      wait "$pid" || { echo "FAILED: $name exited with an error (not killed):" >&2; tail -3 "$dir.log" >&2; return 1; }
      rm -rf "$dir"
    fi
    tries=$((tries + 1))
    [ "$tries" -lt $((kills * 10)) ] || { echo "FAILED: $name ended before $kills kills landed" >&2; return 1; }
  done
  echo "$name: $n kills at random moments, resumed each time"
}

status=0
for model in ae vae; do
  start=$(now)
  "$bin/pae-train" --config "$work/$model.yml" --run-dir "$work/ref_$model" --force > "$work/ref_$model.log" 2>&1 ||
    { tail -3 "$work/ref_$model.log" >&2; exit 1; }
  span=$(awk -v a="$start" -v b="$(now)" 'BEGIN { print b - a }')
  killed "$model" "$span" "$bin/pae-train" --config "$work/$model.yml"
  if compare "$work/ref_$model" "$work/$model"; then echo "$model: equals the uninterrupted run"; else status=1; fi
done
start=$(now)
"$bin/pae-flow" --config "$work/flow.yml" --ae-run "$work/ref_ae" --run-dir "$work/ref_flow" --force > "$work/ref_flow.log" 2>&1 ||
  { tail -3 "$work/ref_flow.log" >&2; exit 1; }
span=$(awk -v a="$start" -v b="$(now)" 'BEGIN { print b - a }')
killed flow "$span" "$bin/pae-flow" --config "$work/flow.yml" --ae-run "$work/ref_ae"
if compare "$work/ref_flow" "$work/flow"; then echo "flow: equals the uninterrupted run"; else status=1; fi
exit $status
