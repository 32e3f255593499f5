"""`--executor processes`: N worker processes on this machine, each with its threads.

Each worker is a fresh `python -m ticketlab.executors.processes` that connects back to the
driver (a local socket with a random key). Unlike multiprocessing's `spawn`, it never
re-imports the user's script, so a script without `if __name__ == "__main__":` and a
notebook work alike. A worker keeps its run contexts (dataset included) between jobs.

A worker that dies mid-job (killed, out of memory) is replaced and its job handed to the
new one, which resumes the unit from its last checkpoint; after `RETRIES` deaths of the
same job the run stops with an error. Workers ignore Ctrl-C: the driver asks them to
checkpoint and stop (SIGUSR1). A worker whose driver is gone does the same.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection, Listener, wait
from pathlib import Path
from typing import Any

from ticketlab.errors import TicketlabError
from ticketlab.executors.driver import Event
from ticketlab.executors.worker import JobSpec, run_job
from ticketlab.training import interrupt

RETRIES = 3  # deaths of one job's worker before the run gives up on it
CONNECT_TIMEOUT = 120.0  # seconds a new worker may take to start and connect


def worker_main(address: str, key: bytes, wid: int, threads: int) -> None:
    """A worker's life: take jobs from the driver until told to stop (None) or orphaned."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the driver, which says stop
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, lambda *_: interrupt.request())
    torch.set_num_threads(threads)
    parent = os.getppid()

    def alive() -> bool:
        return os.getppid() == parent

    with Client(address, family="AF_UNIX", authkey=key) as conn:
        conn.send(wid)

        def emit(kind: str, job: str, info: dict[str, Any]) -> None:
            try:
                conn.send((kind, job, info))
            except OSError:  # the driver is gone: checkpoint at the next step and stop
                interrupt.request()

        while alive():
            if not conn.poll(1.0):
                continue
            try:
                spec = conn.recv()
            except EOFError:
                return  # the driver is gone
            if spec is None:
                return
            try:
                emit("done", spec.key, {"reused": run_job(spec, emit, alive)})
            except (interrupt.Interrupted, KeyboardInterrupt):
                emit("interrupted", spec.key, {})
                return
            except TicketlabError as e:
                emit("failed", spec.key, {"message": str(e)})
            except BaseException:
                emit("crashed", spec.key, {"message": traceback.format_exc()})


@dataclass
class _Worker:
    process: subprocess.Popen
    conn: Connection | None = None  # None until it connects
    job: str | None = None
    queued: JobSpec | None = None  # handed out before it connected


