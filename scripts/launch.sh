#!/usr/bin/env bash
# Starts N local workers of a program with the environment torchrun gives its workers, for
# machines without a working torchrun (Debian 12's fails under its Python 3.11):
#   scripts/launch.sh N [--nnodes K --node-rank R] [--master-addr A] [--master-port P] -- PROGRAM ARGS...
# is what `torchrun --nproc_per_node=N --nnodes=K --node_rank=R --master_addr=A --master_port=P
# --no_python PROGRAM ARGS...` starts (static rendezvous). Each worker gets RANK, LOCAL_RANK,
# WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, ROLE_RANK, ROLE_WORLD_SIZE, ROLE_NAME, MASTER_ADDR,
# MASTER_PORT, TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT, TORCHELASTIC_MAX_RESTARTS and
# OMP_NUM_THREADS=1 unless set. Worker i's output lines start with "[i] " (its global rank).
# When a worker fails, the others get --grace seconds (default 60) to stop by themselves, then
# SIGTERM. Exit status: the first failing worker's, else 0.
set -uo pipefail
usage() { sed -n '2,12p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
nproc=$1
shift
nnodes=1 node_rank=0 addr=127.0.0.1 port=29500 grace=60
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case $1 in
    --nnodes) nnodes=$2; shift 2 ;;
    --node-rank) node_rank=$2; shift 2 ;;
    --master-addr) addr=$2; shift 2 ;;
    --master-port) port=$2; shift 2 ;;
    --grace) grace=$2; shift 2 ;;
    *) echo "launch.sh: unknown option $1" >&2; usage ;;
  esac
done
[ "${1:-}" = "--" ] || usage
shift
[ $# -ge 1 ] || usage
[[ $nproc =~ ^[1-9][0-9]*$ && $nnodes =~ ^[1-9][0-9]*$ && $node_rank =~ ^[0-9]+$ ]] || usage
world=$((nproc * nnodes))
run_id=${TORCHELASTIC_RUN_ID:-none}
pids=()
for ((local = 0; local < nproc; local++)); do
  rank=$((node_rank * nproc + local))
  (
    export RANK=$rank LOCAL_RANK=$local WORLD_SIZE=$world LOCAL_WORLD_SIZE=$nproc GROUP_RANK=$node_rank \
      ROLE_RANK=$rank ROLE_WORLD_SIZE=$world ROLE_NAME=default MASTER_ADDR=$addr MASTER_PORT=$port \
      TORCHELASTIC_RUN_ID=$run_id TORCHELASTIC_RESTART_COUNT=0 TORCHELASTIC_MAX_RESTARTS=0 \
      OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    exec "$@" > >(sed -u "s/^/[$rank] /") 2> >(sed -u "s/^/[$rank] /" >&2)
  ) &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' INT TERM
status=0
left=${#pids[@]}
deadline=""
while [ "$left" -gt 0 ]; do
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    [ -n "$pid" ] || continue
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      rc=$?
      pids[$i]=""
      left=$((left - 1))
      if [ "$rc" -ne 0 ]; then
        echo "launch.sh: worker $((node_rank * nproc + i)) exited with status $rc" >&2
        if [ "$status" -eq 0 ]; then
          status=$rc
          deadline=$((SECONDS + grace))
        fi
      fi
    fi
  done
  if [ -n "$deadline" ] && [ "$SECONDS" -ge "$deadline" ] && [ "$left" -gt 0 ]; then
    echo "launch.sh: stopping the workers still running ${grace} s after the first failure" >&2
    for pid in "${pids[@]}"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; done
    deadline=""
  fi
  [ "$left" -gt 0 ] && sleep 0.2
done
exit "$status"
