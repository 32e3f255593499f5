"""The curve of every registered schedule, for the docs: `python -m ticketlab.sparsify.figure OUT`.

Writes OUT.png and OUT.svg (suffix of OUT ignored) with the report's `save_figure`, off-screen.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ticketlab.sparsify.schedules import SCHEDULES, sparsity_at

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# One illustrative window: 1000 iterations, pruning from 100 to 800, target 90%.
TOTAL, START, END, TARGET = 1000, 100, 800, 0.9


def schedules_figure(total: int = TOTAL, start: int = START, end: int = END,
                     target: float = TARGET) -> Figure:
    """One small panel per schedule (default parameters): sparsity against iteration."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = SCHEDULES.names()
    ncols = 4
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(3.0 * ncols, 2.4 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    steps = range(total + 1)
    for ax, name in zip(axes, names):
        ys = [100 * sparsity_at(s, target, name, start, end) for s in steps]
        ax.plot(steps, ys, color="C0", lw=1.6)
        for x in (start, end):
            ax.axvline(x, color="0.6", ls=":", lw=0.8)
        ax.set_title(_title(name), fontsize=9)
        ax.set_ylim(-3, 100)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("sparsity (%)")
    for ax in axes[-ncols:]:
        ax.set_xlabel("iteration")
    fig.suptitle(f"Pruning schedules: target {target:.0%}, window {start}–{end} (dotted) of "
                 f"{total} iterations, default parameters", fontsize=10)
    return fig


def _title(name: str) -> str:
    """The name and its default parameters: iterative (n=3)."""
    params = list(inspect.signature(SCHEDULES.get(name)).parameters.values())[1:]
    defaults = ", ".join(f"{q.name}={q.default:g}" if isinstance(q.default, float)
                         else f"{q.name}={q.default}" for q in params)
    return f"{name} ({defaults})" if defaults else name


def main(argv: list[str] | None = None) -> int:
    from ticketlab.report.plots import save_figure

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ticketlab.sparsify.figure OUT.png  (writes OUT.png and OUT.svg)",
              file=sys.stderr)
        return 2
    out = Path(args[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(schedules_figure(), out)
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.svg')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
