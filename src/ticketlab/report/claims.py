"""The claims a report makes, computed from a run's records so that none says more than the data.

The project's definition (docs, shared reference): a *winning ticket* is a rewound, masked
subnetwork that reaches at least the dense test accuracy (at its early stop) in at most the
dense number of iterations (its early-stop iteration). `headline` judges every level by the
means over seeds AND seed by seed (each seed's ticket against the dense network of the same
seed), compares the ticket with every control present, and counts the early stops that sit
at the end of the training budget (there the early stop says "still improving", not "learnt
by then"). Diverged units (see `table.diverged`) are counted apart and left out of the means.

Densities are in % remaining, accuracies in %, gaps in percentage points; comparisons are
made on the stored fractions, so a tie is a tie.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from ticketlab.report.table import diverged, variant_order


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def stop_comparison(ticket_it: float | None, control_it: float | None) -> str:
    """How a control's early stop compares with the ticket's, in words that read right:
    '2.24x later', '10% sooner', 'at the same iteration'; never '0.90x later'."""
    if ticket_it is None or control_it is None:
        return "-"
    if control_it == ticket_it:
        return "at the same iteration"
    if ticket_it == 0:
        return f"later ({control_it:.0f} against 0)"
    ratio = control_it / ticket_it
    if ratio > 1:
        return f"{ratio:.2f}x later"
    return f"{100 * (1 - ratio):.3g}% sooner"


def _cells(records: list[dict[str, Any]]) -> dict[tuple[int, str], list[dict[str, Any]]]:
    cells: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        cells[(r["level"], r["variant"])].append(r)
    return cells


def _cell_means(units: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(mean test accuracy as a fraction, mean early-stop iteration) over the units kept."""
    kept = [r for r in units if not diverged(r)]
    return (_mean([r["early_stop_test_accuracy"] for r in kept]),
            _mean([r["early_stop_iteration"] for r in kept]))


def _wins(acc: float | None, it: float | None, dense_acc: float, dense_it: float) -> bool:
    return acc is not None and it is not None and acc >= dense_acc and it <= dense_it


def _contiguous_lowest(levels: list[dict[str, Any]], key: str) -> float | None:
    """The lowest % remaining reached from the dense level down while level[key] holds."""
    lowest = None
    for level in levels:
        if not level[key]:
            break
        lowest = level["remaining"]
    return lowest


def _budget(cells: dict[tuple[int, str], list[dict[str, Any]]]) -> dict[str, Any]:
    """Cells (level, variant) whose early stop is at the end of training, by some or all seeds."""
    some, every = [], []
    for (level, variant), units in sorted(cells.items()):
        at_end = [r.get("end_iteration") is not None and not diverged(r)
                  and r["early_stop_iteration"] == r["end_iteration"] for r in units]
        if any(at_end):
            some.append([level, variant])
        if all(at_end):
            every.append([level, variant])
    return {"cells": len(cells), "some_seed_at_end": len(some), "every_seed_at_end": len(every),
            "every_early_stop_at_end": bool(cells) and len(every) == len(cells),
            "cells_all_at_end": every}


