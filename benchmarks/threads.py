"""Training speed with 1 and 2 intra-op threads, on an idle machine and beside a busy core.

Why: LeNet's layers are so small that two OpenMP threads gain little on an idle machine,
and as soon as another process keeps one core busy, every parallel region waits for the
thread that lost its core: the reviewer of issue 9 saw the default `ticketlab find` go from
27.6 s to between 137 s and 15 minutes, and to 38 s with OMP_NUM_THREADS=1. This benchmark
measures that in one run and is what `--threads auto` was chosen from.

It measures the project's own training loop (`ticketlab.training.train`, Adam 1.2e-3, batch
60, evaluation on the validation and test sets every 100 iterations, as in a run) on two
workloads: LeNet-300-100 on MNIST (digits when the MNIST files are absent) and one unit of
the default `ticketlab find` (LeNet-300-100 on 8x8 digits, 40 epochs = 840 iterations).
Each is timed with 1 and 2 threads (`torch.set_num_threads`), idle and under load: a
subprocess spinning a pure-Python loop on one core, started before and stopped after each
loaded measurement. Rounds are interleaved so that slow phases of a shared machine hit every
setting; each setting's median over the rounds counts (the best would hide the stalls that
make a loaded run slow). It prints steps/s and the ratios as `N.Nx`.

Run:
    python benchmarks/threads.py            # about 2-3 minutes on a 2-core machine
    python benchmarks/threads.py --quick    # smoke test, under a minute
Options: --rounds R (3), --mnist-steps S (300), --digits-steps S (840), --cap SECONDS (4:
a measurement still running then stops at its next multiple of 50 iterations),
--data-dir DIR (default: $TICKETLAB_DATA, else ../shared/data from the repo).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

from ticketlab.config import TrainingHparams
from ticketlab.data import Dataset, load_dataset
from ticketlab.errors import TicketlabError
from ticketlab.models import build_model
from ticketlab.training import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import busy_cpus, cpu_model  # a sibling script

REPO = Path(__file__).resolve().parents[1]
THREADS = (1, 2)
LOADS = ("idle", "loaded")
SPIN = "while True:\n    pass\n"


@contextmanager
def competing_load(on: bool) -> Iterator[None]:
    """One other process keeping one core busy (pure Python, so one thread exactly)."""
    if not on:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.3)  # let it reach the scheduler's steady state
        yield
    finally:
        spinner.kill()
        spinner.wait()


class _Enough(Exception):
    """Raised from the progress callback once a measurement has run for its time cap."""


def steps_per_second(data: Dataset, steps: int, threads: int, loaded: bool,
                     cap: float = float("inf")) -> float:
    """Iterations per second of one unit's training, evaluations included. A measurement
    that passes `cap` seconds stops at the next multiple of 50 iterations, which bounds the
    collapsed settings' wall time (it then counts at most one evaluation fewer)."""
    torch.set_num_threads(threads)
    model = build_model("lenet_300_100", data.input_shape, data.num_classes, seed=0)
    done = steps

    def stop_when_capped(step: int, _: float | None) -> None:
        nonlocal done
        if time.perf_counter() - t0 > cap:
            done = step
            raise _Enough

    with competing_load(loaded):
        t0 = time.perf_counter()
        with suppress(_Enough):
            train(model, data, TrainingHparams(), seed=0, end=steps, eval_every=100,
                  progress=stop_when_capped)
        return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mnist-steps", type=int, default=300)
    ap.add_argument("--digits-steps", type=int, default=840)
    ap.add_argument("--cap", type=float, default=4.0,
                    help="seconds after which a measurement stops (at a multiple of 50 it)")
    ap.add_argument("--data-dir", type=Path,
                    default=os.environ.get("TICKETLAB_DATA", REPO.parent / "shared" / "data"))
    ap.add_argument("--quick", action="store_true", help="1 round of shorter runs")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.mnist_steps, args.digits_steps = 1, 100, 200
    t_start = time.perf_counter()
    busy = busy_cpus()

    try:
        mnist, mnist_name = load_dataset("mnist", data_dir=args.data_dir), "MNIST"
    except TicketlabError as e:
        print(f"MNIST not available ({e}); using digits for the first workload too")
        mnist, mnist_name = load_dataset("digits"), "digits"
    workloads = {
        f"LeNet-300-100 / {mnist_name}, {args.mnist_steps} it": (mnist, args.mnist_steps),
        f"default digits unit, {args.digits_steps} it": (load_dataset("digits"),
                                                         args.digits_steps),
    }
    for data, _ in workloads.values():  # warm-up: lazy imports, allocator, kernels
        for n in THREADS:
            steps_per_second(data, 20, n, loaded=False)

    rates: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, (data, steps) in workloads.items():
            for n in THREADS:
                for load in LOADS:
                    rate = steps_per_second(data, steps, n, load == "loaded", args.cap)
                    rates.setdefault((name, n, load), []).append(rate)
                    print(f"  {name}, {n} thread(s), {load}: {rate:.0f} steps/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}

    others = "unknown" if busy is None else f"{busy:.1f}"
    print(f"torch {torch.__version__}, CPU: {cpu_model()} ({os.cpu_count()} logical CPUs, "
          f"{others} busy with other work at start)")
    print(f"train(): Adam, batch 60, evaluation every 100 it included; median of "
          f"{args.rounds} interleaved rounds; loaded = one extra process spinning on one core")
    print()
    print(f"{'workload':<36}{'threads':>8}{'load':>8}{'steps/s':>10}{'  (min - max)':>18}")
    for (name, n, load), v in rates.items():
        print(f"{name:<36}{n:>8}{load:>8}{med[name, n, load]:>10.0f}"
              f"{f'  ({min(v):.0f} - {max(v):.0f})':>18}")
    print()
    for name in workloads:
        r = {(n, load): med[name, n, load] for n in THREADS for load in LOADS}
        print(name)
        print(f"  1 thread vs 2 threads, idle:   {r[1, 'idle'] / r[2, 'idle']:.1f}x")
        print(f"  1 thread vs 2 threads, loaded: {r[1, 'loaded'] / r[2, 'loaded']:.1f}x")
        print(f"  load slows 1 thread by {r[1, 'idle'] / r[1, 'loaded']:.1f}x, "
              f"2 threads by {r[2, 'idle'] / r[2, 'loaded']:.1f}x")
    print(f"(total wall time {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
