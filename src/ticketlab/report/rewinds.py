"""Runs that differ only in their rewind point (`find --rewind 0,100,500,2000it`): accuracy at
chosen densities against the rewind iteration, the figure of Frankle et al.'s "Stabilizing the
Lottery Ticket Hypothesis" (2019) and "Linear Mode Connectivity" (2020).

The overlay of accuracy against % remaining, one line per rewind point, is the report's
accuracy figure; this adds the other reading of the same records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ticketlab.report.plots import (
    _figure,
    _legend_outside,
    _linestyle,
    _seeds_note,
    _variants,
    default_curve_levels,
    honest_ylim,
    pct_label,
)
from ticketlab.report.runs import Run, differing_keys

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PANELS = 3


def rewind_iteration(run: Run) -> int | None:
    """The iteration the run's pruned levels start from (their records' start_iteration)."""
    starts = {r["start_iteration"] for r in run.records if r["level"] > 0}
    return starts.pop() if len(starts) == 1 else None


def differ_in_rewind_only(runs: list[Run]) -> bool:
    """Whether the runs are one rewind sweep: two or more rewind points, nothing else apart."""
    if len(runs) < 2 or any(rewind_iteration(r) is None for r in runs):
        return False
    differing = differing_keys([r.config.get("science", {}) for r in runs])
    return differing == ["rewind"] and len({rewind_iteration(r) for r in runs}) == len(runs)


def rewind_levels(runs: list[Run], levels: list[int] | None = None) -> list[int]:
    """The pruned levels drawn: those given, else the ticket levels nearest the paper's 21.1,
    7.0 and 3.6 % remaining (the sparse end, where rewinding matters); only levels every run
    has."""
    common = set.intersection(*({row["level"] for row in run.stats} for run in runs))
    if levels is None:
        levels = default_curve_levels(runs[0].stats)[-MAX_PANELS:]
    return [lv for lv in dict.fromkeys(levels) if lv > 0 and lv in common][:MAX_PANELS]


def rewind_rows(runs: list[Run], levels: list[int] | None = None) -> list[dict[str, Any]]:
    """One row per (level, variant, rewind point): test accuracy at early stop over seeds."""
    rows = []
    for level in rewind_levels(runs, levels):
        for run in sorted(runs, key=lambda r: rewind_iteration(r) or 0):
            row = next(row for row in run.stats if row["level"] == level)
            for v, cell in row["variants"].items():
                acc = cell["test_accuracy_pct"] or {}
                rows.append({"level": level, "remaining_pct": row["remaining"], "variant": v,
                             "rewind_iteration": rewind_iteration(run), "run": run.name,
                             "n_seeds": cell["n_seeds"], "n_diverged": cell["n_diverged"],
                             **{f"test_accuracy_pct_{k}": acc.get(k)
                                for k in ("mean", "std", "min", "max")}})
    return rows


def rewind_figure(runs: list[Run], levels: list[int] | None = None) -> Figure:
    """Test accuracy at early stop against the rewind iteration (symlog: 0 is a point), one
    panel per density: the ticket solid, controls dashed, the dense network's mean in black.
    Bars: min–max over seeds, band: ±1 std."""
    chosen = rewind_levels(runs, levels)
    fig, axes = _figure(max(len(chosen), 1))
    rows = rewind_rows(runs, chosen)
    variants = _variants(runs)
    xs = sorted({rewind_iteration(r) or 0 for r in runs})
    dense = [cell["test_accuracy_pct"]["mean"] for run in runs for row in run.stats
             if row["level"] == 0 for cell in [row["variants"].get("ticket")]
             if cell and cell["test_accuracy_pct"]]
    extent: list[float] = []
    for ax, level in zip(axes, chosen):
        here = [r for r in rows if r["level"] == level]
        for i, v in enumerate(variants):
            points = sorted((r for r in here if r["variant"] == v and
                             r["test_accuracy_pct_mean"] is not None),
                            key=lambda r: r["rewind_iteration"])
            if not points:
                continue
            x = [r["rewind_iteration"] for r in points]
            mean = [r["test_accuracy_pct_mean"] for r in points]
            std = [r["test_accuracy_pct_std"] or 0.0 for r in points]
            spread = [[m - r["test_accuracy_pct_min"] for m, r in zip(mean, points)],
                      [r["test_accuracy_pct_max"] - m for m, r in zip(mean, points)]]
            ax.errorbar(x, mean, yerr=spread, color=f"C{i % 10}", marker="o", markersize=3,
                        capsize=3, linewidth=1.4, linestyle=_linestyle(v, variants), label=v)
            ax.fill_between(x, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], color=f"C{i % 10}", alpha=0.15,
                            linewidth=0)
            extent += [r["test_accuracy_pct_min"] for r in points]
            extent += [r["test_accuracy_pct_max"] for r in points]
        if dense:
            mean_dense = sum(dense) / len(dense)
            ax.axhline(mean_dense, color="black", linewidth=1.0,
                       label=f"dense network ({mean_dense:.2f}%)")
            extent.append(mean_dense)
        remaining = sum(r["remaining_pct"] for r in here) / max(len(here), 1)
        ax.set_title(f"{pct_label(remaining)}% of weights remaining (level {level})", fontsize=9)
        positive = [x for x in xs if x > 0]
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1)
        ax.set_xticks(xs, [f"{x:,}" for x in xs])
        ax.set_xlabel("rewind iteration (symlog)")
        ax.grid(alpha=0.3)
    if extent:
        honest_ylim(axes[0], min(extent), max(extent), "test accuracy at early stop (%)")
    _legend_outside(axes[-1], fontsize=8)
    fig.suptitle(f"Test accuracy against the rewind iteration ({_seeds_note(runs)}; "
                 "bars: min–max, band: ±1 std)", fontsize=10)
    return fig
