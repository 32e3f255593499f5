"""`write_report`: the figures, CSV tables and HTML page of one run or an overlay of several."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ticketlab.errors import TicketlabError
from ticketlab.experiments.store import Unit
from ticketlab.io import atomic_write_text
from ticketlab.report import plots, rewinds
from ticketlab.report.claims import headline, headline_markdown
from ticketlab.report.html import render_html, supermask_html
from ticketlab.report.runs import Run, load_runs
from ticketlab.report.table import has_train_accuracy

METRICS = ("early_stop_iteration", "test_accuracy_pct", "train_accuracy_early_stop_pct",
           "train_accuracy_final_pct")


def level_csv_rows(run: Run) -> list[dict[str, Any]]:
    """`level_stats` flattened: one row per level, columns like ticket_test_accuracy_pct_mean;
    {variant}_n_diverged counts the units left out of the means (empty cell: no value)."""
    rows = []
    for row in run.stats:
        flat: dict[str, Any] = {"run": run.name, "level": row["level"],
                                "remaining_pct": row["remaining"]}
        for v, cell in row["variants"].items():
            flat[f"{v}_n_seeds"] = cell["n_seeds"]
            flat[f"{v}_n_diverged"] = cell["n_diverged"]
            for metric in METRICS:
                if cell[metric] is None and metric.startswith("train"):
                    continue  # not recorded (older runs): no column at all
                for k in ("mean", "std", "min", "max"):
                    flat[f"{v}_{metric}_{k}"] = (cell[metric] or {}).get(k)
        rows.append(flat)
    return rows


def layer_densities(run: Run) -> list[dict[str, Any]]:
    """Per level, the density of each prunable tensor in the ticket mask of its first seed."""
    rows = []
    for row in run.stats:
        seeds = sorted(r["seed"] for r in run.records
                       if r["level"] == row["level"] and r["variant"] == "ticket")
        if seeds:
            mask = run.store.load_mask(Unit(seeds[0], row["level"], "ticket"))
            rows.append({"run": run.name, "level": row["level"], "seed": seeds[0],
                         "density": mask.density(), **mask.density_by_tensor()})
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    columns = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path


def _check_levels(runs: list[Run], levels: list[int]) -> None:
    present = sorted({row["level"] for run in runs for row in run.stats})
    missing = sorted(set(levels) - set(present))
    if missing:
        raise TicketlabError(f"level(s) {','.join(map(str, missing))} not in the run(s): choose "
                             f"--levels from {','.join(map(str, present))}")


def write_report(run_dirs: list[Path], out: Path, levels: list[int] | None = None,
                 supermasks: list[dict[str, Any]] | None = None) -> list[Path]:
    """Writes the figures (PNG and SVG), levels.csv, densities.csv, headline.md (the paper's
    headline questions, see `claims`) and report.html into `out`.

    `levels` picks the levels of the training-curves figure (default: the ticket levels nearest
    the paper's 100, 51.3, 21.1, 7.0 and 3.6 %; drawn for up to four runs) and, for runs
    differing only in the rewind point, of the accuracy-against-rewind figure and rewind.csv.
    `supermasks` (records of `experiments.supermasks.scan_supermasks`) adds their table, CSV
    and figure.
    Returns the paths written, report.html last.
    """
    return build_report(load_runs(run_dirs), out, levels, supermasks)


MAX_CURVE_PANELS = 4


def build_report(runs: list[Run], out: Path, levels: list[int] | None = None,
                 supermasks: list[dict[str, Any]] | None = None) -> list[Path]:
    """`write_report` for runs already loaded (the CLI prints their tables first)."""
    if levels is not None:
        _check_levels(runs, levels)
    out = Path(out)
    densities = {run.name: layer_densities(run) for run in runs}
    paths = [_write_csv(out / "levels.csv", [r for run in runs for r in level_csv_rows(run)]),
             _write_csv(out / "densities.csv", [r for rows in densities.values() for r in rows])]
    figures = [  # file stem, figure, caption
        ("accuracy", plots.accuracy_figure(runs),
         "Test accuracy at the early-stop iteration against % of weights remaining"),
        ("early_stop", plots.early_stop_figure(runs),
         "Early-stop iteration (lowest validation loss) against % of weights remaining; the "
         "black line is the training budget: an early stop on it was still improving"),
    ]
    if any(has_train_accuracy(run.records) for run in runs):  # runs made before: no figure
        figures.append(("train_accuracy", plots.train_accuracy_figure(runs),
                        "Training accuracy (fixed training subset) at the early-stop iteration "
                        "and at the end of training, against % of weights remaining"))
    if len(runs) <= MAX_CURVE_PANELS:  # one panel per run: more would not be readable
        splits = plots.curve_splits(runs, levels)
        note = f" ({plots.VAL_CURVE_NOTE})" if "val" in splits else ""
        figures.append(("curves", plots.curves_figure(runs, levels, splits),
                        f"{plots.curve_quantity(splits)} during training at selected levels "
                        f"(solid: ticket; dashed: controls){note}"))
    if rewinds.differ_in_rewind_only(runs) and rewinds.rewind_levels(runs, levels):
        paths.append(_write_csv(out / "rewind.csv", rewinds.rewind_rows(runs, levels)))
        figures.append(("rewind", rewinds.rewind_figure(runs, levels),
                        "Test accuracy at early stop against the rewind iteration at selected "
                        "densities (solid: ticket; dashed: controls; black: the dense network)"))
    sections = []
    if supermasks:
        paths.append(_write_csv(out / "supermask.csv", supermasks))
        figures.append(("supermask", plots.supermask_figure(supermasks), "Supermasks: test "
                        "accuracy of the untrained network under each criterion's mask"))
        sections.append(("Supermasks: untrained network, test accuracy (%)",
                         supermask_html(supermasks)))
    embedded = []
    for stem, fig, caption in figures:
        embedded.append((caption, plots.save_figure(fig, out / stem)))
        paths += [out / f"{stem}.png", out / f"{stem}.svg"]
    paths.append(out / "headline.md")
    atomic_write_text(paths[-1], "\n".join(headline_markdown(headline(run.records), run.name)
                                           for run in runs))
    html = out / "report.html"
    atomic_write_text(html, render_html(runs, densities, embedded, sections))
    return [*paths, html]
