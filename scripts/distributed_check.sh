#!/usr/bin/env bash
# Data-parallel runs launched as torchrun launches them (scripts/launch.sh: 2 ranks over Gloo on
# the loopback interface; also as two "nodes" of one rank each), against one process: pae-train
# (MLP AE, VAE and AAE) and pae-flow (RealNVP on the AE's latents) write the same metrics.jsonl and test figures
# within 1e-5 (relative); ranks started with different configs are one error; a rank killed
# mid-run makes the other exit non-zero by itself, with a message, within 60 s; the run then
# resumes from its last checkpoint with 1 process and with 2. ctest runs it; exit 1 on a failure.
#   PAE_BIN=build scripts/distributed_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=$(realpath "${PAE_BIN:-build}")
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
port() { echo $((20000 + RANDOM % 20000)); }
launch() { "$root/scripts/launch.sh" 2 --master-port "$(port)" "$@"; }
cat > ae.yml <<'YML'
data: {name: noise, synthetic_size: 400, val_size: 80}
model: {type: ae, arch: mlp, hidden: [32], latent_dim: 4}
train: {epochs: 3, batch_size: 40, threads: 1, num_samples: 8, lr: 0.003}
YML
cat > flow.yml <<'YML'
flow: {type: realnvp, layers: 2, hidden: 16}
train: {epochs: 3, batch_size: 64, threads: 1, dtype: float64}
YML
# metrics.jsonl and summary.json of two runs agree within 1e-5, timing fields aside.
same_figures() {
  python3 - "$1" "$2" <<'PY'
import json, math, sys
a, b = sys.argv[1:3]
def lines(run): return [json.loads(l) for l in open(run + "/metrics.jsonl")]
bad = []
la, lb = lines(a), lines(b)
if len(la) != len(lb): bad.append(f"{len(la)} vs {len(lb)} epochs")
for ra, rb in zip(la, lb):
    for k, v in ra.items():
        if k in ("seconds", "images_per_s", "samples_per_s") or not isinstance(v, (int, float)): continue
        if not math.isclose(v, rb.get(k, math.nan), rel_tol=1e-5, abs_tol=1e-8): bad.append(f"epoch {ra['epoch']} {k}: {v} vs {rb.get(k)}")
sa, sb = (json.load(open(r + "/summary.json")) for r in (a, b))
for key in ("test", "mean_log_prob"):
    for k, v in sa.get(key, {}).items():
        if not math.isclose(v, sb[key][k], rel_tol=1e-5): bad.append(f"summary {key}.{k}: {v} vs {sb[key][k]}")
print("\n".join(bad) if bad else f"{a} and {b}: the same figures ({len(la)} epochs)")
sys.exit(1 if bad else 0)
PY
}

"$bin/pae-train" --config ae.yml --run-dir one > one.log 2>&1 || fail "single-process pae-train (one.log)"
launch -- "$bin/pae-train" --config ae.yml --run-dir two > two.log 2>&1 || fail "2-rank pae-train: $(tail -3 two.log)"
same_figures one two || fail "pae-train: 2 ranks and 1 process differ"
# The VAE (a posterior sample per image) and the AAE (prior draws; three optimizers).
for family in "vae, recon_loss: bce" "aae, prior: mixture, prior_components: 4"; do
  name=${family%%,*}
  sed "s/type: ae/type: $family/" ae.yml > "$name.yml"
  "$bin/pae-train" --config "$name.yml" --run-dir "one_$name" > "one_$name.log" 2>&1 || fail "single-process $name"
  launch -- "$bin/pae-train" --config "$name.yml" --run-dir "two_$name" > "two_$name.log" 2>&1 ||
    fail "2-rank $name: $(tail -3 "two_$name.log")"
  same_figures "one_$name" "two_$name" || fail "pae-train $name: 2 ranks and 1 process differ"
done
grep -q "rank 1 of 2 joined" two.log || fail "rank 1 never joined (two.log)"
[ "$(grep -c '^\[1\].*epoch' two.log)" -eq 0 ] || fail "rank 1 logs epochs (only rank 0 should)"

# Two "nodes" of one rank each (distinct --node-rank, as on two machines): the same figures.
p=$(port)
"$root/scripts/launch.sh" 1 --nnodes 2 --node-rank 1 --master-port "$p" -- "$bin/pae-train" --config ae.yml --run-dir nodes > node1.log 2>&1 &
"$root/scripts/launch.sh" 1 --nnodes 2 --node-rank 0 --master-port "$p" -- "$bin/pae-train" --config ae.yml --run-dir nodes > node0.log 2>&1 ||
  fail "node 0: $(tail -2 node0.log)"
wait $! || fail "node 1: $(tail -2 node1.log)"
same_figures one nodes || fail "two nodes and 1 process differ"

"$bin/pae-flow" --config flow.yml --ae-run one --run-dir one/flow > flow1.log 2>&1 || fail "single-process pae-flow"
launch -- "$bin/pae-flow" --config flow.yml --ae-run one --run-dir one/flow2 > flow2.log 2>&1 ||
  fail "2-rank pae-flow: $(tail -3 flow2.log)"
same_figures one/flow one/flow2 || fail "pae-flow: 2 ranks and 1 process differ"

