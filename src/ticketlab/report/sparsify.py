"""The report of a `ticketlab sparsify` run: accuracy and sparsity over training, per-layer
density at the end, and a per-seed table (figures drawn off-screen, like `plots`)."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

from ticketlab.experiments.sparsify import read_sparsity, unit_of
from ticketlab.experiments.store import RunStore
from ticketlab.io import atomic_write_text
from ticketlab.report.plots import save_figure

COLUMNS = ("seed", "density", "early_stop_iteration", "early_stop_test_accuracy",
           "final_test_accuracy", "final_mask_iteration")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def sparsify_table(summary: dict[str, Any], title: str | None = None) -> Table:
    """One row per seed, and the mean ± std when there are several."""
    records = [r for r in summary["records"] if r["variant"] == "sparsify"]
    table = Table(title=title, caption="test accuracy at the early stop (lowest validation "
                  "loss) among the evaluations made with the final mask")
    for name in ("seed", "% weights\nremaining", "final mask\nfrom (it)", "early stop\n(it)",
                 "test acc (%)\nearly stop", "test acc (%)\nfinal"):
        table.add_column(name, justify="right")
    for r in records:
        table.add_row(str(r["seed"]), f"{100 * r['density']:.2f}",
                      str(r.get("final_mask_iteration", "-")),
                      str(r["early_stop_iteration"]), _pct(r["early_stop_test_accuracy"]),
                      _pct(r["final_test_accuracy"]))
    accs = [r["early_stop_test_accuracy"] for r in records
            if r["early_stop_test_accuracy"] is not None]
    if len(accs) > 1:
        table.add_row("mean ± std", "", "", "",
                      f"{100 * statistics.mean(accs):.2f} ± {100 * statistics.stdev(accs):.2f}",
                      "")
    return table


def sparsify_figure(store: RunStore) -> Any:
    """Left: validation accuracy over training per seed (solid) with the sparsity (dashed,
    right axis). Right: density of each prunable tensor at the end (first seed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = [r for r in store.records() if r["variant"] == "sparsify"]
    fig = Figure(figsize=(12.8, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    twin = left.twinx()
    for i, r in enumerate(records):
        unit, color = unit_of(r["seed"]), f"C{i % 10}"
        val = [(e.iteration, e.accuracy) for e in store.metrics(unit) if e.split == "val"]
        left.plot([a for a, _ in val], [100 * b for _, b in val], color=color,
                  label=f"seed {r['seed']}: val accuracy")
        log = read_sparsity(store, unit)
        twin.plot([a for a, _ in log], [100 * s for _, s in log], color=color, linestyle="--")
        if r["early_stop_iteration"] is not None:
            left.axvline(r["early_stop_iteration"], color=color, linewidth=0.6, linestyle=":")
    left.set_xlabel("training iteration")
    left.set_ylabel("validation accuracy (%)")
    twin.set_ylabel("sparsity (%, dashed)")
    twin.set_ylim(0, 100)
    left.legend(loc="lower left", fontsize="small")
    left.set_title("accuracy and sparsity during training (dotted: early stop)")
    if records:
        mask = store.load_mask(unit_of(records[0]["seed"]))
        per = mask.density_by_tensor()
        names = list(per)
        right.barh(range(len(names)), [100 * per[n] for n in names], color="C0")
        right.set_yticks(range(len(names)), names, fontsize="small")
        right.invert_yaxis()
        right.set_xlim(0, 100)
        right.set_xlabel("% of weights remaining")
        right.set_title(f"per-layer density at the end (seed {records[0]['seed']}; "
                        f"overall {100 * mask.density():.1f}%)")
    return fig


def write_sparsify_report(run_dir: Path, out: Path) -> list[Path]:
    """sparsify.png/.svg, seeds.csv (the per-seed records) and densities.csv (per tensor,
    per seed) into `out`."""
    store = RunStore.open(run_dir)
    out = Path(out)
    records = [r for r in store.records() if r["variant"] == "sparsify"]
    paths = []
    save_figure(sparsify_figure(store), out / "sparsify")
    paths += [out / "sparsify.png", out / "sparsify.svg"]
    densities = [{"seed": r["seed"], **store.load_mask(unit_of(r["seed"])).density_by_tensor()}
                 for r in records]
    for name, rows in (("seeds.csv", [{k: r.get(k) for k in COLUMNS} for r in records]),
                       ("densities.csv", densities)):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, list(dict.fromkeys(k for r in rows for k in r)) or ["seed"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / name, buf.getvalue())
        paths.append(out / name)
    return paths
