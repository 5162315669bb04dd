#!/usr/bin/python3
"""Summary of bench/compare.sh's JSON lines (stdin or a file): per model and contender, the median
rate, its spread and runs, and the ratio of the median to PyTorch's better thread setting."""
import collections
import json
import statistics
import sys


def rate(d):
    return d.get("per_s") or d.get("images_per_s") or d.get("samples_per_s")


def main():
    lines = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
    runs = collections.defaultdict(list)
    for line in lines:
        if line.strip():
            d = json.loads(line)
            runs[(d.get("model") or d.get("flow"), d["label"])].append(rate(d))
    print(f"{'model':<8} {'who':<18} {'median/s':>10} {'min':>10} {'max':>10} {'runs':>5} {'vs PyTorch best':>16}")
    for m in dict.fromkeys(k[0] for k in runs):
        torch_runs = [statistics.median(runs[(m, l)]) for l in ("pytorch-2-threads", "pytorch-1-thread")
                      if (m, l) in runs]
        best = max(torch_runs) if torch_runs else float("nan")
        for (mm, label), v in runs.items():
            if mm == m:
                med = statistics.median(v)
                print(f"{m:<8} {label:<18} {med:10.0f} {min(v):10.0f} {max(v):10.0f} {len(v):5d} {med / best:15.2f}x")


if __name__ == "__main__":
    main()
