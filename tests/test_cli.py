"""The command line: results, resume after a kill, and one-line errors with exit code 2."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ticketlab.cli import main

TINY = ["--train", "60it", "--eval-every", "20it", "--levels", "2", "--quiet"]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ticketlab.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Runs the CLI in this process (fast); returns (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own exits
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_dir(out: Path) -> Path:
    (d,) = [p for p in out.iterdir() if p.is_dir()]
    return d


def test_find_prints_table_and_report_matches_summary(tmp_path, capsys):
    assert main(["find", *TINY, "--out", str(tmp_path), "--seeds", "0,1"]) == 0
    printed = capsys.readouterr().out
    assert "early stop" in printed and "level" in printed
    summary = json.loads((run_dir(tmp_path) / "summary.json").read_text())
    assert main(["report", str(run_dir(tmp_path))]) == 0
    table = capsys.readouterr().out
    level2 = [r for r in summary["records"] if r["level"] == 2 and r["variant"] == "ticket"]
    accs = [100 * r["early_stop_test_accuracy"] for r in level2]
    mean = sum(accs) / 2
    std = (sum((a - mean) ** 2 for a in accs)) ** 0.5  # sample std of two values
    assert f"{mean:.2f} ± {std:.2f}" in table


def test_config_file_and_flags_override(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('train = "40it"\neval_every = "20it"\nlevels = 1\ncontrols = []\n'
                   'lr = 0.005\n[pruning]\nrates = {fc = 0.5, output = 0.3}\n')
    assert main(["find", "--config", str(cfg), "--lr", "0.002", "--quiet",
                 "--out", str(tmp_path / "runs")]) == 0
    science = json.loads((run_dir(tmp_path / "runs") / "config.json").read_text())["science"]
    assert science["training"]["lr"] == 0.002
    assert science["training"]["train"] == "40it"
    assert science["pruning"]["rates"] == {"fc": 0.5, "output": 0.3, "conv": 0.1}
    summary = json.loads((run_dir(tmp_path / "runs") / "summary.json").read_text())
    assert [r["variant"] for r in summary["records"]] == ["ticket", "ticket"]


def test_settings_are_printed_before_the_run(tmp_path):
    result = run_cli("find", "--train", "20it", "--eval-every", "10it", "--levels", "0",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "lenet_300_100" in result.stderr and "rewind to 0it" in result.stderr
    assert "level 0 ticket seed 0" in result.stderr


def test_killed_run_resumes_to_the_same_summary(tmp_path):
    args = ["find", "--train", "300it", "--eval-every", "20it", "--levels", "2",
            "--controls", "reinit", "--checkpoint-every", "0", "--vectorize", "--quiet"]
    reference = run_cli(*args, "--out", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    expected = (run_dir(tmp_path / "ref") / "summary.json").read_text()

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ticketlab.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # Kill it mid-level: once level 1 (ticket and reinit, trained together) has a checkpoint.
    while not list(out.glob("*/checkpoints/level_01_*.pt")):
        assert time.time() < deadline and proc.poll() is None, "run ended before the kill"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(out.glob("*/seed_0/level_01/ticket/result.json"))

    resumed = run_cli(*args, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert (run_dir(out) / "summary.json").read_text() == expected
    assert not list(out.glob("**/checkpoint.pt")) and not list(out.glob("*/checkpoints/*.pt"))

    again = run_cli(*args[:-1], "--out", str(out))  # not quiet: shows what was reused
    assert again.returncode == 0
    assert "done before" in again.stderr and "(done)" not in again.stderr
    assert (run_dir(out) / "summary.json").read_text() == expected


def test_ctrl_c_saves_and_resumes(tmp_path):
    args = ["find", "--train", "2000it", "--eval-every", "20it", "--levels", "0", "--quiet",
            "--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "ticketlab.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob("*/seed_0/level_00/ticket/rewind.safetensors")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.01)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "resume" in stderr and "Traceback" not in stderr
    assert list(tmp_path.glob("*/seed_0/level_00/ticket/checkpoint.pt"))
    assert run_cli(*args).returncode == 0


@pytest.mark.parametrize("argv, needle", [
    (["find", "--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["find", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["find", "--rate", "1.5"], "(0, 1)"),
    (["find", "--rate", "20"], "(0, 1)"),
    (["find", "--rates", "fc=0"], "(0, 1)"),
    (["find", "--levels", "-1"], "levels must be >= 0"),
    (["find", "--rewind", "2000it", "--train", "100it"], "choose an earlier --rewind"),
    (["find", "--train", "100"], "not a step"),
    (["find", "--controls", "scramble"], "unknown control 'scramble'"),
    (["find", "--criterion", "largest"], "unknown criterion 'largest'"),
    (["find", "--one-shot", "0.5,2"], "one-shot density must be a fraction in (0, 1)"),
    (["find", "--preset", "lenet"], "unknown preset 'lenet'"),
    (["find", "--threshold", "-1"], "threshold alpha must be a finite number >= 0"),
    (["find", "--threshold", "1", "--one-shot", "0.5"], "give one of them"),
    (["find", "--optimizer", "lion"], "invalid choice"),
    (["find", "--device", "tpu"], "unknown device"),
    (["find", "--config", "/nonexistent/run.toml"], "not found"),
    (["find", "--seeds", "a,b"], "not a list of integers"),
    (["report", "/nonexistent/run"], "not a ticketlab run directory"),
    (["find", "--frobnicate"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    extra = ["--out", str(tmp_path)] if argv[0] == "find" else []
    code, _, err = cli(capsys, *argv, *extra)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert not list(tmp_path.iterdir())  # nothing started


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    result = run_cli("find", "--model", "resnet9000", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ticketlab: error: unknown model 'resnet9000': choose one of lenet_300_100, mlp_128_64,"
        " conv_lenet, conv2, conv4, conv6, resnet18, resnet18_imagenet,"
        " cifar_resnet_<depth>[_<width>][_nobn], cifar_vgg_<depth>[_nobn]"]


def test_unreadable_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 3\n")
    code, _, err = cli(capsys, "find", "--config", str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot read config file" in err
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("learning_rate = 3\n")
    code, _, err = cli(capsys, "find", "--config", str(unknown))
    assert code == 2 and "unknown setting 'learning_rate'" in err


def test_missing_and_corrupt_data_files(tmp_path, shared_data, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "find", "--dataset", "mnist", "--data-dir", str(empty),
                       "--out", str(tmp_path / "runs"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "train-images-idx3-ubyte.gz" in err and "--download" in err

    corrupt = tmp_path / "corrupt" / "mnist"
    corrupt.mkdir(parents=True)
    for f in (shared_data / "mnist").iterdir():
        shutil.copy(f, corrupt / f.name)
    labels = corrupt / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 20))
    code, _, err = cli(capsys, "find", "--dataset", "mnist", "--data-dir", str(corrupt.parent),
                       "--out", str(tmp_path / "runs"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "t10k-labels-idx1-ubyte.gz" in err and "md5" in err


def test_corrupt_weights_in_a_run_are_a_clear_error(tmp_path, capsys):
    args = ["find", "--train", "20it", "--eval-every", "10it", "--levels", "1", "--controls",
            "none", "--quiet", "--out", str(tmp_path)]
    assert cli(capsys, *args)[0] == 0
    d = run_dir(tmp_path)
    (d / "seed_0/level_01/ticket/result.json").unlink()
    (d / "seed_0/level_00/ticket/final.safetensors").write_bytes(b"\x00" * 50)
    code, _, err = cli(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "final.safetensors is damaged" in err


@pytest.mark.parametrize("command", [[], ["find"], ["report"], ["models"], ["datasets"]])
def test_help(command, capsys):
    code, out, _ = cli(capsys, *command, "--help")
    assert code == 0 and "usage: ticketlab" in out


def test_listings(capsys):
    _, models, _ = cli(capsys, "models")
    for name in ("lenet_300_100", "mlp_128_64", "conv_lenet", "conv2", "conv4", "conv6"):
        assert name in models
    _, datasets, _ = cli(capsys, "datasets")
    for name in ("digits", "mnist", "fashion-mnist"):
        assert name in datasets


def test_masks_compare(tmp_path, capsys):
    assert main(["find", "--train", "20it", "--eval-every", "10it", "--levels", "1",
                 "--controls", "random", "--seeds", "0,1", "--quiet",
                 "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    run = run_dir(tmp_path)
    same = run / "seed_0/level_01/ticket"
    code, out, _ = cli(capsys, "masks", "compare", str(same), str(same / "mask.safetensors"))
    assert code == 0 and "fc1.weight" in out and "1.0000" in out
    code, out, _ = cli(capsys, "masks", "compare", str(same), str(run / "seed_1/level_01/ticket"))
    assert code == 0
    row = next(line for line in out.splitlines() if line.strip("│ ").startswith("all"))
    jaccard = float(row.split("│")[4])
    assert 0 < jaccard < 1
    code, _, err = cli(capsys, "masks", "compare", str(same), str(tmp_path / "missing"))
    assert code == 2 and "not found" in err and len(err.strip().splitlines()) == 1


def test_criteria_command(tmp_path, capsys):
    report = tmp_path / "report"
    code, _, err = cli(capsys, "criteria", "--train", "40it", "--eval-every", "20it",
                         "--one-shot", "0.5,0.2", "--criteria", "large_final,movement",
                         "--controls", "none", "--quiet", "--out", str(tmp_path / "runs"),
                         "--report", str(report))
    assert code == 0, err
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.startswith("oneshot_") for r in runs)
    for name in ("report.html", "supermask.csv", "supermask.png", "accuracy.svg"):
        assert (report / name).is_file()
    html = (report / "report.html").read_text()
    assert "criterion=movement" in html and "criterion=large_final" in html
    assert "movement_same_sign" not in html  # movement has no same-sign variant
    assert "large_final_same_sign" in html
    code, _, err = cli(capsys, "criteria", "--criteria", "big", "--one-shot", "0.5",
                       "--report", str(tmp_path / "r2"), "--out", str(tmp_path / "r2"))
    assert code == 2 and "unknown criterion 'big'" in err
    code, _, err = cli(capsys, "criteria", "--report", str(tmp_path / "r3"),
                       "--out", str(tmp_path / "r3"))
    assert code == 2 and "--one-shot" in err


def test_threads_option_is_applied_echoed_and_recorded(tmp_path, capsys):
    code, _, err = cli(capsys, "find", "--train", "20it", "--eval-every", "10it", "--levels",
                       "0", "--threads", "3", "--out", str(tmp_path))
    assert code == 0, err
    assert "device cpu, 3 threads" in err
    assert json.loads((run_dir(tmp_path) / "config.json").read_text())["threads"] == 3
    (tmp_path / "threads.toml").write_text("threads = 2\n")
    code, _, err = cli(capsys, "find", "--train", "20it", "--eval-every", "10it", "--levels",
                       "0", "--config", str(tmp_path / "threads.toml"), "--out", str(tmp_path))
    assert code == 0, err
    assert "device cpu, 2 threads" in err  # same run (not in the hash), count from the file
    assert json.loads((run_dir(tmp_path) / "config.json").read_text())["threads"] == 2


@pytest.mark.parametrize("argv, needle", [
    (["find", "--threads", "0"], "threads must be a positive integer or auto, got '0'"),
    (["find", "--threads", "two"], "threads must be a positive integer or auto, got 'two'"),
    (["supermask", "run", "--threads", "1.5"], "positive integer or auto, got '1.5'"),
])
def test_bad_thread_counts_are_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    code, _, err = cli(capsys, *argv, "--out", str(tmp_path)) if argv[0] == "find" else \
        cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert not list(tmp_path.iterdir())


def test_bad_thread_count_in_a_config_file(tmp_path, capsys):
    (tmp_path / "t.toml").write_text('threads = "many"\n')
    code, _, err = cli(capsys, "find", "--config", str(tmp_path / "t.toml"), "--out",
                       str(tmp_path / "runs"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "threads must be a positive integer or auto, got 'many'" in err
    assert not (tmp_path / "runs").exists()


def test_help_shows_every_default_from_the_dataclasses(capsys):
    from ticketlab.cli import _setting, build_parser, experiment_defaults

    parser = build_parser()
    find = parser._subparsers._group_actions[0].choices["find"]
    defaults = experiment_defaults()
    shown = 0
    for action in find._actions:
        value = defaults.get(action.dest)
        if not action.option_strings or value is None:
            continue
        text = ("on" if value else "off") if isinstance(value, bool) else _setting(value)
        assert f"(default: {text or 'none'})" in action.help, action.dest
        shown += 1
    assert shown >= 25
    code, out, _ = cli(capsys, "find", "--help")
    flat = " ".join(out.split())
    assert code == 0 and "(default: 0.0012)" in flat and "(default: 40ep)" in flat
    assert "(default: fc=0.2,output=0.1,conv=0.1)" in flat and "(default: runs)" in flat
    for command, needle in (("supermask", "(default: 0.5,0.2,0.1,0.05,0.02)"),
                            ("supermask", "(default: 0.1)"), ("supermask", "(default: auto)")):
        assert needle in " ".join(cli(capsys, command, "--help")[1].split())


def test_ctrl_c_while_importing_exits_quietly_with_130(tmp_path):
    """SIGINT a moment after start, while torch imports, through the console script's own
    entry point (read from pyproject.toml)."""
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    module, func = tomllib.loads(pyproject.read_text())["project"]["scripts"]["ticketlab"] \
        .split(":")
    script = f"import sys; from {module} import {func}; sys.exit({func}())"
    proc = subprocess.Popen([sys.executable, "-c", script, "find", "--quiet", "--out",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 1, stderr


def test_diverged_run_finishes_flagged_in_records_and_table(tmp_path, capsys):
    code, out, err = cli(capsys, "find", "--train", "200it", "--eval-every", "20it",
                         "--levels", "1", "--optimizer", "sgd", "--lr", "10",
                         "--out", str(tmp_path))
    assert code == 0, err
    assert "diverged at" in err  # the progress display's line per unit
    assert "ticket 1/1" in out  # the levels table counts the diverged seeds per cell

    def refuse(name):
        raise ValueError(name)

    run = run_dir(tmp_path)
    summary = json.loads((run / "summary.json").read_text(), parse_constant=refuse)
    assert summary["records"][0]["diverged"]  # the dense network, at least
    assert all((r["final_test_accuracy"] is None) == r["diverged"] for r in summary["records"])
    for path in run.glob("seed_*/level_*/*/result.json"):
        json.loads(path.read_text(), parse_constant=refuse)


def test_eta_estimate():
    from ticketlab.cli import estimate_eta, format_eta
    assert estimate_eta(300, 100, 2.0) == 6.0
    assert estimate_eta(0, 100, 2.0) == 0.0
    assert estimate_eta(300, 0, 2.0) is None and estimate_eta(300, 100, 0.0) is None
    assert format_eta(None) == "ETA -:--:--"
    assert format_eta(3725.4) == "ETA 1:02:05"


def test_run_eta_counts_trained_units_only(tmp_path):
    """Reused units leave the rate alone; a group of n units counts n iterations per step."""
    from tests.conftest import tiny_config
    from ticketlab.cli import RichReporter
    from ticketlab.config import Runtime
    from ticketlab.experiments.store import RunStore, Unit

    now = [0.0]
    reporter = RichReporter(Runtime(quiet=False), clock=lambda: now[0])
    record = {"density": 1.0, "early_stop_iteration": 0, "early_stop_test_accuracy": 0.5}

    def etas():
        return {t.description: t.fields["eta"] for t in reporter.progress.tasks}

    with reporter:
        reporter.start_run(tiny_config(), RunStore(tmp_path), "cpu")  # 7 units
        reporter.end_unit(Unit(0, 0, "ticket"), record, reused=True)
        update = reporter.start_units([Unit(0, 1, "ticket")], 0, 100)
        assert etas()["all units"] == "ETA -:--:--"  # nothing measured yet
        now[0] = 10.0
        update(50, None)  # 5 it/s: 50 left here, 5 more units of 100
        assert etas() == {"all units": "ETA 0:01:50", "level 1 ticket seed 0": "ETA 0:00:10"}
        now[0] = 20.0
        update(100, None)
        reporter.end_unit(Unit(0, 1, "ticket"), record, reused=False)
        group = [Unit(0, 1, "reinit"), Unit(0, 1, "random"), Unit(0, 2, "ticket")]
        update = reporter.start_units(group, 0, 100)
        now[0] = 30.0
        update(50, None)  # 250 unit-iterations in 30 s; 3 x 50 left here, 2 units of 100
        assert etas()["all units"] == "ETA 0:00:42"
        assert etas()["level 1: 3 units together"] == "ETA 0:00:10"


def test_a_plan_run_by_workers_has_one_bar_per_running_job_and_one_eta(tmp_path):
    """Several jobs at once: the run's ETA comes from the plan's throughput in wall time."""
    from tests.conftest import tiny_config
    from ticketlab.cli import RichReporter
    from ticketlab.config import Runtime
    from ticketlab.executors import Choice
    from ticketlab.experiments.imp import open_run
    from ticketlab.experiments.plan import make_plan

    now = [0.0]
    reporter = RichReporter(Runtime(quiet=False), clock=lambda: now[0])
    config = tiny_config(seeds=(0, 1), levels=1, controls=())  # 4 jobs of 60 iterations
    ctx = open_run(config, Runtime(out=tmp_path, device="cpu"), 1, driver=False)
    plan = make_plan([ctx])
    a, b = plan.jobs[:2]

    def bars():
        return {t.description: (t.completed, t.fields["unit"], t.fields["eta"])
                for t in reporter.progress.tasks}

    with reporter:
        reporter.start_run(config, ctx.store, "cpu")
        reporter.start_plan(plan, Choice("processes", 2, 1))
        reporter.job_started(a)
        reporter.job_started(b)
        now[0] = 10.0
        for job, pid in ((a, 11), (b, 12)):
            reporter.job_progress(job, {"pid": pid, "step": 30, "start": 0, "end": 60,
                                        "val": 0.5})
        # 60 unit-iterations in 10 s of wall time, 180 left: 30 s
        assert bars() == {"all units": (0, "units, 2 running", "ETA 0:00:30"),
                          "level 0 ticket seed 0": (30, "pid 11", "ETA -:--:--"),
                          "level 0 ticket seed 1": (30, "pid 12", "ETA -:--:--")}
        now[0] = 20.0
        reporter.job_ended(a)
        reporter.end_unit(a.units[0], {"density": 1.0, "early_stop_iteration": 60,
                                       "early_stop_test_accuracy": 0.9}, reused=False)
        # 90 unit-iterations in 20 s, 150 left: 33 s
        assert bars()["all units"] == (1, "units, 1 running", "ETA 0:00:33")
