"""Figures in the style of Frankle & Carbin (2019), Figures 1, 3 and 4, drawn off-screen (Agg).

matplotlib is imported inside the functions, so `import ticketlab` and the table stay fast. The
x axis is always the density counted in the records (never the level number), so IMP and
one-shot runs plot alike.
"""

from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ticketlab.experiments.store import Unit
from ticketlab.io import atomic_write_bytes
from ticketlab.report.runs import Run
from ticketlab.report.table import variant_order

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PAPER_DENSITIES = (100, 51.3, 21.1, 7.0, 3.6)  # % remaining of the paper's training curves
CONTROL_STYLES = ("--", "-.", ":")  # ticket solid, controls dashed


def pct_label(percent: float) -> str:
    """Like the paper's axis: 100, 51.3, 7.0, 0.47."""
    if percent >= 99.95:
        return "100"
    return f"{percent:.1f}" if percent >= 1 else f"{percent:.2g}"


def _figure(ncols: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4 * ncols if ncols > 1 else 7.0, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, ncols, squeeze=False, sharey=True)[0])


def _variants(runs: list[Run]) -> list[str]:
    return variant_order(v for run in runs for row in run.stats for v in row["variants"])


def _linestyle(variant: str, variants: list[str]) -> str:
    if variant == "ticket":
        return "-"
    controls = [v for v in variants if v != "ticket"]
    return CONTROL_STYLES[controls.index(variant) % len(CONTROL_STYLES)]


def _seeds_note(runs: list[Run]) -> str:
    counts = sorted({len({r["seed"] for r in run.records}) for run in runs})
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"mean over {n} seed{'s' if counts[-1] > 1 else ''}"


def _density_axis(ax: Axes, percents: list[float]) -> None:
    """Log scale, 100 % on the left, ticks at the data's densities spaced so labels stay apart."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    by_label = {pct_label(p): p for p in sorted(percents)}  # the highest density per label
    ps = sorted(by_label.values(), reverse=True)
    gap = math.log10(ps[0] / ps[-1]) / 10
    ticks = [ps[0]]
    for p in ps[1:]:
        if math.log10(ticks[-1] / p) >= gap:
            ticks.append(p)
    ax.set_xscale("log")
    ax.set_xlim(ps[0] * 1.1, ps[-1] / 1.1)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([pct_label(p) for p in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("% of weights remaining (log scale)")


def _series_label(run: Run, variant: str, n_runs: int) -> str:
    return variant if n_runs == 1 else f"{variant} ({run.label})"


def _stats_figure(runs: list[Run], metric: str, ylabel: str, title: str) -> Figure:
    """One line per (run, variant): mean, min–max error bars, ±1 std band."""
    fig, (ax,) = _figure()
    variants = _variants(runs)
    series = [(run, v) for run in runs for v in variants
              if any(v in row["variants"] for row in run.stats)]
    for i, (run, v) in enumerate(series):
        rows = sorted((row for row in run.stats if v in row["variants"]),
                      key=lambda row: -row["remaining"])
        x = [row["remaining"] for row in rows]
        stats = [row["variants"][v][metric] for row in rows]
        mean = [s["mean"] for s in stats]
        spread = [[s["mean"] - s["min"] for s in stats], [s["max"] - s["mean"] for s in stats]]
        std = [s["std"] or 0.0 for s in stats]
        color = f"C{i % 10}"
        ax.errorbar(x, mean, yerr=spread, color=color, linestyle=_linestyle(v, variants),
                    marker="o", markersize=3, capsize=3, linewidth=1.4,
                    label=_series_label(run, v, len(runs)))
        ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=color, alpha=0.15, linewidth=0)
    _density_axis(ax, [row["remaining"] for run in runs for row in run.stats])
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{_seeds_note(runs)}; bars: min–max, band: ±1 std", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def accuracy_figure(runs: list[Run]) -> Figure:
    """Figure 1 / 4 (right): test accuracy at early stop against % of weights remaining."""
    return _stats_figure(runs, "test_accuracy_pct", "test accuracy at early stop (%)",
                         "Test accuracy at the early-stop iteration")


def early_stop_figure(runs: list[Run]) -> Figure:
    """Figure 4 (left): how early each network stops learning, against % remaining."""
    return _stats_figure(runs, "early_stop_iteration", "early-stop iteration",
                         "Early-stop iteration (lowest validation loss)")


def default_curve_levels(stats: list[dict[str, Any]]) -> list[int]:
    """The ticket levels nearest (in log density) to the paper's 100, 51.3, 21.1, 7.0, 3.6 %."""
    tickets = [(row["level"], row["remaining"]) for row in stats if "ticket" in row["variants"]]
    if not tickets:
        return []
    chosen = [min(tickets, key=lambda t: abs(math.log(t[1] / target)))[0]
              for target in PAPER_DENSITIES]
    return list(dict.fromkeys(chosen))


