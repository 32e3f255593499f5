"""The table of levels: density, early-stop iteration and test accuracy per variant."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rich.table import Table

from ticketlab.experiments.store import VARIANTS


def _stat(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def variant_order(names: Iterable[str]) -> list[str]:
    """Ticket first, then the known controls, then any newer variant by name."""
    rank = {v: i for i, v in enumerate(VARIANTS)}
    return sorted(set(names), key=lambda v: (rank.get(v, len(rank)), v))


def level_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per level: % remaining (ticket) and, per variant, per-seed value lists."""
    by_level: dict[int, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_level[r["level"]][r["variant"]].append(r)
    rows = []
    for level in sorted(by_level):
        variants = by_level[level]
        densities = [r["density"] for rs in variants.values() for r in rs]
        row: dict[str, Any] = {"level": level, "remaining": 100 * statistics.mean(densities)}
        for v, rs in variants.items():
            row[v] = {
                "early_stop_iteration": [r["early_stop_iteration"] for r in rs],
                "early_stop_test_accuracy": [r["early_stop_test_accuracy"] for r in rs],
                "seeds": [r["seed"] for r in rs],
                "diverged": [bool(r.get("diverged")) for r in rs],  # absent in old records
            }
        rows.append(row)
    return rows


def _summarize(values: list[float]) -> dict[str, float | None]:
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.mean(values), "std": std, "min": min(values), "max": max(values)}


def level_stats(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`level_rows` reduced to mean, sample std, min and max: the numbers every report shows.

    One row per level: {"level", "remaining" (%), "variants": {variant: {"n_seeds",
    "early_stop_iteration": stats, "test_accuracy_pct": stats}}}, ticket first.
    """
    stats = []
    for row in level_rows(records):
        variants = variant_order(k for k in row if k not in ("level", "remaining"))
        stats.append({"level": row["level"], "remaining": row["remaining"], "variants": {
            v: {"n_seeds": len(row[v]["seeds"]),
                "early_stop_iteration": _summarize(row[v]["early_stop_iteration"]),
                "test_accuracy_pct": _summarize(
                    [100 * a for a in row[v]["early_stop_test_accuracy"]])}
            for v in variants}})
    return stats


def levels_table(summary: dict[str, Any], title: str | None = None) -> Table:
    rows = level_rows(summary["records"])
    present = variant_order(r["variant"] for r in summary["records"])
    n_seeds = len({r["seed"] for r in summary["records"]})
    caption = (f"mean ± std over {n_seeds} seeds; " if n_seeds > 1 else "") + \
        "test accuracy at the early-stop iteration (lowest validation loss)"
    table = Table(title=title, caption=caption)
    table.add_column("level", justify="right")
    table.add_column("% weights\nremaining", justify="right")
    for v in present:
        table.add_column(f"{v}\nearly stop (it)", justify="right")
        table.add_column(f"{v}\ntest acc (%)", justify="right")
    for row in rows:
        cells = [str(row["level"]), f"{row['remaining']:.1f}"]
        for v in present:
            if v == "ticket" or row["level"] > 0:
                cell = row.get(v, {})
                its = [i for i in cell.get("early_stop_iteration", []) if i is not None]
                accs = [100 * a for a in cell.get("early_stop_test_accuracy", []) if a is not None]
                n_diverged = sum(cell.get("diverged", []))
                mark = "" if not n_diverged else " (diverged)" if n_diverged == len(
                    cell["diverged"]) else f" ({n_diverged} diverged)"
                cells.append(_stat(its, ".0f") + mark if its else mark.strip(" ()") or "-")
                cells.append(_stat(accs, ".2f") if accs else "-")
            else:
                cells += ["", ""]
        table.add_row(*cells)
    return table
