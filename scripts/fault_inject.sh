#!/usr/bin/env bash
# Fault injection: interrupts pae-train (AE and VAE) and pae-flow at random moments of short runs,
# resumes after every interruption, and checks that each finished run equals an uninterrupted
# one: latents byte for byte, every tensor of every checkpoint (weights, optimizer state, RNG,
# engine state; compared as the multiset of the archive's tensor blobs, whose order LibTorch does
# not fix) and metrics.jsonl value for value (timings aside).
#
#   scripts/fault_inject.sh [--kills N] [--quick] [--signal KILL|TERM|INT] [--keep DIR]
#
# --signal KILL (default): SIGKILL; after every kill the run directory must resume (a kill before
# the first checkpoint restarts it from scratch). --signal TERM or INT: the signal a scheduler or
# Ctrl-C sends; each signalled process must log it, write checkpoints/mid_epoch.pt and exit with
# 143 (TERM) or 130 (INT) within 10 s, and --resume continues mid-epoch.
# --kills N: interruptions per program (default 20); --quick: 3; --keep DIR: work there and keep
# it. PAE_BIN: the folder of the programs (default build/). Exit 0 when every run matches; the
# first mismatch is printed and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=20
work=""
signal=KILL
while [ $# -gt 0 ]; do
  case "$1" in
    --kills) kills=$2; shift 2 ;;
    --quick) kills=3; shift ;;
    --signal) signal=$2; shift 2 ;;
    --keep) work=$2; shift 2 ;;
    *) echo "fault_inject.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$signal" in
  KILL) expected=137 ;;
  TERM) expected=143 ;;
  INT) expected=130 ;;
  *) echo "fault_inject.sh: --signal $signal: expected KILL, TERM or INT" >&2; exit 2 ;;
esac
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

# A signalled process (TERM, INT) logged the signal, wrote checkpoints/mid_epoch.pt after it and
# exited with $expected within 10 s of it (an atomic write makes a new file: MARK is the inode
# mid_epoch.pt had before the signal). signalled LOG DIR STATUS SECONDS MARK
signalled() {
  local log=$1 dir=$2 rc=$3 took=$4 mark=$5
  [ "$rc" -eq "$expected" ] || { echo "FAILED: exit $rc after SIG$signal, expected $expected:" >&2; tail -3 "$log" >&2; return 1; }
  grep -q "\[warning\] SIG$signal at epoch .*--resume continues from there" "$log" ||
    { echo "FAILED: no SIG$signal line in $log:" >&2; tail -3 "$log" >&2; return 1; }
  local now_inode
  now_inode=$(stat -c %i "$dir/checkpoints/mid_epoch.pt" 2> /dev/null || echo none)
  [ "$now_inode" != none ] && [ "$now_inode" != "$mark" ] ||
    { echo "FAILED: no mid_epoch.pt written after SIG$signal ($log)" >&2; return 1; }
  awk -v t="$took" 'BEGIN { exit !(t < 10) }' || { echo "FAILED: $took s from SIG$signal to exit ($log)" >&2; return 1; }
}

# killed NAME SECONDS CMD...: runs CMD (a pae program with --run-dir $work/NAME) until it has been
# interrupted $kills times at random moments in [0.5, SECONDS] s, resuming after each, then to the end.
killed() {
  local name=$1 span=$2
  shift 2
  local dir=$work/$name n=0 tries=0 mode delay rc sent took mark slowest=""
  rm -rf "$dir"
  while :; do
    if [ -f "$dir/config.yml" ] || [ -f "$dir/checkpoints/last.pt" ]; then mode=--resume; else mode=--force; fi
    if [ "$n" -ge "$kills" ]; then
      "$@" --run-dir "$dir" $mode > "$dir.log" 2>&1 || { echo "FAILED to finish $name after $n interruptions:" >&2; tail -3 "$dir.log" >&2; return 1; }
      break
    fi
    delay=$(awk -v s="$span" -v r="$RANDOM" 'BEGIN { printf "%.3f", 0.5 + (s - 0.5) * r / 32767 }')
    "$@" --run-dir "$dir" $mode > "$dir.log" 2>&1 &
    local pid=$!
    sleep "$delay"
    mark=$(stat -c %i "$dir/checkpoints/mid_epoch.pt" 2> /dev/null || echo none)
    sent=$(now)
    if kill -"$signal" "$pid" 2> /dev/null; then
      rc=0
      wait "$pid" 2> /dev/null || rc=$?
      took=$(awk -v a="$sent" -v b="$(now)" 'BEGIN { print b - a }')
      if [ "$rc" -eq 0 ]; then  # the signal came as it finished (or while it wrote its outputs)
        rm -rf "$dir"
        tries=$((tries + 1))
        continue
      fi
      if [ "$signal" != KILL ] && [ ! -s "$dir.log" ]; then  # before main(): LibTorch still loading
        tries=$((tries + 1))
        continue
      fi
      if [ "$signal" != KILL ]; then
        signalled "$dir.log" "$dir" "$rc" "$took" "$mark" || return 1
        slowest=$(awk -v a="${slowest:-0}" -v b="$took" 'BEGIN { print (b > a ? b : a) }')
      fi
      n=$((n + 1))
    else
      # It ended before the signal: it must have ended well; start over from scratch to use the signal.
      wait "$pid" || { echo "FAILED: $name exited with an error (not interrupted):" >&2; tail -3 "$dir.log" >&2; return 1; }
      rm -rf "$dir"
    fi
    tries=$((tries + 1))
    [ "$tries" -lt $((kills * 10)) ] || { echo "FAILED: $name ended before $kills interruptions landed" >&2; return 1; }
  done
  echo "$name: $n SIG$signal at random moments, resumed each time${slowest:+ (slowest exit after the signal: $slowest s)}"
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
