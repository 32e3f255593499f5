"""docs/deploy.md's tables, from the kept measurements (deploy.json and breakdown.json,
written by benchmarks/deploy.py): `python docs/deploy/tables.py` prints them, `--write`
puts them into docs/deploy.md between its `<!-- tables.py: NAME -->` markers."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _row(rows: list[dict], level: int, batch: int, model: str) -> dict | None:
    return next((r for r in rows if (r["level"], r["batch"], r["model"]) ==
                 (level, batch, model)), None)


def unstructured(result: dict) -> str:
    rows = result["series"]["unstructured"]["rows"]
    lines = ["| level | weights left | CSR layers | batch 1 | batch 64 | batch 256 |",
             "|---:|---:|---:|---:|---:|---:|"]
    for level in sorted({r["level"] for r in rows}):
        cells = {r["batch"]: r for r in rows if r["level"] == level and r["model"] != "dense"}
        first = cells[min(cells)]
        lines.append(f"| {level} | {100 * first['density']:.2f}% | {first['csr_layers']} | " +
                     " | ".join(f"{cells[b]['speedup']:.1f}x" for b in (1, 64, 256)) + " |")
    return "\n".join(lines)


def latency(result: dict) -> str:
    rows = result["series"]["unstructured"]["rows"]
    lines = ["| level | batch | dense (ms) | sparse (ms) | sparse p90 (ms) | dense MB | "
             "sparse MB |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for level, batch in ((0, 64), (11, 1), (11, 64), (18, 1), (18, 64), (18, 256), (20, 64)):
        d, s = _row(rows, level, batch, "dense"), _row(rows, level, batch, "sparse")
        if d and s:
            lines.append(f"| {level} | {batch} | {d['median_ms']:.3f} | {s['median_ms']:.3f} | "
                         f"{s['p90_ms']:.3f} | {d['peak_memory_mb']:.2f} | "
                         f"{s['peak_memory_mb']:.2f} |")
    return "\n".join(lines)


def breakdown(data: dict) -> str:
    us = {r["model"]: 1e3 * r["median_ms"] for r in data["rows"]}

    def get(prefix: str) -> float:
        return next(v for k, v in us.items() if k.startswith(prefix))

    whole_d, whole_s = us["dense: whole"], us["sparse: whole"]
    return "\n".join([
        "| part | dense (µs) | sparse export (µs) |", "|---|---:|---:|",
        f"| whole network | {whole_d:.1f} | {whole_s:.1f} ({whole_d / whole_s:.1f}x) |",
        f"| fc1 | {get('dense: fc1 ('):.1f} | {get('sparse: fc1 ('):.1f}, of which "
        f"{get('sparse: fc1, its input'):.1f} is its input's layout change |",
        f"| fc2 | {get('dense: fc2 ('):.1f} | {get('sparse: fc2 ('):.1f} |",
        f"| fc3 (dense in both) | {get('dense: fc3 ('):.1f} | {get('sparse: fc3 ('):.1f} |",
        f"| the two ReLUs | {get('dense: fc1 relu') + get('dense: fc2 relu'):.1f} | "
        f"{get('sparse: fc1 relu') + get('sparse: fc2 relu'):.1f} |"])


def structured(result: dict) -> str:
    rows = result["series"]["structured"]["rows"]
    lines = ["| level | weights left | ideal (MACs) | batch | compact vs dense | compact vs "
             "dense channels-last (share of ideal) | ONNX compact vs ONNX dense (share of "
             "ideal) | ONNX compact vs dense PyTorch |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for level in sorted({r["level"] for r in rows}):
        for b in (1, 64, 256):
            c, o = _row(rows, level, b, "compact"), _row(rows, level, b, "compact onnx")
            lines.append(f"| {level} | {100 * c['density']:.2f}% | {c['ideal']:.1f}x | {b} | "
                         f"{c['speedup']:.1f}x | {c['like_for_like']:.1f}x ({c['of_ideal']:.2f}) "
                         f"| {o['like_for_like']:.1f}x ({o['of_ideal']:.2f}) | "
                         f"{o['speedup']:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    result = json.loads((HERE / "deploy.json").read_text())
    tables = {"unstructured": unstructured(result), "latency": latency(result),
              "structured": structured(result),
              "breakdown": breakdown(json.loads((HERE / "breakdown.json").read_text())),
              "sparse_linear": "```\n" + "\n".join(
                  (HERE / "sparse_linear.txt").read_text().splitlines()[1:]) + "\n```"}
    if "--write" not in sys.argv:
        print(f"{result['command']}: torch {result['torch']}, {result['seconds']} s\n")
        for name, text in tables.items():
            print(f"{name}:\n{text}\n")
        return
    doc = HERE.parent / "deploy.md"
    text = doc.read_text()
    for name, table in tables.items():
        pattern = re.compile(rf"(<!-- tables.py: {name} -->\n).*?(\n<!-- /tables.py -->)", re.S)
        text, n = pattern.subn(lambda m, t=table: m.group(1) + t + m.group(2), text)
        assert n == 1, f"docs/deploy.md has no <!-- tables.py: {name} --> block"
    doc.write_text(text)
    print(f"updated {doc}")


if __name__ == "__main__":
    main()
