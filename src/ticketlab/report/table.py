"""The table of levels: density, early-stop iteration and test accuracy per variant.

Records written before a key existed lack it, and a diverged unit (flag `diverged`, or a
non-finite number) may carry nulls: such a unit is counted apart and left out of every mean.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rich.table import Table

from ticketlab.experiments.store import VARIANTS

# per-unit fractions or iterations that a level row collects (train accuracy: only when recorded)
VALUE_KEYS = ("early_stop_iteration", "early_stop_test_accuracy", "early_stop_train_accuracy",
              "final_train_accuracy")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def diverged(record: dict[str, Any]) -> bool:
    """True for a unit flagged diverged or without a finite early stop and test accuracy."""
    return bool(record.get("diverged")) or not all(
        _finite(record.get(k)) for k in ("early_stop_iteration", "early_stop_test_accuracy"))


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
    """One row per level: % remaining and, per variant, per-seed value lists.

    `seeds` lists the units counted (not diverged), aligned with early_stop_iteration and
    early_stop_test_accuracy; `diverged` the seeds left out; the train accuracies keep only
    the finite values recorded (records made before they existed have none).
    """
    by_level: dict[int, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_level[r["level"]][r["variant"]].append(r)
    rows = []
    for level in sorted(by_level):
        variants = by_level[level]
        densities = [r["density"] for rs in variants.values() for r in rs]
        row: dict[str, Any] = {"level": level, "remaining": 100 * statistics.mean(densities)}
        for v, rs in variants.items():
            kept = [r for r in rs if not diverged(r)]
            cell: dict[str, Any] = {k: [r[k] for r in kept if _finite(r.get(k))]
                                    for k in VALUE_KEYS}
            cell["seeds"] = [r["seed"] for r in kept]
            cell["diverged"] = [r["seed"] for r in rs if diverged(r)]
            cell["end_iteration"] = sorted({r["end_iteration"] for r in rs
                                            if _finite(r.get("end_iteration"))})
            row[v] = cell
        rows.append(row)
    return rows


def _summarize(values: list[float]) -> dict[str, float | None] | None:
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.mean(values), "std": std, "min": min(values), "max": max(values)}


def level_stats(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`level_rows` reduced to mean, sample std, min and max: the numbers every report shows.

    One row per level: {"level", "remaining" (%), "variants": {variant: {"n_seeds" (units
    counted), "n_diverged", "early_stop_iteration": stats, "test_accuracy_pct": stats,
    "train_accuracy_early_stop_pct": stats, "train_accuracy_final_pct": stats,
    "end_iteration": [budgets]}}}, ticket first. A stats entry is None where no unit has
    the value (every seed diverged, or train accuracy not recorded).
    """
    stats = []
    for row in level_rows(records):
        variants = variant_order(k for k in row if k not in ("level", "remaining"))
        stats.append({"level": row["level"], "remaining": row["remaining"], "variants": {
            v: {"n_seeds": len(row[v]["seeds"]), "n_diverged": len(row[v]["diverged"]),
                "early_stop_iteration": _summarize(row[v]["early_stop_iteration"]),
                "test_accuracy_pct": _summarize(
                    [100 * a for a in row[v]["early_stop_test_accuracy"]]),
                "train_accuracy_early_stop_pct": _summarize(
                    [100 * a for a in row[v]["early_stop_train_accuracy"]]),
                "train_accuracy_final_pct": _summarize(
                    [100 * a for a in row[v]["final_train_accuracy"]]),
                "end_iteration": row[v]["end_iteration"]}
            for v in variants}})
    return stats


def has_train_accuracy(records: list[dict[str, Any]]) -> bool:
    """Whether any unit recorded its training accuracy (runs made before it did not)."""
    return any(_finite(r.get(k)) for r in records
               for k in ("early_stop_train_accuracy", "final_train_accuracy"))


def levels_table(summary: dict[str, Any], title: str | None = None) -> Table:
    """The terminal table; the ticket's training accuracy when recorded; diverged units
    counted in their own column and left out of the means."""
    records = summary["records"]
    rows = level_rows(records)
    present = variant_order(r["variant"] for r in records)
    n_seeds = len({r["seed"] for r in records})
    train = has_train_accuracy(records)
    any_diverged = any(diverged(r) for r in records)
    caption = (f"mean ± std over {n_seeds} seeds; " if n_seeds > 1 else "") + \
        "test accuracy at the early-stop iteration (lowest validation loss)"
    if train:
        caption += "; train acc: on the training subset, at early stop"
    if any_diverged:
        caption += "; diverged units are left out of the means"
    table = Table(title=title, caption=caption)
    table.add_column("level", justify="right")
    table.add_column("% weights\nremaining", justify="right")
    for v in present:
        table.add_column(f"{v}\nearly stop (it)", justify="right")
        table.add_column(f"{v}\ntest acc (%)", justify="right")
        if train and v == "ticket":
            table.add_column(f"{v}\ntrain acc (%)", justify="right")
    if any_diverged:
        table.add_column("diverged\n(of seeds)", justify="left")
    for row in rows:
        cells = [str(row["level"]), f"{row['remaining']:.1f}"]
        for v in present:
            cell = row.get(v, {})
            if v == "ticket" or row["level"] > 0:
                cells.append(_stat(cell.get("early_stop_iteration", []), ".0f"))
                cells.append(_stat([100 * a for a in cell.get("early_stop_test_accuracy", [])],
                                   ".2f"))
            else:
                cells += ["", ""]
            if train and v == "ticket":
                cells.append(_stat([100 * a for a in cell.get("early_stop_train_accuracy", [])],
                                   ".2f"))
        if any_diverged:
            cells.append(", ".join(
                f"{v} {len(row[v]['diverged'])}/{len(row[v]['diverged']) + len(row[v]['seeds'])}"
                for v in present if row.get(v, {}).get("diverged")))
        table.add_row(*cells)
    return table
