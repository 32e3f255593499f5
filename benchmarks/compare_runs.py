"""Compares the units two runs have in common: what a change of kernels (or of thread count)
does to the numbers a run reports.

For each unit (seed, level, variant) in both runs: the early-stop iteration, the test
accuracy there and at the end, at how many evaluations the validation accuracy differs
and by how much at most, whether the final weights are bit-identical (the files' hashes in
result.json), and the layers the second run trained with sparse kernels. It reads only
summary.json, result.json and metrics.csv, so it works on the records kept in docs.

Run:
    python benchmarks/compare_runs.py RUN_A RUN_B
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def units(run: Path) -> dict[tuple[int, int, str], Path]:
    found = {}
    for result in sorted(run.glob("seed_*/level_*/*/result.json")):
        r = json.loads(result.read_text())
        found[(r["seed"], r["level"], r["variant"])] = result.parent
    return found


def val_accuracy(unit: Path) -> dict[int, float]:
    with open(unit / "metrics.csv") as f:
        return {int(r["iteration"]): float(r["accuracy"]) for r in csv.DictReader(f)
                if r["split"] == "val"}


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    a, b = units(args.a), units(args.b)
    common = sorted(set(a) & set(b))
    if not common:
        raise SystemExit("no unit in common: compare two runs of one experiment")
    print(f"A: {args.a.name}\nB: {args.b.name}")
    print("seed level variant  density | early stop A / B | test acc there A / B | final A / B "
          "| val acc differs (max) | final weights | B's sparse layers")
    moved = 0
    for key in common:
        ra = json.loads((a[key] / "result.json").read_text())
        rb = json.loads((b[key] / "result.json").read_text())
        va, vb = val_accuracy(a[key]), val_accuracy(b[key])
        shared = sorted(set(va) & set(vb))
        differ = [i for i in shared if va[i] != vb[i]]
        most = max((abs(va[i] - vb[i]) for i in shared), default=0.0)
        same = ra.get("files", {}).get("final.safetensors") == \
            rb.get("files", {}).get("final.safetensors")
        moved += ra["early_stop_iteration"] != rb["early_stop_iteration"]
        print(f"{key[0]:4d} {key[1]:5d} {key[2]:7s} {100 * ra['density']:7.2f}% | "
              f"{ra['early_stop_iteration']:>6} / {rb['early_stop_iteration']:<6} | "
              f"{pct(ra['early_stop_test_accuracy'])} / {pct(rb['early_stop_test_accuracy'])} | "
              f"{pct(ra['final_test_accuracy'])} / {pct(rb['final_test_accuracy'])} | "
              f"{len(differ)}/{len(shared)} ({100 * most:.2f} points) | "
              f"{'identical' if same else 'differ'} | {','.join(rb.get('sparse_layers') or [])}")
    print(f"{moved} of {len(common)} units stop early at another iteration")


if __name__ == "__main__":
    main()
