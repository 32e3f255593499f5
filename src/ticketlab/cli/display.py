"""What the command line shows while it works: the consoles, the summary of a run before
it starts, and the progress bars with their ETAs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from ticketlab.config import ExperimentConfig, Runtime
from ticketlab.errors import TicketlabError
from ticketlab.experiments.store import RunStore, Unit

err = Console(stderr=True)
# Piped or captured output gets wide lines rather than a table squeezed to 80 columns.
out = Console() if Console().is_terminal else Console(width=160)


def describe(config: ExperimentConfig, store: RunStore, device: object) -> str:
    from torch import get_num_threads

    threads = get_num_threads()  # the count in force, however it was asked for
    c, t, p = config, config.training, config.pruning
    rates = p.rates_arg()
    rates = rates if isinstance(rates, float) else ",".join(f"{k}={v}" for k, v in rates.items())
    excluded = f" (never: {','.join(p.exclude)})" if p.exclude else ""
    if p.criterion != "large_final":
        excluded += f", criterion {p.criterion}"
    opt = f"{t.optimizer} lr {t.lr}"
    if t.optimizer == "sgd":
        opt += f" momentum {t.momentum}" + (" nesterov" if t.nesterov else "")
    if t.weight_decay:
        opt += f" wd {t.weight_decay}"
    if t.schedule == "step":
        opt += f", x{t.gamma} at {','.join(t.milestones)}"
    if t.warmup != "0it":
        opt += f", warm-up {t.warmup}"
    if c.kind == "sparsify":
        sp = c.sparsify
        rounds = f" ({sp.prune_rounds} rounds)" if sp.sparsity_schedule == "iterative" else ""
        what = (f"sparsify to {sp.target} sparsity by {p.granularity}, {p.scope}, "
                f"{sp.sparsity_schedule}{rounds} from {sp.prune_start} to "
                f"{sp.prune_end or t.train} every {sp.prune_every}{excluded}" +
                (f", lth rewinding to {c.rewind}" if sp.lth else "") +
                (f", reset_end to {c.rewind}" if sp.reset_end else ""))
    else:
        what = ((f"one-shot to densities {','.join(map(str, c.one_shot))}" if c.one_shot else
                 f"one-shot threshold mask, alpha {p.threshold}" if p.threshold is not None
                 else f"{c.levels} level{'s' if c.levels != 1 else ''}") +
                f", {p.scope} pruning at {rates}"
                f"{'' if p.granularity == 'weight' else ' of ' + p.granularity + 's'}"
                f"{excluded}, rewind to {c.rewind}")
    return "\n".join([
        f"model {c.model.model} ({c.model.init}) on {c.data.dataset}",
        what,
        f"train {t.train} per level, batch {t.batch_size}, {opt}, eval every {t.eval_every}",
        f"seeds {','.join(map(str, c.seeds))}" +
        ("" if c.kind == "sparsify" else f"; controls {','.join(c.controls) or 'none'}") +
        f"; device {device}, {threads} thread{'s' if threads != 1 else ''}",
        *([f"units train {how}"] if (how := _units_trained(store)) else []),
        f"run directory {store.root}",
    ])


def _units_trained(store: RunStore) -> str | None:
    """What config.json says about how a level's units train (together, or one by one)."""
    try:
        return store.config().get("units_trained")
    except TicketlabError:
        return None