def _mean_curve(run: Run, level: int, variant: str) -> tuple[list[int], list[float]]:
    """Test accuracy (%) by iteration, averaged over the seeds evaluated at that iteration."""
    by_iteration: dict[int, list[float]] = defaultdict(list)
    for r in run.records:
        if r["level"] == level and r["variant"] == variant:
            for e in run.store.metrics(Unit(r["seed"], level, variant)):
                if e.split == "test":
                    by_iteration[e.iteration].append(100 * e.accuracy)
    iterations = sorted(by_iteration)
    return iterations, [statistics.mean(by_iteration[i]) for i in iterations]


def curves_figure(runs: list[Run], levels: list[int] | None = None) -> Figure:
    """Figure 3: test accuracy while training, one colour per level, one panel per run."""
    from matplotlib.lines import Line2D

    fig, axes = _figure(len(runs))
    variants = _variants(runs)
    settled: list[float] = []  # accuracies after the first tenth of training
    for run, ax in zip(runs, axes):
        chosen = default_curve_levels(run.stats) if levels is None else levels
        rows = [row for row in run.stats if row["level"] in chosen]
        for i, row in enumerate(rows):
            for v in row["variants"]:
                xs, ys = _mean_curve(run, row["level"], v)
                ax.plot(xs, ys, color=f"C{i % 10}", linestyle=_linestyle(v, variants),
                        linewidth=1.2)
                settled += [y for x, y in zip(xs, ys) if xs and x >= 0.1 * max(xs)]
        handles = [Line2D([], [], color=f"C{i % 10}", label=f"{pct_label(row['remaining'])}%")
                   for i, row in enumerate(rows)]
        handles += [Line2D([], [], color="gray", linestyle=_linestyle(v, variants), label=v)
                    for v in variants if any(v in row["variants"] for row in rows)]
        ax.legend(handles=handles, fontsize=8, title="% remaining, variant", title_fontsize=8)
        ax.set_title(run.label, fontsize=9)
        ax.set_xlabel("training iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    if settled:  # like the paper's Figure 3: zoom on where the curves differ, not on the rise
        low, high = min(settled), max(settled)
        margin = max(0.1 * (high - low), 0.1)
        axes[0].set_ylim(low - margin, min(100.0, high + margin))
    fig.suptitle(f"Test accuracy during training ({_seeds_note(runs)})", fontsize=10)
    return fig


def save_figure(fig: Figure, path: Path) -> bytes:
    """Writes `path`.png and `path`.svg atomically; returns the PNG to embed in the HTML."""
    from matplotlib import rc_context

    rendered = {}
    with rc_context({"svg.hashsalt": "ticketlab"}):  # stable SVG ids: same data, same file
        for fmt in ("png", "svg"):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=150,
                        metadata={"Date": None} if fmt == "svg" else None)
            rendered[fmt] = buf.getvalue()
            atomic_write_bytes(path.with_suffix(f".{fmt}"), rendered[fmt])
    return rendered["png"]


def supermask_figure(records: list[dict[str, Any]]) -> Figure:
    """Test accuracy of untrained networks under each criterion's mask, against density."""
    fig, (ax,) = _figure()
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_name[r["criterion"]].append(r)
    bases = [n for n in by_name if not n.endswith("_same_sign") and n != "random_mask"]
    colors = {n: f"C{i % 10}" for i, n in enumerate(bases)}
    for name, rows in by_name.items():
        rows = sorted(rows, key=lambda r: -r["density"])
        base = name.removesuffix("_same_sign")
        style = ({"color": "black", "linestyle": ":"} if name == "random_mask" else
                 {"color": colors.get(base, "grey"),
                  "linestyle": "--" if name.endswith("_same_sign") else "-"})
        ax.plot([100 * r["density"] for r in rows], [100 * r["test_accuracy"] for r in rows],
                marker="o", markersize=3, label=name, **style)
    _density_axis(ax, [100 * r["density"] for r in records])
    ax.set_ylabel("test accuracy, no training (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    ax.set_title("Supermasks: the untrained network under each mask "
                 "(dashed: same sign; dotted: random mask)", fontsize=9)
    return fig
