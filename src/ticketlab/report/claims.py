"""The paper's headline questions, answered from a run's records (means over seeds).

Frankle & Carbin state their LeNet results as: the dense accuracy; the density where
tickets learn fastest (earliest early stop); how far down tickets stay faster than and at
least as accurate as the dense network; and the ticket's lead over its random
reinitialisation at about 21% and 7%. `headline` computes the same quantities so that a
reproduction can be set beside the paper's numbers without reading them off a plot.
"""

from __future__ import annotations

import statistics
from typing import Any

from ticketlab.report.table import level_rows


def _mean(cell: dict[str, list[float]] | None, key: str) -> float | None:
    values = (cell or {}).get(key) or []
    return statistics.mean(values) if values else None


def _contiguous_lowest(rows: list[dict[str, Any]], holds) -> float | None:  # type: ignore[no-untyped-def]
    """The lowest % remaining reached from the dense level down while `holds(row)` is true."""
    lowest = None
    for row in rows[1:]:
        if not holds(row):
            break
        lowest = row["remaining"]
    return lowest


def headline(records: list[dict[str, Any]], near: tuple[float, ...] = (21.1, 7.0)
             ) -> dict[str, Any]:
    """Numbers comparable with the paper's LeNet claims; accuracies in %, densities in %."""
    rows = [r for r in level_rows(records) if "ticket" in r]
    if not rows or rows[0]["level"] != 0:
        return {}
    acc = {r["level"]: 100 * _mean(r["ticket"], "early_stop_test_accuracy") for r in rows}
    it = {r["level"]: _mean(r["ticket"], "early_stop_iteration") for r in rows}
    dense_acc, dense_it = acc[0], it[0]
    out: dict[str, Any] = {"dense_accuracy": dense_acc, "dense_early_stop": dense_it,
                           "seeds": len(rows[0]["ticket"]["seeds"])}
    if len(rows) < 2:
        return out
    fastest = min(rows[1:], key=lambda r: it[r["level"]])
    best = max(rows[1:], key=lambda r: acc[r["level"]])
    out.update({
        "fastest_density": fastest["remaining"], "fastest_early_stop": it[fastest["level"]],
        "fastest_sooner_pct": 100 * (1 - it[fastest["level"]] / dense_it) if dense_it else None,
        "best_density": best["remaining"], "best_gain_points": acc[best["level"]] - dense_acc,
        "faster_down_to": _contiguous_lowest(rows, lambda r: it[r["level"]] < dense_it),
        "matches_down_to": _contiguous_lowest(rows, lambda r: acc[r["level"]] >= dense_acc),
    })
    used = set()
    for target in near:
        row = min(rows[1:], key=lambda r: abs(r["remaining"] - target))
        if row["level"] in used:
            continue
        used.add(row["level"])
        for control in ("reinit", "random"):
            c_acc = _mean(row.get(control), "early_stop_test_accuracy")
            c_it = _mean(row.get(control), "early_stop_iteration")
            if c_acc is None or c_it is None:
                continue
            out[f"at_{target:g}"] = row["remaining"]
            out[f"{control}_gap_points_at_{target:g}"] = acc[row["level"]] - 100 * c_acc
            out[f"{control}_slower_x_at_{target:g}"] = c_it / it[row["level"]]
    return out


def headline_rows(h: dict[str, Any]) -> list[tuple[str, str]]:
    """`headline` as (question, answer) pairs, in the paper's order."""
    def f(key: str, fmt: str, unit: str = "") -> str:
        return "-" if h.get(key) is None else format(h[key], fmt) + unit

    rows = [("dense test accuracy at early stop", f("dense_accuracy", ".2f", "%")),
            ("dense early-stop iteration", f("dense_early_stop", ".0f"))]
    if "fastest_density" in h:
        rows += [
            ("tickets learn fastest at", f"{f('fastest_density', '.1f', '%')} (early stop "
             f"{f('fastest_early_stop', '.0f')}, {f('fastest_sooner_pct', '.0f', '%')} sooner "
             "than dense)"),
            ("tickets stop sooner than dense down to", f("faster_down_to", ".1f", "%")),
            ("tickets at least as accurate as dense down to", f("matches_down_to", ".1f", "%")),
            ("largest accuracy gain over dense",
             f"{f('best_gain_points', '+.2f', ' points')} at {f('best_density', '.1f', '%')}"),
        ]
    for key in sorted((k for k in h if k.startswith("at_")), key=lambda k: -h[k]):
        target = key[3:]
        for control in ("reinit", "random"):
            if f"{control}_gap_points_at_{target}" in h:
                rows.append((f"ticket vs {control} at {h[key]:.1f}%",
                             f"{f(f'{control}_gap_points_at_{target}', '+.2f', ' points')}; "
                             f"{control} stops {f(f'{control}_slower_x_at_{target}', '.2f', 'x')}"
                             " later"))
    rows.append(("seeds", str(h.get("seeds", "-"))))
    return rows


def headline_markdown(h: dict[str, Any], name: str) -> str:
    """A small Markdown table of `headline`, for docs and reports."""
    lines = [f"| {name} | |", "|---|---|"]
    lines += [f"| {q} | {a} |" for q, a in headline_rows(h)]
    return "\n".join(lines) + "\n"
