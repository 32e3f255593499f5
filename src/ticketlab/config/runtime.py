"""How to run, never what: none of these settings changes a number (on one device)."""

from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ticketlab.config.fields import FlatField, flat_fields, setting
from ticketlab.errors import TicketlabError

EXECUTORS = ("auto", "sequential", "vectorized", "processes", "ray")


def _jobs(text: str) -> int | str:
    text = str(text).strip()
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise TicketlabError(f"--jobs must be a positive integer or auto, got {text!r}: e.g. "
                             "--jobs 2 (auto: one worker per core, see `executors`)")
    return int(text)


def _threads(text: str) -> int | str:
    from ticketlab.threads import resolve_threads
    return text if text == "auto" else resolve_threads(text)


@dataclass
class Runtime:
    """How to run, never what: none of this changes a number (on one device)."""

    out: Path = setting(Path("runs"), "where run directories go")
    data_dir: Path | None = setting(None, "folder with the dataset files (default: "
                                    "$TICKETLAB_DATA or ~/.cache/ticketlab/data)")
    download: bool = setting(False, "fetch missing dataset files from the official sites",
                             action="store_true")
    device: str = setting("auto", "auto (CUDA when present), cpu, cuda, cuda:N or mps")
    quiet: bool = setting(False, "no progress display and no settings echo; the table is "
                          "printed", action="store_true")
    checkpoint_every: float = setting(60.0, "seconds between mid-level checkpoints (0: at "
                                      "every evaluation)", metavar="SECONDS")
    # Train a level's seeds and controls together (same science up to rounding). None: on a
    # GPU only; on a CPU one model already keeps the cores busy (benchmarks/replicates.py).
    vectorize: bool | None = setting(
        None, "train a level's seeds and controls together in one vectorised pass (same "
        "results up to floating-point rounding; default: on a GPU only)", action="optional")
    # Intra-op threads: "auto" (1, or $OMP_NUM_THREADS; measured, see ticketlab.threads) or a
    # count. Recorded in config.json outside the hash: it can change a result's last bits.
    threads: int | str = setting(
        "auto", "torch's intra-op threads: auto (1 per process, or $OMP_NUM_THREADS when set; "
        "measured by benchmarks/threads.py: two threads on layers this small collapse when "
        "another process keeps a core busy) or a count", parse=_threads, metavar="N")
    # Where the plan's units run (`ticketlab.executors`); none changes a number, except that
    # vectorized training rounds differently from one model alone.
    executor: str = setting(
        "auto", "how the plan's units run: sequential (one after another in this process), "
        "vectorized (a level's units together), processes (--jobs worker processes), ray "
        "(tasks on a Ray cluster, --address); auto: vectorized on a GPU, processes on a CPU "
        "when the work pays for the workers' start, else sequential", choices=EXECUTORS)
    jobs: int | str = setting(
        "auto", "worker processes of --executor processes, each with --threads threads "
        "(auto: cores // threads)", parse=_jobs, metavar="N")
    address: str | None = setting(
        None, "the Ray cluster --executor ray joins, e.g. ray://head:10001 or auto (default: "
        "a Ray instance started on this machine)", metavar="ADDR")
    command: str | None = setting(None, flag=None)  # the command line, kept in config.json
    recompute: bool = setting(False, "check every file of the run first; delete the units "
                              "with a damaged file (and unfinished units started from them) "
                              "and compute them again", action="store_true")

    def validate(self) -> None:
        """Checks that need no torch: the device's spelling, the checkpoint interval."""
        check_device_name(self.device)
        if self.executor not in EXECUTORS:
            raise TicketlabError(f"unknown executor '{self.executor}': choose one of "
                                 f"{', '.join(EXECUTORS)}")
        if self.jobs != "auto":
            _jobs(str(self.jobs))
        c = self.checkpoint_every
        if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c) or c < 0:
            raise TicketlabError(f"--checkpoint-every must be a finite number of seconds >= 0, "
                                 f"got {c}: e.g. 60 (0: at every evaluation)")


RUNTIME_FIELDS: dict[str, FlatField] = flat_fields(Runtime, ())


def runtime_hints() -> dict[str, Any]:
    return typing.get_type_hints(Runtime)


DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(name: str) -> None:
    """auto, cpu, cuda, cuda:N or mps; anything else (meta, tpu...) is refused."""
    if not isinstance(name, str) or not DEVICE_RE.match(name):
        raise TicketlabError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps")
