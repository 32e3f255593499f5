"""Wall time of 5 seeds of LeNet-300-100 trained together vs one seed trained alone.

Both are the real engine on MNIST (batch 60, Adam 1.2e-3, the paper's evaluation on the
5,000 validation and 10,000 test images every 100 iterations): one seed with
`ticketlab.training.train`, then N seeds with `train_replicates` (one vectorised pass over
stacked weights). Each measurement is the best of `--repeats` interleaved rounds of
`--steps` iterations. It prints the ratio `N seeds / 1 seed` as `N.Nx`; the sequential
cost of N seeds is N.0x by construction.

On a CPU the floor is high: one LeNet step already spends about half its time in matrix
products running at the machine's matmul rate (see train_throughput.py's roofline), and N
replicates need N times those FLOPs plus N times Adam's memory traffic, so together can only
save the other half's overheads. On a GPU, where one small model leaves the device idle,
replicates come close to free; that is why `--vectorize` is the default there only.

Run:
    python benchmarks/replicates.py              # ~1-2 min on an idle 2-core machine
    python benchmarks/replicates.py --quick      # smoke test
Options: --seeds N (5), --steps S (1000), --repeats R (3), --eval-every I (100),
--threads T, --data-dir DIR (default: $TICKETLAB_DATA, else ../shared/data from the repo).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from ticketlab.config import TrainingHparams
from ticketlab.data import load_dataset
from ticketlab.models import build_model
from ticketlab.training import train, train_replicates

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-dir", type=Path,
                    default=os.environ.get("TICKETLAB_DATA", REPO.parent / "shared" / "data"))
    ap.add_argument("--quick", action="store_true", help="a few seconds: 200 steps, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.repeats = 200, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset("mnist", data_dir=args.data_dir)
    hp = TrainingHparams(optimizer="adam", lr=1.2e-3, batch_size=60)

    def models(n: int) -> list[torch.nn.Module]:
        return [build_model("lenet_300_100", data.input_shape, data.num_classes, seed=s)
                for s in range(n)]

    def one() -> float:
        model = models(1)[0]
        t = time.perf_counter()
        train(model, data, hp, seed=0, end=args.steps, eval_every=args.eval_every)
        return time.perf_counter() - t

    def together() -> float:
        ms = models(args.seeds)
        t = time.perf_counter()
        train_replicates(ms, data, hp, seeds=list(range(args.seeds)), end=args.steps,
                         eval_every=args.eval_every)
        return time.perf_counter() - t

    one(), together()  # warm-up: lazy imports, allocator, kernels
    best_one = best_together = float("inf")
    for _ in range(args.repeats):
        best_one = min(best_one, one())
        best_together = min(best_together, together())

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print(f"LeNet-300-100 / MNIST, batch 60, Adam, {args.steps} iterations, evaluation every "
          f"{args.eval_every} it, best of {args.repeats}")
    print(f"1 seed alone:             {best_one:7.2f} s")
    print(f"{args.seeds} seeds together:        {best_together:7.2f} s")
    print(f"{args.seeds} seeds one after another: {args.seeds * best_one:7.2f} s (estimated)")
    print(f"{args.seeds} seeds together / 1 seed: {best_together / best_one:.1f}x")


if __name__ == "__main__":
    main()
