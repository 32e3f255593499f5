"""Prints this page's tables from the kept records (records/<run>/{summary,config}.json).

    python docs/reproductions/sparsify_conv4_fashion/tables.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent / "records"


def runs() -> list[tuple[dict, list[dict]]]:
    out = []
    for d in sorted(HERE.iterdir()):
        config = json.loads((d / "config.json").read_text())
        out.append((config["science"], json.loads((d / "summary.json").read_text())["records"]))
    return out


def pct(values: list[float]) -> str:
    values = [100 * v for v in values if v is not None]
    if not values:
        return "-"
    each = " / ".join(f"{v:.2f}" for v in values)
    if len(values) == 1:
        return each
    return f"{statistics.mean(values):.2f} ({each})"


def main() -> None:
    rows = []
    for science, records in runs():
        if not records:
            continue  # a run still in progress
        s, p = science.get("sparsify"), science["pruning"]
        train = science["training"]["train"]
        if s:
            kind = "sparsify " + s.get("sparsity_schedule", "agp")
            if s.get("lth"):
                kind += f" lth, rewind {science['rewind']}"
            rows.append((kind, p.get("granularity", "weight"), p["scope"], train,
                         records[0]["density"], pct([r["early_stop_test_accuracy"] for r in records]),
                         pct([r["final_test_accuracy"] for r in records]),
                         ",".join(str(r["early_stop_iteration"]) for r in records)))
            continue
        for level in sorted({r["level"] for r in records}):
            at = [r for r in records if r["level"] == level and r["variant"] == "ticket"]
            kind = "dense" if level == 0 else f"IMP level {level}"
            rows.append((kind, p.get("granularity", "weight") if level else "-", p["scope"],
                         train, statistics.mean(r["density"] for r in at),
                         pct([r["early_stop_test_accuracy"] for r in at]),
                         pct([r["final_test_accuracy"] for r in at]),
                         ",".join(str(r["early_stop_iteration"]) for r in at)))
    print("| what | granularity | scope | train | % weights remaining | test acc at early stop "
          "(%), mean (per seed) | final test acc (%) | early stop (it) |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, g, scope, train, density, es, final, its in rows:
        print(f"| {kind} | {g} | {scope} | {train} | {100 * density:.1f} | {es} | {final} | {its} |")


if __name__ == "__main__":
    main()
