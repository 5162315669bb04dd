#!/usr/bin/python3
"""Summary of bench/compare.sh's JSON lines (stdin or a file): per model and contender, the median
rate, its spread and runs, the ratio of the median to PyTorch's better thread setting, and the
median (and range) of the per-round ratios to PyTorch's better setting in the same round: the
contenders of one round run within a minute of each other, so these ratios hold when the virtual
machine's speed drifts between rounds. Where the rounds also ran PyTorch on OpenBLAS's AVX-512
kernels (compare.sh -x), a last column gives the per-round ratios to its better setting too."""
import collections
import json
import statistics
import sys


def rate(d):
    return d.get("per_s") or d.get("images_per_s") or d.get("samples_per_s")


TORCH = ("pytorch-2-threads", "pytorch-1-thread")
TORCH_AVX512 = ("pytorch-avx512-2-threads", "pytorch-avx512-1-thread")


def per_round(by_round, m, label, references):
    """Median (range) of label's ratio to the better of `references` in each round, or '-'."""
    ratios = []
    for (mr, _), got in by_round.items():
        ref = [got[l] for l in references if l in got]
        if mr == m and label in got and ref:
            ratios.append(got[label] / max(ref))
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else "-"


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
    avx512 = any(k[1] in TORCH_AVX512 for k in runs)
    print(f"{'model':<8} {'who':<24} {'median/s':>10} {'min':>10} {'max':>10} {'runs':>5} {'vs PyTorch best':>16}"
          f" {'per round: median (range)':>28}" + (f" {'vs PyTorch AVX-512, per round':>30}" if avx512 else ""))
    for m in dict.fromkeys(k[0] for k in runs):
        torch_runs = [statistics.median(runs[(m, l)]) for l in TORCH if (m, l) in runs]
        best = max(torch_runs) if torch_runs else float("nan")
        for (mm, label), v in runs.items():
            if mm == m:
                med = statistics.median(v)
                line = (f"{m:<8} {label:<24} {med:10.0f} {min(v):10.0f} {max(v):10.0f} {len(v):5d} {med / best:15.2f}x"
                        f" {per_round(by_round, m, label, TORCH):>28}")
                if avx512:
                    line += f" {per_round(by_round, m, label, TORCH_AVX512):>30}"
                print(line)


if __name__ == "__main__":
    main()
