#!/usr/bin/python3
"""Summary of bench/compare.sh's JSON lines (stdin or a file): per model and contender, the median
rate, its spread and runs, the ratio of the median to PyTorch's better thread setting, and the
median (and range) of the per-round ratios to PyTorch's better setting in the same round: the
contenders of one round run within a minute of each other, so these ratios hold when the virtual
machine's speed drifts between rounds."""
import collections
import json
import statistics
import sys


def rate(d):
    return d.get("per_s") or d.get("images_per_s") or d.get("samples_per_s")


def main():
    lines = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
    runs = collections.defaultdict(list)
    by_round = collections.defaultdict(dict)
    for line in lines:
        if line.strip():
            d = json.loads(line)
            m = d.get("model") or d.get("flow")
            runs[(m, d["label"])].append(rate(d))
            by_round[(m, d.get("round"))][d["label"]] = rate(d)
    print(f"{'model':<8} {'who':<18} {'median/s':>10} {'min':>10} {'max':>10} {'runs':>5} {'vs PyTorch best':>16}"
          f" {'per round: median (range)':>28}")
    for m in dict.fromkeys(k[0] for k in runs):
        torch_runs = [statistics.median(runs[(m, l)]) for l in ("pytorch-2-threads", "pytorch-1-thread")
                      if (m, l) in runs]
        best = max(torch_runs) if torch_runs else float("nan")
        for (mm, label), v in runs.items():
            if mm == m:
                med = statistics.median(v)
                ratios = []
                for (mr, _), got in by_round.items():
                    torch_round = [got[l] for l in ("pytorch-2-threads", "pytorch-1-thread") if l in got]
                    if mr == m and label in got and torch_round:
                        ratios.append(got[label] / max(torch_round))
                per_round = (f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                             if ratios else "-")
                print(f"{m:<8} {label:<18} {med:10.0f} {min(v):10.0f} {max(v):10.0f} {len(v):5d} {med / best:15.2f}x"
                      f" {per_round:>28}")


if __name__ == "__main__":
    main()
