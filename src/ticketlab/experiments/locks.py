"""Advisory file locks (flock) that let several processes share one run directory.

The OS releases a lock when its process dies, so a killed process never blocks a run.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock (Windows): one process per run directory, as before
    fcntl = None  # type: ignore[assignment]


class UnitLock:
    """An advisory lock (flock) on a file: the OS releases it when its process dies."""

    def __init__(self, fd: int | None):
        self.fd = fd  # None: a lock that guards nothing (no flock, or read-only media)

    @classmethod
    def take(cls, path: Path) -> UnitLock | None:
        """Exclusive, without waiting: None when another process holds it. Where no lock
        file can be made (read-only media, no flock) it is granted: nothing is written there
        that a lock would guard."""
        if fcntl is None:
            return cls(None)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return cls(None)
        lock = cls(fd)
        if not lock.convert(shared=False):
            lock.release()
            return None
        return lock

    def convert(self, shared: bool, wait: bool = False) -> bool:
        """To a shared or an exclusive lock; False if another process prevents it (the lock
        held before may then be lost: flock converts by unlocking first)."""
        if self.fd is None:
            return True
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                        | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> UnitLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def shared_lock(path: Path) -> UnitLock:
    lock = UnitLock(os.open(path, os.O_RDWR | os.O_CREAT, 0o666) if fcntl else None)
    lock.convert(shared=True, wait=True)
    return lock
