#!/usr/bin/env bash
# The GPU machine's one prepared script (issue 26). From a checkout with .deps (scripts/gpu_deps.sh)
# beside it: builds pae against the machine's PyTorch, runs the whole suite on its CPU (the first
# LibTorch 2.x run) and the device tests on CUDA, trains, fits and evaluates end to end on CUDA
# (conv AE and MLP VAE, a flow on each one's latents, pae-eval ood and recon, a --resume against
# an uninterrupted run), times pae-bench --device against the same models in PyTorch, and reads a
# run's TensorBoard events with the tensorboard package. Each step's log and summary.json go to
# $OUT; a failed step is recorded and the next one runs.
#   OUT=DIR scripts/gpu_check.sh            (DEVICE=cuda, BUILD_DIR=build-gpu, REPEAT=3)
# DEVICE=cpu SKIP_BUILD=1 BUILD_DIR=build runs the same steps on a CPU machine (to try the script);
# ONLY=REGEX runs only the steps whose names match.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=$(realpath -m "${OUT:-gpu_check}")
mkdir -p "$out"
device=${DEVICE:-cuda}
bin=$(realpath -m "${BUILD_DIR:-build-gpu}")
repeat=${REPEAT:-3}
deps="$root/.deps"
export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:$deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d "$deps/datasets" ] && export PAE_DATA_DIR=${PAE_DATA_DIR:-$deps/datasets}
work=$(mktemp -d)
steps="$out/steps.jsonl"
: > "$steps"

step() {  # step NAME CMD...: runs CMD with its output in $out/NAME.log; records rc and seconds
  local name=$1
  shift
  if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then return 0; fi  # ONLY=REGEX: those steps alone
  local t0=$SECONDS
  echo "== $name: $*" | tee -a "$out/gpu_check.log"
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  printf '{"step": "%s", "rc": %d, "seconds": %d}\n' "$name" "$rc" $((SECONDS - t0)) | tee -a "$steps"
  tail -3 "$out/$name.log" | sed 's/^/   /' | tee -a "$out/gpu_check.log"
  return $rc
}

{ nvidia-smi; python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())'
  g++ --version | head -1; cmake --version | head -1; } > "$out/machine.txt" 2>&1

[ -n "${SKIP_BUILD:-}" ] || step build scripts/build_gpu.sh "$deps" || { echo "build failed: see $out/build.log"; exit 1; }