# SIGTERM to both ranks mid-run (as torchrun and Slurm send it): both stop at the same step with
# 143, rank 0 writes mid_epoch.pt, and 2 ranks resumed from it end with the uninterrupted figures.
sed 's/synthetic_size: 400/synthetic_size: 2000/; s/epochs: 3/epochs: 16/' ae.yml > term.yml
launch -- "$bin/pae-train" --config term.yml --run-dir term_ref > term_ref.log 2>&1 || fail "2-rank term_ref"
launch -- "$bin/pae-train" --config term.yml --run-dir term > term.log 2>&1 &
launcher=$!
for _ in $(seq 300); do [ -f term/checkpoints/last.pt ] && break; sleep 0.05; done
for pid in $(pgrep -f -- "--config term.yml --run-dir term$"); do  # the workers, not launch.sh
  [ "$(readlink "/proc/$pid/exe")" = "$(realpath "$bin/pae-train")" ] && kill -TERM "$pid"
done
wait "$launcher"
rc=$?
[ "$rc" -eq 143 ] || fail "2 ranks after SIGTERM: launch status $rc, expected 143 ($(tail -2 term.log))"
steps=$(grep "SIGTERM" term.log | grep -o "at epoch [0-9]*, batch [0-9]* of [0-9]* (step [0-9]*)" | sort -u | wc -l)
[ "$steps" -eq 1 ] || fail "the ranks stopped at $steps different steps: $(grep SIGTERM term.log)"
[ -f term/checkpoints/mid_epoch.pt ] || fail "no mid_epoch.pt after SIGTERM"
launch -- "$bin/pae-train" --config term.yml --run-dir term --resume > term_resume.log 2>&1 ||
  fail "2-rank resume after SIGTERM: $(tail -3 term_resume.log)"
same_figures term_ref term || fail "2 ranks stopped by SIGTERM and resumed differ from the uninterrupted 2 ranks"
echo "SIGTERM to 2 ranks: both stopped $(grep '^\[0\].*SIGTERM' term.log | grep -o 'at epoch [0-9]*, batch [0-9]* of [0-9]*'); resumed with 2 ranks"

# Ranks started with different configs: one clear error on each, exit 2, nothing written.
launch -- bash -c 'exec "$0" --config ae.yml --run-dir mixed --seed "$RANK"' "$bin/pae-train" > mixed.log 2>&1
rc=$?
[ "$rc" -eq 2 ] || fail "ranks with different seeds: exit $rc, expected 2 ($(tail -2 mixed.log))"
grep -q "the ranks were started with different resolved configs" mixed.log || fail "mixed configs: $(tail -2 mixed.log)"
[ ! -e mixed ] || fail "ranks with different configs wrote mixed/"

# A rank killed mid-run: the other stops by itself, naming itself and what failed.
sed 's/synthetic_size: 400/synthetic_size: 2000/; s/epochs: 3/epochs: 12/' ae.yml > long.yml
launch --grace 90 -- "$bin/pae-train" --config long.yml --run-dir killed > killed.log 2>&1 &
launcher=$!
for _ in $(seq 300); do [ -f killed/checkpoints/last.pt ] && break; sleep 0.1; done
[ -f killed/checkpoints/last.pt ] || fail "no checkpoint after 30 s (killed.log)"
victim=""
for pid in $(pgrep -f "pae-train --config long.yml"); do
  tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "RANK=1" && victim=$pid
done
[ -n "$victim" ] || fail "rank 1's process not found"
kill -KILL "$victim"
t0=$SECONDS
wait "$launcher"
rc=$?
took=$((SECONDS - t0))
[ "$rc" -ne 0 ] || fail "the 2-rank run exited 0 after rank 1 was killed"
[ "$took" -lt 60 ] || fail "rank 0 took $took s to stop after rank 1 died"
grep -q "^\[0\].*\[error\] rank 0 of 2: the .* failed" killed.log || fail "rank 0's message: $(grep '^\[0\]' killed.log | tail -2)"
grep -q "stopping the workers" killed.log && fail "rank 0 did not stop by itself (the launcher stopped it)"
grep -q "launch.sh: worker 0 exited with status [1-9]" killed.log || fail "rank 0 did not exit non-zero"
echo "rank 1 killed: rank 0 stopped by itself after $took s (launch status $rc): $(grep '^\[0\].*\[error\]' killed.log | head -1 | cut -c1-220)"

# Resume from the last checkpoint: with 1 process, and (a copy) with 2 ranks.
cp -r killed killed2
"$bin/pae-train" --config long.yml --run-dir killed --resume > resume1.log 2>&1 ||
  fail "resume with 1 process: $(tail -2 resume1.log)"
launch -- "$bin/pae-train" --config long.yml --run-dir killed2 --resume > resume2.log 2>&1 ||
  fail "resume with 2 ranks: $(tail -3 resume2.log)"
for run in killed killed2; do
  [ "$(wc -l < $run/metrics.jsonl)" -eq 12 ] || fail "$run: $(wc -l < $run/metrics.jsonl) epochs in metrics.jsonl after resuming, expected 12"
done
echo "resumed after epoch $(grep -o 'resumed after epoch [0-9]*' resume1.log | grep -o '[0-9]*$') with 1 process and with 2 ranks: 12 epochs each"
exit $((failures > 0))