def headline(records: list[dict[str, Any]], near: tuple[float, ...] = (21.1, 7.0)
             ) -> dict[str, Any]:
    """The run's claims (a JSON-able dict); {} without a dense level.

    Keys: dense_accuracy, dense_early_stop, seeds, diverged_units; `levels` (one dict per
    pruned level, densest first: remaining, accuracy, early_stop, winning (by the means),
    seeds_winning of seeds_compared, faster, as_accurate, diverged, controls {variant:
    accuracy, early_stop, gap_points, stop_ratio, stop_words}); winning_down_to,
    faster_down_to, matches_down_to; fastest_*; best_*; `controls_worse_from` {variant: %
    remaining or None}; `budget` (see `_budget`); at_<near> and <control>_gap_points_at_<near>
    for the levels nearest the paper's 21.1 and 7.0 %.
    """
    cells = _cells(records)
    dense_units = cells.get((0, "ticket"))
    if not dense_units:
        return {}
    dense_acc, dense_it = _cell_means(dense_units)
    out: dict[str, Any] = {
        "dense_accuracy": None if dense_acc is None else 100 * dense_acc,
        "dense_early_stop": dense_it, "seeds": len({r["seed"] for r in dense_units}),
        "diverged_units": sum(diverged(r) for r in records), "budget": _budget(cells)}
    if dense_acc is None or dense_it is None:  # every dense unit diverged: nothing to compare
        return out
    dense_by_seed = {r["seed"]: r for r in dense_units if not diverged(r)}
    controls = variant_order(v for (_, v) in cells if v != "ticket")
    pruned = sorted({lv for (lv, v) in cells if lv > 0 and v == "ticket"},
                    key=lambda lv: -statistics.mean(r["density"] for r in cells[(lv, "ticket")]))
    levels = []
    for lv in pruned:
        units = cells[(lv, "ticket")]
        acc, it = _cell_means(units)
        compared = [r for r in units if r["seed"] in dense_by_seed]
        seeds_winning = sum(not diverged(r) and _wins(
            r["early_stop_test_accuracy"], r["early_stop_iteration"],
            dense_by_seed[r["seed"]]["early_stop_test_accuracy"],
            dense_by_seed[r["seed"]]["early_stop_iteration"]) for r in compared)
        level: dict[str, Any] = {
            "level": lv, "remaining": 100 * statistics.mean(r["density"] for r in units),
            "accuracy": None if acc is None else 100 * acc, "early_stop": it,
            "winning": _wins(acc, it, dense_acc, dense_it), "seeds_winning": seeds_winning,
            "seeds_compared": len(compared), "diverged": sum(map(diverged, units)),
            "faster": it is not None and it < dense_it,
            "as_accurate": acc is not None and acc >= dense_acc, "controls": {}}
        for v in controls:
            if (lv, v) not in cells:
                continue
            c_acc, c_it = _cell_means(cells[(lv, v)])
            level["controls"][v] = {
                "accuracy": None if c_acc is None else 100 * c_acc, "early_stop": c_it,
                "gap_points": None if acc is None or c_acc is None else 100 * (acc - c_acc),
                "stop_ratio": c_it / it if c_it is not None and it else None,
                "stop_words": stop_comparison(it, c_it),
                "slower_and_worse": None not in (acc, it, c_acc, c_it)
                and c_it > it and c_acc < acc,  # type: ignore[operator]
                "diverged": sum(map(diverged, cells[(lv, v)]))}
        levels.append(level)
    out["levels"] = levels
    out["winning_down_to"] = _contiguous_lowest(levels, "winning")
    out["faster_down_to"] = _contiguous_lowest(levels, "faster")
    out["matches_down_to"] = _contiguous_lowest(levels, "as_accurate")
    timed = [lv for lv in levels if lv["early_stop"] is not None]
    if timed:  # ties: the more accurate, then the denser level
        fastest = min(timed, key=lambda lv: (lv["early_stop"], -(lv["accuracy"] or 0),
                                             -lv["remaining"]))
        out.update({"fastest_density": fastest["remaining"],
                    "fastest_early_stop": fastest["early_stop"],
                    "fastest_winning": fastest["winning"],
                    "fastest_gap_points": None if fastest["accuracy"] is None
                    else fastest["accuracy"] - out["dense_accuracy"],
                    "fastest_sooner_pct": 100 * (1 - fastest["early_stop"] / dense_it)
                    if dense_it else None})
    scored = [lv for lv in levels if lv["accuracy"] is not None]
    if scored:
        best = max(scored, key=lambda lv: (lv["accuracy"], lv["remaining"]))
        out.update({"best_density": best["remaining"],
                    "best_gain_points": best["accuracy"] - out["dense_accuracy"]})
    out["controls_worse_from"] = {v: _worse_from(levels, v) for v in controls}
    used = set()
    for target in near:
        if not levels:
            break
        level = min(levels, key=lambda lv: abs(lv["remaining"] - target))
        if level["level"] in used:
            continue
        used.add(level["level"])
        for v, c in level["controls"].items():
            if c["gap_points"] is None:
                continue
            out[f"at_{target:g}"] = level["remaining"]
            out[f"{v}_gap_points_at_{target:g}"] = c["gap_points"]
            out[f"{v}_stop_words_at_{target:g}"] = c["stop_words"]
    return out


def _worse_from(levels: list[dict[str, Any]], variant: str) -> float | None:
    """The highest % remaining from which `variant` is both slower and less accurate than the
    ticket at every lower density where it was trained; None if no such level."""
    compared = [lv for lv in levels if variant in lv["controls"]]
    start = None
    for lv in reversed(compared):  # sparsest first
        if not lv["controls"][variant]["slower_and_worse"]:
            break
        start = lv["remaining"]
    return start


def _pct(value: float | None, fmt: str = ".1f", unit: str = "%") -> str:
    return "-" if value is None else format(value, fmt) + unit


def _down_to(value: float | None) -> str:
    return "no level: not at the first pruned level" if value is None else _pct(value)