# The whole suite on this machine's CPU, then every test marked PAE_DEVICE_UNDER_TEST on the device.
step suite_cpu bash -c "cd '$bin' && ctest -j \$(nproc) --timeout 600 --output-on-failure --output-junit '$out/suite_cpu.xml'"
device_tests=$(awk '/^TEST\(/ { split($0, a, /[(), ]+/); name = a[2] "." a[3] }
                    /PAE_DEVICE_UNDER_TEST/ { print name }' tests/*.cpp | paste -sd: -)
echo "$device_tests" | tr : '\n' > "$out/device_tests.txt"
step suite_device env PAE_TEST_DEVICE="$device" OMP_NUM_THREADS=1 "$bin/tests/pae_tests" \
  --gtest_filter="$device_tests" --gtest_output="json:$out/suite_device.json"

# End to end on the device: train (2 epochs), resume (1 + 1 against 2: equal test figures within
# 1e-4, relative, the GPU's nondeterministic reductions allowed), fit flows, evaluate.
T="$bin/pae-train" F="$bin/pae-flow" E="$bin/pae-eval"
short=(--set train.epochs=2 --device "$device")
step train_ae "$T" --config configs/fmnist_ae.yml --run-dir "$work/ae" "${short[@]}"
step train_vae "$T" --config configs/fmnist_vae.yml --run-dir "$work/vae" "${short[@]}"
step resume_ae bash -c "'$T' --config configs/fmnist_ae.yml --run-dir '$work/ae_resumed' --set train.epochs=1 --device $device &&
  '$T' --config configs/fmnist_ae.yml --run-dir '$work/ae_resumed' --resume --set train.epochs=2 --device $device &&
  python3 -c 'import json, sys
a, b = (json.load(open(sys.argv[i] + \"/summary.json\"))[\"test\"] for i in (1, 2))
rel = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-30) for k in a)
print(\"uninterrupted\", a, \"\\nresumed      \", b, \"\\nlargest relative difference\", rel)
sys.exit(0 if rel <= 1e-4 else 3)' '$work/ae' '$work/ae_resumed'"
step flow_ae "$F" --config configs/fmnist_realnvp.yml --ae-run "$work/ae" --run-dir "$work/ae/flow" "${short[@]}"
step flow_vae "$F" --config configs/fmnist_nsf.yml --ae-run "$work/vae" --run-dir "$work/vae/flow" "${short[@]}"
step eval_ood "$E" ood --ae-run "$work/ae" --flow "$work/ae/flow" --ood mnist:test,noise,constant --device "$device"
step eval_recon "$E" recon --ae-run "$work/vae" --device "$device"
step sample "$F" sample --ae-run "$work/ae" --flow "$work/ae/flow" --device "$device"
cp "$work/ae/summary.json" "$out/ae_summary.json" 2>/dev/null
cp "$work/ae/flow/ood/ood.json" "$out/ae_ood.json" 2>/dev/null
step tensorboard python3 scripts/check_tensorboard.py "$work/ae"

# The real launcher: PyTorch 2.x's torchrun starts 2 CPU ranks (Gloo) and 2 CUDA ranks; the CPU
# pair must end with the single process's figures (metrics.jsonl within 1e-5).
printf 'data: {name: noise, synthetic_size: 400, val_size: 80}\nmodel: {type: ae, arch: mlp, hidden: [32], latent_dim: 4}\ntrain: {epochs: 3, batch_size: 40, threads: 1, num_samples: 8}\n' > "$work/ok.yml"
step torchrun_cpu bash -c "'$bin/pae-train' --config '$work/ok.yml' --run-dir '$work/one' --device cpu &&
  python3 -m torch.distributed.run --nproc_per_node=2 --master_port=29517 --no-python '$bin/pae-train' --config '$work/ok.yml' --run-dir '$work/two' --device cpu &&
  python3 -c 'import json, math, sys
a, b = ([json.loads(l) for l in open(sys.argv[i] + \"/metrics.jsonl\")] for i in (1, 2))
bad = [(k, x[k], y[k]) for x, y in zip(a, b) for k in (\"train_loss\", \"val_loss\") if not math.isclose(x[k], y[k], rel_tol=1e-5)]
print(\"1 process vs 2 torchrun ranks:\", bad or \"the same figures\"); sys.exit(1 if bad or len(a) != len(b) else 0)' '$work/one' '$work/two'"
# (both ranks on the one GPU: cuda:0 is kept as given; a plain cuda would be cuda:LOCAL_RANK)
[ "$device" = cpu ] || step torchrun_cuda python3 -m torch.distributed.run --nproc_per_node=2 --master_port=29518 \
  --no-python "$bin/pae-train" --config "$work/ok.yml" --run-dir "$work/two_cuda" --device cuda:0

# Throughput on the same device: pae-bench and PyTorch eager, REPEAT runs each.
for m in vae ae realnvp nsf; do
  step "bench_pae_$m" "$bin/pae-bench" "$m" --device "$device" --repeat "$repeat"
  step "bench_pytorch_$m" bash -c "for r in \$(seq $repeat); do python3 bench/pytorch_compare.py $m --device $device || exit; done"
done
python3 - "$out" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
steps = [json.loads(l) for l in (out / "steps.jsonl").read_text().splitlines() if l.strip()]
bench = {}
for m in ("vae", "ae", "realnvp", "nsf"):
    pae = [json.loads(l) for l in (out / f"bench_pae_{m}.log").read_text().splitlines() if l.startswith("{")] \
        if (out / f"bench_pae_{m}.log").exists() else []
    pt = [json.loads(l)["per_s"] for l in (out / f"bench_pytorch_{m}.log").read_text().splitlines() if l.startswith("{")] \
        if (out / f"bench_pytorch_{m}.log").exists() else []
    row = {}
    if pae:
        row["pae_median"], row["pae_min"], row["pae_max"] = pae[-1]["per_s"], pae[-1]["per_s_min"], pae[-1]["per_s_max"]
    if pt:
        row["pytorch_median"], row["pytorch_min"], row["pytorch_max"] = statistics.median(pt), min(pt), max(pt)
    if pae and pt:
        row["ratio"] = row["pae_median"] / row["pytorch_median"]
    bench[m] = row
summary = {"steps": steps, "failed": [s["step"] for s in steps if s["rc"] != 0], "bench": bench,
           "machine": (out / "machine.txt").read_text()}
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps({"failed": summary["failed"], "bench": bench}, indent=1))
PY
rm -rf "$work"
