"""Graceful Ctrl-C: the first one stops training at the next step boundary, after writing a
checkpoint, so nothing computed is lost; a second one interrupts at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_requested = False


class Interrupted(Exception):
    """Training stopped on request at a step boundary, its state saved."""

    def __init__(self, step: int | None):
        super().__init__("interrupted" if step is None else f"interrupted at step {step}")
        self.step = step  # None: several trainings stopped (a plan's workers)


def requested() -> bool:
    return _requested


def request() -> None:
    """Asks training to stop at the next step boundary, as a first Ctrl-C does (a worker
    process told to stop by its driver)."""
    global _requested
    _requested = True


def clear() -> None:
    """Forgets a request: a worker process that lives on (Ray reuses them) starts its next
    job afresh."""
    global _requested
    _requested = False


@contextmanager
def graceful() -> Iterator[None]:
    """Within this block SIGINT asks training to stop cleanly (main thread only)."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        global _requested
        if _requested:
            raise KeyboardInterrupt
        _requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested = False