def estimate_eta(remaining: float, done: float, seconds: float) -> float | None:
    """Seconds left for `remaining` iterations at the measured rate (`done` in `seconds`).

    None until something was measured. Iterations count per unit: a group of g units trained
    together for n steps did g * n, so groups and single units share one rate.
    """
    if done <= 0 or seconds <= 0:
        return None
    return max(0.0, remaining) * seconds / done


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -:--:--"
    s = round(seconds)
    return f"ETA {s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class RichReporter:
    """Progress bar per unit or group (level, variant, iteration, ETA, validation accuracy)
    and for the run; ETAs from the measured step rate (units reused from disk excluded)."""

    def __init__(self, runtime: Runtime, clock: Callable[[], float] = time.monotonic):
        self.runtime = runtime
        self.clock = clock
        self.quiet = bool(runtime.quiet)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"), TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"), TextColumn("{task.fields[val]}"),
            console=err, disable=self.quiet, transient=True)
        self.task: Any = None  # the unit or group training now
        self.run_task: Any = None  # the bar of all units
        self.units_left = 0  # units of the run not ended yet, the training ones included
        self.measured = (0, 0.0)  # unit-iterations trained, seconds: finished tasks only
        self.per_unit = 0  # iterations one unit trains (its start to the budget's end)

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_run(self, config: ExperimentConfig, store: RunStore, device: object) -> None:
        if self.quiet:
            return
        self.progress.console.print(describe(config, store, device), highlight=False,
                                    soft_wrap=True)
        units = len(config.seeds) * (1 if config.kind == "sparsify" else
                                     1 + config.n_levels * (1 + len(config.controls)))
        self.units_left += units
        if self.run_task is None:
            self.run_task = self.progress.add_task("all units", total=units, unit="units",
                                                   val="", eta=format_eta(None))
        else:  # another run of the same plan (a sweep): one bar for all of them
            bar = next(t for t in self.progress.tasks if t.id == self.run_task)
            self.progress.update(self.run_task, total=(bar.total or 0) + units)

    # ------------------------------------------------------------ a plan run by workers
    # Jobs run elsewhere (worker processes, Ray tasks) and several at once: one bar per job
    # running, and the run's ETA from the plan's throughput (unit-iterations per second of
    # wall time since the plan started), which counts every worker.

    def start_plan(self, plan: Any, choice: Any) -> None:
        self.plan_left = sum(j.iterations for j in plan.jobs)
        self.plan_began = self.clock()
        self.plan_done = 0  # unit-iterations of jobs ended
        self.jobs: dict[str, tuple[Any, int]] = {}  # job key -> (its bar, iterations done)
        if not self.quiet and choice.name in ("processes", "ray"):
            what = (f"{choice.workers} worker processes" if choice.name == "processes" else
                    "Ray tasks")
            self.progress.console.print(f"{len(plan.jobs)} jobs to run on {what}"
                                        + (f" ({choice.why})" if choice.why else ""),
                                        highlight=False, soft_wrap=True)

    def job_started(self, job: Any) -> None:
        if self.quiet:
            return
        bar = self.progress.add_task(job.describe(), total=None, unit="starting", val="",
                                     eta=format_eta(None))
        self.jobs[job.key] = (bar, 0)
        self._plan_status()

    def job_progress(self, job: Any, info: dict[str, Any]) -> None:
        if self.quiet or job.key not in self.jobs:
            return
        bar = self.jobs[job.key][0]
        done = info["step"] - info["start"]
        val = info.get("val")
        self.progress.update(bar, total=info["end"] - info["start"], completed=done,
                             unit=f"pid {info['pid']}",
                             val=f"val acc {100 * val:.2f}%" if val is not None else "")
        self.jobs[job.key] = (bar, done * len(job.units))
        self._plan_status()

    def job_retry(self, job: Any, info: dict[str, Any]) -> None:
        self.progress.console.print(
            f"{job.describe()}: {info['why']}; retrying from its last checkpoint (attempt "
            f"{info['attempt']})", highlight=False, soft_wrap=True)

    def job_ended(self, job: Any) -> None:
        if self.quiet:
            return
        bar, _ = self.jobs.pop(job.key, (None, 0))
        if bar is not None:
            self.progress.remove_task(bar)
        self.plan_done += job.iterations
        self._plan_status()

    def _plan_status(self) -> None:
        done = self.plan_done + sum(d for _, d in self.jobs.values())
        eta = estimate_eta(self.plan_left - done, done, self.clock() - self.plan_began)
        self.progress.update(self.run_task, eta=format_eta(eta),
                             unit=f"units, {len(self.jobs)} running")

    def start_units(self, units: list[Unit], start: int, end: int):
        if self.quiet:
            return None
        u = units[0]
        desc = (f"level {u.level} {u.variant} seed {u.seed}" if len(units) == 1 else
                f"level {u.level}: {len(units)} units together")
        task = self.progress.add_task(desc, total=end - start, unit="it", val="",
                                      eta=format_eta(None))
        self._end_task()
        self.task, self.per_unit, began = task, end - start, self.clock()
        n = len(units)

        def update(step: int, val_acc: float | None) -> None:
            val = f"val acc {100 * val_acc:.2f}%" if val_acc is not None else ""
            seconds, done = self.clock() - began, step - start
            self.task_measured = (n * done, seconds)
            unit_eta = estimate_eta(end - step, done, seconds)
            self.progress.update(task, completed=done, val=val, eta=format_eta(unit_eta))
            trained, spent = self.measured
            later = (self.units_left - n) * self.per_unit  # units not started yet
            run_eta = estimate_eta(n * (end - step) + later, trained + n * done, spent + seconds)
            self.progress.update(self.run_task, eta=format_eta(run_eta))
        self.task_measured = (0, 0.0)
        return update

    def wait_units(self, units: list[Unit]) -> None:
        """Another process trains these units of the run: this one waits for them."""
        if self.quiet:
            return
        names = ", ".join(f"{u.variant} seed {u.seed}" for u in units)
        self.progress.console.print(
            f"level {units[0].level}: waiting for {names}, which another process is training",
            highlight=False, soft_wrap=True)

    def recomputing(self, unit: Unit, reason: str) -> None:
        """Always said, even with --quiet: files were deleted."""
        self.progress.console.print(f"recomputing {unit.relpath()}: {reason}", highlight=False,
                                    markup=False, soft_wrap=True)

    def _end_task(self) -> None:
        """Closes the training task: its bar goes, its measured rate joins the run's."""
        if self.task is None:
            return
        self.progress.remove_task(self.task)
        trained, spent = self.measured
        done, seconds = self.task_measured
        self.measured = (trained + done, spent + seconds)
        self.task = None

    def end_unit(self, unit: Unit, record: dict[str, Any], reused: bool) -> None:
        if self.quiet:
            return
        self._end_task()  # training ended (the budget's end, or all diverged) before this
        self.units_left -= 1
        self.progress.advance(self.run_task)
        done = "done before" if reused else "done"
        if record.get("diverged") and record.get("early_stop_iteration") is None:
            result = f"diverged at {record['diverged_iteration']} it"
        else:
            result = (f"early stop at {record['early_stop_iteration']} it, test acc "
                      f"{100 * record['early_stop_test_accuracy']:.2f}%")
            if record.get("diverged"):
                result += f", diverged at {record['diverged_iteration']} it"
        self.progress.console.print(
            f"level {unit.level} {unit.variant} seed {unit.seed}: "
            f"{100 * record['density']:.1f}% remaining, {result} ({done})", highlight=False,
            soft_wrap=True)