def headline_rows(h: dict[str, Any]) -> list[tuple[str, str]]:
    """`headline` as (question, answer) pairs, in the paper's order."""
    if not h:
        return []
    rows = [("dense test accuracy at early stop", _pct(h.get("dense_accuracy"), ".2f")),
            ("dense early-stop iteration", _pct(h.get("dense_early_stop"), ".0f", ""))]
    levels = h.get("levels", [])
    if levels:
        n_win = sum(lv["winning"] for lv in levels)
        rows += [
            ("winning tickets (at least the dense accuracy in at most the dense iterations, "
             "means over seeds) down to",
             f"{_down_to(h['winning_down_to'])} ({n_win} of {len(levels)} pruned levels "
             "winning)"),
            ("tickets stop sooner than dense down to", _down_to(h["faster_down_to"])),
            ("tickets at least as accurate as dense down to", _down_to(h["matches_down_to"])),
        ]
        if "fastest_density" in h:
            sooner = h["fastest_sooner_pct"]
            words = (f"{sooner:.3g}% sooner than dense" if sooner is not None and sooner > 0
                     else "not sooner than dense")
            if not h["fastest_winning"]:  # a sooner stop that is no winning ticket says so
                words += (f"; not a winning ticket: {h['fastest_gap_points']:+.2f} points "
                          "against dense" if h["fastest_gap_points"] is not None
                          else "; not a winning ticket")
            rows.append(("tickets learn fastest at", f"{_pct(h['fastest_density'])} (early "
                         f"stop {h['fastest_early_stop']:.0f}, {words})"))
        if "best_density" in h:
            rows.append(("most accurate pruned level", f"{_pct(h['best_density'])} "
                         f"({h['best_gain_points']:+.2f} points against dense)"))
        for v, start in h.get("controls_worse_from", {}).items():
            rows.append((f"{v}: slower and less accurate than the ticket at every level from",
                         "no level" if start is None else _pct(start)))
        for key in sorted((k for k in h if k.startswith("at_")), key=lambda k: -h[k]):
            target = key[3:]
            for v in h.get("controls_worse_from", {}):
                if f"{v}_gap_points_at_{target}" in h:
                    rows.append((f"ticket vs {v} at {h[key]:.1f}%",
                                 f"{h[f'{v}_gap_points_at_{target}']:+.2f} points; "
                                 f"{v} stops {h[f'{v}_stop_words_at_{target}']}"))
    b = h["budget"]
    rows.append(("cells (level, variant) with an early stop at the end of training",
                 f"{b['some_seed_at_end']} of {b['cells']} with at least one seed, "
                 f"{b['every_seed_at_end']} with every seed"
                 + (" (every early stop is at the end of training)"
                    if b["every_early_stop_at_end"] else "")))
    if h.get("diverged_units"):
        rows.append(("diverged units (left out of every mean)", str(h["diverged_units"])))
    rows.append(("seeds", str(h.get("seeds", "-"))))
    return rows


def level_claim_columns(h: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per pruned level: the ticket against dense (by the means, and k of n seeds) and
    against each control (gap in points, early stop in words). (header, rows)."""
    levels = h.get("levels", [])
    controls = list(h.get("controls_worse_from", {}))
    header = ["level", "% remaining", "ticket acc (%)", "early stop", "winning (means)",
              "winning seeds"]
    header += [f"vs {v}: {what}" for v in controls for what in ("gap (points)", "early stop")]
    rows = []
    for lv in levels:
        row = [str(lv["level"]), _pct(lv["remaining"], unit=""), _pct(lv["accuracy"], ".2f", ""),
               _pct(lv["early_stop"], ".0f", ""), "yes" if lv["winning"] else "no",
               f"{lv['seeds_winning']} of {lv['seeds_compared']}"
               + (f" ({lv['diverged']} diverged)" if lv["diverged"] else "")]
        for v in controls:
            c = lv["controls"].get(v)
            row += (["", ""] if c is None else
                    [_pct(c["gap_points"], "+.2f", ""), f"{v} {c['stop_words']}"
                     + (f" ({c['diverged']} diverged)" if c["diverged"] else "")])
        rows.append(row)
    return header, rows


def headline_markdown(h: dict[str, Any], name: str) -> str:
    """Markdown: the headline table, then the per-level claims table."""
    lines = [f"| {name} | |", "|---|---|"]
    lines += [f"| {q} | {a} |" for q, a in headline_rows(h)]
    header, rows = level_claim_columns(h)
    if rows:
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
