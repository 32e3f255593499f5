"""Wall time of one small LeNet/MNIST experiment on each executor, and whether the records
are the sequential run's, bit for bit.

The experiment is the paper's LeNet-300-100 setting (`--preset lenet_mnist`) with a cut
budget: 3 seeds, 4 levels, the reinit and random controls (39 units), `--train` iterations
per level, evaluated every 100. It runs from scratch, through the same engine as `ticketlab
find` (`run_imp`), once per executor, each in its own directory:

- sequential, 1 thread (the reference);
- sequential, 2 threads (one process using both cores; its records round differently, so
  they are not compared);
- processes, `--jobs 2` x 1 thread;
- ray: a local Ray instance (`ray.init(num_cpus=2)`), one task of 1 thread per unit.

It prints each executor's wall time and its ratio to the sequential run (`N.Nx`, measured in
this one run), whether its records (result.json, metrics.csv, every tensor of every unit)
equal the sequential run's, and what starting one worker costs. `--busy` runs a CPU-bound
process beside the measurements, the shared-machine case.

Run:
    python benchmarks/executors.py                 # ~6 min on an idle 2-core machine
    python benchmarks/executors.py --train 200it   # quicker
Options: --train STEPS (1000it), --seeds LIST (0,1,2), --levels N (4), --jobs N (2),
--no-ray, --busy, --json PATH (the rows), --data-dir DIR (default: $TICKETLAB_DATA, else
../shared/data from the repo).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ticketlab.config import ExperimentConfig, Runtime, apply_overrides
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore
from ticketlab.presets import preset_settings

REPO = Path(__file__).resolve().parents[1]


def worker_start_seconds() -> float:
    """What a worker pays before its first job: a Python with torch and ticketlab imported."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import ticketlab.executors.processes"], check=True)
    return time.perf_counter() - began


def busy_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", default="1000it")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--busy", action="store_true", help="a CPU-bound process runs beside")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--data-dir", type=Path,
                    default=os.environ.get("TICKETLAB_DATA", REPO.parent / "shared" / "data"))
    args = ap.parse_args()

    config: ExperimentConfig = apply_overrides(ExperimentConfig(), {
        **preset_settings("lenet_mnist"), "train": args.train, "eval_every": "100it",
        "levels": args.levels, "seeds": tuple(int(s) for s in args.seeds.split(",")),
        "controls": ("reinit", "random")})
    units = len(config.seeds) * (1 + config.levels * 3)
    print(f"LeNet-300-100 on MNIST, {args.train} per level, {config.levels} levels, seeds "
          f"{args.seeds}, reinit and random: {units} units; {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}"
          + (", a CPU-bound process beside" if args.busy else ""))
    print(f"a worker's start (python, torch, ticketlab): {worker_start_seconds():.1f} s")

    runs = [("sequential", 1, "sequential, 1 thread"), ("sequential", 2, "sequential, 2 threads"),
            ("processes", 1, f"processes, --jobs {args.jobs} x 1 thread")]
    if not args.no_ray:
        try:
            import ray
            runs.append(("ray", 1, "ray (local, num_cpus=2), 1 thread per task"))
        except ImportError:
            print("ray: not installed (pip install 'ticketlab[ray]'), skipped")
    rows = []
    busy = busy_process() if args.busy else None
    try:
        with tempfile.TemporaryDirectory(prefix="ticketlab-executors-") as tmp:
            reference = None
            for executor, threads, label in runs:
                if executor == "ray" and not ray.is_initialized():
                    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                out = Path(tmp) / label.split(",")[0].replace(" ", "_") / str(threads)
                runtime = Runtime(out=out, data_dir=args.data_dir, device="cpu", quiet=True,
                                  executor=executor, jobs=args.jobs, threads=threads)
                began = time.perf_counter()
                run_imp(config, runtime)
                seconds = time.perf_counter() - began
                found = RunStore(out / config.run_name()).contents()
                if reference is None:
                    reference = (seconds, found)
                same = None if threads != 1 else found == reference[1]
                rows.append({"executor": executor, "threads": threads, "label": label,
                             "seconds": round(seconds, 1),
                             "speedup": round(reference[0] / seconds, 2),
                             "records_identical": same})
                verdict = ("records identical" if same else "RECORDS DIFFER" if same is False
                           else "records not compared (other thread count)")
                print(f"{label:<45} {seconds:7.1f} s  {reference[0] / seconds:4.1f}x  {verdict}",
                      flush=True)
    finally:
        if busy:
            busy.kill()
    if args.json:
        args.json.write_text(json.dumps({"train": args.train, "seeds": args.seeds,
                                         "levels": config.levels, "busy": args.busy,
                                         "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
