"""Executors: where the plan's jobs run. None changes a number.

- `sequential`: one job after another in this process (a level's units one by one);
- `vectorized`: the same, with a level's units trained together in one vectorised pass
  (`train_replicates`; rounds differently from one model alone, the default on a GPU);
- `processes`: `--jobs N` worker processes on this machine, each with `--threads` threads,
  taking jobs as their dependencies finish (`executors.processes`);
- `ray`: one Ray task per job on a Ray cluster, with retries (`executors.ray`).

Every executor computes bit-identical records for the same thread count: each unit's
training depends only on its seed and the files it starts from, never on which process
trained it or when. The process that runs the plan (the driver) is the only one that writes
config.json and summary.json; workers write their units' files, atomically, as always.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass

from ticketlab.config import Runtime
from ticketlab.errors import TicketlabError
from ticketlab.experiments.context import Context, Reporter
from ticketlab.experiments.plan import Plan, training_flops

# `auto` starts worker processes only when the plan's training is worth at least this many
# floating-point operations. A worker costs about 2 s before its first job (a Python with
# torch and ticketlab: benchmarks/executors.py prints it; the dataset's load on top), and
# LeNet trains at about 1.7e10 FLOP/s of this count on one core here (the default digits
# run: 4.7e11 in 27 s), so two workers break even near 6 s of sequential training, 1e11.
PARALLEL_MIN_FLOPS = 1e11
WORKER_MEMORY = 300 * 2**20  # what a worker needs besides its copy of the dataset


@dataclass
class Choice:
    """The executor a plan runs on, and what config.json and the display say about it."""

    name: str  # sequential, vectorized, processes or ray
    workers: int  # processes at once (1 in this process; ray: tasks the driver keeps going)
    threads: int  # torch's intra-op threads per worker
    address: str | None = None  # ray: the cluster to join (None: a local instance)
    why: str = ""  # how `auto` decided

    def describe(self, ctx: Context) -> str:
        from ticketlab.experiments.imp import plan_training

        how = plan_training(ctx)[1]
        s = "s" if self.threads != 1 else ""
        if self.name == "processes":
            how += f", in {self.workers} worker processes of {self.threads} thread{s}"
        elif self.name == "ray":
            how += f", as Ray tasks of {self.threads} thread{s}"
        return how


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_jobs(plan: Plan, threads: int) -> int:
    """One worker per `threads` cores, no more than the plan can keep busy at once, nor than
    the memory holds (each worker loads its own copy of the dataset)."""
    jobs = max(1, cores() // max(1, threads))
    jobs = min(jobs, max(1, plan.width()))
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return jobs
    data = max((_dataset_bytes(ctx) for ctx in plan.contexts), default=0)
    return max(1, min(jobs, int(memory // 2 // (data + WORKER_MEMORY))))


def _dataset_bytes(ctx: Context) -> int:
    d = ctx.data
    return sum(t.numel() * t.element_size() for t in (d.x_train, d.y_train, d.x_val, d.y_val,
                                                      d.x_test, d.y_test))


def choose_executor(plan: Plan, runtime: Runtime, threads: int) -> Choice:
    """`runtime.executor`, with `auto` resolved: vectorized on a GPU; on a CPU, worker
    processes when `--jobs N` asks for two or more, or (`--jobs auto`) when there are cores
    for two and enough work to pay for them; else sequential.
    The rule counts work (`training_flops`), it never times anything, so the same plan gets
    the same executor on the same machine."""
    name = runtime.executor
    jobs = auto_jobs(plan, threads) if runtime.jobs == "auto" else int(runtime.jobs)
    if name == "auto":
        if any(ctx.device.type != "cpu" for ctx in plan.contexts):
            return Choice("sequential", 1, threads, why="a GPU: one process, a level's units "
                          "together unless --no-vectorize")
        if jobs < 2:
            return Choice("sequential", 1, threads, why="one worker's worth of cores"
                          if runtime.jobs == "auto" else "--jobs 1")
        if runtime.jobs != "auto":  # asked for workers: no second-guessing
            return Choice("processes", jobs, threads, why=f"--jobs {jobs}")
        flops = training_flops(plan)
        if flops < PARALLEL_MIN_FLOPS:
            return Choice("sequential", 1, threads, why=f"{flops:.1e} FLOPs of training "
                          "pay for no worker processes")
        return Choice("processes", jobs, threads, why=f"{flops:.1e} FLOPs of training")
    if name == "processes":
        if any(ctx.device.type == "cuda" for ctx in plan.contexts):
            raise TicketlabError("--executor processes runs on the CPU: use --device cpu, or "
                                 "--executor vectorized on a GPU")
        return Choice(name, jobs, threads)
    if name == "ray":
        return Choice(name, jobs if runtime.jobs != "auto" else 0, threads, runtime.address)
    return Choice(name, 1, threads)


def execute(plan: Plan, choice: Choice, reporter: Reporter | None) -> None:
    """Runs the plan's jobs on the chosen executor, holding each run's session lock (so a
    process alone on a run cleans up what killed processes left there)."""
    with ExitStack() as stack:
        for ctx in plan.contexts:
            stack.enter_context(ctx.store.session())
        if choice.name in ("sequential", "vectorized"):
            from ticketlab.executors.local import run_here
            run_here(plan, reporter)
        elif choice.name == "processes":
            from ticketlab.executors.driver import drive
            from ticketlab.executors.processes import Processes
            with Processes(choice.workers, choice.threads) as backend:
                drive(plan, backend, reporter)
        else:
            from ticketlab.executors.driver import drive
            from ticketlab.executors.ray import RayBackend
            with RayBackend(choice.threads, choice.address, choice.workers) as backend:
                drive(plan, backend, reporter)
