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
from ticketlab.report.table import diverged, variant_order

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


def density_positions(percents: list[float]) -> dict[float, float]:
    """x position of each % remaining on the log axis: itself, or for 0 (a mask of density
    0, which a log axis cannot show) a decade below the lowest positive density."""
    positive = [p for p in percents if p > 0]
    zero = (min(positive) if positive else 100.0) / 10
    return {p: (p if p > 0 else zero) for p in percents}


def _density_axis(ax: Axes, percents: list[float]) -> None:
    """Log scale, 100 % on the left, ticks at the data's densities spaced so labels stay apart;
    the highest and the lowest density are always labelled."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    x = density_positions(percents)
    by_label = {pct_label(p) if p > 0 else "0": x[p] for p in sorted(percents)}  # highest first
    ps = sorted(by_label.values(), reverse=True)
    gap = math.log10(ps[0] / ps[-1]) / 10
    ticks = [ps[0]]
    for p in ps[1:]:
        if math.log10(ticks[-1] / p) >= gap:
            ticks.append(p)
    if ticks[-1] != ps[-1]:  # the lowest density: replace a neighbour too close to it
        if len(ticks) > 1 and math.log10(ticks[-1] / ps[-1]) < gap:
            ticks.pop()
        ticks.append(ps[-1])
    label_of = {pos: label for label, pos in by_label.items()}
    ax.set_xscale("log")
    ax.set_xlim(ps[0] * 1.1, ps[-1] / 1.1)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([label_of[p] for p in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    zero = "\n(0: a mask of density 0, drawn a decade below the lowest density)" \
        if min(percents) <= 0 else ""
    ax.set_xlabel(f"% of weights remaining (log scale){zero}")


MIN_ACCURACY_SPAN = 2.0  # percentage points: a y axis never spans less, so 0.1 looks like 0.1


def honest_ylim(ax: Axes, low: float, high: float, label: str,
                min_span: float = MIN_ACCURACY_SPAN, top: float = 100.0) -> None:
    """Accuracy axis spanning at least `min_span` points around the data (within [0, top]);
    when it does not start at 0 the label says it is zoomed and over how many points."""
    margin = max(0.08 * (high - low), 0.05)
    low, high = low - margin, high + margin
    if high - low < min_span:
        middle = (low + high) / 2
        low, high = middle - min_span / 2, middle + min_span / 2
    if high > top:
        low, high = low - (high - top), top
    if low < 0.1 * (high - low):  # the axis would nearly reach 0 anyway: start it there
        low = 0.0
    ax.set_ylim(low, high)
    ax.set_ylabel(label if low <= 0 else f"{label}\n(zoomed: axis spans {high - low:.3g} "
                  "points, not from 0)")


LONG_LABEL = 36  # characters: a legend of longer labels goes below the axes


def _legend_outside(ax: Axes, **kwargs: Any) -> None:
    """Legend to the right of the axes, where it cannot cover data; below them when its
    labels are long (an overlay of runs named by several settings), so the axes keep their
    width."""
    labels = kwargs.get("labels") or [h.get_label() for h in kwargs.get("handles", [])] or \
        ax.get_legend_handles_labels()[1]
    if labels and max(len(str(label)) for label in labels) > LONG_LABEL:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), borderaxespad=0,
                  ncol=1, **kwargs)
        return
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, **kwargs)


def _series_label(run: Run, variant: str, n_runs: int) -> str:
    return variant if n_runs == 1 else f"{variant} ({run.label})"


def _diverged_note(runs: list[Run]) -> str:
    n = sum(cell["n_diverged"] for run in runs for row in run.stats
            for cell in row["variants"].values())
    return f"; {n} diverged unit{'s' if n != 1 else ''} left out" if n else ""


def _stats_figure(runs: list[Run], metric: str, ylabel: str, title: str, ax: Axes | None = None,
                  fig: Figure | None = None, accuracy: bool = True, legend: bool = True
                  ) -> Figure:
    """One line per (run, variant): mean, min–max error bars, ±1 std band; cells without a
    value (every seed diverged, or never recorded) are left out."""
    if ax is None:
        fig, (ax,) = _figure()
    assert fig is not None
    variants = _variants(runs)
    x_of = density_positions([row["remaining"] for run in runs for row in run.stats])
    series = [(run, v) for run in runs for v in variants
              if any((row["variants"].get(v) or {}).get(metric) for row in run.stats)]
    extent: list[float] = []
    for i, (run, v) in enumerate(series):
        rows = sorted((row for row in run.stats if (row["variants"].get(v) or {}).get(metric)),
                      key=lambda row: -row["remaining"])
        x = [x_of[row["remaining"]] for row in rows]
        stats = [row["variants"][v][metric] for row in rows]
        mean = [s["mean"] for s in stats]
        spread = [[s["mean"] - s["min"] for s in stats], [s["max"] - s["mean"] for s in stats]]
        std = [s["std"] or 0.0 for s in stats]
        extent += [s["min"] for s in stats] + [s["max"] for s in stats]
        extent += [m - d for m, d in zip(mean, std)] + [m + d for m, d in zip(mean, std)]
        # several runs: a colour per run, a line style per variant (ticket solid)
        color = f"C{(runs.index(run) if len(runs) > 1 else i) % 10}"
        ax.errorbar(x, mean, yerr=spread, color=color, linestyle=_linestyle(v, variants),
                    marker="o", markersize=3, capsize=3, linewidth=1.4,
                    label=_series_label(run, v, len(runs)))
        ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=color, alpha=0.15, linewidth=0)
    _density_axis(ax, list(x_of))
    if accuracy and extent:
        honest_ylim(ax, min(extent), max(extent), ylabel)
    else:
        ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{_seeds_note(runs)}; bars: min–max, band: ±1 std"
                 f"{_diverged_note(runs)}", fontsize=10)
    ax.grid(alpha=0.3)
    if legend and series:
        _legend_outside(ax, fontsize=8)
    return fig


def accuracy_figure(runs: list[Run]) -> Figure:
    """Figure 1 / 4 (right): test accuracy at early stop against % of weights remaining."""
    return _stats_figure(runs, "test_accuracy_pct", "test accuracy at early stop (%)",
                         "Test accuracy at the early-stop iteration")


def early_stop_figure(runs: list[Run]) -> Figure:
    """Figure 4 (left): how early each network stops learning, against % remaining; the axis
    starts at 0 and a line marks each run's training budget, so an early stop capped at the
    budget reads as 'still improving at the end', not as a result."""
    fig = _stats_figure(runs, "early_stop_iteration", "early-stop iteration",
                        "Early-stop iteration (lowest validation loss)", accuracy=False,
                        legend=False)
    ax = fig.axes[0]
    budgets = sorted({end for run in runs for row in run.stats
                      for cell in row["variants"].values() for end in cell["end_iteration"]})
    for j, end in enumerate(budgets):
        owners = [run.label for run in runs if any(end in cell["end_iteration"] for row in
                                                   run.stats for cell in row["variants"].values())]
        whose = f" ({', '.join(owners)})" if len(runs) > 1 and len(budgets) > 1 else ""
        ax.axhline(end, color="black", linewidth=1.0, linestyle=(0, (6, 3)) if j == 0 else ":",
                   label=f"training budget: {end:,.0f} it{whose}")
    top = max([*budgets, ax.get_ylim()[1]])
    ax.set_ylim(-0.02 * top, top * 1.06)  # from 0 (a sliver below, so markers at 0 show)
    if ax.get_legend_handles_labels()[0]:
        _legend_outside(ax, fontsize=8)
    return fig


def train_accuracy_figure(runs: list[Run]) -> Figure:
    """Like Frankle & Carbin's Figure 4 (training accuracy): on the fixed training subset, at
    the early-stop iteration (left) and at the end of training (right). Only for runs that
    recorded it (see `table.has_train_accuracy`)."""
    fig, axes = _figure(2)  # y shared: one scale for both panels
    metrics = (("train_accuracy_early_stop_pct", "at early stop"),
               ("train_accuracy_final_pct", "at the end of training"))
    for ax, (metric, when) in zip(axes, metrics):
        _stats_figure(runs, metric, "", f"Training accuracy {when}", ax=ax, fig=fig,
                      accuracy=False, legend=ax is axes[-1])
    extent = [cell[m]["mean"] + sign * (cell[m]["std"] or 0) for run in runs
              for row in run.stats for cell in row["variants"].values() for m, _ in metrics
              if cell.get(m) for sign in (-1, 1)]
    extent += [cell[m][k] for run in runs for row in run.stats for cell in row["variants"].values()
               for m, _ in metrics if cell.get(m) for k in ("min", "max")]
    if extent:
        honest_ylim(axes[0], min(extent), max(extent), "training accuracy (%)")
    return fig


def default_curve_levels(stats: list[dict[str, Any]]) -> list[int]:
    """The ticket levels nearest (in log density) to the paper's 100, 51.3, 21.1, 7.0, 3.6 %."""
    tickets = [(row["level"], row["remaining"]) for row in stats if "ticket" in row["variants"]]
    if not tickets:
        return []
    chosen = [min(tickets, key=lambda t: abs(math.log(max(t[1], 1e-9) / target)))[0]
              for target in PAPER_DENSITIES]
    return list(dict.fromkeys(chosen))


