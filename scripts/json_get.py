#!/usr/bin/env python3
"""json_get.py FILE PATH...: prints the value at PATH in a JSON (or JSON-lines) file, or nothing.

Each step of PATH is a key, or k=v[,k=v...] to pick the first element of a list whose keys have
those values (e.g. `results set=mnist:test,score=recon_mse auroc`). The reproduction scripts read
reports through it rather than by pattern, since a report's layout may change.
"""
import json
import sys


def main(argv):
    path, steps = argv[1], argv[2:]
    with open(path) as f:
        value = [json.loads(line) for line in f if line.strip()] if path.endswith(".jsonl") else json.load(f)
    for step in steps:
        if "=" in step:
            want = dict(kv.split("=", 1) for kv in step.split(","))
            value = next(x for x in value if all(str(x.get(k)) == w for k, w in want.items()))
        else:
            value = value[step]
    print(value)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except Exception:
        pass
