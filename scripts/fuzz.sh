#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, AddressSanitizer + UndefinedBehaviorSanitizer,
# coverage feedback over all of pae) into build-fuzz, then runs each for a bounded time on a
# working copy of its seed corpus (tests/fuzz_corpus/<target>/), and prints per target the
# executions, the edge coverage and the features libFuzzer reports at the end.
#   scripts/fuzz.sh [SECONDS per target, default 600] [TARGET ...]   (idx npy image config checkpoint)
# A crash, a sanitizer report, an uncaught non-pae exception, a single allocation over 1 GiB or an
# input running over 10 s stops the target and leaves the input as build-fuzz/fuzz-runs/<target>/crash-*
# (or oom-*, timeout-*): add it to tests/fuzz_corpus/<target>/ once fixed, and it is a regression
# test from then on (tests/CMakeLists.txt replays every corpus file through the normal build).
# Needs clang, libFuzzer and libomp: scripts/setup.sh --fuzz installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(idx npy image config checkpoint)
build=${BUILD_DIR:-build-fuzz}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DPAE_FUZZ=ON \
  -DPAE_BUILD_TESTS=OFF -DPAE_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target "${targets[@]/#/fuzz_}"
out=${FUZZ_OUT:-$build/fuzz-runs}
status=0
for t in "${targets[@]}"; do
  mkdir -p "$out/$t/corpus"
  cp -n tests/fuzz_corpus/"$t"/* "$out/$t/corpus/"
  log="$out/$t/fuzz.log"
  echo "fuzz_$t: ${secs} s on $(ls "$out/$t/corpus" | wc -l) corpus inputs (log: $log)"
  # Readers refuse what would pass 256 MiB (PAE_MEMORY_LIMIT); libFuzzer flags anything bigger that
  # still gets allocated.
  if ! PAE_MEMORY_LIMIT=${PAE_MEMORY_LIMIT:-256M} OMP_NUM_THREADS=1 \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$build/fuzz/fuzz_$t" -max_total_time="$secs" -rss_limit_mb=3072 -malloc_limit_mb=1024 -timeout=10 \
    -detect_leaks=0 -print_final_stats=1 -artifact_prefix="$out/$t/" "$out/$t/corpus" >"$log" 2>&1; then
    status=1
    echo "fuzz_$t: FAILED; the input and the report are in $out/$t/:"
    grep -E "ERROR|SUMMARY|terminate|Exception" "$log" | head -5 || true
  fi
  done_line=$(grep -E "^#[0-9]+.*(DONE|cov:)" "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  echo "fuzz_$t: ${execs:-?} executions (${rate:-?}/s); last status: ${done_line:-none}"
done
exit $status
