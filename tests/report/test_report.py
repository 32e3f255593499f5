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
from ticketlab.report import level_stats, write_report
from ticketlab.report.html import render_html
from ticketlab.report.plots import accuracy_figure, default_curve_levels, pct_label
from ticketlab.report.runs import load_runs, run_labels

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
    assert html.count('src="data:image/png;base64,') == 3
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
])
def test_cli_errors_are_one_line(runs, tmp_path, capsys, argv, needle):
    args = [a.format(tmp=tmp_path, run=runs[0]) for a in argv]
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not list(tmp_path.iterdir())  # nothing written
