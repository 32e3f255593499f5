"""`ticketlab sweep`: bad files refused in one line, a tiny sweep end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import cli
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.report.runs import load_runs

TINY = ('dataset = "digits"\nmodel = "lenet_300_100"\ntrain = "60it"\neval_every = "20it"\n'
        'levels = 2\nseeds = [0]\ncontrols = ["random"]\n')


def write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    (TINY + '[grid]\nscope = "global"\n', "[grid] scope in"),
    (TINY + 'device = "cpu"\n[grid]\nscope = ["layerwise", "global"]\n', "give --device"),
    (TINY + 'colour = 1\n[grid]\nscope = ["layerwise", "global"]\n', "unknown setting 'colour'"),
    (TINY + '[grid]\nrewind = ["0it", "0ep"]\n', "are the same run"),
    (TINY + '[grid\n', "fix the TOML"),
])
def test_bad_sweep_exits_2_with_one_line_and_trains_nothing(tmp_path, capsys, text, message):
    out_dir = tmp_path / "runs"
    code, _, err = cli(capsys, "sweep", str(write(tmp_path, text)), "--out", str(out_dir))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out_dir.exists()


def test_missing_sweep_file(tmp_path, capsys):
    code, _, err = cli(capsys, "sweep", str(tmp_path / "nope.toml"))
    assert code == 2 and "not found" in err and len(err.strip().splitlines()) == 1


def test_plan_prints_each_run_without_training(tmp_path, capsys):
    path = write(tmp_path, TINY + '[grid]\nrewind = ["0it", "20it"]\n')
    code, out, err = cli(capsys, "sweep", str(path), "--plan", "--out", str(tmp_path / "runs"))
    assert code == 0, err
    assert "rewind=0it" in out and "rewind=20it" in out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("imp_*"))


def test_tiny_sweep_end_to_end_shares_level_0(tmp_path, capsys, monkeypatch):
    adopted: list[tuple[str, Unit]] = []
    adopt = RunStore.adopt

    def spy(self: RunStore, unit: Unit, other: RunStore) -> bool:
        adopted.append((self.root.name, unit))
        return adopt(self, unit, other)
    monkeypatch.setattr(RunStore, "adopt", spy)
    path = write(tmp_path, TINY + '[[runs]]\nscope = "layerwise"\n[[runs]]\nscope = "global"\n'
                 'rate = 0.2\n')
    out_dir = tmp_path / "runs"
    code, out, err = cli(capsys, "sweep", str(path), "--executor", "sequential", "--quiet",
                         "--out", str(out_dir))
    assert code == 0, err
    runs = sorted(out_dir.glob("imp_*"))
    assert len(runs) == 2
    report = out_dir / "sweep_tiny"
    assert (report / "report.html").is_file() and (report / "levels.csv").is_file()
    labels = {r.label for r in load_runs(runs)}
    assert labels == {"scope=layerwise, rate=None", "scope=global, rate=0.2"}
    html = (report / "report.html").read_text()
    assert "scope=layerwise" in html and "scope=global" in html
    assert "run 1/2: scope=layerwise" in out and "run 2/2: scope=global" in out
    # the second run borrowed the first one's dense level 0 instead of training it again
    assert [unit for _, unit in adopted] == [Unit(0, 0, "ticket")]
    (first,) = [RunStore.open(r) for r in runs if r.name != adopted[0][0]]
    second = RunStore.open(out_dir / adopted[0][0])
    assert second.config()["science"]["pruning"]["scope"] == "global"  # the later run
    assert second.result(Unit(0, 0, "ticket")) == first.result(Unit(0, 0, "ticket"))
    assert second.result(Unit(0, 1, "ticket")) != first.result(Unit(0, 1, "ticket"))
    # the same command again: every unit done, nothing trained, the same report
    adopted.clear()
    code, out, err = cli(capsys, "sweep", str(path), "--quiet", "--out", str(out_dir),
                         "--report", str(tmp_path / "again"))
    assert code == 0, err
    assert adopted == [] and (tmp_path / "again" / "report.html").is_file()


def test_interrupt_says_how_to_resume_and_exits_130(tmp_path, capsys, monkeypatch):
    from ticketlab.experiments import imp
    from ticketlab.training import interrupt

    def stopped(configs, runtime, reporter):
        assert len(configs) == 2
        raise interrupt.Interrupted(40)
    monkeypatch.setattr(imp, "run_many", stopped)
    path = write(tmp_path, TINY + '[grid]\nrewind = ["0it", "20it"]\n')
    code, _, err = cli(capsys, "sweep", str(path), "--quiet", "--out", str(tmp_path / "runs"))
    assert code == 130
    assert "interrupted at step 40" in err and "run the same command again to resume" in err
    assert not (tmp_path / "runs" / "sweep_tiny").exists()  # no report of half a sweep


def test_plan_counts_the_units_of_every_run_and_writes_nothing(tmp_path, capsys):
    """Two runs differing in pruning only: the second borrows the first's dense level 0."""
    path = write(tmp_path, TINY + '[grid]\nscope = ["layerwise", "global"]\n')
    code, out, err = cli(capsys, "sweep", str(path), "--plan", "--out", str(tmp_path / "runs"))
    assert code == 0, err
    rows = {tuple(c.strip() for c in line.split("│")[1:-1]) for line in out.splitlines()
            if line.startswith("│")}
    # units, done, borrowed, resumable, to do: one run trains level 0, the other borrows it
    level0 = sorted(r[2:7] for r in rows if r[1] == "0")
    assert level0 == [("1", "0", "0", "0", "1"), ("1", "0", "1", "0", "0")]
    assert not (tmp_path / "runs").exists()
