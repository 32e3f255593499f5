"""The Ray executor on a local Ray instance started here (`ray.init(num_cpus=2)`): records
bit-identical to a sequential run's, a killed worker retried from its checkpoint, a user's
mistake inside a task as the one-line error of the driver."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_config
from ticketlab.config import Runtime
from ticketlab.errors import TicketlabError
from ticketlab.executors.driver import spec_for
from ticketlab.executors.ray import RayBackend
from ticketlab.experiments.imp import open_run, run_imp
from ticketlab.experiments.plan import make_plan
from ticketlab.training import interrupt

ray = pytest.importorskip("ray")

UNRECORDED = {"timing.json", "config.json"}  # wall times; config.json names the executor


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def runtime(out: Path, executor: str, **kw: Any) -> Runtime:
    return Runtime(out=out, device="cpu", quiet=True, executor=executor, threads=1, **kw)


def assert_same_records(a: Path, b: Path) -> None:
    """Every file of run directory `a` is in `b` with the same content (tensors compared as
    tensors: safetensors' header order is not part of the record)."""
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    assert files_a == files_b
    compared = 0
    for rel in sorted(files_a):
        if rel.name in UNRECORDED:
            continue
        if rel.suffix == ".safetensors":
            ta, tb = load_file(a / rel), load_file(b / rel)
            assert ta.keys() == tb.keys(), rel
            assert all(torch.equal(ta[k], tb[k]) for k in ta), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        compared += 1
    assert compared > 0


class Recorder:
    """A reporter that keeps what the driver tells it; `on_progress` may act on it."""

    def __init__(self, on_progress: Any = None):
        self.on_progress = on_progress
        self.started: list[str] = []
        self.progress: list[tuple[str, dict[str, Any]]] = []
        self.retries: list[tuple[str, dict[str, Any]]] = []

    def start_run(self, *args: object, **kw: object) -> None:
        pass

    def start_units(self, *args: object, **kw: object) -> None:
        return None

    def end_unit(self, *args: object, **kw: object) -> None:
        pass

    def job_started(self, job: Any) -> None:
        self.started.append(job.key)

    def job_progress(self, job: Any, info: dict[str, Any]) -> None:
        self.progress.append((job.key, info))
        if self.on_progress:
            self.on_progress(job, info)

    def job_retry(self, job: Any, info: dict[str, Any]) -> None:
        self.retries.append((job.key, info))


def test_ray_records_equal_sequential(tmp_path: Path):
    config = tiny_config(seeds=(0, 1), levels=2)
    run_imp(config, runtime(tmp_path / "seq", "sequential"))
    recorder = Recorder()
    run_imp(config, runtime(tmp_path / "ray", "ray"), recorder)
    name = config.run_name()
    assert_same_records(tmp_path / "seq" / name, tmp_path / "ray" / name)
    assert len(recorder.started) == 2 + 2 * 2 * 3  # level 0, then 3 variants x 2 levels per seed
    assert len({info["pid"] for _, info in recorder.progress}) >= 1
    assert recorder.retries == []


# units long enough for a kill or a stop to land mid-unit
LONG = {"seeds": (0,), "levels": 1, "controls": (), "train": "2000it", "eval_every": "20it"}


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of LONG computed sequentially."""
    out = tmp_path_factory.mktemp("sequential")
    run_imp(tiny_config(**LONG), runtime(out, "sequential"))
    return out / tiny_config(**LONG).run_name()


def test_killed_worker_is_retried_from_its_checkpoint(tmp_path: Path, long_reference: Path):
    config = tiny_config(**LONG)
    root = tmp_path / "ray" / config.run_name()
    killed: dict[str, Any] = {}

    def kill_mid_unit(job: Any, info: dict[str, Any]) -> None:
        checkpoint = root / job.units[0].relpath() / "checkpoint.pt"
        if not killed and checkpoint.is_file() and info["step"] < info["end"]:
            killed.update(job=job.key, pid=info["pid"], step=info["step"])
            os.kill(info["pid"], signal.SIGKILL)

    recorder = Recorder(kill_mid_unit)
    run_imp(config, runtime(tmp_path / "ray", "ray", checkpoint_every=0), recorder)
    assert killed, "no progress event came while a checkpoint existed"
    assert_same_records(long_reference, root)
    # the display heard of the retry, which ran in another process
    assert [key for key, _ in recorder.retries] == [killed["job"]]
    assert recorder.retries[0][1]["attempt"] == 2
    assert any(key == killed["job"] and info["pid"] != killed["pid"]
               for key, info in recorder.progress)


def test_error_in_a_task_is_the_drivers_one_line_error(tmp_path: Path):
    out = tmp_path / "runs"
    config = tiny_config(seeds=(0,), levels=1, controls=())
    run_imp(config, runtime(out, "sequential"))
    damaged = out / config.run_name() / "seed_0" / "level_01" / "ticket" / "final.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    recorder = Recorder()
    with pytest.raises(TicketlabError) as raised:
        run_imp(tiny_config(seeds=(0,), levels=2, controls=()), runtime(out, "ray"), recorder)
    message = str(raised.value)
    assert "final.safetensors" in message and "\n" not in message
    assert recorder.started, "the error must come from a task, not from planning"


def test_interrupt_stops_tasks_at_a_checkpoint_and_the_same_command_resumes(
        tmp_path: Path, long_reference: Path):
    config = tiny_config(**LONG)
    unit = tmp_path / config.run_name() / "seed_0" / "level_00" / "ticket"

    def ctrl_c_mid_unit(job: Any, info: dict[str, Any]) -> None:
        if 0 < info["step"] < info["end"]:
            interrupt.request()  # what the CLI's first Ctrl-C does

    with interrupt.graceful(), pytest.raises(interrupt.Interrupted):
        run_imp(config, runtime(tmp_path, "ray"), Recorder(ctrl_c_mid_unit))
    # checkpoints are due every 60 s: this one is the stop's, written at a step boundary
    assert (unit / "checkpoint.pt").is_file() and not (unit / "result.json").exists()
    run_imp(config, runtime(tmp_path, "ray"))
    assert_same_records(long_reference, tmp_path / config.run_name())


def test_a_job_whose_worker_dies_more_often_than_retried_fails_in_one_line(tmp_path: Path):
    ctx = open_run(tiny_config(**LONG), runtime(tmp_path, "ray"), threads=1)
    plan = make_plan([ctx])
    with RayBackend(threads=1, address=None, workers=0, retries=0) as backend:
        assert backend.capacity() == 2  # the fixture's 2 CPUs, 1 thread per task
        backend.submit(spec_for(plan, plan.jobs[0]))
        assert backend.capacity() == 1
        ended: list = []
        killed = False
        while not ended:
            for kind, key, info in backend.events(0.2):
                if kind == "progress" and info["step"] > 0 and not killed:
                    os.kill(info["pid"], signal.SIGKILL)
                    killed = True
                elif kind != "progress":
                    ended.append((kind, key, info))
    [(kind, key, info)] = ended
    assert (kind, key) == ("failed", plan.jobs[0].key)
    assert "level 0 ticket seed 0: its Ray worker died on each of its 1 attempt" in info["message"]
    assert "\n" not in info["message"]
