"""Reports: valid figures, numbers equal to the records, a self-contained page, CLI errors."""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import tiny_config
from ticketlab.cli import main
from ticketlab.config import Runtime
from ticketlab.errors import TicketlabError
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import Unit
from ticketlab.report import level_stats, levels_table, plots, write_report
from ticketlab.report.html import render_html
from ticketlab.report.plots import (
    MIN_ACCURACY_SPAN,
    accuracy_figure,
    default_curve_levels,
    early_stop_figure,
    pct_label,
)
from ticketlab.report.runs import load_runs, run_labels
from ticketlab.report.table import has_train_accuracy

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny runs (2 seeds, 2 levels, both controls) that differ only in the rewind point."""
    out = tmp_path_factory.mktemp("runs")
    runtime = Runtime(out=out, device="cpu", quiet=True)
    dirs = []
    for rewind in ("0it", "20it"):
        config = tiny_config(seeds=(0, 1), rewind=rewind)
        run_imp(config, runtime)
        dirs.append(out / config.run_name())
    return dirs[0], dirs[1]


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> list[Path]:
    return write_report([runs[0]], tmp_path_factory.mktemp("report"))


def test_figures_are_valid_png_and_svg(report):
    import matplotlib.image

    names = {p.name for p in report}
    for stem in ("accuracy", "early_stop", "curves"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    for path in report:
        if path.suffix == ".png":
            assert path.read_bytes().startswith(PNG_SIGNATURE)
            assert matplotlib.image.imread(path).shape[0] > 100
        elif path.suffix == ".svg":
            assert ET.parse(path).getroot().tag.endswith("svg")
    assert {"levels.csv", "densities.csv", "report.html"} <= names
    assert report[-1].name == "report.html"


def test_curves_show_test_accuracy_only_for_runs_that_measured_it(tmp_path):
    runtime = Runtime(out=tmp_path, device="cpu", quiet=True)
    made = []
    for test_curve in (False, True):
        config = tiny_config(levels=1, controls=(), eval_every="5it", test_curve=test_curve)
        run_imp(config, runtime)
        made.append(tmp_path / config.run_name())
    default, curved = (load_runs([d]) for d in made)
    # by default the test set is measured only where early stopping reads it
    assert plots.curve_splits(default) == ["val"]
    fig = plots.curves_figure(default)
    assert fig.axes[0].get_ylabel().startswith("validation accuracy (%)")
    assert "--test-curve" in fig.get_suptitle()
    html = write_report([made[0]], tmp_path / "report")[-1].read_text()
    assert "Validation accuracy during training" in html  # the caption says so too

    assert plots.curve_splits(curved) == ["test"]
    fig = plots.curves_figure(curved)
    assert fig.axes[0].get_ylabel().startswith("test accuracy (%)")
    assert fig.get_suptitle().startswith("Test accuracy during training")
    metrics = curved[0].store.metrics(Unit(0, 0, "ticket"))
    xs, ys = fig.axes[0].get_lines()[0].get_data()  # level 0's ticket, one seed: its test rows
    assert list(xs) == [e.iteration for e in metrics if e.split == "val"]
    assert list(ys) == [100 * e.accuracy for e in metrics if e.split == "test"]

    fig = plots.curves_figure([*default, *curved])  # one panel each, saying which is which
    assert fig.axes[0].get_ylabel().startswith("test or validation accuracy (%)")
    assert "validation accuracy" in fig.axes[0].get_title()
    assert "validation" not in fig.axes[1].get_title()


def test_levels_csv_equals_the_records(runs, report):
    records = json.loads((runs[0] / "summary.json").read_text())["records"]
    rows = list(csv.DictReader((report[0].parent / "levels.csv").open()))
    assert [int(r["level"]) for r in rows] == [0, 1, 2]
    for row in rows:
        level = int(row["level"])
        assert row["run"] == runs[0].name
        assert float(row["remaining_pct"]) == pytest.approx(
            100 * statistics.mean(r["density"] for r in records if r["level"] == level))
        for variant in ("ticket", "reinit", "random"):
            rs = [r for r in records if r["level"] == level and r["variant"] == variant]
            if not rs:
                assert not row.get(f"{variant}_n_seeds")
                continue
            accs = [100 * r["early_stop_test_accuracy"] for r in rs]
            its = [r["early_stop_iteration"] for r in rs]
            assert int(row[f"{variant}_n_seeds"]) == len(rs) == 2
            for key, values in (("test_accuracy_pct", accs), ("early_stop_iteration", its)):
                assert float(row[f"{variant}_{key}_mean"]) == pytest.approx(
                    statistics.mean(values))
                assert float(row[f"{variant}_{key}_std"]) == pytest.approx(
                    statistics.stdev(values))
                assert float(row[f"{variant}_{key}_min"]) == pytest.approx(min(values))
                assert float(row[f"{variant}_{key}_max"]) == pytest.approx(max(values))


def test_layer_densities_are_counted_from_masks(runs, report):
    rows = list(csv.DictReader((report[0].parent / "densities.csv").open()))
    assert [(int(r["level"]), int(r["seed"])) for r in rows] == [(0, 0), (1, 0), (2, 0)]
    assert float(rows[0]["fc1.weight"]) == 1.0
    assert float(rows[2]["fc1.weight"]) == pytest.approx(0.64, abs=1e-3)
    assert float(rows[2]["fc3.weight"]) == pytest.approx(0.81, abs=1e-3)  # output: 0.9 per level


def test_html_is_self_contained(runs, report):
    html = report[-1].read_text()
    assert runs[0].name in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, flags=re.I)
    assert "<script" not in html
    records = json.loads((runs[0] / "summary.json").read_text())["records"]
    assert html.count('src="data:image/png;base64,') == 3 + has_train_accuracy(records)
    assert "fc1.weight" in html and "&quot;rewind&quot;" in html


def test_html_shows_commands_escaped(runs):
    (run,) = load_runs([runs[0]])
    run.config["commands"] = ["ticketlab find --seeds 0,1 <&>"]
    html = render_html([run], {run.name: []}, [])
    assert "ticketlab find --seeds 0,1 &lt;&amp;&gt;" in html and "<&>" not in html


def test_overlay_labels_name_what_differs(runs, tmp_path):
    loaded = load_runs(list(runs))
    assert [r.label for r in loaded] == ["rewind=0it", "rewind=20it"]
    legend = [t.get_text() for t in accuracy_figure(loaded).axes[0].get_legend().get_texts()]
    assert "ticket (rewind=20it)" in legend and "random (rewind=0it)" in legend
    paths = write_report(list(runs), tmp_path / "both", levels=[0, 2])
    rows = list(csv.DictReader((tmp_path / "both" / "levels.csv").open()))
    assert {r["run"] for r in rows} == {runs[0].name, runs[1].name}
    assert "rewind=20it" in paths[-1].read_text()


def test_labels_and_variants():
    a = {"rewind": "0it", "pruning": {"scope": "layerwise", "rates": {"fc": 0.2}}}
    b = {"rewind": "0it", "pruning": {"scope": "global", "rates": {"fc": 0.5}}}
    assert run_labels([a, b], ["A", "B"]) == ["scope=layerwise, rates.fc=0.2",
                                              "scope=global, rates.fc=0.5"]
    assert run_labels([a, {**a, "one_shot": [0.5]}], ["A", "B"]) == ["iterative", "one-shot"]
    pruning = {**a["pruning"], "criterion": "movement"}
    assert run_labels([a, {**a, "pruning": pruning}], ["A", "B"]) == \
        ["criterion=large_final", "criterion=movement"]
    assert run_labels([a], ["A"]) == ["A"]
    assert run_labels([a, a], ["A", "B"]) == ["A", "B"]
    record = {"seed": 0, "level": 1, "density": 0.5, "early_stop_iteration": 10,
              "early_stop_test_accuracy": 0.9}
    stats = level_stats([{**record, "variant": v} for v in ("shuffle", "random", "ticket")])
    assert list(stats[0]["variants"]) == ["ticket", "random", "shuffle"]
    assert stats[0]["variants"]["ticket"]["test_accuracy_pct"]["std"] is None


def test_curve_levels_and_axis_labels():
    stats = [{"level": lv, "remaining": 100 * 0.8 ** lv, "variants": {"ticket": {}}}
             for lv in range(16)]
    assert default_curve_levels(stats) == [0, 3, 7, 12, 15]
    assert [pct_label(p) for p in (100, 51.2, 7.0, 0.47)] == ["100", "51.2", "7.0", "0.47"]


def test_run_without_finished_unit_is_an_error(runs, tmp_path):
    empty = tmp_path / "imp_empty"
    empty.mkdir()
    shutil.copy(runs[0] / "config.json", empty / "config.json")
    with pytest.raises(TicketlabError, match="no finished unit"):
        write_report([empty], tmp_path / "out")


def test_overlay_colours_runs_and_styles_variants(runs):
    loaded = load_runs(list(runs))
    handles, labels = accuracy_figure(loaded).axes[0].get_legend_handles_labels()
    lines = {label: handle[0] for handle, label in zip(handles, labels)}  # errorbar's line
    colour = {label: line.get_color() for label, line in lines.items()}
    style = {label: line.get_linestyle() for label, line in lines.items()}
    assert colour["ticket (rewind=0it)"] == colour["random (rewind=0it)"]
    assert colour["ticket (rewind=0it)"] != colour["ticket (rewind=20it)"]
    assert style["ticket (rewind=0it)"] == style["ticket (rewind=20it)"] == "-"
    assert style["random (rewind=0it)"] != "-"


def test_variants_keep_only_those_units_and_the_dense_level(runs, tmp_path):
    loaded = load_runs(list(runs), ["ticket"])
    for run in loaded:
        assert {r["variant"] for r in run.records} == {"ticket"}
        assert run.stats[0]["level"] == 0 and all(set(row["variants"]) == {"ticket"}
                                                   for row in run.stats)
    only = load_runs(list(runs), ["random"])
    assert {(r["level"] == 0, r["variant"]) for r in only[0].records} == {
        (True, "ticket"), (False, "random")}
    write_report(list(runs), tmp_path / "tickets")  # the default: every variant
    rows = list(csv.DictReader((tmp_path / "tickets" / "levels.csv").open()))
    assert any(k.startswith("reinit_") for k in rows[0])


def test_long_legend_labels_go_below_the_axes():
    fig, (ax,) = plots._figure()
    ax.plot([1, 2], [1, 2], label="ticket (scope=global, criterion=synflow, one-shot)")
    plots._legend_outside(ax)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    assert ax.get_legend().get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0


def test_cli_report(runs, tmp_path, capsys):
    assert main(["report", str(runs[0]), "--out", str(tmp_path / "r"), "--levels", "1"]) == 0
    printed = capsys.readouterr().out
    assert "early stop" in printed and printed.strip().endswith("report.html")
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "r2"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [f"report: {tmp_path}/r2/report.html"]


@pytest.mark.parametrize("argv, needle", [
    (["{tmp}"], "not a ticketlab run directory"),
    (["{run}", "{run}"], "--out"),
    (["{run}", "--levels", "9", "--out", "{tmp}/r"], "choose --levels from 0,1,2"),
    (["{run}", "--variants", "ticket,bogus", "--out", "{tmp}/r"], "bogus not in the run"),
])
def test_cli_errors_are_one_line(runs, tmp_path, capsys, argv, needle):
    args = [a.format(tmp=tmp_path, run=runs[0]) for a in argv]
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("overrides", [{"lr": 10.0}, {"threshold": 1000.0}],
                         ids=["diverging-lr", "density-0"])
def test_report_on_runs_find_accepted(tmp_path, overrides):
    """`find --lr 10` (every early stop at 0) and `--threshold 1000` (a mask of density 0)."""
    config = tiny_config(**overrides)
    run_imp(config, Runtime(out=tmp_path, device="cpu", quiet=True))
    paths = write_report([tmp_path / config.run_name()], tmp_path / "report")
    html = paths[-1].read_text()
    assert "Claims" in html and "winning" in html
    headline = (tmp_path / "report" / "headline.md").read_text()
    assert re.search(r"^\| 1 \| (80\.2|0\.0) \| ", headline, flags=re.M)  # level 1's claims
    if "threshold" in overrides:
        (run,) = load_runs([tmp_path / config.run_name()])
        fig = accuracy_figure([run])
        labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert labels == ["100", "0"]


def _rewrite_units(run_dir: Path, edit) -> None:  # type: ignore[no-untyped-def]
    """Edits every result.json as a newer ticketlab would write it; drops the summary so that
    it is rebuilt from the units."""
    for path in run_dir.glob("seed_*/level_*/*/result.json"):
        record = json.loads(path.read_text())
        path.write_text(json.dumps(edit(record)))
    (run_dir / "summary.json").unlink()


def test_diverged_units_and_training_accuracy(runs, tmp_path):
    run_dir = tmp_path / runs[0].name
    shutil.copytree(runs[0], run_dir)
    def edit(r):  # type: ignore[no-untyped-def]
        r.update(early_stop_train_accuracy=0.5 + r["level"] / 10 + r["seed"] / 100,
                 final_train_accuracy=0.6 + r["level"] / 10, diverged=False,
                 diverged_iteration=None)
        if (r["seed"], r["level"], r["variant"]) == (1, 2, "reinit"):
            r.update(diverged=True, diverged_iteration=7, early_stop_iteration=None,
                     early_stop_val_loss=None, early_stop_test_accuracy=None,
                     final_test_accuracy=None, early_stop_train_accuracy=None,
                     final_train_accuracy=None)
        return r
    _rewrite_units(run_dir, edit)
    metrics = run_dir / Unit(0, 1, "ticket").relpath() / "metrics.csv"
    metrics.write_text(metrics.read_text() + "60,train,0.1,0.99\n")
    paths = write_report([run_dir], tmp_path / "report")
    assert "train_accuracy.png" in {p.name for p in paths}
    rows = {int(r["level"]): r for r in csv.DictReader((tmp_path / "report" / "levels.csv").open())}
    assert rows[2]["reinit_n_seeds"] == "1" and rows[2]["reinit_n_diverged"] == "1"
    assert rows[1]["reinit_n_diverged"] == "0"
    assert float(rows[2]["reinit_early_stop_iteration_mean"]) == float(
        rows[2]["reinit_early_stop_iteration_min"])  # one seed left
    assert float(rows[2]["ticket_train_accuracy_early_stop_pct_mean"]) == pytest.approx(70.5)
    assert float(rows[1]["ticket_train_accuracy_final_pct_mean"]) == pytest.approx(70.0)
    html = paths[-1].read_text()
    assert "+1 diverged" in html and "train acc (%)" in html
    assert "diverged units (left out of every mean)</td><td>1<" in html
    from rich.console import Console
    console = Console(record=True, width=200)
    console.print(levels_table({"records": load_runs([run_dir])[0].records}))
    text = console.export_text()
    assert "reinit 1/2" in text and "train acc" in text


def test_figures_show_their_scale_honestly(runs):
    (run,) = load_runs([runs[0]])
    lowest = min(row["remaining"] for row in run.stats)
    acc = accuracy_figure([run]).axes[0]
    assert acc.get_xticklabels()[-1].get_text() == pct_label(lowest)
    low, high = acc.get_ylim()
    assert high - low >= MIN_ACCURACY_SPAN
    assert "zoomed" in acc.get_ylabel() or low == 0
    stop = early_stop_figure([run]).axes[0]
    assert -2 < stop.get_ylim()[0] <= 0 and stop.get_ylim()[1] >= 60
    budget = [t.get_text() for t in stop.get_legend().get_texts()]
    assert "training budget: 60 it" in budget
    assert any(line.get_ydata()[0] == 60 for line in stop.get_lines()
               if line.get_label().startswith("training budget"))


def test_density_ticks_always_label_the_lowest():
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    percents = [100 * 0.8 ** lv for lv in range(12)] + [100 * 0.8 ** 11 * 0.97]
    plots._density_axis(ax, percents)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "100" and labels[-1] == pct_label(min(percents))
    assert len(labels) == len(set(labels))


def test_supermask_legend_is_outside_the_axes():
    records = [{"criterion": c, "density": d, "target_density": d, "test_accuracy": a}
               for c, a in (("large_final", 0.5), ("large_final_same_sign", 0.6),
                            ("random_mask", 0.1)) for d in (0.5, 0.1, 0.0)]
    fig = plots.supermask_figure(records)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    ax = fig.axes[0]
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
