#!/usr/bin/env python3
"""Reads a pae run's TensorBoard events with the tensorboard package's own EventAccumulator and checks
them against the run's metrics.jsonl: every finite number of every epoch is a scalar of that tag at
that step with that value (float32), and the reconstructions/samples images and the latents'
histograms are there. Exit 0 when all hold; what differs is printed.
  python3 scripts/check_tensorboard.py RUN_DIR"""
import json
import math
import pathlib
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run = pathlib.Path(sys.argv[1])
acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
acc.Reload()
tags = acc.Tags()
problems, checked = [], 0
for line in (run / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    epoch = record["epoch"]
    for key, value in record.items():
        if key in ("epoch", "phase") or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        events = {e.step: e.value for e in acc.Scalars(key)} if key in tags["scalars"] else {}
        if epoch not in events:
            problems.append(f"scalar {key} at step {epoch}: missing")
        elif not math.isclose(events[epoch], value, rel_tol=1e-6, abs_tol=1e-30):
            problems.append(f"scalar {key} at step {epoch}: {events[epoch]} in the events, {value} in metrics.jsonl")
        checked += 1
for kind, wanted in (("images", ("reconstructions", "samples")), ("histograms", ("latents",))):
    for tag in wanted:
        if tag not in tags[kind]:
            problems.append(f"{kind[:-1]} {tag}: missing (have {tags[kind]})")
print(f"{checked} scalars checked; images {tags['images']}; histograms {len(tags['histograms'])}")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