@dataclass
class Processes:
    """The backend of `executors.driver.drive` for worker processes."""

    workers: int
    threads: int
    retries: int = RETRIES
    _slots: dict[int, _Worker] = field(default_factory=dict)
    _specs: dict[str, JobSpec] = field(default_factory=dict)
    _deaths: dict[str, int] = field(default_factory=dict)
    _next_id: int = 0
    _stopping: bool = False
    _closed: bool = False  # the executor is done: the accepting thread ends

    def __enter__(self) -> Processes:
        self._dir = tempfile.TemporaryDirectory(prefix="ticketlab-")
        self._key = secrets.token_bytes(32)
        self._address = str(Path(self._dir.name) / "driver.sock")
        self._listener = Listener(self._address, family="AF_UNIX", authkey=self._key)
        self._arrivals: queue.Queue[tuple[int, Connection]] = queue.Queue()
        threading.Thread(target=self._accept, name="ticketlab-accept", daemon=True).start()
        for _ in range(self.workers):
            self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._connect_arrivals()
        for w in self._slots.values():
            if w.conn is not None:
                with contextlib.suppress(OSError):
                    w.conn.send(None)
            elif w.process.poll() is None:
                w.process.kill()  # still starting: it holds nothing yet
        for w in self._slots.values():
            try:
                w.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait()
            if w.conn is not None:
                w.conn.close()
        with contextlib.suppress(OSError, EOFError):  # wakes the accepting thread, which
            waker = Client(self._address, family="AF_UNIX", authkey=self._key)  # then ends
            self._closed = True
            waker.close()
        self._closed = True
        self._listener.close()
        self._dir.cleanup()

    def _start(self) -> int:
        wid, self._next_id = self._next_id, self._next_id + 1
        process = subprocess.Popen(
            [sys.executable, "-m", "ticketlab.executors.processes", self._address, str(wid),
             str(self.threads)], stdin=subprocess.PIPE, start_new_session=True)
        assert process.stdin is not None
        process.stdin.write(self._key.hex().encode() + b"\n")  # the key never on a command line
        process.stdin.close()
        self._slots[wid] = _Worker(process)
        return wid

    def _accept(self) -> None:
        """A thread taking the connections of workers as they start (each says its id)."""
        while not self._closed:
            try:
                conn = self._listener.accept()
                self._arrivals.put((conn.recv(), conn))
            except Exception:  # a failed handshake; or the listener closed: the loop ends
                continue

    def _connect_arrivals(self) -> None:
        while not self._arrivals.empty():
            wid, conn = self._arrivals.get_nowait()
            w = self._slots.get(wid)
            if w is None:
                conn.close()
                continue
            w.conn = conn
            if w.queued is not None:
                conn.send(w.queued)
                w.queued = None

    def pids(self) -> dict[int, int]:
        """Worker id -> process id (for the display, and for tests that kill one)."""
        return {wid: w.process.pid for wid, w in self._slots.items()}

    def capacity(self) -> int:
        return sum(w.job is None for w in self._slots.values())

    def submit(self, spec: JobSpec) -> None:
        wid = next(wid for wid, w in self._slots.items() if w.job is None)
        self._send(wid, spec)

    def _send(self, wid: int, spec: JobSpec) -> None:
        self._specs[spec.key] = spec
        w = self._slots[wid]
        w.job = spec.key
        if w.conn is None:
            w.queued = spec
        else:
            w.conn.send(spec)

    def events(self, timeout: float) -> list[Event]:
        found: list[Event] = []
        self._connect_arrivals()
        conns = {w.conn: wid for wid, w in self._slots.items() if w.conn is not None}
        ready = wait(list(conns), timeout) if conns else time.sleep(min(timeout, 0.05)) or []
        for conn in ready:
            w = self._slots[conns[conn]]
            while True:
                try:
                    if not conn.poll():
                        break
                    kind, key, info = conn.recv()
                except (EOFError, OSError):
                    break  # it died: handled below
                found.append((kind, key, info))
                if kind != "progress" and w.job == key:
                    w.job = None
        for wid, w in list(self._slots.items()):
            if w.process.poll() is None:
                continue
            del self._slots[wid]
            if w.conn is not None:
                w.conn.close()
            if w.job is None or self._stopping:
                if w.job is not None:
                    found.append(("interrupted", w.job, {}))
                elif not self._stopping:
                    self._start()  # an idle worker died: keep the pool whole
                continue
            key = w.job
            self._deaths[key] = self._deaths.get(key, 0) + 1
            why = f"worker {wid} (pid {w.process.pid}) died with exit code {w.process.returncode}"
            if self._deaths[key] > self.retries:
                found.append(("failed", key, {"message": (
                    f"{self._specs[key].description}: {why}, death {self._deaths[key]} of this "
                    "job's worker: look for a lack of memory (dmesg), then run the same "
                    "command again to resume")}))
                continue
            self._send(self._start(), self._specs[key])
            found.append(("retry", key, {"attempt": self._deaths[key] + 1, "why": why}))
        return found

    def stop(self) -> None:
        """Asks the running jobs to checkpoint at the next step and stop (SIGUSR1)."""
        self._stopping = True
        for w in self._slots.values():
            if w.job is not None and hasattr(signal, "SIGUSR1"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.process.pid, signal.SIGUSR1)


if __name__ == "__main__":
    _address, _wid, _threads = sys.argv[1:4]
    worker_main(_address, bytes.fromhex(sys.stdin.readline().strip()), int(_wid), int(_threads))
