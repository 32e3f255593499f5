"""The per-layer sensitivity figure and table (`experiments.sensitivity.analyze_run`'s result).

The x axis is the layer's sparsity counted from the mask (what was reached, not what was
asked), so structured cuts that overshoot or fall short plot where they are. Accuracy on
the test split is labelled as such: rates chosen from it are selected on test.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from ticketlab.report.plots import _figure, _legend_outside

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LINESTYLES = ("-", "--", "-.", ":")  # beyond ten layers colours repeat, with another style


def split_label(split: str) -> str:
    return ("validation accuracy" if split == "val" else
            "TEST accuracy (choosing rates from it is selection on test)")


def _by_layer(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in result["records"]:
        rows[r["layer"]].append(r)
    return rows


def _subtitle(result: dict[str, Any]) -> str:
    a = result["asked"]
    return (f"{result['run']}, {result['unit']}\n({100 * result['density']:.3g}% of weights "
            f"kept); {a['granularity']} granularity, {a['criterion']}"
            + (f" ({a['reduce']} per group)" if a["granularity"] != "weight" else ""))


def sensitivity_figure(result: dict[str, Any]) -> Figure:
    """Accuracy against one layer's sparsity, one line per layer, the baseline dashed."""
    fig, (ax,) = _figure()
    split = result["asked"]["split"]
    for i, (layer, rows) in enumerate(_by_layer(result).items()):
        rows = sorted(rows, key=lambda r: (r["sparsity"], r["target"]))
        ax.plot([100 * r["sparsity"] for r in rows], [100 * r["accuracy"] for r in rows],
                marker="o", markersize=3, color=f"C{i % 10}",
                linestyle=LINESTYLES[i // 10 % len(LINESTYLES)], label=layer)
    ax.axhline(100 * result["baseline"]["accuracy"], color="black", linestyle="--",
               linewidth=1, label="baseline (no layer cut)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 101)
    ax.set_xlabel("sparsity of the one layer cut (% of its weights pruned)")
    ax.set_ylabel(f"{split_label(split)}, no retraining (%)", fontsize=9 if split == "val" else 7)
    ax.grid(alpha=0.3)
    _legend_outside(ax, fontsize=7, handlelength=3)
    ax.set_title(f"Per-layer sensitivity: each layer pruned alone\n{_subtitle(result)}",
                 fontsize=8)
    return fig


def sensitivity_table(result: dict[str, Any]) -> Table:
    """Accuracy (%) per layer (rows) and target sparsity (columns); a cell whose reached
    sparsity differs from its target by over half a point shows the reached one."""
    split = result["asked"]["split"]
    targets = list(dict.fromkeys(result["asked"]["sparsities"]))
    base = result["baseline"]
    left_out = [la["layer"] for la in result["layers"] if not la["analysed"]]
    note = (f"; left out ({result['asked']['granularity']} does not apply): "
            f"{', '.join(left_out)}" if left_out else "")
    table = Table(title=f"{split_label(split)} (%) with one layer pruned alone to each "
                  f"sparsity: {_subtitle(result).replace(chr(10), ' ')}",
                  caption=f"baseline (no layer cut): {100 * base['accuracy']:.2f}%; "
                  "\\[reached %] where whole groups or the ticket's own pruning moved the "
                  "sparsity away from the target" + escape(note))
    table.add_column("layer")
    table.add_column("weights", justify="right")
    table.add_column("now %", justify="right")
    for t in targets:
        table.add_column(f"{100 * t:.3g}%", justify="right")
    sizes = {la["layer"]: la for la in result["layers"]}
    for layer, rows in _by_layer(result).items():
        cells = {r["target"]: r for r in rows}
        table.add_row(escape(layer), str(sizes[layer]["weights"]),
                      f"{100 * sizes[layer]['sparsity']:.3g}",
                      *(_cell(cells.get(t), t) for t in targets))
    return table


def _cell(record: dict[str, Any] | None, target: float) -> str:
    if record is None:
        return ""
    text = f"{100 * record['accuracy']:.2f}"
    if abs(record["sparsity"] - target) > 0.005:
        text += f" \\[{100 * record['sparsity']:.3g}]"
    return text