def _curve_levels(run: Run, levels: list[int] | None) -> list[int]:
    return default_curve_levels(run.stats) if levels is None else levels


def _curve_units(run: Run, levels: list[int]) -> list[Unit]:
    """The units whose curves are drawn (diverged ones left out, as in the tables)."""
    return [Unit(r["seed"], r["level"], r["variant"]) for r in run.records
            if r["level"] in levels and not diverged(r)]


def curve_splits(runs: list[Run], levels: list[int] | None = None) -> list[str]:
    """Per run, the split its training curves can show: "test" where every drawn unit
    measured the test set at every evaluation (runs made with --test-curve, or before the
    test set was measured only where early stopping reads it), else "val"."""
    splits = []
    for run in runs:
        split = "test"
        for unit in _curve_units(run, _curve_levels(run, levels)):
            metrics = run.store.metrics(unit)
            if not {e.iteration for e in metrics if e.split == "val"} <= \
                    {e.iteration for e in metrics if e.split == "test"}:
                split = "val"
                break
        splits.append(split)
    return splits


def curve_quantity(splits: list[str]) -> str:
    """What a curves figure of runs with `splits` shows, capitalised."""
    if set(splits) == {"test"}:
        return "Test accuracy"
    if set(splits) == {"val"}:
        return "Validation accuracy"
    return "Test accuracy (validation accuracy where a panel says so)"


