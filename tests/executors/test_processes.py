"""`--executor processes`: worker processes compute exactly what one process computes, also
when a worker is killed mid-unit, when the driver is killed and restarted, and when the
driver is interrupted (Ctrl-C) and the command run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_config, unit_files
from ticketlab.config import Runtime
from ticketlab.errors import TicketlabError
from ticketlab.experiments.imp import run_imp

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")

CONFIG = dict(seeds=(0, 1), levels=2)  # 2 seeds x (1 + 2 levels x 3 variants) = 14 units
LONG = dict(seeds=(0,), levels=1, train="1000it", eval_every="50it")  # ~2 s a unit


def runtime(out: Path, executor: str, **kw) -> Runtime:
    return Runtime(out=out, device="cpu", quiet=True, executor=executor, jobs=2, threads=1, **kw)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> dict[str, Path]:
    """The reference records, computed one unit after another in this process."""
    out = tmp_path_factory.mktemp("sequential")
    runs = {}
    for name, kw in (("short", CONFIG), ("long", LONG)):
        config = tiny_config(**kw)
        run_imp(config, runtime(out, "sequential"))
        runs[name] = out / config.run_name()
    return runs


def test_workers_compute_the_records_of_one_process(tmp_path, sequential):
    config = tiny_config(**CONFIG)
    summary = run_imp(config, runtime(tmp_path, "processes"))
    run = tmp_path / config.run_name()
    assert len(summary["records"]) == 14
    assert unit_files(run) == unit_files(sequential["short"])
    assert "2 worker processes of 1 thread" in (run / "config.json").read_text()
    assert all((run / u).is_file() for u in ("summary.json", "seed_1/level_02/random/timing.json"))


class KillOnce:
    """A reporter that SIGKILLs the worker training `unit` once its checkpoint exists."""

    def __init__(self, run: Path, unit: str):
        self.checkpoint = run / unit / "checkpoint.pt"
        self.unit = unit
        self.killed: list[int] = []
        self.retries: list[dict] = []

    def start_run(self, *a) -> None: ...
    def start_units(self, *a) -> None: ...
    def end_unit(self, *a, **k) -> None: ...

    def job_progress(self, job, info) -> None:
        if (not self.killed and job.units[0].relpath() == self.unit and info["step"] < info["end"]
                and self.checkpoint.is_file()):
            os.kill(info["pid"], signal.SIGKILL)
            self.killed.append(info["step"])

    def job_retry(self, job, info) -> None:
        self.retries.append(info)


def test_a_killed_worker_is_replaced_and_its_unit_resumes(tmp_path, sequential):
    config = tiny_config(**LONG)
    run = tmp_path / config.run_name()
    reporter = KillOnce(run, "seed_0/level_01/ticket")
    run_imp(config, runtime(tmp_path, "processes", checkpoint_every=0.0), reporter)
    assert reporter.killed and reporter.retries  # killed mid-unit, then retried
    assert "died" in reporter.retries[0]["why"]
    assert unit_files(run) == unit_files(sequential["long"])


def test_an_error_in_a_worker_is_one_line_in_the_driver(tmp_path):
    config = tiny_config(seeds=(0,), levels=1, controls=())
    run_imp(config, runtime(tmp_path, "sequential"))
    final = tmp_path / config.run_name() / "seed_0/level_01/ticket/final.safetensors"
    final.write_bytes(final.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(TicketlabError, match="level_01/ticket"):
        run_imp(tiny_config(seeds=(0,), levels=2, controls=()), runtime(tmp_path, "processes"))


def _cli(out: Path, *extra: str) -> subprocess.Popen:
    args = ["find", "--dataset", "digits", "--model", "lenet_300_100", "--train", "1000it",
            "--eval-every", "50it", "--levels", "1", "--seeds", "0", "--controls",
            "reinit,random", "--device", "cpu", "--threads", "1", "--executor", "processes",
            "--jobs", "2", "--checkpoint-every", "0", "--out", str(out), *extra]
    return subprocess.Popen([sys.executable, "-m", "ticketlab.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path_glob: tuple[Path, str], timeout: float = 120) -> None:
    root, pattern = path_glob
    deadline = time.monotonic() + timeout
    while not list(root.glob(pattern)):
        assert time.monotonic() < deadline, f"nothing matched {pattern} in {timeout} s"
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["interrupted", "killed"])
def test_the_driver_stopped_and_started_again_finishes_the_same_plan(tmp_path, sequential, how):
    """Ctrl-C: workers checkpoint and stop, exit 130. SIGKILL: orphaned workers notice and
    stop. Either way the same command resumes, and the records are a single process's."""
    run = tmp_path / tiny_config(**LONG).run_name()
    driver = _cli(tmp_path)
    _wait_for((run, "seed_0/level_01/*/checkpoint.pt"))
    driver.send_signal(signal.SIGINT if how == "interrupted" else signal.SIGKILL)
    _, err = driver.communicate(timeout=120)
    if how == "interrupted":
        assert driver.returncode == 130 and "progress is saved" in err, err
    else:
        assert driver.returncode == -signal.SIGKILL
    assert not all((run / f"seed_0/level_01/{v}/result.json").is_file()
                   for v in ("ticket", "reinit", "random"))  # stopped mid-level
    again = _cli(tmp_path, "--quiet")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert unit_files(run) == unit_files(sequential["long"])


def test_a_vectorised_level_is_one_job_and_workers_train_it_as_this_process_would(tmp_path):
    """--vectorize --executor processes: each level's units are one job, trained together
    in a worker exactly as the vectorized executor trains them here."""
    config = tiny_config(**CONFIG)
    here, there = tmp_path / "here", tmp_path / "there"
    run_imp(config, runtime(here, "vectorized"))
    run_imp(config, runtime(there, "processes", vectorize=True))
    assert unit_files(there / config.run_name()) == unit_files(here / config.run_name())
    assert "together (vectorised), in 2 worker processes" in \
        (there / config.run_name() / "config.json").read_text()
