#!/usr/bin/env bash
# Throughput of `pae-bench ae` quiet and with a competing single-thread busy process started
# 5 s after it, back to back, REPEAT times; prints each pair and the medians (images/s over the
# whole run: all epochs' images over their seconds). A benchmark, not a test: run it on a quiet
# machine.
#   bench/under_load.sh [REPEAT=3] [pae-bench args, default: --epochs 2]
#   env GOMP_SPINCOUNT=... bench/under_load.sh   # the environment reaches pae-bench
set -euo pipefail
cd "$(dirname "$0")/.."
repeat=${1:-3}
shift || true
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--epochs 2)
log=$(mktemp)
trap 'rm -f "$log"; kill $(jobs -p) 2>/dev/null || true' EXIT
rate() {  # images/s of the run in $log: images per epoch x epochs / sum of epoch seconds
  python3 - "$log" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
seconds = [float(s) for s in re.findall(r"epoch \d+/\d+: .*?, ([0-9.]+)s$", text, re.M)]
result = json.loads([l for l in text.splitlines() if l.startswith("{")][-1])
print(f"{result['details']['images'] * len(seconds) / sum(seconds):.0f}")
PY
}
run() {  # run LOADED
  ${PAE_BIN:-build}/pae-bench ae "${args[@]}" > "$log" 2>&1 &
  local bench=$! busy=""
  if [ "$1" = 1 ]; then
    sleep 5
    (while :; do :; done) &
    busy=$!
  fi
  wait "$bench"
  [ -z "$busy" ] || kill "$busy"
  rate
}
quiet=() loaded=()
for i in $(seq "$repeat"); do
  quiet+=("$(run 0)")
  loaded+=("$(run 1)")
  echo "run $i: quiet ${quiet[-1]} img/s, loaded ${loaded[-1]} img/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
q=$(median "${quiet[@]}") l=$(median "${loaded[@]}")
echo "median: quiet $q img/s, loaded $l img/s: $(python3 -c "print(f'{100 * $l / $q:.0f}')")% of quiet"
