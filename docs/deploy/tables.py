"""Prints docs/deploy.md's tables from the kept measurements (deploy.json, written by
benchmarks/deploy.py): python docs/deploy/tables.py"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    result = json.loads((HERE / "deploy.json").read_text())
    print(f"`{result['command']}`: torch {result['torch']}, {result['threads']} thread(s), "
          f"{result['seconds']} s\n")
    rows = result["series"].get("unstructured", {}).get("rows", [])
    if rows:
        print("| level | weights left | CSR layers | batch 1 | batch 64 | batch 256 |")
        print("|---:|---:|---:|---:|---:|---:|")
        for level in sorted({r["level"] for r in rows}):
            cells = {r["batch"]: r for r in rows if r["level"] == level and r["model"] != "dense"}
            any_row = next(iter(cells.values()))
            print(f"| {level} | {100 * any_row['density']:.2f}% | {any_row['csr_layers']} | " +
                  " | ".join(f"{cells[b]['speedup']:.1f}x" for b in (1, 64, 256)) + " |")
        print()
        print("| level | batch | dense (ms) | sparse (ms) | sparse p90 (ms) | dense MB | sparse MB |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for level in (0, 11, 18, 20):
            for b in (1, 64, 256):
                d = next((r for r in rows if (r["level"], r["batch"], r["model"]) ==
                          (level, b, "dense")), None)
                s = next((r for r in rows if (r["level"], r["batch"], r["model"]) ==
                          (level, b, "sparse")), None)
                if d and s:
                    print(f"| {level} | {b} | {d['median_ms']:.3f} | {s['median_ms']:.3f} | "
                          f"{s['p90_ms']:.3f} | {d['peak_memory_mb']:.2f} | "
                          f"{s['peak_memory_mb']:.2f} |")
        print()
    rows = result["series"].get("structured", {}).get("rows", [])
    if rows:
        print("| level | weights left | ideal (MACs) | batch | compact vs dense | compact vs dense "
              "channels-last (share of ideal) | ONNX compact vs ONNX dense (share of ideal) | "
              "ONNX compact vs dense PyTorch |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for level in sorted({r["level"] for r in rows}):
            for b in (1, 64, 256):
                c = next(r for r in rows if (r["level"], r["batch"], r["model"]) ==
                         (level, b, "compact"))
                o = next(r for r in rows if (r["level"], r["batch"], r["model"]) ==
                         (level, b, "compact onnx"))
                print(f"| {level} | {100 * c['density']:.2f}% | {c['ideal']:.1f}x | {b} | "
                      f"{c['speedup']:.1f}x | {c['like_for_like']:.1f}x ({c['of_ideal']:.2f}) | "
                      f"{o['like_for_like']:.1f}x ({o['of_ideal']:.2f}) | {o['speedup']:.1f}x |")


if __name__ == "__main__":
    main()
