#!/usr/bin/env bash
# Feeds the programs bad input of every kind (configs, data files, checkpoints, flags, resume)
# and writes what a user sees as a table: docs/bad_inputs.md (or $OUT). Each case must end with
# exit code 2 and one error line naming the file, key or value; a crash, a LibTorch message
# without context ("internal error") or a success is a failure of this script (exit 1).
#   scripts/bad_inputs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${PAE_BIN:-$(pwd)/build}
[ -x "$bin/pae-train" ] || scripts/build.sh
out=${OUT:-docs/bad_inputs.md}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# A small valid run to break things around (synthetic data: no files needed).
cat > ok.yml <<'EOF'
data: {name: noise, synthetic_size: 300, val_size: 50}
model: {type: ae, arch: mlp, hidden: [32], latent_dim: 4}
train: {epochs: 2, batch_size: 50, threads: 1, num_samples: 8}
EOF
cat > flow.yml <<'EOF'
flow: {type: realnvp, layers: 2, hidden: 16}
train: {epochs: 2, batch_size: 50, threads: 1}
EOF
"$bin/pae-train" --config ok.yml --run-dir run > /dev/null 2>&1
"$bin/pae-flow" --config flow.yml --ae-run run --run-dir run/flow > /dev/null 2>&1
"$bin/pae-train" --config ok.yml --run-dir other --set model.latent_dim=5 > /dev/null 2>&1
# npy files written byte by byte (python3 without numpy).
npy() {  # npy FILE SHAPE [DATA_BYTES]: float32 header for SHAPE, then DATA_BYTES zero bytes
  python3 - "$@" <<'EOF'
import sys
path, shape = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 0
h = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape
h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
open(path, "wb").write(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode() + b"\0" * n)
EOF
}
npy images.npy "(20, 1, 8, 8)" 5120
npy short.npy "(20, 1, 8, 8)" 100
npy negative.npy "(20, -1, 8, 8)" 5120
npy huge.npy "(1000000, 1000000)" 64
printf 'data: {name: npy, path: %s/IMG, val_size: 5}\nmodel: {arch: mlp, hidden: [8], latent_dim: 2}\ntrain: {epochs: 1}\n' "$work" > npy.yml
cp run/checkpoints/best.pt good_best.pt

