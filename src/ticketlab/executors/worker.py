"""What a worker does with a job, in any process: open the run (once per process), train the
job's units as a single process would (`run_units`), and tell the driver how it goes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ticketlab.config import ExperimentConfig, Runtime
from ticketlab.experiments.context import Context
from ticketlab.experiments.store import Unit
from ticketlab.training import interrupt

PROGRESS_EVERY = 0.5  # seconds between a worker's progress messages


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run a job, picklable: the run is opened from it."""

    key: str
    config: ExperimentConfig
    runtime: Runtime
    root: str  # the run directory, the same path on every worker (shared storage)
    units: tuple[Unit, ...]
    threads: int
    description: str


# (kind, key, payload): "progress" {pid, description, step, start, end, val}; "done" {reused}
Emit = Callable[[str, str, dict[str, Any]], None]

_CONTEXTS: dict[str, Context] = {}  # run directory -> its context, opened once per process


def context(spec: JobSpec) -> Context:
    from ticketlab.experiments.imp import open_run

    ctx = _CONTEXTS.get(spec.root)
    if ctx is None:
        ctx = open_run(spec.config, spec.runtime, spec.threads, driver=False,
                       root=Path(spec.root))
        _CONTEXTS[spec.root] = ctx
    return ctx


class _Reporter:
    """The engine's reporter inside a worker: progress goes to the driver, throttled."""

    def __init__(self, spec: JobSpec, emit: Emit, alive: Callable[[], bool]):
        self.spec, self.emit, self.alive = spec, emit, alive
        self.reused: list[str] = []

    def start_run(self, *args: object) -> None:
        pass

    def start_units(self, units: list[Unit], start: int, end: int) -> Callable:
        last = 0.0
        description = self.spec.description

        def progress(step: int, val: float | None) -> None:
            nonlocal last
            if not self.alive():  # the driver is gone: checkpoint and stop
                interrupt.request()
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY or step == end:
                last = now
                self.emit("progress", self.spec.key, {
                    "pid": os.getpid(), "description": description, "step": step,
                    "start": start, "end": end, "val": val})
        progress(start, None)
        return progress

    def end_unit(self, unit: Unit, record: dict[str, Any], reused: bool) -> None:
        if reused:
            self.reused.append(unit.relpath())


def run_job(spec: JobSpec, emit: Emit, alive: Callable[[], bool] = lambda: True) -> list[str]:
    """Trains the job's units (or finds them done); returns those that were already done."""
    from ticketlab.experiments.imp import run_units

    if torch.get_num_threads() != spec.threads:
        torch.set_num_threads(spec.threads)
    ctx = context(spec)
    reporter = _Reporter(spec, emit, alive)
    ctx.reporter = reporter
    run_units(ctx, list(spec.units))
    return reporter.reused
