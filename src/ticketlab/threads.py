"""How many intra-op threads torch uses: one per process unless told otherwise.

Measured with `benchmarks/threads.py` (see the README's Benchmarks): LeNet's layers are so
small that a second OpenMP thread gains little even on an idle machine, and as soon as
another process keeps a core busy every parallel region waits for the thread that lost its
core, so two threads run many times slower than one. One thread per process leaves the other
cores to other processes (or to a second ticketlab process). `--threads N` overrides it;
`$OMP_NUM_THREADS`, the usual way to say it for every OpenMP program, is honoured by `auto`.

Inter-op threads (`torch.set_num_interop_threads`) are left alone: they only run
TorchScript's asynchronous forks, which ticketlab never uses, and torch allows setting them
only once per process, before any parallel work.

The count can change the last bits of a result (a matrix product summed in another order),
so a run records it in its config.json, outside the hash: the same configuration, seed,
device and thread count give bit-identical results.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ticketlab.errors import TicketlabError

AUTO_THREADS = 1  # benchmarks/threads.py: 1 thread wins beside any other busy process


def resolve_threads(value: int | str | None = "auto") -> int:
    """The thread count `value` asks for: a positive integer, or `auto` (None) for
    $OMP_NUM_THREADS when set, else `AUTO_THREADS`."""
    if value is None or value == "auto":
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        if env.isdigit() and int(env) > 0:
            return int(env)
        return AUTO_THREADS
    text = str(value).strip()
    if isinstance(value, bool) or not (isinstance(value, int) or text.isdigit()) \
            or int(text) < 1:
        raise TicketlabError(f"threads must be a positive integer or auto, got {value!r}: "
                             "e.g. --threads 1 (the default, auto) or --threads 2")
    return int(text)


def apply_threads(value: int | str | None = "auto") -> int:
    """Sets torch's intra-op thread count (`resolve_threads`); returns it."""
    n = resolve_threads(value)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextmanager
def using_threads(value: int | str | None = "auto") -> Iterator[int]:
    """`apply_threads` for a block, restoring the caller's count after it (so the Python
    API does not change a notebook's setting behind its back)."""
    previous = torch.get_num_threads()
    try:
        yield apply_threads(value)
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