rows=()
failures=0
n=0
case_() {  # [want=TEXT] case_ "what" CMD...: runs CMD, records exit code and the error line (which must hold TEXT)
  local what=$1
  shift
  n=$((n + 1))
  set +e
  "$@" > stdout.txt 2> stderr.txt
  local rc=$?
  set -e
  local line
  # The [error] line with its continuation lines; CLI11's flag errors are the first line.
  line=$(awk '/\[error\]/ { on = 1; sub(/^\[[^]]*\] \[error\] /, ""); out = $0; next }
              on && !/^\[/ { out = out " " $0; next } { on = 0 } END { print out }' stderr.txt)
  [ -n "$line" ] || line=$(head -1 stderr.txt || true)
  line=${line//$work\//}
  line=${line//|/\\|}
  local verdict=ok
  if [ "$rc" -ne 2 ] || grep -q -E "internal error|terminate called|Exception raised from|frame #" stderr.txt ||
    [[ "$line" != *"${want:-}"* ]]; then
    verdict=FAIL
    failures=$((failures + 1))
  fi
  rows+=("| $n | $what | $rc | $line |")
  [ "$verdict" = ok ] || echo "FAIL ($rc): $what: $line${want:+ (expected: $want)}" >&2
}

T="$bin/pae-train"
F="$bin/pae-flow"
E="$bin/pae-eval"
# Configs
case_ "config file missing" "$T" --config nope.yml --run-dir r1
printf 'data:\n  name: [noise\n' > syntax.yml
case_ "YAML syntax error" "$T" --config syntax.yml --run-dir r1
printf 'data: {name: noise}\nmodel: {}\ntrainer: {epochs: 2}\n' > sect.yml
case_ "unknown section" "$T" --config sect.yml --run-dir r1
printf 'data: {name: noise}\nmodel: {latent: 4}\n' > key.yml
case_ "unknown key (typo)" "$T" --config key.yml --run-dir r1
printf 'data: {name: noise}\nmodel: {}\ntrain: {epochs: ten}\n' > type.yml
case_ "wrong type" "$T" --config type.yml --run-dir r1
printf 'data: {name: noise}\nmodel: {}\ntrain: {epochs: -3}\n' > range.yml
case_ "negative epochs" "$T" --config range.yml --run-dir r1
printf 'data: {name: noise}\nmodel: {}\ntrain:\n  epochs: 5\n  epochs: 2\n' > dup.yml
case_ "duplicate key" "$T" --config dup.yml --run-dir r1
: > empty.yml
case_ "empty config file" "$T" --config empty.yml --run-dir r1
case_ "flow config given to pae-train" "$T" --config flow.yml --run-dir r1
case_ "auto-encoder config given to pae-flow" "$F" --config ok.yml --ae-run run --run-dir r1
case_ "flow dropout annealed from epoch 0" "$F" --config flow.yml --ae-run run --run-dir r1 --set flow.dropout_anneal=0
case_ "latent_dim 2e9" "$T" --config ok.yml --run-dir r1 --set model.latent_dim=2000000000
case_ "train.threads 100000" "$T" --config ok.yml --run-dir r1 --set train.threads=100000
printf 'data: {name: noise}\nmodel: {arch: conv, channels: [8]}\n' > conv.yml
case_ "kernel larger than any image" "$T" --config conv.yml --run-dir r1 --set model.kernel=200
want="7 stride-2 convs are more than a 28-pixel image can take" \
  case_ "seven stride-2 convs on 28x28 images" "$T" --config conv.yml --run-dir r1 --set model.channels=[8,8,8,8,8,8,8]
case_ "learning rate 0" "$T" --config ok.yml --run-dir r1 --set train.lr=0
case_ "unknown optimizer" "$T" --config ok.yml --run-dir r1 --set train.optimizer=adamax
case_ "unknown model type" "$T" --config ok.yml --run-dir r1 --set model.type=gan
case_ "key the family does not use (beta for an AE)" "$T" --config ok.yml --run-dir r1 --set model.beta=2
case_ "parameter group the model lacks" "$T" --config ok.yml --run-dir r1 --set groups.disc.lr=1e-4
case_ "--set without '='" "$T" --config ok.yml --run-dir r1 --set train.epochs
case_ "--set of an unknown key" "$T" --config ok.yml --run-dir r1 --set train.epoch=3
case_ "unknown train.nonfinite policy" "$T" --config ok.yml --run-dir r1 --set train.nonfinite=ignore
# Data
case_ "unknown dataset" "$T" --config ok.yml --run-dir r1 --set data.name=imagenet
want="data.classes [42] keep none of the 300 images of dataset 'noise' split 'train', whose labels are [0]" \
  case_ "a class the data does not have" "$T" --config ok.yml --run-dir r1 --set data.classes=[42]
python3 -c "
import struct
h = \"{'descr': '<f4', 'fortran_order': False, 'shape': (20, 1, 8, 8), }\"
h += ' ' * ((64 - (10 + len(h) + 1) % 64) % 64) + '\n'
open('bright.npy', 'wb').write(b'\x93NUMPY\x01\x00' + len(h).to_bytes(2, 'little') + h.encode() + struct.pack('<f', 255.0) * 1280)"
want="bright.npy: float images must lie in [0, 1], found values in [255" \
  case_ "float images in 0..255 (not [0, 1])" "$T" --config npy.yml --run-dir r1 --set data.path="$work/bright.npy"
case_ "npy images file missing" "$T" --config npy.yml --run-dir r1 --set data.path="$work/missing_{split}.npy"
case_ "npy file truncated" "$T" --config npy.yml --run-dir r1 --set data.path="$work/short.npy"
case_ "npy header with a negative dimension" "$T" --config npy.yml --run-dir r1 --set data.path="$work/negative.npy"
case_ "npy header claiming 10^12 elements" "$T" --config npy.yml --run-dir r1 --set data.path="$work/huge.npy"
case_ "validation split larger than the data" "$T" --config npy.yml --run-dir r1 --set data.path="$work/images.npy" --set data.val_size=500
case_ "dataset folder without the files" "$T" --config ok.yml --run-dir r1 --set data.name=mnist --set data.root="$work"
npy big.npy "(20, 1, 8, 8)" 5120
case_ "PAE_SGEMM neither blas nor onednn" env PAE_SGEMM=fast "$T" --config ok.yml --run-dir r1
case_ "npy larger than PAE_MEMORY_LIMIT" env PAE_MEMORY_LIMIT=4K "$T" --config npy.yml --run-dir r1 --set data.path="$work/big.npy"
mkdir -p bomb
python3 -c "
import gzip, struct
hdr = bytes([0, 0, 8, 3]) + struct.pack('>III', 10000, 50, 50)
open('bomb/train-images-idx3-ubyte.gz', 'wb').write(gzip.compress(hdr + bytes(10000 * 50 * 50), 9))
open('bomb/train-labels-idx1-ubyte.gz', 'wb').write(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack('>I', 10000) + bytes(10000)))"
case_ "gzip IDX that inflates past the memory limit" env PAE_MEMORY_LIMIT=16M "$T" --config ok.yml --run-dir r1 --set data.name=mnist --set data.root="$work/bomb"
mkdir -p pics/a pics/b
printf '\x89PNG\r\n\x1a\nnot really' > pics/a/broken.png
cp pics/a/broken.png pics/b/broken2.png
case_ "image folder with a corrupt PNG" "$T" --config ok.yml --run-dir r1 --set data.name=image-folder --set data.root="$work/pics" --set data.val_size=0
case_ "diverging run (lr 1e6, 200+ steps)" "$T" --config ok.yml --run-dir diverged --set train.lr=1e6 --set train.batch_size=10 --set train.epochs=8
want="training diverged or learned nothing" \
  case_ "diverging run (lr 1e6, 12 steps)" "$T" --config ok.yml --run-dir diverged_short --set train.lr=1e6
want="training diverged: no epoch ended with a finite loss" \
  case_ "train.nonfinite: skip on weights gone non-finite" "$T" --config ok.yml --run-dir skipped --set train.lr=1e38 --set train.nonfinite=skip
want="ulimit -v 1200000 KiB" case_ "the conv AE on Fashion-MNIST under ulimit -v 1200000" \
  bash -c 'ulimit -v 1200000; exec "$0" "$@"' "$T" --config "$root/configs/fmnist_ae.yml" --run-dir r1 --set train.epochs=1
# Flags and run directories
case_ "--run-dir ''" "$T" --config ok.yml --run-dir ''
case_ "existing run without --resume or --force" "$T" --config ok.yml --run-dir run
case_ "--resume and --force together" "$T" --config ok.yml --run-dir run --resume --force
case_ "--resume of a run that has no checkpoint" "$T" --config ok.yml --run-dir fresh --resume
# A GPU this machine lacks (cuda:99: an error with or without CUDA), for each program that runs models.
case_ "pae-train --device on a GPU that is not here" "$T" --config ok.yml --run-dir r1 --device cuda:99
case_ "pae-flow --device on a GPU that is not here" "$F" --config flow.yml --ae-run run --run-dir r1 --device cuda:99
case_ "pae-eval --device on a GPU that is not here" "$E" recon --ae-run run --device cuda:99
case_ "pae-flow sample --device on a GPU that is not here" "$F" sample --ae-run run --flow run/flow --device cuda:99
# torchrun's environment, partial or wrong (data-parallel training)
case_ "a lone RANK=1 (no WORLD_SIZE)" env RANK=1 "$T" --config ok.yml --run-dir r1
case_ "WORLD_SIZE without RANK" env WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 "$T" --config ok.yml --run-dir r1
case_ "RANK out of range" env WORLD_SIZE=2 RANK=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 "$F" --config flow.yml --ae-run run --run-dir r1
case_ "MASTER_PORT not a number" env WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=http "$T" --config ok.yml --run-dir r1
case_ "NCCL asked for on the CPU" env WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 "$T" --config ok.yml --run-dir r1 --set train.distributed_backend=nccl
case_ "unknown distributed backend" "$T" --config ok.yml --run-dir r1 --set train.distributed_backend=mpi
case_ "no rank 0 at MASTER_ADDR:MASTER_PORT (2 s timeout)" env WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29531 "$T" --config ok.yml --run-dir r1 --set train.distributed_timeout_s=2
case_ "unknown flag" "$T" --config ok.yml --run-dir r1 --epochs 3
want="unknown subcommand 'evaluate': expected one of ood, recon" case_ "unknown pae-eval subcommand" "$E" evaluate --ae-run run
# Resume
case_ "--resume with another latent_dim" "$T" --config ok.yml --run-dir run --resume --set model.latent_dim=8
case_ "--resume with another seed and width" "$T" --config ok.yml --run-dir run --resume --set train.seed=4 --set model.hidden=[64]
flock run/.lock sleep 3 &
sleep 0.3
case_ "a second process on a run in use" "$T" --config ok.yml --run-dir run --resume --set train.epochs=3
wait
want="train.epochs 1 is fewer than the 2 epochs the run has completed" \
  case_ "--resume to fewer epochs than done" "$T" --config ok.yml --run-dir run --resume --set train.epochs=1
case_ "flow resumed on another AE's latents" "$F" --config flow.yml --ae-run other --run-dir run/flow --resume --set train.epochs=3
# Checkpoints and evaluation
case_ "pae-eval on a folder that is not a run" "$E" recon --ae-run nowhere
head -c 1000 good_best.pt > run/checkpoints/best.pt
case_ "truncated checkpoint" "$E" recon --ae-run run
printf 'not a checkpoint' > run/checkpoints/best.pt
case_ "a file that is not a checkpoint" "$E" recon --ae-run run
python3 -c "
b = bytearray(open('good_best.pt', 'rb').read())
i = b.index(b'/data/0')
b[b.index(b'PK', i) - 7] ^= 0x10
open('run/checkpoints/best.pt', 'wb').write(b)"
case_ "checkpoint with one flipped bit" "$E" recon --ae-run run
cp good_best.pt run/checkpoints/best.pt
case_ "flow of another auto-encoder" "$E" ood --ae-run other --flow run/flow
case_ "unknown OoD set" "$E" ood --ae-run run --flow run/flow --ood cifar100
case_ "unknown inpainting mask" "$E" inpaint --ae-run run --mask diagonal
case_ "Bernoulli likelihood with noise" "$E" denoise --ae-run run --sigma 0.3 --likelihood bernoulli --n 4 --steps 2
"$E" recon --ae-run run > /dev/null 2>&1
case_ "report exists (no --force)" "$E" recon --ae-run run
case_ "unknown --checkpoint" "$E" recon --ae-run run --checkpoint phase_x
case_ "--checkpoint with a flow" "$E" ood --ae-run run --flow run/flow --checkpoint last
want="--sigma-min 0.5 is larger than --sigma-max 0.1" \
  case_ "Parzen grid with --sigma-min above --sigma-max" "$E" parzen --ae-run run --sigma-min 0.5 --sigma-max 0.1
case_ "FID temperature chosen and measured on val" "$E" fid --ae-run run --flow run/flow --sets flow:auto --ref val
# The benchmark program (when built): its file flags are checked before anything runs.
B="$bin/pae-bench"
if [ -x "$B" ]; then
  case_ "pae-bench --compare: not pae-bench's JSON lines" "$B" gemm --compare syntax.yml
  printf '{"model": "vae", "per_s": 1}\n' > bench_prev.jsonl
  case_ "pae-bench --compare: no figures for the model" "$B" gemm --compare bench_prev.jsonl
  case_ "pae-bench --profile: unwritable" "$B" gemm --profile nodir/trace.json
fi

cd - > /dev/null
mkdir -p "$(dirname "$out")"
{
  echo "# Bad input: what a user sees"
  echo
  echo "Made by \`scripts/bad_inputs.sh\` (each row run, not written by hand): the exit code and the"
  echo "error line of pae-train, pae-flow, pae-eval and pae-bench for each kind of bad input. Paths are relative"
  echo "to the script's scratch folder. Every row must exit with 2 and name what is wrong."
  echo
  echo "| # | bad input | exit | what the user sees (standard error) |"
  echo "| --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "$n cases, $failures failures; wrote $out"
[ "$failures" -eq 0 ]
