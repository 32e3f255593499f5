"""`--executor ray`: one Ray task per job, on a Ray cluster (or a Ray instance on this machine).

Each task runs `worker.run_job` in one of the cluster's Python processes with `num_cpus`
equal to `--threads`; it opens the run from the job's spec, so the run directory must be the
same path on every node (shared storage, see docs/cluster.md). A task whose worker process
dies (killed, out of memory, its node lost) is retried by Ray up to `RETRIES` times and
resumes the unit from its last checkpoint; an exception inside a task is never retried: the
task returns it as a value ("failed" with TicketlabError's one-line message, "crashed" with
a traceback), so the driver reports it as the processes executor does.

Tasks talk to the driver through one small actor, `_Mailbox`: they post progress (throttled
by `run_job`) and read whether the driver asked them to stop; a stop makes `run_job` write a
checkpoint at the next step boundary and return, as Ctrl-C does in one process.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from typing import Any

from ticketlab.errors import TicketlabError
from ticketlab.executors.driver import Event
from ticketlab.executors.worker import JobSpec, run_job
from ticketlab.training import interrupt

RETRIES = 3  # Ray's retries of a task whose worker process died (never of an exception)
ALIVE_EVERY = 1.0  # seconds a task trusts its last look at the driver's stop request
CLUSTER_EVERY = 5.0  # seconds between looks at the cluster's CPUs (nodes come and go)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise TicketlabError("--executor ray needs Ray: pip install 'ticketlab[ray]'") from None
    return ray


def first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


class _Mailbox:
    """The driver's actor: tasks post events to it, the driver drains them and says stop."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.stopping = False

    def post(self, event: Event) -> None:
        self.events.append(event)

    def drain(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def stop(self) -> None:
        self.stopping = True

    def stopped(self) -> bool:
        return self.stopping


class _Alive:
    """`alive()` for `run_job`: False once the driver asked to stop (or its actor is gone).
    Asked every training step, so it looks at the actor at most once per `ALIVE_EVERY`."""

    def __init__(self, mailbox: Any):
        self.mailbox, self.last, self.alive = mailbox, 0.0, True

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.alive and now - self.last >= ALIVE_EVERY:
            self.last = now
            try:
                self.alive = not _ray().get(self.mailbox.stopped.remote(), timeout=30)
            except Exception:  # the driver and its actor are gone: checkpoint and stop
                self.alive = False
        return self.alive


def _task(spec: JobSpec, mailbox: Any) -> tuple[str, Any]:
    """A job in a Ray worker. Returns (kind, payload) rather than raising, so a user's
    mistake is one line in the driver, and Ray retries only deaths of the process."""
    alive = _Alive(mailbox)
    if not alive():
        return "interrupted", None  # stopped before it started: nothing to save

    def emit(kind: str, key: str, info: dict[str, Any]) -> None:
        mailbox.post.remote((kind, key, info))

    try:
        return "done", run_job(spec, emit, alive)
    except (interrupt.Interrupted, KeyboardInterrupt):
        return "interrupted", None
    except TicketlabError as e:
        return "failed", str(e)
    except BaseException:
        return "crashed", traceback.format_exc()
    finally:
        # Ray reuses the process for other tasks: a stop request is this task's alone.
        interrupt.clear()


class RayBackend:
    """The backend of `executors.driver.drive` for Ray tasks.

    `workers`: tasks kept in flight (0: as many as the cluster's CPUs hold, `threads` each).
    Joins the Ray instance this process already has (a test's, a notebook's), else starts
    one (`address` None) or connects to a cluster (`address`, e.g. auto or ray://head:10001);
    on exit it shuts down only a Ray it started itself.
    """

    def __init__(self, threads: int, address: str | None, workers: int,
                 retries: int = RETRIES):
        self.threads, self.address, self.workers, self.retries = threads, address, workers, retries
        self._running: dict[Any, JobSpec] = {}  # task ref -> its job
        self._pids: dict[str, list[int]] = {}  # job key -> worker processes seen running it
        self._slots = (0, -CLUSTER_EVERY)  # (tasks the cluster holds, when last counted)
        self._started = False

    def __enter__(self) -> RayBackend:
        ray = self._ray = _ray()
        if not ray.is_initialized():
            # workers' output stays in Ray's logs: the driver's display is the only output
            local = {"include_dashboard": False} if self.address is None else {}
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.ERROR,
                         **local)
            except ConnectionError as e:
                raise TicketlabError(
                    f"--address {self.address}: {first_line(e)}: start the cluster "
                    "(`ray start --head` on its head node, see docs/cluster.md) or leave "
                    "--address out for a Ray instance on this machine") from None
            self._started = True
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's node: a lost worker node must not take the mailbox with it
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self._mailbox = ray.remote(_Mailbox).options(
            num_cpus=0, scheduling_strategy=here).remote()
        self._remote = ray.remote(_task).options(
            num_cpus=self.threads, max_retries=self.retries, retry_exceptions=False)
        return self

    def __exit__(self, *exc: object) -> None:
        """Tasks still running here (a second Ctrl-C, an error in the driver) are cancelled
        at once: they lose the steps since their last checkpoint (`--checkpoint-every`)."""
        with contextlib.suppress(Exception):  # Ray may be gone already
            for ref in self._running:  # a second Ctrl-C, or an error in the driver
                self._ray.cancel(ref, force=True)
            self._ray.kill(self._mailbox)
        if self._started:
            self._ray.shutdown()

    def capacity(self) -> int:
        slots, when = self._slots
        if self.workers > 0:
            slots = self.workers
        elif time.monotonic() - when >= CLUSTER_EVERY:
            cpus = self._ray.cluster_resources().get("CPU", 0)
            slots = max(1, int(cpus) // max(1, self.threads))
            self._slots = (slots, time.monotonic())
        return max(0, slots - len(self._running))

    def submit(self, spec: JobSpec) -> None:
        self._running[self._remote.remote(spec, self._mailbox)] = spec
        self._pids[spec.key] = []

    def events(self, timeout: float) -> list[Event]:
        ray = self._ray
        found: list[Event] = []
        for kind, key, info in ray.get(self._mailbox.drain.remote()):
            pids = self._pids.get(key)
            if kind == "progress" and pids is not None and info.get("pid") not in pids:
                if pids:  # another process runs this job: Ray retried it
                    found.append(("retry", key, {"attempt": len(pids) + 1,
                                                 "why": f"its worker (pid {pids[-1]}) died"}))
                pids.append(info["pid"])
            found.append((kind, key, info))
        refs = list(self._running)
        if not refs:
            time.sleep(min(timeout, 0.05))
            return found
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:  # and any others that ended meanwhile
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            spec = self._running.pop(ref)
            self._pids.pop(spec.key, None)
            found.append(self._settle(spec, ref))
        return found

    def _settle(self, spec: JobSpec, ref: Any) -> Event:
        ray = self._ray
        # its worker died more often than Ray retries (NodeDiedError: in newer Rays only)
        deaths = tuple(getattr(ray.exceptions, name) for name in (
            "WorkerCrashedError", "NodeDiedError", "ObjectLostError")
            if hasattr(ray.exceptions, name))
        try:
            kind, payload = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return "interrupted", spec.key, {}
        except deaths as e:
            attempts = "attempts" if self.retries else "attempt"
            attempts = f"{self.retries + 1} {attempts}"
            return "failed", spec.key, {"message": (
                f"{spec.description}: its Ray worker died on each of its {attempts} "
                f"({type(e).__name__}: {first_line(e)}): look for a lack of memory or a lost "
                "node in the Ray logs (/tmp/ray/session_latest/logs on each node), then run "
                "the same command again to resume")}
        except ray.exceptions.RayError as e:  # the task could not even run ticketlab's code
            return "failed", spec.key, {"message": (
                f"{spec.description}: its Ray task failed ({type(e).__name__}: "
                f"{first_line(e)}): every node needs the same Python, ticketlab and torch, "
                "and the run directory at the same path (docs/cluster.md)")}
        if kind == "done":
            return "done", spec.key, {"reused": payload}
        if kind == "interrupted":
            return "interrupted", spec.key, {}
        return kind, spec.key, {"message": payload}

    def stop(self) -> None:
        """Asks the tasks to checkpoint at the next step boundary and stop (within about
        `ALIVE_EVERY` seconds); tasks not started yet return at once."""
        self._ray.get(self._mailbox.stop.remote())
