"""The driver's loop for executors that run jobs elsewhere (worker processes, Ray tasks).

It hands out the jobs whose dependencies are done, in plan order, as the backend has room;
hears progress, completion, retries and failures; writes each run's summary.json as units
finish (only the driver writes it); and on Ctrl-C asks the running jobs to checkpoint and
stop, so the same command resumes them.
"""

from __future__ import annotations

from typing import Any, Protocol

from ticketlab.errors import TicketlabError
from ticketlab.executors.worker import JobSpec
from ticketlab.experiments.context import Reporter
from ticketlab.experiments.plan import Job, Plan, UnitKey
from ticketlab.training import interrupt

Event = tuple[str, str, dict[str, Any]]  # (kind, job key, details)


class Backend(Protocol):
    """Runs jobs somewhere and says what happened to them.

    Event kinds: "progress" (pid, description, step, start, end, val), "done" (reused: the
    units found done), "retry" (attempt, why: the worker died and the job restarts from its
    checkpoint), "failed" (message: one line for the user), "crashed" (message: a traceback),
    "interrupted" (stopped at a step boundary, checkpoint written)."""

    def capacity(self) -> int: ...
    def submit(self, spec: JobSpec) -> None: ...
    def events(self, timeout: float) -> list[Event]: ...
    def stop(self) -> None: ...


class WorkerCrashed(RuntimeError):
    """A worker raised something that is not a user's mistake: a bug; its traceback."""


def spec_for(plan: Plan, job: Job) -> JobSpec:
    import torch

    ctx = plan.contexts[job.run]
    return JobSpec(job.key, ctx.config, ctx.runtime, str(ctx.store.root.resolve()), job.units,
                   torch.get_num_threads(), job.describe())


def drive(plan: Plan, backend: Backend, reporter: Reporter | None) -> None:
    done: set[UnitKey] = set(plan.done)
    waiting = list(plan.jobs)
    running: dict[str, Job] = {}
    failure: Exception | None = None
    stopping = False
    tell = _Tell(reporter)
    while waiting or running:
        if not stopping:
            i = 0
            while i < len(waiting) and backend.capacity() > 0:
                job = waiting[i]
                if all(k in done for k in job.needs):
                    waiting.pop(i)
                    running[job.key] = job
                    backend.submit(spec_for(plan, job))
                    tell("job_started", job)
                else:
                    i += 1
            if waiting and not running:
                raise RuntimeError(f"plan stuck: {waiting[0].key} needs {waiting[0].needs}")
        for kind, key, info in backend.events(0.2):
            job = running.get(key)
            if job is None:
                continue  # a late message of a job already settled
            if kind == "progress":
                tell("job_progress", job, info)
            elif kind == "retry":
                tell("job_retry", job, info)
            elif kind == "done":
                del running[key]
                _finished(plan, job, info.get("reused", []), reporter)
                done.update((job.run, u) for u in job.units)
                tell("job_ended", job)
            else:  # failed, crashed, interrupted
                del running[key]
                tell("job_ended", job)
                if kind == "failed" and failure is None:
                    failure = TicketlabError(info["message"])
                elif kind == "crashed" and failure is None:
                    failure = WorkerCrashed(f"{job.describe()} failed in a worker:\n"
                                            f"{info['message']}")
                if kind == "interrupted" and not stopping and failure is None:
                    failure = TicketlabError(  # not asked for: its dependents would wait forever
                        f"{job.describe()} stopped in its worker without being asked (a "
                        "signal?): run the same command again to resume it")
                if not stopping:
                    stopping = True
                    backend.stop()
        if interrupt.requested() and not stopping:
            stopping = True
            backend.stop()
        if stopping:
            waiting.clear()
    if failure is not None:
        raise failure
    if stopping:
        raise interrupt.Interrupted(None)


def _finished(plan: Plan, job: Job, reused: list[str], reporter: Reporter | None) -> None:
    """A job's units are done: the summary says so, and so does the display."""
    store = plan.contexts[job.run].store
    missing = [u.relpath() for u in job.units if not store.done(u)]
    if missing:
        raise RuntimeError(f"a worker reported {job.key} done, but {', '.join(missing)} of "
                           f"{store.root} has no result.json")
    store.write_summary()
    if reporter:
        for u in job.units:
            reporter.end_unit(u, store.result(u), reused=u.relpath() in reused)


class _Tell:
    """Calls the reporter's optional plan hooks (a notebook's reporter may have none)."""

    def __init__(self, reporter: Reporter | None):
        self.reporter = reporter

    def __call__(self, moment: str, *args: Any) -> None:
        hook = getattr(self.reporter, moment, None)
        if hook:
            hook(*args)
