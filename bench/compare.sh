#!/usr/bin/env bash
# Back-to-back throughput of pae and the same models in PyTorch (bench/pytorch_compare.py).
#
#   bench/compare.sh [-r ROUNDS] [-o OUT.jsonl] [-b BASELINE_PAE_BENCH] [-x] [MODEL ...]
#
# Each round runs, one after another and nothing beside them, for each model (default vae ae
# realnvp nsf): build/pae-bench (2 threads, OpenBLAS 1), the baseline pae-bench if given, and
# PyTorch at both thread settings of the comparison ("OPENBLAS_NUM_THREADS=1 with 2 torch
# threads" and "1 torch thread"); with -x also PyTorch on OpenBLAS's AVX-512 kernels
# (OPENBLAS_CORETYPE=SkylakeX, which OpenBLAS 0.3.21 does not pick on Zen 4 by itself) at both
# settings, a second reference beside the comparison's. Every result is a JSON line in OUT (default
# runs/bench_compare.jsonl, appended); the summary prints medians, spreads and ratios to
# PyTorch's better setting. The conv AE trains on 10,000 images (--limit), the rest on all.
# Results go to files, not pipes: a process started beside pae-bench while it measures the idle
# cores makes it choose passive OpenMP waiting (README: "Shared machines"), halving its speed.
set -euo pipefail
rounds=3 out=runs/bench_compare.jsonl baseline="" avx512=0
while getopts "r:o:b:x" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    o) out=$OPTARG ;;
    b) baseline=$OPTARG ;;
    x) avx512=1 ;;
    *) echo "usage: $0 [-r ROUNDS] [-o OUT.jsonl] [-b BASELINE_PAE_BENCH] [-x] [MODEL ...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(vae ae realnvp nsf)
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${PAE_BENCH:-$here/build/pae-bench}
[ -x "$bench" ] || { echo "compare: $bench not built (scripts/build.sh)" >&2; exit 1; }
[ -z "$baseline" ] || [ -x "$baseline" ] || { echo "compare: baseline $baseline is not executable" >&2; exit 1; }
/usr/bin/python3 -c 'import torch' 2>/dev/null ||
  { echo "compare: Debian's PyTorch is missing (apt-get install python3-torch)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
record() {  # record LABEL COMMAND...: runs it, its JSON line tagged with the label and round
  local label=$1
  shift
  "$@" > "$tmp" 2> /dev/null || { echo "compare: '$*' failed" >&2; exit 1; }
  /usr/bin/python3 - "$label" "$round" "$tmp" >> "$out" <<'PY'
import json, sys
label, rnd, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
line = [l for l in open(path) if l.startswith("{")][-1]
d = json.loads(line)
d["label"], d["round"] = label, rnd
print(json.dumps(d))
PY
}
start=0
[ -f "$out" ] && start=$(wc -l < "$out")
for round in $(seq 1 "$rounds"); do
  for m in "${models[@]}"; do
    limit=() epochs=2
    [ "$m" = ae ] && limit=(--limit 10000)
    echo "round $round/$rounds: $m" >&2
    record pae "$bench" "$m" --epochs $epochs "${limit[@]}"
    [ -n "$baseline" ] && record baseline "$baseline" "$m" --epochs $epochs "${limit[@]}"
    record "pytorch-2-threads" env OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$here/bench/pytorch_compare.py" "$m" \
      --threads 2 --epochs $epochs "${limit[@]}"
    record "pytorch-1-thread" env OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$here/bench/pytorch_compare.py" "$m" \
      --threads 1 --epochs $epochs "${limit[@]}"
    if [ "$avx512" = 1 ]; then
      record "pytorch-avx512-2-threads" env OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 \
        "$here/bench/pytorch_compare.py" "$m" --threads 2 --epochs $epochs "${limit[@]}"
      record "pytorch-avx512-1-thread" env OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 \
        "$here/bench/pytorch_compare.py" "$m" --threads 1 --epochs $epochs "${limit[@]}"
    fi
  done
done
tail -n +"$((start + 1))" "$out" | /usr/bin/python3 "$here/bench/compare_summary.py"
