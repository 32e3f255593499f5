"""Figures of the instability analysis (`experiments/instability.py`), in the manner of
Frankle et al. (2020): the error along the line between two copies, the barrier against the
step k they were split at, and each ticket's barrier beside whether it matches the dense
network. Values are means over the seeds analysed; single seeds are drawn as dots."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ticketlab.report.plots import _legend_outside, pct_label
from ticketlab.training import STABLE_BARRIER

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _new(ncols: int, width: float = 4.2, sharey: bool = False) -> tuple[Figure, list]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.4, width * ncols), 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, ncols, squeeze=False, sharey=sharey)[0])


def _by(rows: list[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r)
    return dict(sorted(groups.items()))


def _level_title(level: int, rows: list[dict[str, Any]]) -> str:
    density = 100 * statistics.fmean(r["density"] for r in rows)
    return f"level {level}: {pct_label(density)}% of weights" if level else "level 0: dense"


def _seeds(rows: list[dict[str, Any]]) -> str:
    n = len({r["seed"] for r in rows})
    return f"mean over {n} seed{'s' if n > 1 else ''}"


def line_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """Test error along the line between the two copies, a panel per level, a line per k."""
    if not rows:
        return None
    levels = _by(rows, "level")
    fig, axes = _new(len(levels), sharey=True)
    ks = sorted({r["k"] for r in rows})
    colors = {k: f"C{i % 10}" for i, k in enumerate(ks)}
    for ax, ((level,), level_rows) in zip(axes, levels.items(), strict=True):
        for (k,), cell in _by(level_rows, "k").items():
            alphas = cell[0]["alphas"]
            if any(r["alphas"] != alphas for r in cell):
                continue  # seeds measured at other points: not averaged
            mean = [100 * statistics.fmean(e) for e in zip(*(r["errors"] for r in cell))]
            ax.plot(alphas, mean, color=colors[k], marker="o", markersize=2, label=f"k = {k} it")
        ax.set_title(_level_title(level, level_rows), fontsize=9)
        ax.set_xlabel("interpolation α (0: copy 0, 1: copy 1)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test error (%)")
    _legend_outside(axes[-1], fontsize=7)
    fig.suptitle(f"Error along the line between two copies trained from step k "
                 f"({_seeds(rows)})", fontsize=10)
    return fig


def barrier_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """Barrier against k, a line per level, and the 2-point stability threshold."""
    if not rows:
        return None
    fig, (ax,) = _new(1)
    for i, ((level,), level_rows) in enumerate(_by(rows, "level").items()):
        cells = _by(level_rows, "k")
        ks = [k for (k,) in cells]
        color = f"C{i % 10}"
        ax.plot(ks, [100 * statistics.fmean(r["barrier"] for r in c) for c in cells.values()],
                color=color, marker="o", label=_level_title(level, level_rows))
        for r in level_rows:
            ax.plot(r["k"], 100 * r["barrier"], ".", color=color, alpha=0.4)
    ax.axhline(100 * STABLE_BARRIER, color="black", linestyle="--", linewidth=1,
               label=f"stable: barrier ≤ {100 * STABLE_BARRIER:g} points")
    ks = sorted({r["k"] for r in rows})
    if len(ks) > 1 and ks[-1] > 10 * max(ks[1], 1):
        ax.set_xscale("symlog", linthresh=max(ks[1], 1))
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k: step (iterations) the copies were split at")
    ax.set_ylabel("error barrier (percentage points)")
    ax.grid(alpha=0.3)
    _legend_outside(ax, fontsize=7)
    ax.set_title(f"Instability: barrier of the test error along the line\n({_seeds(rows)}; "
                 "dots: single seeds)", fontsize=9)
    return fig


def matching_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """For tickets: the barrier at each k against density, beside each ticket's early-stop
    test accuracy against the dense network's band (filled: matching)."""
    tickets = [r for r in rows if r["level"] > 0]
    if not tickets:
        return None
    fig, (left, right) = _new(2, width=5.0)
    levels = _by(tickets, "level")
    density = {level: 100 * statistics.fmean(r["density"] for r in rs)
               for (level,), rs in levels.items()}
    order = sorted(density, key=lambda lv: -density[lv])
    x = {lv: i for i, lv in enumerate(order)}
    labels = [pct_label(density[lv]) for lv in order]
    for i, ((k,), cell) in enumerate(_by(tickets, "k").items()):
        per_level = _by(cell, "level")
        lvs = sorted(per_level, key=lambda t: x[t[0]])
        ax_x = [x[lv] for (lv,) in lvs]
        ax_y = [100 * statistics.fmean(r["barrier"] for r in per_level[(lv,)])
                for (lv,) in lvs]
        left.plot(ax_x, ax_y, color=f"C{i % 10}", marker="o", label=f"k = {k} it")
    left.axhline(100 * STABLE_BARRIER, color="black", linestyle="--", linewidth=1,
                 label="stable threshold")
    left.set_ylabel("error barrier (percentage points)")
    left.set_title("Barrier of each ticket (mask of the run's level)", fontsize=9)
    _legend_outside(left, fontsize=7)
    dense = next((r["dense_test_accuracy"] for r in rows
                  if r.get("dense_test_accuracy") is not None), None)
    tolerance = next((r["matching_tolerance"] for r in rows if "matching_tolerance" in r), 0)
    if dense is not None:
        right.axhline(100 * dense, color="black", linewidth=1, label="dense (mean)")
        right.axhspan(100 * (dense - tolerance), 100 * dense, color="grey", alpha=0.2,
                      label="matching band")
    seen: set[tuple[int, int]] = set()
    for r in tickets:
        if (r["seed"], r["level"]) in seen or r.get("test_accuracy") is None:
            continue
        seen.add((r["seed"], r["level"]))
        match = bool(r.get("matches"))
        right.plot(x[r["level"]], 100 * r["test_accuracy"], "o", color="C0",
                   markerfacecolor="C0" if match else "white")
    right.set_ylabel("early-stop test accuracy (%)")
    right.set_title("Does the ticket match? (filled: yes)", fontsize=9)
    if dense is not None:
        _legend_outside(right, fontsize=7)
    for ax in (left, right):
        ax.set_xticks(range(len(order)), labels)
        ax.set_xlabel("weights remaining (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Tickets: stability beside matching ({_seeds(tickets)})", fontsize=10)
    return fig
