#!/usr/bin/python3
"""Per-op table of a `pae-bench ... --profile TRACE.json` Chrome trace (LibTorch's profiler).

    bench/profile_summary.py TRACE.json [--top 25] [--steps N]

Self time of each op (its duration less the ops it called), summed over the trace, as a share of
the profiled wall time (first event to last); with --steps, also microseconds per training step.
Also the backward nodes (autograd::engine::evaluate_function: ...) by inclusive time. Only the
calling thread is recorded, so an op that spreads over the intra-op threads counts once, as wall
time.
"""
import argparse
import collections
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--steps", type=int, default=0, help="training steps in the trace (for us/step)")
    a = ap.parse_args()
    events = [e for e in json.load(open(a.trace)) if e.get("ph") == "X"]
    if not events:
        raise SystemExit(f"{a.trace}: no complete ('X') events")
    wall = max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events)
    self_time, calls, nodes = collections.Counter(), collections.Counter(), collections.Counter()
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e["tid"]].append(e)
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, name, child time]
        for e in evs:
            end = e["ts"] + e["dur"]
            while stack and stack[-1][0] <= e["ts"]:
                done = stack.pop()
                self_time[done[1]] += done[3] - done[2]
            if stack:
                stack[-1][2] += e["dur"]
            stack.append([end, e["name"], 0.0, e["dur"]])
            calls[e["name"]] += 1
            if e["name"].startswith("autograd::engine::evaluate_function: "):
                nodes[e["name"].split(": ", 1)[1]] += e["dur"]
        for done in stack:
            self_time[done[1]] += done[3] - done[2]
    per = f" {'us/step':>9}" if a.steps else ""
    print(f"profiled wall time {wall / 1e3:.1f} ms, {len(events)} events\n")
    print(f"{'op (self time)':<56} {'ms':>9} {'share':>7} {'calls':>8}{per}")
    for name, t in self_time.most_common(a.top):
        step = f" {t / a.steps:9.1f}" if a.steps else ""
        print(f"{name[:56]:<56} {t / 1e3:9.1f} {100 * t / wall:6.1f}% {calls[name]:8d}{step}")
    print(f"\n{'backward node (inclusive)':<56} {'ms':>9} {'share':>7}")
    for name, t in nodes.most_common(min(a.top, 15)):
        print(f"{name[:56]:<56} {t / 1e3:9.1f} {100 * t / wall:6.1f}%")


if __name__ == "__main__":
    main()