VAL_CURVE_NOTE = ("the test set is measured only at validation minima and at the end: "
                  "--test-curve for test curves")


def _mean_curve(run: Run, level: int, variant: str, split: str = "test"
                ) -> tuple[list[int], list[float]]:
    """Accuracy (%) on `split` by iteration, averaged over the seeds evaluated at that
    iteration (diverged units left out, as in the tables)."""
    by_iteration: dict[int, list[float]] = defaultdict(list)
    for unit in _curve_units(run, [level]):
        if unit.variant == variant:
            for e in run.store.metrics(unit):
                if e.split == split and math.isfinite(e.accuracy):
                    by_iteration[e.iteration].append(100 * e.accuracy)
    iterations = sorted(by_iteration)
    return iterations, [statistics.mean(by_iteration[i]) for i in iterations]


def curves_figure(runs: list[Run], levels: list[int] | None = None,
                  splits: list[str] | None = None) -> Figure:
    """Figure 3: test accuracy while training, one colour per level, one panel per run. A run
    without test curves (`curve_splits`) shows validation accuracy, and says so."""
    from matplotlib.lines import Line2D

    splits = curve_splits(runs, levels) if splits is None else splits
    fig, axes = _figure(len(runs))
    variants = _variants(runs)
    settled: list[float] = []  # accuracies after the first tenth of training
    for run, ax, split in zip(runs, axes, splits):
        chosen = _curve_levels(run, levels)
        rows = [row for row in run.stats if row["level"] in chosen]
        for i, row in enumerate(rows):
            for v in row["variants"]:
                xs, ys = _mean_curve(run, row["level"], v, split)
                ax.plot(xs, ys, color=f"C{i % 10}", linestyle=_linestyle(v, variants),
                        linewidth=1.2)
                settled += [y for x, y in zip(xs, ys) if xs and x >= 0.1 * max(xs)]
        handles = [Line2D([], [], color=f"C{i % 10}", label=f"{pct_label(row['remaining'])}%")
                   for i, row in enumerate(rows)]
        handles += [Line2D([], [], color="gray", linestyle=_linestyle(v, variants), label=v)
                    for v in variants if any(v in row["variants"] for row in rows)]
        _legend_outside(ax, handles=handles, fontsize=8, title="% remaining,\nvariant",
                        title_fontsize=8)
        mixed = split == "val" and "test" in splits
        ax.set_title(run.label + ("\n(validation accuracy: no test curves)" if mixed else ""),
                     fontsize=9)
        ax.set_xlabel("training iteration")
        ax.grid(alpha=0.3)
    quantity = curve_quantity(splits)
    label = {"test": "test", "val": "validation"}[splits[0]] if len(set(splits)) == 1 \
        else "test or validation"
    label += " accuracy (%)"
    axes[0].set_ylabel(label)
    if settled:  # like the paper's Figure 3: zoom on where the curves differ, not on the rise
        honest_ylim(axes[0], min(settled), max(settled), label)
    note = f";\n{VAL_CURVE_NOTE}" if "val" in splits else ""
    fig.suptitle(f"{quantity} during training ({_seeds_note(runs)}{note})", fontsize=10)
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
    x_of = density_positions([100 * r["density"] for r in records])
    bases = [n for n in by_name if not n.endswith("_same_sign") and n != "random_mask"]
    colors = {n: f"C{i % 10}" for i, n in enumerate(bases)}
    for name, rows in by_name.items():
        rows = sorted(rows, key=lambda r: -r["density"])
        base = name.removesuffix("_same_sign")
        style = ({"color": "black", "linestyle": ":"} if name == "random_mask" else
                 {"color": colors.get(base, "grey"),
                  "linestyle": "--" if name.endswith("_same_sign") else "-"})
        ax.plot([x_of[100 * r["density"]] for r in rows],
                [100 * r["test_accuracy"] for r in rows],
                marker="o", markersize=3, label=name, **style)
    _density_axis(ax, [100 * r["density"] for r in records])
    ax.set_ylabel("test accuracy, no training (%)")
    ax.grid(alpha=0.3)
    _legend_outside(ax, fontsize=7, handlelength=3)
    ax.set_title("Supermasks: the untrained network under each mask\n"
                 "(dashed: same sign; dotted: random mask)", fontsize=9)
    return fig
