"""The table and figure of `ticketlab bench` (`deploy.bench.measure`'s rows).

Speed-ups are ratios of medians timed interleaved in one process, so they carry over between
machines far better than the absolute times next to them, which hold only for this machine.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from ticketlab.report.plots import _density_axis, _figure, _legend_outside, density_positions

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMAT_MARKERS = ("o", "s", "^", "D", "v", "P")
FORMAT_LINESTYLES = ("-", "-.", ":")  # the ideal line alone is dashed


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def bench_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    """One row per (batch, model), batch sizes in sections, in the order measured."""
    repeats = sorted({r["repeats"] for r in rows}) or [0]
    n = str(repeats[0]) if len(repeats) == 1 else f"{repeats[0]:,}–{repeats[-1]:,}"
    table = Table(title=title, caption=(
        f"median and p90 latency of one forward call over {n} timed calls after warm-up, "
        "models timed interleaved in one process; speed-up = the baseline's median / "
        "the model's (the baseline: 1.0x); "
        "peak memory = state + input + peak allocated during one call "
        "(n/a: a callable whose memory may live outside PyTorch)"))
    for name, justify in (("batch", "right"), ("model", "left"), ("median\n(ms)", "right"),
                          ("p90\n(ms)", "right"), ("throughput\n(samples/s)", "right"),
                          ("peak memory\n(MB)", "right"), ("speed-up", "right"),
                          ("repeats", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    previous = None
    for r in rows:
        if previous is not None and r["batch"] != previous:
            table.add_section()
        previous = r["batch"]
        memory = r["peak_memory_mb"]
        table.add_row(str(r["batch"]), escape(r["model"]), _ms(r["median_ms"]),
                      _ms(r["p90_ms"]), f"{r['throughput']:,.0f}",
                      "n/a" if memory is None else f"{memory:.2f}", f"{r['speedup']:.1f}x",
                      f"{r['repeats']:,}")
    return table


def speedup_figure(points: list[dict[str, Any]], title: str) -> Figure:
    """Speed-up over dense against % of weights remaining, one colour per batch size, one
    marker (and line style) per format, with the ideal 1/density dashed and 1.0x solid.

    The y axis is logarithmic: speed-ups are ratios, so 2x faster and 2x slower sit at equal
    distances from 1.0x, and the ideal 1/density is a straight line on the log-log axes,
    whose gap to a measured line reads as the same factor at every density.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (ax,) = _figure()
    percents = sorted({100 * p["density"] for p in points}, reverse=True)
    x_of = density_positions(percents)
    batches = sorted({p["batch"] for p in points})
    formats = list(dict.fromkeys(p["format"] for p in points))
    series: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        series[(p["batch"], p["format"])].append(p)
    for (batch, fmt), pts in series.items():
        pts = sorted(pts, key=lambda p: -p["density"])
        i, j = batches.index(batch), formats.index(fmt)
        ax.plot([x_of[100 * p["density"]] for p in pts], [p["speedup"] for p in pts],
                color=f"C{i % 10}", marker=FORMAT_MARKERS[j % len(FORMAT_MARKERS)],
                linestyle=FORMAT_LINESTYLES[j % len(FORMAT_LINESTYLES)], markersize=4,
                linewidth=1.4)
    # the ideal: 1/density for sparse layers, or each point's own (e.g. the multiply-
    # accumulates saved by a compact model, which fall faster than its weights)
    given = {100 * p["density"]: p["ideal"] for p in points if p.get("ideal")}
    ideal = [p for p in percents if p > 0]
    ax.plot([x_of[p] for p in ideal], [given.get(p, 100 / p) for p in ideal], color="black",
            linestyle="--", linewidth=1)
    ax.axhline(1.0, color="gray", linewidth=1)
    if percents:
        _density_axis(ax, percents)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("speed-up over dense (log scale)")
    ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=f"C{i % 10}", label=f"batch {b}")
               for i, b in enumerate(batches)]
    if len(formats) > 1:
        handles += [Line2D([], [], color="gray", label=fmt,
                           marker=FORMAT_MARKERS[j % len(FORMAT_MARKERS)],
                           linestyle=FORMAT_LINESTYLES[j % len(FORMAT_LINESTYLES)])
                    for j, fmt in enumerate(formats)]
    ideal_label = "ideal: multiply-accumulates saved" if given else "ideal: 1 / density"
    handles += [Line2D([], [], color="black", linestyle="--", label=ideal_label),
                Line2D([], [], color="gray", label="1.0x: as fast as dense")]
    _legend_outside(ax, handles=handles, fontsize=8)
    fmt_note = f" ({formats[0]} export)" if len(formats) == 1 else ""
    ax.set_title(f"{title}\nspeed-up over the dense network{fmt_note},\n"
                 "medians timed interleaved in one process", fontsize=10)
    return fig
